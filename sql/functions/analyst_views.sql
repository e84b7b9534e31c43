-- The analyst layer: views with stable names and columns (documented in
-- chatsync(7) and, for each column, with COMMENT ON below).  They read the
-- tables chatsyncd writes; nothing writes through them.

-- user_keys: each user key with a cursor (a user as configured or as
-- discovered: a User SID or an identity) with the User SID, identity and
-- name it stands for (sync_user_keys, kept by triggers: see
-- sync_user_keys.sql).
CREATE OR REPLACE VIEW user_keys AS
SELECT service_sid, configured, user_sid, identity, user_name
  FROM sync_user_keys;

-- The views below join each table with sync_cursors and user_keys on their
-- primary keys, with LEFT JOINs: every stored row has a cursor under its
-- key (sync_page() writes both in one transaction, sync_merge_user() moves
-- both), and so a row of user_keys, so that these joins change no result;
-- and a query that asks for no column of theirs (counts by channel, by
-- status, by day) does not make them at all.
CREATE OR REPLACE VIEW memberships AS
SELECT uc.service_sid, s.friendly_name AS service_name,
       k.user_sid, k.identity, k.user_name,
       uc.channel_sid, ch.friendly_name AS channel_name, ch.unique_name AS channel_unique_name,
       ch.type AS channel_type,
       uc.status, uc.unread_messages_count, uc.last_consumed_message_index, uc.member_sid,
       uc.first_seen_at, uc.updated_at, c.last_complete_at AS synced_at, uc.notification_level
  FROM user_channels uc
  LEFT JOIN sync_cursors c ON c.service_sid = uc.service_sid AND c.user_sid = uc.user_sid
  LEFT JOIN user_keys k ON k.service_sid = uc.service_sid AND k.configured = uc.user_sid
  LEFT JOIN services s ON s.service_sid = uc.service_sid
  LEFT JOIN channels ch ON ch.service_sid = uc.service_sid AND ch.channel_sid = uc.channel_sid
 WHERE uc.deleted_at IS NULL;

-- is_current is a constant in each part, so that a condition on it leaves
-- out the other part.
CREATE OR REPLACE VIEW membership_history AS
SELECT v.service_sid, k.user_sid, k.identity, v.channel_sid, v.status, v.unread_messages_count,
       v.last_consumed_message_index, v.member_sid, v.valid_from, v.valid_to, v.is_current,
       v.is_deleted, v.notification_level
  FROM (SELECT service_sid, user_sid, channel_sid, status, unread_messages_count,
               last_consumed_message_index, member_sid, valid_from, valid_to,
               false AS is_current, is_deleted, notification_level
          FROM user_channel_past_versions
        UNION ALL
        SELECT service_sid, user_sid, channel_sid, status, unread_messages_count,
               last_consumed_message_index, member_sid,
               CASE WHEN deleted_at IS NULL THEN updated_at ELSE deleted_at END, NULL, true,
               deleted_at IS NOT NULL, notification_level
          FROM user_channels) v
  LEFT JOIN user_keys k ON k.service_sid = v.service_sid AND k.configured = v.user_sid;

-- membership_invitations: from user_channels, whose first_invited_at and
-- first_joined_at outlive the versions that retention prunes; the partial
-- index user_channels_never_joined_idx finds those never joined.
CREATE OR REPLACE VIEW membership_invitations AS
SELECT uc.service_sid, k.user_sid, k.identity, uc.channel_sid, uc.status,
       uc.first_invited_at AS invited_at, uc.first_joined_at AS joined_at,
       uc.deleted_at IS NOT NULL AS is_deleted, uc.deleted_at
  FROM user_channels uc
  LEFT JOIN user_keys k ON k.service_sid = uc.service_sid AND k.configured = uc.user_sid
 WHERE uc.first_invited_at IS NOT NULL;

-- channel_unread_hourly: each channel's live memberships and unread total
-- at the end of every hour, from the first version of any of its
-- memberships to now, worked out of the history: +1 member (and its unread
-- count) at the hour a version starts, -1 at the hour it ends, added up per
-- channel and hour, then carried forward to the next hour with a change.  A
-- condition on channel_sid reaches the history's indexes (the window is
-- partitioned by channel), so that a few channels cost little; every
-- channel at once costs a scan of the whole history.
CREATE OR REPLACE VIEW channel_unread_hourly AS
SELECT t.service_sid, t.channel_sid, ch.friendly_name AS channel_name, h.hour, t.members,
       CASE WHEN t.counted > 0 THEN t.unread END AS unread_messages_count
  FROM (SELECT c.service_sid, c.channel_sid, c.hour,
               sum(sum(c.d_members)) OVER w AS members, sum(sum(c.d_counted)) OVER w AS counted,
               sum(sum(c.d_unread)) OVER w AS unread, lead(c.hour) OVER w AS next_hour
          FROM (SELECT v.service_sid, v.channel_sid, d.*
                  FROM (SELECT service_sid, channel_sid, unread_messages_count AS unread,
                               valid_from, valid_to
                          FROM user_channel_past_versions
                         WHERE NOT is_deleted
                        UNION ALL
                        SELECT service_sid, channel_sid, unread_messages_count, updated_at, NULL
                          FROM user_channels
                         WHERE deleted_at IS NULL) v,
                       LATERAL (VALUES (date_trunc('hour', v.valid_from - interval '1 microsecond'),
                                        1, (v.unread IS NOT NULL)::integer, v.unread),
                                       (date_trunc('hour', v.valid_to - interval '1 microsecond'),
                                        -1, -(v.unread IS NOT NULL)::integer, -v.unread))
                               AS d(hour, d_members, d_counted, d_unread)
                 WHERE d.hour IS NOT NULL) c
         GROUP BY c.service_sid, c.channel_sid, c.hour
        WINDOW w AS (PARTITION BY c.service_sid, c.channel_sid ORDER BY c.hour)) t
  CROSS JOIN LATERAL generate_series(t.hour,
                                     coalesce(t.next_hour - interval '1 hour',
                                              date_trunc('hour', now())),
                                     interval '1 hour') AS h(hour)
  LEFT JOIN channels ch ON ch.service_sid = t.service_sid AND ch.channel_sid = t.channel_sid
 WHERE t.members > 0;

CREATE OR REPLACE VIEW membership_events AS
SELECT e.at, e.service_sid, k.user_sid, k.identity, e.channel_sid, e.event, e.old_status,
       e.new_status
  FROM membership_event_log e
  LEFT JOIN user_keys k ON k.service_sid = e.service_sid AND k.configured = e.user_sid;

-- sync_health: each configured user as configured, resolved through users
-- as sync_user_keys resolves it (a User SID by itself, an identity by the users
-- listing); its cursor is the resolved User SID's (where chatsyncd merged
-- the identity's data, see sync_merge_user()), else the one under the user
-- as configured.
CREATE OR REPLACE VIEW sync_health AS
SELECT u.service_sid, u."user", coalesce(r.user_sid, u."user") AS user_sid,
       coalesce(r.identity,
                CASE WHEN u."user" !~ '^US[0-9a-fA-F]{32}$' THEN u."user" END) AS identity,
       c.state, c.last_complete_at, now() - c.last_complete_at AS lag,
       c.last_complete_at IS NULL
           OR c.last_complete_at < now() - 2 * make_interval(secs => cfg.interval_seconds)
           AS is_stale,
       c.last_error, c.last_error_at
  FROM sync_configured_users u
  CROSS JOIN sync_config cfg
  LEFT JOIN LATERAL (
       SELECT x.user_sid, x.identity
         FROM users x
        WHERE x.service_sid = u.service_sid
          AND (x.user_sid = u."user"
               OR (x.identity = u."user" AND u."user" !~ '^US[0-9a-fA-F]{32}$'))
        ORDER BY x.user_sid = u."user" DESC, x.deleted_at IS NULL DESC, x.updated_at DESC,
                 x.user_sid DESC
        LIMIT 1) r ON true
  LEFT JOIN LATERAL (
       SELECT x.state, x.last_complete_at, x.last_error, x.last_error_at
         FROM sync_cursors x
        WHERE x.service_sid = u.service_sid AND x.user_sid IN (r.user_sid, u."user")
        ORDER BY x.user_sid IS DISTINCT FROM r.user_sid
        LIMIT 1) c ON true;

-- The same for Conversations (services with api = "conversations"): a
-- user's conversations carry their own names, so no channels table is read.
CREATE OR REPLACE VIEW conversation_memberships AS
SELECT uc.service_sid, s.friendly_name AS service_name,
       k.user_sid, k.identity, k.user_name,
       uc.conversation_sid, uc.friendly_name AS conversation_name,
       uc.unique_name AS conversation_unique_name, uc.conversation_state,
       uc.notification_level, uc.unread_messages_count, uc.last_read_message_index,
       uc.participant_sid, uc.date_created, uc.date_updated, uc.date_inactive, uc.date_closed,
       uc.first_seen_at, uc.updated_at, c.last_complete_at AS synced_at
  FROM user_conversations uc
  LEFT JOIN sync_cursors c ON c.service_sid = uc.service_sid AND c.user_sid = uc.user_sid
  LEFT JOIN user_keys k ON k.service_sid = uc.service_sid AND k.configured = uc.user_sid
  LEFT JOIN services s ON s.service_sid = uc.service_sid
 WHERE uc.deleted_at IS NULL;

CREATE OR REPLACE VIEW conversation_membership_history AS
SELECT v.service_sid, k.user_sid, k.identity, v.conversation_sid, v.conversation_state,
       v.notification_level, v.unread_messages_count, v.last_read_message_index,
       v.participant_sid, v.valid_from, v.valid_to, v.is_current, v.is_deleted
  FROM (SELECT service_sid, user_sid, conversation_sid, conversation_state, notification_level,
               unread_messages_count, last_read_message_index, participant_sid, valid_from,
               valid_to, false AS is_current, is_deleted
          FROM user_conversation_past_versions
        UNION ALL
        SELECT service_sid, user_sid, conversation_sid, conversation_state, notification_level,
               unread_messages_count, last_read_message_index, participant_sid,
               CASE WHEN deleted_at IS NULL THEN updated_at ELSE deleted_at END, NULL, true,
               deleted_at IS NOT NULL
          FROM user_conversations) v
  LEFT JOIN user_keys k ON k.service_sid = v.service_sid AND k.configured = v.user_sid;

CREATE OR REPLACE VIEW conversation_membership_events AS
SELECT e.at, e.service_sid, k.user_sid, k.identity, e.conversation_sid, e.event, e.old_state,
       e.new_state
  FROM conversation_event_log e
  LEFT JOIN user_keys k ON k.service_sid = e.service_sid AND k.configured = e.user_sid;

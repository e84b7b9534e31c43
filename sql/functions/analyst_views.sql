-- The analyst layer: views with stable names and columns (documented in
-- chatsync(7) and, for each column, with COMMENT ON below).  They read the
-- tables chatsyncd writes; nothing writes through them.

-- user_keys: each user with a cursor (as configured: a User SID or an
-- identity) with its User SID and identity, from the users listing where
-- it has been synced.  A user configured by identity whose listing has not
-- been synced keeps its identity, and the identity as user_sid.
CREATE OR REPLACE VIEW user_keys AS
SELECT k.service_sid, k.configured,
       coalesce(bysid.user_sid, byidentity.user_sid, k.configured) AS user_sid,
       coalesce(bysid.identity, byidentity.identity,
                CASE WHEN k.configured !~ '^US[0-9a-fA-F]{32}$' THEN k.configured END) AS identity,
       coalesce(bysid.friendly_name, byidentity.friendly_name) AS user_name
  FROM (SELECT service_sid, user_sid AS configured FROM sync_cursors) k
  LEFT JOIN users bysid
         ON bysid.service_sid = k.service_sid AND bysid.user_sid = k.configured
  LEFT JOIN LATERAL (
        SELECT u.user_sid, u.identity, u.friendly_name FROM users u
         WHERE bysid.user_sid IS NULL AND u.service_sid = k.service_sid
           AND u.identity = k.configured
         ORDER BY u.deleted_at IS NULL DESC, u.updated_at DESC LIMIT 1) byidentity ON true;

CREATE OR REPLACE VIEW memberships AS
SELECT uc.service_sid, s.friendly_name AS service_name,
       k.user_sid, k.identity, k.user_name,
       uc.channel_sid, ch.friendly_name AS channel_name, ch.unique_name AS channel_unique_name,
       ch.type AS channel_type,
       uc.status, uc.unread_messages_count, uc.last_consumed_message_index, uc.member_sid,
       uc.first_seen_at, uc.updated_at, c.last_complete_at AS synced_at
  FROM user_channels uc
  JOIN sync_cursors c ON c.service_sid = uc.service_sid AND c.user_sid = uc.user_sid
  JOIN user_keys k ON k.service_sid = uc.service_sid AND k.configured = uc.user_sid
  LEFT JOIN services s ON s.service_sid = uc.service_sid
  LEFT JOIN channels ch ON ch.service_sid = uc.service_sid AND ch.channel_sid = uc.channel_sid
 WHERE uc.deleted_at IS NULL;

CREATE OR REPLACE VIEW membership_history AS
SELECT v.service_sid, k.user_sid, k.identity, v.channel_sid, v.status, v.unread_messages_count,
       v.last_consumed_message_index, v.member_sid, v.valid_from, v.valid_to,
       v.valid_to IS NULL AS is_current, v.is_deleted
  FROM (SELECT service_sid, user_sid, channel_sid, status, unread_messages_count,
               last_consumed_message_index, member_sid, valid_from, valid_to, is_deleted
          FROM user_channel_past_versions
        UNION ALL
        SELECT service_sid, user_sid, channel_sid, status, unread_messages_count,
               last_consumed_message_index, member_sid,
               CASE WHEN deleted_at IS NULL THEN updated_at ELSE deleted_at END, NULL,
               deleted_at IS NOT NULL
          FROM user_channels) v
  JOIN user_keys k ON k.service_sid = v.service_sid AND k.configured = v.user_sid;

CREATE OR REPLACE VIEW membership_events AS
SELECT e.at, e.service_sid, k.user_sid, k.identity, e.channel_sid, e.event, e.old_status,
       e.new_status
  FROM membership_event_log e
  JOIN user_keys k ON k.service_sid = e.service_sid AND k.configured = e.user_sid;

CREATE OR REPLACE VIEW sync_health AS
SELECT u.service_sid, u."user", coalesce(k.user_sid, u."user") AS user_sid,
       coalesce(k.identity,
                CASE WHEN u."user" !~ '^US[0-9a-fA-F]{32}$' THEN u."user" END) AS identity,
       c.state, c.last_complete_at, now() - c.last_complete_at AS lag,
       c.last_complete_at IS NULL
           OR c.last_complete_at < now() - 2 * make_interval(secs => cfg.interval_seconds)
           AS is_stale,
       c.last_error, c.last_error_at
  FROM sync_configured_users u
  CROSS JOIN sync_config cfg
  LEFT JOIN sync_cursors c ON c.service_sid = u.service_sid AND c.user_sid = u."user"
  LEFT JOIN user_keys k ON k.service_sid = u.service_sid AND k.configured = u."user";

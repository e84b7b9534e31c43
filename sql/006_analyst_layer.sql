-- 006_analyst_layer: what the analyst views read (functions/analyst_views.sql).
--
-- - services, users and channels: names and attributes of what the
--   memberships refer to, filled by the dimension listings of the API.
-- - A removal is a version of its own: user_channel_past_versions.is_deleted
--   marks the period a membership was gone, from the sweep that noticed it
--   to its return.  Such periods that ended before this migration are
--   recovered from the gaps between versions.
-- - membership_event_log: one row per change that a sweep observed (added,
--   removed, status_changed), written by sync_page().  The changes a user's
--   first listing brings are not events: first_seen_at tells when those
--   memberships were first seen.  Events are recovered from the history
--   already kept.
-- - sync_errors: every failure recorded on a cursor, kept (append-only).
-- - sync_config and sync_configured_users: the interval and the users the
--   daemon was last started or reloaded with, for sync_health.
-- - sync_user_failed() takes the kind of failure and the page.

CREATE TABLE services (
    service_sid   text PRIMARY KEY,
    account_sid   text,
    friendly_name text,
    date_created  timestamptz,
    date_updated  timestamptz,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    service_sid           text NOT NULL,
    user_sid              text NOT NULL,
    identity              text,
    friendly_name         text,
    role_sid              text,
    joined_channels_count integer CHECK (joined_channels_count >= 0),
    is_online             boolean,
    is_notifiable         boolean,
    attributes            text,          -- free text Twilio marks as PII: kept only if configured to
    date_created          timestamptz,
    date_updated          timestamptz,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz,
    PRIMARY KEY (service_sid, user_sid)
);
CREATE INDEX users_identity_idx ON users (service_sid, identity);

CREATE TABLE channels (
    service_sid    text NOT NULL,
    channel_sid    text NOT NULL,
    friendly_name  text,
    unique_name    text,
    type           text CHECK (type IN ('public', 'private')),
    created_by     text,
    attributes     text,                 -- free text Twilio marks as PII: kept only if configured to
    date_created   timestamptz,
    date_updated   timestamptz,
    members_count  integer CHECK (members_count >= 0),
    messages_count integer CHECK (messages_count >= 0),
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    PRIMARY KEY (service_sid, channel_sid)
);

ALTER TABLE user_channel_past_versions ADD COLUMN is_deleted boolean NOT NULL DEFAULT false;

-- Periods a membership was gone and then came back: the gap between the end
-- of one version and the start of the next.
WITH versions AS (
    SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status,
           last_consumed_message_index, unread_messages_count, channel_url, member_url,
           valid_from, valid_to
      FROM user_channel_past_versions
    UNION ALL
    SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status,
           last_consumed_message_index, unread_messages_count, channel_url, member_url,
           updated_at, NULL
      FROM user_channels WHERE deleted_at IS NULL
), ordered AS (
    SELECT v.*, lead(valid_from) OVER (PARTITION BY service_sid, user_sid, channel_sid
                                        ORDER BY valid_from) AS next_from
      FROM versions v
)
INSERT INTO user_channel_past_versions
       (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
        last_consumed_message_index, unread_messages_count, channel_url, member_url,
        valid_from, valid_to, is_deleted)
SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status,
       last_consumed_message_index, unread_messages_count, channel_url, member_url,
       valid_to, next_from, true
  FROM ordered
 WHERE valid_to IS NOT NULL AND next_from > valid_to;

CREATE INDEX user_channel_past_versions_valid_from_idx ON user_channel_past_versions (valid_from);
CREATE INDEX user_channel_past_versions_valid_to_idx ON user_channel_past_versions (valid_to);

CREATE TABLE membership_event_log (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL,
    service_sid text NOT NULL,
    user_sid    text NOT NULL,        -- as in user_channels
    channel_sid text NOT NULL,
    event       text NOT NULL CHECK (event IN ('added', 'removed', 'status_changed')),
    old_status  text,
    new_status  text
);
CREATE INDEX membership_event_log_at_idx ON membership_event_log (at);
CREATE INDEX membership_event_log_key_idx
    ON membership_event_log (service_sid, user_sid, channel_sid, at);

-- The events the history already shows.  A membership that a user's first
-- listing brought is not an event (as from now on); one first seen after
-- that listing (after the end of the sweep in which the user's first
-- membership was seen) was added, and so was a return after a removal.
WITH listed AS (
    SELECT f.service_sid, f.user_sid,
           coalesce((SELECT min(r.finished_at) FROM sync_runs r WHERE r.finished_at >= f.first),
                    f.first) AS by
      FROM (SELECT service_sid, user_sid, min(first_seen_at) AS first
              FROM user_channels GROUP BY service_sid, user_sid) f
), versions AS (
    SELECT service_sid, user_sid, channel_sid, status, valid_from, valid_to, is_deleted
      FROM user_channel_past_versions
    UNION ALL
    SELECT service_sid, user_sid, channel_sid, status, updated_at, NULL, false
      FROM user_channels WHERE deleted_at IS NULL
    UNION ALL
    SELECT service_sid, user_sid, channel_sid, status, deleted_at, NULL, true
      FROM user_channels WHERE deleted_at IS NOT NULL
), ordered AS (
    SELECT v.*, l.by AS listed_by,
           lag(is_deleted) OVER w AS prev_deleted,
           lag(status) OVER w AS prev_status,
           lag(valid_from) OVER w AS prev_from
      FROM versions v
      JOIN listed l USING (service_sid, user_sid)
    WINDOW w AS (PARTITION BY v.service_sid, v.user_sid, v.channel_sid ORDER BY v.valid_from)
)
INSERT INTO membership_event_log (at, service_sid, user_sid, channel_sid, event, old_status, new_status)
SELECT valid_from, service_sid, user_sid, channel_sid,
       CASE WHEN is_deleted THEN 'removed'
            WHEN prev_from IS NULL OR prev_deleted THEN 'added'
            ELSE 'status_changed' END,
       CASE WHEN prev_from IS NULL OR prev_deleted THEN NULL ELSE prev_status END,
       CASE WHEN is_deleted THEN NULL ELSE status END
  FROM ordered
 WHERE (prev_from IS NULL AND valid_from > listed_by AND NOT is_deleted)
    OR (prev_from IS NOT NULL
        AND (is_deleted OR prev_deleted OR status <> prev_status))
 ORDER BY valid_from;

CREATE TABLE sync_errors (
    error_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    service_sid text NOT NULL,
    "user"      text NOT NULL,        -- as configured
    page        integer,
    kind        text NOT NULL,
    message     text NOT NULL
);
CREATE INDEX sync_errors_at_idx ON sync_errors (at);

CREATE TABLE sync_config (
    only_row         boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    interval_seconds integer NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sync_configured_users (
    service_sid text NOT NULL,
    "user"      text NOT NULL,
    PRIMARY KEY (service_sid, "user")
);

DROP FUNCTION IF EXISTS sync_user_failed(bigint, text, text, text, integer, integer);

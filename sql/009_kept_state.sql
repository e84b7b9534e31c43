-- 009_kept_state: state kept as the sweeps go, for the questions that a scan
-- of the history answers too slowly once it holds millions of versions.
--
-- - user_channels.first_invited_at and first_joined_at: when the membership
--   was first seen invited, and first seen joined.  sync_page() sets them;
--   they outlive the versions that history.retention_days prunes.  The
--   partial index finds the invitations never followed by a join.
-- - channel_hourly: each channel's live memberships and their unread total
--   at the end of each hour in which a sweep finished (the last one of the
--   hour counts).  sync_channel_rollup() writes the current hour after each
--   sweep; the sweeps of one hour after the first only write the channels
--   whose totals changed.  Rows are ordered by hour first, so that a time
--   range of every channel is one range of the primary key.
-- - service_hourly: the same for each service, with its users (those with a
--   live membership) and channels.
-- - sync_user_keys: each user key with a cursor (a user as configured, or as
--   discovered) with the User SID, identity and name it stands for, as the
--   users listing resolves it.  Triggers on sync_cursors and users keep it
--   (functions/sync_user_keys.sql); the analyst views join it on its
--   primary key, so that a query that asks for no user column skips it.
-- - sync_kept_state: the last sweep rolled up into channel_hourly, and
--   whether the kept state was rebuilt from what the schema held before
--   this migration.  chatsyncd does that rebuild (sync_rebuild_kept_state())
--   right after the migrations, in their transaction.

ALTER TABLE user_channels ADD COLUMN first_invited_at timestamptz,
                          ADD COLUMN first_joined_at timestamptz;
CREATE INDEX user_channels_never_joined_idx ON user_channels (service_sid, user_sid, channel_sid)
    WHERE first_invited_at IS NOT NULL AND first_joined_at IS NULL;

CREATE TABLE channel_hourly (
    hour        timestamptz NOT NULL,   -- the hour's start
    service_sid text        NOT NULL,
    channel_sid text        NOT NULL,
    members     integer     NOT NULL CHECK (members > 0),
    unread      bigint,                 -- NULL when no membership reports an unread count
    PRIMARY KEY (hour, service_sid, channel_sid)
);
CREATE INDEX channel_hourly_channel_idx ON channel_hourly (channel_sid, hour);

CREATE TABLE service_hourly (
    hour        timestamptz NOT NULL,
    service_sid text        NOT NULL,
    users       integer,                -- NULL for the hours rebuilt from the history
    channels    integer     NOT NULL,
    memberships bigint      NOT NULL,
    unread      bigint,
    PRIMARY KEY (hour, service_sid)
);

CREATE TABLE sync_user_keys (
    service_sid text NOT NULL,
    configured  text NOT NULL,   -- the key of sync_cursors: a User SID or an identity
    user_sid    text NOT NULL,   -- the User SID it stands for; the key itself if unknown
    identity    text,
    user_name   text,
    PRIMARY KEY (service_sid, configured)
);
CREATE INDEX sync_user_keys_user_idx ON sync_user_keys (user_sid);

CREATE TABLE sync_kept_state (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    run_id     bigint,                  -- the last sweep rolled up
    rebuilt    boolean     NOT NULL DEFAULT false,
    stale      boolean     NOT NULL DEFAULT false,  -- see sync_rollup_mark_stale()
    rolled_at  timestamptz
);
INSERT INTO sync_kept_state DEFAULT VALUES;

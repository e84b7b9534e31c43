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
-- - sync_rollup_state: the last sweep rolled up, and whether both were
--   rebuilt from the history kept before this migration.  chatsyncd does
--   that rebuild (sync_rollup_rebuild()) right after the migrations, in
--   their transaction.

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

CREATE TABLE sync_rollup_state (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    run_id     bigint,                  -- the last sweep rolled up
    rebuilt    boolean     NOT NULL DEFAULT false,
    stale      boolean     NOT NULL DEFAULT false,  -- see sync_rollup_mark_stale()
    rolled_at  timestamptz
);
INSERT INTO sync_rollup_state DEFAULT VALUES;

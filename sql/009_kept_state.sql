-- 009_kept_state: what the sweeps keep for the analyst views, so that they
-- need not work it out of millions of versions at query time.
--
-- - user_channels.first_invited_at and first_joined_at: when the membership
--   was first seen invited, and first seen joined.  sync_page() sets them;
--   they outlive the versions that history.retention_days prunes.  The
--   partial index finds the invitations never followed by a join.
-- - sync_user_keys: each user key with a cursor (a user as configured, or as
--   discovered) with the User SID, identity and name it stands for, as the
--   users listing resolves it.  Triggers on sync_cursors and users keep it
--   (functions/sync_user_keys.sql); the analyst views join it on its
--   primary key, so that a query that asks for no user column skips it.
-- - sync_kept_state: whether both were rebuilt from what the schema held
--   before this migration.  chatsyncd does that rebuild
--   (sync_rebuild_kept_state()) right after the migrations, in their
--   transaction: the functions it calls come after the migrations.

-- user_channels_live_idx (007) goes: the views reach a user's memberships
-- through the primary key, and count every membership by scanning the
-- table, and the index cost each written membership an entry that its
-- unread count and status kept from being a HOT update.
DROP INDEX user_channels_live_idx;

ALTER TABLE user_channels ADD COLUMN first_invited_at timestamptz,
                          ADD COLUMN first_joined_at timestamptz;
CREATE INDEX user_channels_never_joined_idx ON user_channels (service_sid, user_sid, channel_sid)
    WHERE first_invited_at IS NOT NULL AND first_joined_at IS NULL;

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
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    rebuilt  boolean NOT NULL DEFAULT false
);
INSERT INTO sync_kept_state DEFAULT VALUES;

-- 004_current_versions: a membership's current version is stored once.
--
-- Until now every version was a row of user_channel_history, the current one
-- included, so each membership was written twice: its row in user_channels
-- and an identical open version.  The history table now keeps the versions
-- that ended (user_channel_past_versions); the current version of a live
-- membership is its user_channels row, valid since updated_at.
--
-- user_channel_history becomes a view over both
-- (sql/functions/user_channel_history.sql), with the columns it had and the
-- same rows, readable by whoever could read the table (chatsyncd grants
-- SELECT on a view to whoever could read the relation of that name before
-- the migrations).  Two things differ: history_id is NULL for current
-- versions (a version gets its id when it ends), and the view cannot be
-- written to (delete old versions from user_channel_past_versions).
--
-- The new sync_page() inserts new memberships with a plain INSERT, skips
-- comparing when the user has no rows yet, and copies a version to the past
-- only when it changes or ends.  The new sync_listing_unchanged() lets a
-- client that knows a one-page listing is unchanged move the cursor without
-- sending the page; listing_rows tells it how many memberships that listing
-- held.

DELETE FROM user_channel_history WHERE valid_to IS NULL;
DROP INDEX user_channel_history_current_idx;
ALTER TABLE user_channel_history RENAME TO user_channel_past_versions;
ALTER TABLE user_channel_past_versions
    RENAME CONSTRAINT user_channel_history_pkey TO user_channel_past_versions_pkey;
ALTER INDEX user_channel_history_key_idx RENAME TO user_channel_past_versions_key_idx;
ALTER TABLE user_channel_past_versions ALTER COLUMN valid_to SET NOT NULL;

-- How many distinct memberships the listing behind listing_digest held.
ALTER TABLE sync_cursors ADD COLUMN listing_rows integer;

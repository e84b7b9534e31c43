-- 007_analyst_indexes: indexes for the analyst views over a large history
-- (tests/bench/analyst.sh: ten thousand users, a million memberships, ten
-- million past versions).
--
-- - user_channels_live_idx: the live memberships of each user, with the
--   columns the questions add up (channel, status, unread count), so that
--   counting over every membership reads this index rather than the table
--   and its URLs.  Status and unread counts are its columns: a sweep that
--   changes them updates the index too (no HOT update).
-- - user_channels_channel_idx: by channel first, so that a channel is found
--   without its service as well ("who is in channel X?" as before).
-- - user_channel_past_versions_channel_idx, membership_event_log_channel_idx:
--   the history and the events of one channel; the versions by when they
--   ended, for the recent history of a channel.
CREATE INDEX user_channels_live_idx ON user_channels (service_sid, user_sid)
    INCLUDE (channel_sid, status, unread_messages_count) WHERE deleted_at IS NULL;
DROP INDEX user_channels_channel_idx;
CREATE INDEX user_channels_channel_idx ON user_channels (channel_sid, service_sid);
CREATE INDEX user_channel_past_versions_channel_idx
    ON user_channel_past_versions (channel_sid, valid_to);
CREATE INDEX membership_event_log_channel_idx ON membership_event_log (channel_sid, at);

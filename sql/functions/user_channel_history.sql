-- user_channel_history: every version of every membership (slowly changing
-- dimension, type 2): the past ones, and the current one of each live
-- membership (valid_to NULL, history_id NULL).  It has the columns of the
-- table it replaced in 004_current_versions; the periods a membership was
-- gone are left out (membership_history shows them).
--
-- CREATE OR REPLACE VIEW can add columns at the end but not drop, rename or
-- retype one.  A change of that kind, or a migration that changes a column
-- this view reads, drops the view first (DROP VIEW IF EXISTS); it is created
-- again here, and chatsyncd grants SELECT on it again to whoever could read
-- it before the migrations.
CREATE OR REPLACE VIEW user_channel_history AS
SELECT history_id, service_sid, user_sid, channel_sid, account_sid, member_sid, status,
       last_consumed_message_index, unread_messages_count, channel_url, member_url,
       valid_from, valid_to
  FROM user_channel_past_versions
 WHERE NOT is_deleted
UNION ALL
SELECT NULL::bigint, service_sid, user_sid, channel_sid, account_sid, member_sid, status,
       last_consumed_message_index, unread_messages_count, channel_url, member_url,
       updated_at, NULL::timestamptz
  FROM user_channels
 WHERE deleted_at IS NULL;

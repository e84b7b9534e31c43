-- 011_notification_level: the user's notification level of each membership
-- (default or muted), which Chat v2 sends with every channel of a user's
-- listing.  IP Messaging v1 has no such field: its memberships keep NULL.
-- The level is a value like the others: a change of it makes a past
-- version.
--
-- sync_page() takes the levels as a last argument (NULL for none, so that
-- a call written for the former signature still works); the former
-- signature goes, and functions/sync_page.sql creates the new one.
ALTER TABLE user_channels ADD COLUMN notification_level text;
ALTER TABLE user_channel_past_versions ADD COLUMN notification_level text;

DROP FUNCTION IF EXISTS sync_page(bigint, text, text, boolean, text, text[], text[], text[],
                                  text[], bigint[], bigint[], text[], text[], integer, integer,
                                  integer, text);

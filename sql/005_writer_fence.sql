-- 005_writer_fence: the fencing epoch of the schema's writer.
--
-- One chatsyncd writes to a schema: the one whose control connection holds
-- the schema's advisory lock.  Its pages are committed on other
-- connections, which cannot see that lock.  Each time a chatsyncd takes the
-- lock it adds one to epoch and tells every connection of its own the new
-- value (the session setting chatsync.epoch); sync_page() and
-- sync_listing_unchanged() apply a page only while the session's value is
-- the current one, read under a row lock (see functions/sync_fence.sql).  A
-- chatsyncd that lost its lock, and whose writer connections still work,
-- can then commit nothing once another has taken the lock.
CREATE TABLE sync_writer (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch    bigint NOT NULL DEFAULT 0,
    taken_at timestamptz
);
INSERT INTO sync_writer DEFAULT VALUES;

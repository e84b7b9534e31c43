-- sync_fence_take(): a chatsyncd that has just taken the schema's advisory
-- lock becomes the writer: the epoch moves on, and the new value is what
-- its sessions must carry in chatsync.epoch from now on.  The row lock
-- waits for writes of the former writer that are still running.
CREATE OR REPLACE FUNCTION sync_fence_take()
RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    UPDATE sync_writer SET epoch = epoch + 1, taken_at = now() RETURNING epoch;
$fn$;

-- sync_fence_stale(): is this session's chatsync.epoch not the current one?
-- The row is read FOR SHARE and kept locked until the transaction ends, so
-- no new writer can take over while a page of the current one is being
-- applied, and a page of a former one is refused.
CREATE OR REPLACE FUNCTION sync_fence_stale()
RETURNS boolean
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    SELECT w.epoch IS DISTINCT FROM nullif(current_setting('chatsync.epoch', true), '')::bigint
      FROM sync_writer w FOR SHARE;
$fn$;

-- The writer's fencing epoch (see 005_writer_fence.sql).  Table locks, not
-- row locks, keep it consistent: they live in the server's lock table only,
-- so checking the fence on every page writes nothing to the heap or the WAL.

-- sync_fence_take(): a chatsyncd that has just taken the schema's advisory
-- lock becomes the writer: the epoch moves on, and the new value is what
-- its sessions must carry in chatsync.epoch from now on.  EXCLUSIVE mode
-- waits for the pages still being applied under the old epoch (they hold
-- ROW SHARE), and holds new ones back until the new epoch is committed.
CREATE OR REPLACE FUNCTION sync_fence_take()
RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    LOCK TABLE sync_writer IN EXCLUSIVE MODE;
    UPDATE sync_writer SET epoch = epoch + 1, taken_at = now() RETURNING epoch;
$fn$;

-- sync_fence_stale(): is this session's chatsync.epoch not the current one?
-- The ROW SHARE lock is kept until the transaction ends, so no writer can
-- take over while a page of the current one is being applied, and a page of
-- a former one is refused.
CREATE OR REPLACE FUNCTION sync_fence_stale()
RETURNS boolean
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    LOCK TABLE sync_writer IN ROW SHARE MODE;
    SELECT w.epoch IS DISTINCT FROM nullif(current_setting('chatsync.epoch', true), '')::bigint
      FROM sync_writer w;
$fn$;

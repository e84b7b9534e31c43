-- A sweep's counters in sync_runs: sync_run_add() is the one place that
-- adds to them.

-- sync_run_add(): adds to the counters of run p_run_id (each argument that is
-- not given adds nothing) and, with p_finish, marks the run finished.
-- Returns the run's row as it now is; no row if there is no such run.  In
-- PL/pgSQL, which keeps the statement parsed: sync_page() calls it for every
-- page.
CREATE OR REPLACE FUNCTION sync_run_add(
    p_run_id bigint,
    p_users_ok integer DEFAULT 0, p_users_failed integer DEFAULT 0, p_pages bigint DEFAULT 0,
    p_received bigint DEFAULT 0, p_inserted bigint DEFAULT 0, p_updated bigint DEFAULT 0,
    p_unchanged bigint DEFAULT 0, p_deleted bigint DEFAULT 0, p_rejected bigint DEFAULT 0,
    p_requests bigint DEFAULT 0, p_retries bigint DEFAULT 0, p_finish boolean DEFAULT false)
RETURNS SETOF sync_runs
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    RETURN QUERY
    UPDATE sync_runs r
       SET users_ok = r.users_ok + p_users_ok,
           users_failed = r.users_failed + p_users_failed,
           pages = r.pages + p_pages,
           rows_received = r.rows_received + p_received,
           rows_inserted = r.rows_inserted + p_inserted,
           rows_updated = r.rows_updated + p_updated,
           rows_unchanged = r.rows_unchanged + p_unchanged,
           rows_deleted = r.rows_deleted + p_deleted,
           rows_rejected = r.rows_rejected + p_rejected,
           http_requests = r.http_requests + p_requests,
           http_retries = r.http_retries + p_retries,
           finished_at = CASE WHEN p_finish THEN coalesce(r.finished_at, now()) ELSE r.finished_at END
     WHERE r.run_id = p_run_id
    RETURNING r.*;
END
$fn$;

-- sync_run_finish(): the end of a sweep: the requests and retries not counted
-- with a page or a user yet, and finished_at.  Returns the run's row with its
-- totals; no row if there is no such run.
CREATE OR REPLACE FUNCTION sync_run_finish(p_run_id bigint, p_requests integer, p_retries integer)
RETURNS SETOF sync_runs
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    SELECT * FROM sync_run_add(p_run_id, p_requests => p_requests, p_retries => p_retries,
                               p_finish => true);
$fn$;

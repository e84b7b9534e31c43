-- sync_user_failed(): records that a user's listing failed in this run; its
-- cursor stays where it was.
CREATE OR REPLACE FUNCTION sync_user_failed(
    p_run_id bigint, p_service text, p_user text, p_error text,
    p_requests integer, p_retries integer)
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    INSERT INTO sync_cursors AS c
           (service_sid, user_sid, run_id, state, last_error, last_error_at)
    VALUES (p_service, p_user, p_run_id, 'failed', p_error, now())
    ON CONFLICT (service_sid, user_sid) DO UPDATE
       SET run_id = EXCLUDED.run_id, state = 'failed', last_error = EXCLUDED.last_error,
           last_error_at = EXCLUDED.last_error_at, updated_at = now();
    SELECT FROM sync_run_add(p_run_id, p_users_failed => 1, p_requests => p_requests,
                             p_retries => p_retries);
$fn$;

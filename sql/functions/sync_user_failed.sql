-- sync_user_error(): records an error for a user, on its cursor (without
-- moving it or ending the user's part in the sweep: the credentials refused,
-- say) and in sync_errors.  p_kind says what failed ('http 404',
-- 'transport', 'parse', 'database', 'limit', ...), p_page on which page of
-- the listing (NULL: before any).  Returns false, and records nothing, if
-- the caller's lease token p_lease is not the user's (see sync_leases.sql).
CREATE OR REPLACE FUNCTION sync_user_error(
    p_run_id bigint, p_service text, p_user text, p_error text, p_kind text, p_page integer,
    p_lease bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    IF NOT sync_user_lease_held(p_service, p_user, p_lease) THEN
        RETURN false;
    END IF;
    INSERT INTO sync_cursors AS c
           (service_sid, user_sid, run_id, state, last_error, last_error_at)
    VALUES (p_service, p_user, p_run_id, 'running', p_error, now())
    ON CONFLICT (service_sid, user_sid) DO UPDATE
       SET last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at,
           updated_at = now();
    INSERT INTO sync_errors (service_sid, "user", page, kind, message)
    VALUES (p_service, p_user, p_page, p_kind, p_error);
    RETURN true;
END
$fn$;

-- sync_user_failed(): the user's listing failed in this run: the error is
-- recorded as above, and the user's part in the sweep ends (its cursor stays
-- where it was; the next sweep resumes it), with its lease.  false, and
-- nothing done, as for sync_user_error().
CREATE OR REPLACE FUNCTION sync_user_failed(
    p_run_id bigint, p_service text, p_user text, p_error text,
    p_requests integer, p_retries integer, p_kind text, p_page integer,
    p_lease bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    IF NOT sync_user_error(p_run_id, p_service, p_user, p_error, p_kind, p_page, p_lease) THEN
        RETURN false;
    END IF;
    UPDATE sync_cursors
       SET run_id = p_run_id, state = 'failed', lease_instance = NULL, lease_expires_at = NULL
     WHERE service_sid = p_service AND user_sid = p_user;
    PERFORM sync_run_add(p_run_id, p_users_failed => 1, p_requests => p_requests,
                         p_retries => p_retries);
    RETURN true;
END
$fn$;

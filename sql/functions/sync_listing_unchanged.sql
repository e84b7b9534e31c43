-- sync_listing_unchanged(): a one-page listing whose digest equals the one on
-- the user's cursor holds exactly what the table holds: only the cursor and
-- the run's counters move.  Returns the number of memberships it left
-- unchanged, or NULL (nothing done) if the cursor's digest is not p_digest;
-- the client then sends the page to sync_page(); or -1 (nothing done) if the
-- caller's lease token p_lease is not the user's (see sync_leases.sql).  The
-- lease ends with the listing.
CREATE OR REPLACE FUNCTION sync_listing_unchanged(
    p_run_id bigint, p_service text, p_user text, p_digest text, p_received integer,
    p_rejected integer, p_requests integer, p_retries integer, p_lease bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_rows integer;
BEGIN
    IF NOT sync_user_lease_held(p_service, p_user, p_lease) THEN
        RETURN -1;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_service || '/' || p_user));
    UPDATE sync_cursors
       SET run_id = p_run_id, state = 'complete', next_page_url = NULL, pages_done = 1,
           last_complete_at = now(), last_error = NULL, last_error_at = NULL,
           lease_instance = NULL, lease_expires_at = NULL, updated_at = now()
     WHERE service_sid = p_service AND user_sid = p_user
       AND listing_digest = p_digest AND listing_rows IS NOT NULL
    RETURNING listing_rows INTO v_rows;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM sync_run_add(p_run_id, p_pages => 1, p_users_ok => 1,
                         p_received => p_received + p_rejected, p_unchanged => v_rows,
                         p_rejected => p_rejected, p_requests => p_requests,
                         p_retries => p_retries);
    RETURN v_rows;
END
$fn$;

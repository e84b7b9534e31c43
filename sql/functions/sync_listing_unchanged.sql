-- sync_listing_unchanged(): a listing whose pages' digests all equal those
-- stored for the user's last complete listing holds exactly what the table
-- holds: only the cursor and the run's counters move.  p_digests are the
-- digests of its pages, in order: of a listing on one page, the one on the
-- cursor; of one on several, those of sync_listing_pages.  Returns the
-- number of entries it left unchanged, or NULL (nothing done) if the stored
-- digests are not p_digests or that listing was not complete (the client
-- then sends the last page to sync_page()); or -1 (nothing done) if the
-- caller's lease token p_lease is not the user's (see sync_leases.sql).
-- p_received counts the entries of every page.  The lease ends with the
-- listing.
CREATE OR REPLACE FUNCTION sync_listing_unchanged(
    p_run_id bigint, p_service text, p_user text, p_digests text[], p_received integer,
    p_rejected integer, p_requests integer, p_retries integer, p_lease bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_pages integer := coalesce(cardinality(p_digests), 0);
    v_rows  integer;
BEGIN
    IF NOT sync_user_lease_held(p_service, p_user, p_lease) THEN
        RETURN -1;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_service || '/' || p_user));
    IF v_pages > 1 AND p_digests IS DISTINCT FROM
           (SELECT array_agg(p.digest ORDER BY p.page_no) FROM sync_listing_pages p
             WHERE p.service_sid = p_service AND p.user_sid = p_user) THEN
        RETURN NULL;
    END IF;
    -- The last listing applied was complete: listing_rows is set when one
    -- ends, and cleared when one goes on past a page (a failure leaves it).
    UPDATE sync_cursors
       SET run_id = p_run_id, state = 'complete', next_page_url = NULL, pages_done = v_pages,
           last_complete_at = now(), last_error = NULL, last_error_at = NULL,
           lease_instance = NULL, lease_expires_at = NULL, updated_at = now()
     WHERE service_sid = p_service AND user_sid = p_user
       AND v_pages >= 1 AND listing_rows IS NOT NULL
       AND CASE WHEN v_pages = 1 THEN listing_digest = p_digests[1]
                ELSE listing_digest IS NULL AND pages_done = v_pages END
    RETURNING listing_rows INTO v_rows;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM sync_run_add(p_run_id, p_pages => v_pages, p_users_ok => 1,
                         p_received => p_received + p_rejected, p_unchanged => v_rows,
                         p_rejected => p_rejected, p_requests => p_requests,
                         p_retries => p_retries);
    RETURN v_rows;
END
$fn$;

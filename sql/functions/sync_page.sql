-- sync_memberships_gone(): the end of a complete listing of a user's
-- memberships, or of the user (deleted: p_listed empty): its live
-- memberships not listed are marked deleted.  Listed are the channels of
-- p_listed and, when p_last_page (the number of the listing's last page) is
-- more than 1, those its earlier pages listed (sync_listing_pages).  Each
-- one's version is copied to user_channel_past_versions, and with p_events
-- a 'removed' event is logged (not for a user's first listing).  Returns
-- how many.  The caller holds the user's advisory lock (see sync_page()).
CREATE OR REPLACE FUNCTION sync_memberships_gone(
    p_service text, p_user text, p_listed text[], p_last_page integer, p_events boolean)
RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = auto SET enable_seqscan = off
AS $fn$
DECLARE
    v_deleted integer;
BEGIN
    WITH gone AS (
        SELECT uc.*
          FROM user_channels uc
         WHERE uc.service_sid = p_service AND uc.user_sid = p_user
           AND uc.deleted_at IS NULL
           AND uc.channel_sid NOT IN (
                   SELECT unnest(p_listed)
                   UNION ALL
                   SELECT unnest(p.listed)
                     FROM sync_listing_pages p
                    WHERE p_last_page > 1
                      AND p.service_sid = p_service AND p.user_sid = p_user
                      AND p.page_no < p_last_page)
    ), archived AS (
        INSERT INTO user_channel_past_versions
               (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                last_consumed_message_index, unread_messages_count, channel_url,
                member_url, notification_level, valid_from, valid_to)
        SELECT g.service_sid, g.user_sid, g.channel_sid, g.account_sid, g.member_sid,
               g.status, g.last_consumed_message_index, g.unread_messages_count,
               g.channel_url, g.member_url, g.notification_level, g.updated_at, now()
          FROM gone g
    ), marked AS (
        UPDATE user_channels uc
           SET deleted_at = now(), updated_at = now()
          FROM gone g
         WHERE uc.service_sid = p_service AND uc.user_sid = p_user
           AND uc.channel_sid = g.channel_sid
    ), events AS (
        INSERT INTO membership_event_log
               (at, service_sid, user_sid, channel_sid, event, old_status, new_status)
        SELECT now(), g.service_sid, g.user_sid, g.channel_sid, 'removed', g.status, NULL
          FROM gone g
         WHERE p_events
    )
    SELECT count(*) INTO v_deleted FROM gone;
    RETURN v_deleted;
END
$fn$;

-- sync_listing_begin(): the start of applying a page of a user's listing,
-- for sync_page() and sync_conversations_page().  Nothing is done, and
-- events is NULL, if the caller's lease token p_lease is not the user's
-- (see sync_user_lease_held() in sync_leases.sql).  Else the user's
-- advisory lock is taken (two pages of one user are never applied at once,
-- even without a lease); events says whether the user had a complete
-- listing before (its changes are then events), and page_no is the page's
-- number: p_page, or else 1 for a first page and the one after the
-- cursor's for another.
--
-- On a last page (p_next_url NULL) after others, the listing's earlier
-- pages must all be in sync_listing_pages, since they say what it listed;
-- and those the client skipped as unchanged (p_earlier: the digest it saw
-- for each, by number, NULL for a page it sent) must still have those
-- digests.  Anything else is an error, and nothing is deleted on a guess.
CREATE OR REPLACE FUNCTION sync_listing_begin(
    p_service text, p_user text, p_first boolean, p_next_url text, p_lease bigint,
    p_page integer, p_earlier text[], OUT events boolean, OUT page_no integer)
LANGUAGE plpgsql SET search_path FROM CURRENT
SET plan_cache_mode = auto SET enable_seqscan = off AS $fn$
DECLARE
    v_events boolean;
    v_page   integer;
BEGIN
    IF NOT sync_user_lease_held(p_service, p_user, p_lease) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_service || '/' || p_user));
    SELECT c.last_complete_at IS NOT NULL,
           coalesce(p_page, CASE WHEN p_first THEN 1 ELSE c.pages_done + 1 END)
      INTO v_events, v_page
      FROM sync_cursors c
     WHERE c.service_sid = p_service AND c.user_sid = p_user;
    IF NOT FOUND THEN
        v_events := false;
        v_page := coalesce(p_page, 1);
    END IF;
    IF p_next_url IS NULL AND v_page > 1 THEN
        IF (SELECT count(*) FROM sync_listing_pages p
             WHERE p.service_sid = p_service AND p.user_sid = p_user
               AND p.page_no < v_page) <> v_page - 1 THEN
            RAISE EXCEPTION 'service %, user %: page % ends a listing whose earlier pages '
                            'are not all stored', p_service, p_user, v_page;
        END IF;
        IF EXISTS (SELECT FROM unnest(p_earlier) WITH ORDINALITY AS e(digest, n)
                     LEFT JOIN sync_listing_pages p
                            ON p.service_sid = p_service AND p.user_sid = p_user
                           AND p.page_no = e.n
                    WHERE e.digest IS NOT NULL AND p.digest IS DISTINCT FROM e.digest) THEN
            RAISE EXCEPTION 'service %, user %: pages skipped as unchanged are not the '
                            'stored ones', p_service, p_user;
        END IF;
    END IF;
    events := v_events;
    page_no := v_page;
END
$fn$;

-- sync_listing_advance(): the end of applying page p_page of a listing, once
-- its rows and (on a last page) its deletions are done.  A page of a listing
-- on several pages is recorded in sync_listing_pages: its digest p_digest,
-- its entries, the SIDs it listed (p_listed) and its next page p_next_url;
-- a last page drops the rows of pages after it, and a listing on one page
-- keeps its digest, and the p_distinct rows it stands for, on the cursor.  The cursor moves; the run
-- counts the page, and the p_skipped_pages pages before it that the client
-- found unchanged, with their p_skipped_rows entries.
CREATE OR REPLACE FUNCTION sync_listing_advance(
    p_run_id bigint, p_service text, p_user text, p_page integer, p_next_url text,
    p_listed text[], p_digest text, p_distinct integer, p_rejected integer,
    p_requests integer, p_retries integer, p_inserted integer, p_updated integer,
    p_unchanged integer, p_deleted integer, p_skipped_pages integer, p_skipped_rows integer)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT
SET plan_cache_mode = auto SET enable_seqscan = off AS $fn$
DECLARE
    v_single boolean := p_page = 1 AND p_next_url IS NULL;
    v_entries integer := coalesce(cardinality(p_listed), 0);
    v_rows integer;  -- of a complete listing: what the unchanged shortcut counts
BEGIN
    IF v_single THEN
        v_rows := CASE WHEN p_digest IS NOT NULL THEN p_distinct END;
    ELSIF p_next_url IS NULL THEN
        v_rows := v_entries + coalesce((SELECT sum(p.entries) FROM sync_listing_pages p
                                         WHERE p.service_sid = p_service
                                           AND p.user_sid = p_user
                                           AND p.page_no < p_page), 0);
    END IF;
    INSERT INTO sync_cursors AS c
           (service_sid, user_sid, run_id, state, next_page_url, pages_done,
            last_complete_at, listing_digest, listing_rows, updated_at)
    VALUES (p_service, p_user, p_run_id,
            CASE WHEN p_next_url IS NULL THEN 'complete' ELSE 'running' END,
            p_next_url, p_page,
            CASE WHEN p_next_url IS NULL THEN now() END,
            CASE WHEN v_single THEN p_digest END, v_rows, now())
    ON CONFLICT (service_sid, user_sid) DO UPDATE
       SET run_id = EXCLUDED.run_id,
           state = EXCLUDED.state,
           next_page_url = EXCLUDED.next_page_url,
           pages_done = EXCLUDED.pages_done,
           last_complete_at = coalesce(EXCLUDED.last_complete_at, c.last_complete_at),
           listing_digest = EXCLUDED.listing_digest,
           listing_rows = EXCLUDED.listing_rows,
           last_error = CASE WHEN p_next_url IS NULL THEN NULL ELSE c.last_error END,
           last_error_at = CASE WHEN p_next_url IS NULL THEN NULL ELSE c.last_error_at END,
           lease_instance = CASE WHEN p_next_url IS NULL THEN NULL ELSE c.lease_instance END,
           lease_expires_at = CASE WHEN p_next_url IS NULL THEN NULL ELSE c.lease_expires_at END,
           updated_at = now();

    IF v_single THEN
        DELETE FROM sync_listing_pages
         WHERE service_sid = p_service AND user_sid = p_user;
    ELSE
        INSERT INTO sync_listing_pages AS p
               (service_sid, user_sid, page_no, digest, entries, listed, next_page_url)
        VALUES (p_service, p_user, p_page, p_digest, v_entries, coalesce(p_listed, '{}'),
                p_next_url)
        ON CONFLICT (service_sid, user_sid, page_no) DO UPDATE
           SET digest = EXCLUDED.digest, entries = EXCLUDED.entries, listed = EXCLUDED.listed,
               next_page_url = EXCLUDED.next_page_url;
        IF p_next_url IS NULL THEN
            DELETE FROM sync_listing_pages
             WHERE service_sid = p_service AND user_sid = p_user AND page_no > p_page;
        END IF;
    END IF;

    PERFORM sync_run_add(p_run_id, p_pages => 1 + p_skipped_pages,
                         p_users_ok => (p_next_url IS NULL)::integer,
                         p_received => v_entries + p_rejected + p_skipped_rows,
                         p_inserted => p_inserted, p_updated => p_updated,
                         p_unchanged => p_unchanged + p_skipped_rows, p_deleted => p_deleted,
                         p_rejected => p_rejected, p_requests => p_requests,
                         p_retries => p_retries);
END
$fn$;

-- sync_page(): applies one page of a user's listing and advances its cursor,
-- atomically.  p_next_url NULL means this was the listing's last page:
-- memberships not listed by any of its pages are then marked deleted
-- (sync_memberships_gone()).  A
-- caller whose lease token p_lease is not the user's (its lease was taken
-- over: see sync_leases.sql) changes nothing and gets NULL counts.
--
-- New memberships go in with a plain INSERT: the page holds the user's
-- advisory lock and its cursor's row lock (sync_listing_begin()), so no
-- other session adds the same key meanwhile.  A version is copied to
-- user_channel_past_versions only when it changes or ends; the first time it
-- is seen invited, and joined, is kept on its row.  p_digest, the page's
-- digest, is kept on the cursor for a listing on one page, with the number
-- of memberships it held, and in sync_listing_pages for a page of several
-- (see sync_listing_advance() and sync_listing_unchanged.sql).
-- p_notification_level, the notification level Chat v2 sends with each
-- membership, may be NULL (none: IP Messaging v1).  p_page is the page's
-- number (NULL: the one after the cursor's); p_earlier, on a last page, the
-- digests of the pages the client skipped as unchanged (checked by
-- sync_listing_begin()), and p_skipped_pages and p_skipped_rows what they
-- held, for the run's counters.
--
-- PL/pgSQL keeps each statement's plan (plan_cache_mode auto), made without
-- sequential scans (enable_seqscan off): a plan made while the tables were
-- small would scan them whole, and each page of a first sweep would cost
-- more than the one before.  Every statement here reads a user's rows by
-- their key.
CREATE OR REPLACE FUNCTION sync_page(
    p_run_id bigint, p_service text, p_user text, p_first boolean, p_next_url text,
    p_channel text[], p_account text[], p_member text[], p_status text[],
    p_lcmi bigint[], p_unread bigint[], p_channel_url text[], p_member_url text[],
    p_rejected integer, p_requests integer, p_retries integer, p_digest text,
    p_notification_level text[] DEFAULT NULL, p_lease bigint DEFAULT NULL,
    p_page integer DEFAULT NULL, p_earlier text[] DEFAULT NULL,
    p_skipped_pages integer DEFAULT 0, p_skipped_rows integer DEFAULT 0,
    OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = auto SET enable_seqscan = off
AS $fn$
DECLARE
    v_distinct integer;
    v_single   boolean;
    v_empty    boolean := false;  -- the user has no stored membership at all
    v_fresh    boolean := false;  -- none of the page's memberships is stored for the user
    v_events   boolean;           -- not the user's first listing: changes are events
    v_page     integer;           -- the page's number in the listing
BEGIN
    SELECT b.events, b.page_no INTO v_events, v_page
      FROM sync_listing_begin(p_service, p_user, p_first, p_next_url, p_lease, p_page,
                              p_earlier) AS b;
    IF v_events IS NULL THEN
        RETURN;  -- the lease was taken over
    END IF;
    v_single := v_page = 1 AND p_next_url IS NULL;
    -- The plain INSERT writes no events: only for a first listing.  It
    -- stores the page when none of its memberships is stored for the user.
    -- Else (an earlier page listed one of them) it fails on the key, its
    -- subtransaction alone is undone, and the page is compared as always.
    IF NOT v_events THEN
        IF p_first THEN
            v_empty := NOT EXISTS (SELECT 1 FROM user_channels
                                    WHERE service_sid = p_service AND user_sid = p_user);
        END IF;
        BEGIN
            INSERT INTO user_channels
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url,
                    member_url, notification_level, first_invited_at, first_joined_at)
            SELECT DISTINCT ON (t.channel_sid)
                   p_service, p_user, t.channel_sid, t.account_sid, t.member_sid, t.status,
                   t.lcmi, t.unread, t.channel_url, t.member_url, t.notification_level,
                   CASE WHEN t.status = 'invited' THEN now() END,
                   CASE WHEN t.status = 'joined' THEN now() END
              FROM unnest(p_channel, p_account, p_member, p_status, p_lcmi, p_unread,
                          p_channel_url, p_member_url, p_notification_level) WITH ORDINALITY
                   AS t(channel_sid, account_sid, member_sid, status, lcmi, unread,
                        channel_url, member_url, notification_level, ord)
             ORDER BY t.channel_sid, t.ord DESC;
            GET DIAGNOSTICS inserted = ROW_COUNT;
            v_fresh := true;
        EXCEPTION WHEN unique_violation THEN
            v_fresh := false;
        END;
    END IF;

    IF v_fresh THEN
        updated := 0;
        v_distinct := inserted;
    ELSE
        -- All parts of one statement see the tables as they were before it, so
        -- "archived" copies the versions that "modified" replaces.
        WITH incoming AS (
            SELECT DISTINCT ON (t.channel_sid) t.*
              FROM unnest(p_channel, p_account, p_member, p_status, p_lcmi, p_unread,
                          p_channel_url, p_member_url, p_notification_level) WITH ORDINALITY
                   AS t(channel_sid, account_sid, member_sid, status, lcmi, unread,
                        channel_url, member_url, notification_level, ord)
             ORDER BY t.channel_sid, t.ord DESC
        ), changed AS (
            SELECT i.*, uc.channel_sid IS NOT NULL AS existed,
                   uc.deleted_at AS old_deleted_at, uc.status AS old_status
              FROM incoming i
              LEFT JOIN user_channels uc
                     ON uc.service_sid = p_service AND uc.user_sid = p_user
                    AND uc.channel_sid = i.channel_sid
             WHERE uc.channel_sid IS NULL
                OR uc.deleted_at IS NOT NULL
                OR (uc.account_sid, uc.member_sid, uc.status, uc.last_consumed_message_index,
                    uc.unread_messages_count, uc.channel_url, uc.member_url,
                    uc.notification_level)
                   IS DISTINCT FROM
                   (i.account_sid, i.member_sid, i.status, i.lcmi, i.unread,
                    i.channel_url, i.member_url, i.notification_level)
        ), added AS (
            INSERT INTO user_channels
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url,
                    notification_level, first_invited_at, first_joined_at)
            SELECT p_service, p_user, c.channel_sid, c.account_sid, c.member_sid, c.status,
                   c.lcmi, c.unread, c.channel_url, c.member_url, c.notification_level,
                   CASE WHEN c.status = 'invited' THEN now() END,
                   CASE WHEN c.status = 'joined' THEN now() END
              FROM changed c
             WHERE NOT c.existed
            RETURNING 1
        ), archived AS (
            INSERT INTO user_channel_past_versions
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url,
                    notification_level, valid_from, valid_to)
            SELECT uc.service_sid, uc.user_sid, uc.channel_sid, uc.account_sid, uc.member_sid,
                   uc.status, uc.last_consumed_message_index, uc.unread_messages_count,
                   uc.channel_url, uc.member_url, uc.notification_level, uc.updated_at, now()
              FROM changed c
              JOIN user_channels uc
                ON uc.service_sid = p_service AND uc.user_sid = p_user
               AND uc.channel_sid = c.channel_sid
             WHERE c.existed AND uc.deleted_at IS NULL
        ), removal_ended AS (
            -- A membership that comes back: the time it was gone is a version of its own.
            INSERT INTO user_channel_past_versions
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url,
                    notification_level, valid_from, valid_to, is_deleted)
            SELECT uc.service_sid, uc.user_sid, uc.channel_sid, uc.account_sid, uc.member_sid,
                   uc.status, uc.last_consumed_message_index, uc.unread_messages_count,
                   uc.channel_url, uc.member_url, uc.notification_level, uc.deleted_at, now(),
                   true
              FROM changed c
              JOIN user_channels uc
                ON uc.service_sid = p_service AND uc.user_sid = p_user
               AND uc.channel_sid = c.channel_sid
             WHERE c.existed AND uc.deleted_at IS NOT NULL
        ), events AS (
            INSERT INTO membership_event_log
                   (at, service_sid, user_sid, channel_sid, event, old_status, new_status)
            SELECT now(), p_service, p_user, c.channel_sid,
                   CASE WHEN NOT c.existed OR c.old_deleted_at IS NOT NULL THEN 'added'
                        ELSE 'status_changed' END,
                   CASE WHEN c.existed AND c.old_deleted_at IS NULL THEN c.old_status END,
                   c.status
              FROM changed c
             WHERE v_events
               AND (NOT c.existed OR c.old_deleted_at IS NOT NULL
                    -- a NULL status (none sent, or one of an unexpected type) is no change
                    OR (c.old_status <> c.status))
        ), modified AS (
            UPDATE user_channels uc
               SET account_sid = c.account_sid,
                   member_sid = c.member_sid,
                   status = c.status,
                   last_consumed_message_index = c.lcmi,
                   unread_messages_count = c.unread,
                   channel_url = c.channel_url,
                   member_url = c.member_url,
                   notification_level = c.notification_level,
                   updated_at = now(),
                   deleted_at = NULL,
                   first_invited_at = coalesce(uc.first_invited_at,
                                               CASE WHEN c.status = 'invited' THEN now() END),
                   first_joined_at = coalesce(uc.first_joined_at,
                                              CASE WHEN c.status = 'joined' THEN now() END)
              FROM changed c
             WHERE c.existed
               AND uc.service_sid = p_service AND uc.user_sid = p_user
               AND uc.channel_sid = c.channel_sid
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM modified),
               (SELECT count(*) FROM incoming)
          INTO inserted, updated, v_distinct;
    END IF;
    unchanged := v_distinct - inserted - updated;

    deleted := 0;
    -- A user's first listing, on one page, can have left nothing behind.
    IF p_next_url IS NULL AND NOT (v_empty AND v_single) THEN
        deleted := sync_memberships_gone(p_service, p_user, p_channel, v_page, v_events);
    END IF;

    PERFORM sync_listing_advance(p_run_id, p_service, p_user, v_page, p_next_url, p_channel,
                                 p_digest, v_distinct, p_rejected, p_requests, p_retries,
                                 inserted, updated, unchanged, deleted, p_skipped_pages,
                                 p_skipped_rows);
END
$fn$;

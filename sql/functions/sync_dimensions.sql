-- The dimension listings of a service: the service itself, its users and its
-- channels, into services, users and channels (see 008_dimension_sync.sql),
-- and the users configured by identity resolved to their User SID.
--
-- Each page is committed with one call that carries the caller's lease
-- token (see sync_leases.sql): a caller whose lease was taken over changes
-- nothing and gets NULL counts; a session whose instance is no longer live
-- gets one NULL row from sync_resolve_users().  A row
-- is written only when one of its values changed: an unchanged listing
-- writes nothing to services, users or channels, only its cursor moves.
-- first_seen_at is set when a row is first stored, updated_at whenever a
-- value changes, and deleted_at when a complete listing no longer shows it
-- (cleared if it comes back).  A dimension listing adds its HTTP requests
-- and retries to the run; its pages and rows are not counted there (the
-- run's other counters are those of memberships).

-- sync_dimension_begin(): the start of a call for listing p_listing
-- ('service', 'users' or 'channels') of a service: false, and nothing done,
-- if the caller's lease token p_lease is not the listing's (see
-- sync_dimension_lease_held() in sync_leases.sql); else the listing's
-- advisory lock is taken (two calls for one listing are never applied at
-- once, even without a lease).
CREATE OR REPLACE FUNCTION sync_dimension_begin(p_service text, p_listing text, p_lease bigint)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    IF NOT sync_dimension_lease_held(p_service, p_listing, p_lease) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()),
                                  hashtext(p_service || '/@' || p_listing));
    RETURN true;
END
$fn$;

-- sync_dimension_page_no(): the number of the page of the listing being
-- stored: 1 for a first page, else one past the pages its cursor counts.
CREATE OR REPLACE FUNCTION sync_dimension_page_no(p_service text, p_listing text, p_first boolean)
RETURNS integer
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    SELECT CASE WHEN p_first THEN 1
                ELSE coalesce((SELECT c.pages_done + 1 FROM sync_dimension_cursors c
                                WHERE c.service_sid = p_service AND c.listing = p_listing), 1)
           END;
$fn$;

-- sync_dimension_page_known(): is this page (its number as above) the one
-- the listing showed there last time, by its digest?  Its entries then need
-- no comparing: the rows are as stored.
CREATE OR REPLACE FUNCTION sync_dimension_page_known(
    p_service text, p_listing text, p_first boolean, p_digest text)
RETURNS boolean
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    SELECT p_digest IS NOT NULL AND EXISTS (
        SELECT FROM sync_dimension_pages p
         WHERE p.service_sid = p_service AND p.listing = p_listing
           AND p.page = sync_dimension_page_no(p_service, p_listing, p_first)
           AND p.digest = p_digest);
$fn$;

-- sync_dimension_advance(): the end of a page of a listing: the cursor
-- moves (running with the next page, or complete, its error cleared), and
-- the run counts the page's requests and retries.
CREATE OR REPLACE FUNCTION sync_dimension_advance(
    p_run_id bigint, p_service text, p_listing text, p_first boolean, p_next_url text,
    p_requests integer, p_retries integer)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_last boolean := p_next_url IS NULL;
BEGIN
    INSERT INTO sync_dimension_cursors (service_sid, listing, run_id, state)
    VALUES (p_service, p_listing, p_run_id, 'running')
    ON CONFLICT (service_sid, listing) DO NOTHING;
    UPDATE sync_dimension_cursors
       SET run_id = p_run_id, next_page_url = p_next_url, updated_at = now(),
           state = CASE WHEN v_last THEN 'complete' ELSE 'running' END,
           pages_done = CASE WHEN p_first THEN 1 ELSE pages_done + 1 END,
           last_complete_at = CASE WHEN v_last THEN now() ELSE last_complete_at END,
           last_error = CASE WHEN v_last THEN NULL ELSE last_error END,
           last_error_at = CASE WHEN v_last THEN NULL ELSE last_error_at END,
           lease_instance = CASE WHEN v_last THEN NULL ELSE lease_instance END,
           lease_expires_at = CASE WHEN v_last THEN NULL ELSE lease_expires_at END
     WHERE service_sid = p_service AND listing = p_listing;
    PERFORM sync_run_add(p_run_id, p_requests => p_requests, p_retries => p_retries);
END
$fn$;

-- sync_service_row(): the service as GET /v1/Services/{IS} returns it.
-- changed is 1 if its row was stored or changed, 0 if it was already so.
-- The 'service' listing is complete for this run.
CREATE OR REPLACE FUNCTION sync_service_row(
    p_run_id bigint, p_service text, p_account text, p_friendly_name text,
    p_date_created timestamptz, p_date_updated timestamptz, p_requests integer,
    p_retries integer, p_lease bigint DEFAULT NULL, OUT changed integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    IF NOT sync_dimension_begin(p_service, 'service', p_lease) THEN
        RETURN;
    END IF;
    UPDATE services
       SET account_sid = p_account, friendly_name = p_friendly_name,
           date_created = p_date_created, date_updated = p_date_updated, updated_at = now()
     WHERE service_sid = p_service
       AND (account_sid, friendly_name, date_created, date_updated)
           IS DISTINCT FROM (p_account, p_friendly_name, p_date_created, p_date_updated);
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed = 0 THEN
        INSERT INTO services (service_sid, account_sid, friendly_name, date_created, date_updated)
        VALUES (p_service, p_account, p_friendly_name, p_date_created, p_date_updated)
        ON CONFLICT (service_sid) DO NOTHING;
        GET DIAGNOSTICS changed = ROW_COUNT;
    END IF;
    PERFORM sync_dimension_advance(p_run_id, p_service, 'service', true, NULL,
                                   p_requests, p_retries);
END
$fn$;

-- sync_dimension_page(): one page of the users or channels listing of a
-- service, into the table of that name.  p_rows are rows of that table:
-- the service, the SID and the values the listing sent (the other columns
-- are not read); NULL when the page is known (sync_dimension_page_known():
-- p_count entries, all unchanged).  Of several rows with one SID, the last
-- counts.  A row is inserted if new, updated if one of its values differs
-- from the one stored (every column but the service, the SID,
-- first_seen_at, updated_at and deleted_at, compared with IS DISTINCT FROM)
-- or it had been deleted, and left alone otherwise.  The page's digest and
-- SIDs are kept in sync_dimension_pages.  On the last page (p_next_url
-- NULL), the pages past it are dropped, and the rows of the service not
-- deleted that no page of the listing shows are marked deleted; gone holds
-- their SIDs.  The statement is built from the table's columns: each is
-- stored and compared, none left out (a column added to the table later is
-- too, once its page function fills it).
CREATE OR REPLACE FUNCTION sync_dimension_page(
    p_run_id bigint, p_service text, p_listing text, p_first boolean, p_next_url text,
    p_rows anyarray, p_digest text, p_count integer, p_requests integer, p_retries integer,
    p_lease bigint, OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer,
    OUT gone text[])
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_key      name := CASE p_listing WHEN 'users' THEN 'user_sid'
                                      WHEN 'channels' THEN 'channel_sid' END;
    v_page     integer := sync_dimension_page_no(p_service, p_listing, p_first);
    v_cols     text;     -- the columns of values
    v_stored   text;     -- the same, of the stored row (t)
    v_new      text;     -- the same, of the row received (n)
    v_distinct integer;  -- rows received, one per SID
    v_sids     text[];   -- their SIDs
BEGIN
    IF NOT sync_dimension_begin(p_service, p_listing, p_lease) THEN
        RETURN;
    END IF;
    inserted := 0;
    updated := 0;
    unchanged := coalesce(p_count, 0);
    IF p_rows IS NOT NULL THEN
        SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('t.%I', a.attname), ', ' ORDER BY a.attnum),
               string_agg(format('n.%I', a.attname), ', ' ORDER BY a.attnum)
          INTO v_cols, v_stored, v_new
          FROM pg_attribute a
         WHERE a.attrelid = p_listing::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname NOT IN ('service_sid', v_key, 'first_seen_at', 'updated_at',
                                 'deleted_at');

        -- $1 the rows, $2 the service.
        EXECUTE format($sql$
            WITH incoming AS (
                SELECT DISTINCT ON (r.%2$I) r.*
                  FROM unnest($1) WITH ORDINALITY AS r
                 WHERE r.%2$I IS NOT NULL
                 ORDER BY r.%2$I, r.ordinality DESC
            ), changed AS (
                SELECT n.*, t.%2$I IS NOT NULL AS existed
                  FROM incoming n
                  LEFT JOIN %1$I t ON t.service_sid = $2 AND t.%2$I = n.%2$I
                 WHERE t.%2$I IS NULL OR t.deleted_at IS NOT NULL
                    OR (%4$s) IS DISTINCT FROM (%5$s)
            ), added AS (
                INSERT INTO %1$I (service_sid, %2$I, %3$s)
                SELECT $2, n.%2$I, %5$s FROM changed n WHERE NOT n.existed
                RETURNING 1
            ), modified AS (
                UPDATE %1$I t SET (%3$s) = ROW(%5$s), updated_at = now(), deleted_at = NULL
                  FROM changed n
                 WHERE n.existed AND t.service_sid = $2 AND t.%2$I = n.%2$I
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM modified),
                   (SELECT count(*) FROM incoming), (SELECT array_agg(i.%2$I) FROM incoming i)
            $sql$, p_listing, v_key, v_cols, v_stored, v_new)
           INTO inserted, updated, v_distinct, v_sids
          USING p_rows, p_service;
        unchanged := v_distinct - inserted - updated;
        INSERT INTO sync_dimension_pages AS p (service_sid, listing, page, digest, sids)
        VALUES (p_service, p_listing, v_page, p_digest, coalesce(v_sids, '{}'))
        ON CONFLICT (service_sid, listing, page)
        DO UPDATE SET digest = EXCLUDED.digest, sids = EXCLUDED.sids;
    END IF;

    deleted := 0;
    IF p_next_url IS NULL THEN
        DELETE FROM sync_dimension_pages
         WHERE service_sid = p_service AND listing = p_listing AND page > v_page;
        EXECUTE format($sql$
            WITH marked AS (
                UPDATE %1$I t SET deleted_at = now(), updated_at = now()
                 WHERE t.service_sid = $1 AND t.deleted_at IS NULL
                   AND t.%2$I NOT IN (SELECT unnest(p.sids) FROM sync_dimension_pages p
                                       WHERE p.service_sid = $1 AND p.listing = %1$L)
                RETURNING t.%2$I AS sid
            )
            SELECT array_agg(m.sid) FROM marked m
            $sql$, p_listing, v_key)
           INTO gone
          USING p_service;
        deleted := coalesce(cardinality(gone), 0);
    END IF;

    PERFORM sync_dimension_advance(p_run_id, p_service, p_listing, p_first, p_next_url,
                                   p_requests, p_retries);
END
$fn$;

-- sync_users_page(): one page of the users listing of a service (GET
-- /v1/Services/{IS}/Users), as sync_dimension_page() stores it; p_next_url
-- NULL means it was the last.  Counts users: inserted, updated (a deleted
-- one that comes back included), unchanged and deleted.  A negative
-- joined_channels_count is stored as NULL.
--
-- The live memberships and conversations of a user marked deleted are
-- marked deleted too, as when a user's listing no longer shows a channel
-- (sync_memberships_gone()) or a conversation (sync_conversations_gone()):
-- those stored under its User SID, and those under its identity (a user
-- configured by identity and not resolved yet) unless a user of the service
-- not deleted has that identity.
CREATE OR REPLACE FUNCTION sync_users_page(
    p_run_id bigint, p_service text, p_first boolean, p_next_url text,
    p_sid text[], p_account text[], p_identity text[], p_friendly_name text[],
    p_role_sid text[], p_joined integer[], p_is_online boolean[], p_is_notifiable boolean[],
    p_attributes text[], p_date_created timestamptz[], p_date_updated timestamptz[],
    p_requests integer, p_retries integer, p_digest text DEFAULT NULL,
    p_lease bigint DEFAULT NULL, OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE plpgsql SET search_path FROM CURRENT SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    v_rows   users[]; -- the page's entries, unless the page is known
    v_gone   text[];  -- the users marked deleted
    v_key    text;
    v_events boolean; -- the key's listing completed before: removals are events
BEGIN
    IF NOT sync_dimension_page_known(p_service, 'users', p_first, p_digest) THEN
        v_rows := array(SELECT jsonb_populate_record(NULL::users, jsonb_build_object(
                            'service_sid', p_service, 'user_sid', t.sid,
                            'account_sid', t.account, 'identity', t.identity,
                            'friendly_name', t.friendly_name, 'role_sid', t.role_sid,
                            'joined_channels_count', CASE WHEN t.joined >= 0 THEN t.joined END,
                            'is_online', t.is_online, 'is_notifiable', t.is_notifiable,
                            'attributes', t.attributes, 'date_created', t.date_created,
                            'date_updated', t.date_updated))
                   FROM unnest(p_sid, p_account, p_identity, p_friendly_name, p_role_sid,
                               p_joined, p_is_online, p_is_notifiable, p_attributes,
                               p_date_created, p_date_updated) WITH ORDINALITY
                        AS t(sid, account, identity, friendly_name, role_sid, joined,
                             is_online, is_notifiable, attributes, date_created,
                             date_updated, ord)
                  ORDER BY t.ord);
    END IF;
    SELECT d.inserted, d.updated, d.unchanged, d.deleted, d.gone
      INTO inserted, updated, unchanged, deleted, v_gone
      FROM sync_dimension_page(p_run_id, p_service, 'users', p_first, p_next_url, v_rows,
                               p_digest, cardinality(p_sid), p_requests, p_retries, p_lease) d;

    -- Each key under its advisory lock, taken in one order.
    FOR v_key IN
        SELECT DISTINCT k.key
          FROM users u
          CROSS JOIN LATERAL (VALUES (u.user_sid), (u.identity)) AS k(key)
         WHERE u.service_sid = p_service AND u.user_sid = ANY (v_gone)
           AND k.key IS NOT NULL
           AND NOT EXISTS (SELECT FROM users o
                            WHERE o.service_sid = p_service AND o.identity = k.key
                              AND o.deleted_at IS NULL)
           AND (EXISTS (SELECT FROM user_channels uc
                         WHERE uc.service_sid = p_service AND uc.user_sid = k.key
                           AND uc.deleted_at IS NULL)
                OR EXISTS (SELECT FROM user_conversations uc
                            WHERE uc.service_sid = p_service AND uc.user_sid = k.key
                              AND uc.deleted_at IS NULL))
         ORDER BY k.key
    LOOP
        PERFORM pg_advisory_xact_lock(hashtext(current_schema()),
                                      hashtext(p_service || '/' || v_key));
        v_events := EXISTS (SELECT FROM sync_cursors c
                             WHERE c.service_sid = p_service AND c.user_sid = v_key
                               AND c.last_complete_at IS NOT NULL);
        PERFORM sync_memberships_gone(p_service, v_key, '{}', NULL, v_events);
        PERFORM sync_conversations_gone(p_service, v_key, '{}', NULL, v_events);
        -- The table no longer holds the listing its digests stand for.
        UPDATE sync_cursors SET listing_digest = NULL, listing_rows = NULL
         WHERE service_sid = p_service AND user_sid = v_key;
        UPDATE sync_listing_pages SET digest = NULL
         WHERE service_sid = p_service AND user_sid = v_key AND digest IS NOT NULL;
    END LOOP;
END
$fn$;

-- sync_channels_page(): one page of the channels listing of a service,
-- public and private, as sync_dimension_page() stores it; counts as
-- sync_users_page(), without touching memberships (those come from each
-- user's own listing).  A type other than public or private, and a
-- negative count, are stored as NULL.
CREATE OR REPLACE FUNCTION sync_channels_page(
    p_run_id bigint, p_service text, p_first boolean, p_next_url text,
    p_sid text[], p_friendly_name text[], p_unique_name text[], p_type text[],
    p_created_by text[], p_members_count integer[], p_messages_count integer[],
    p_attributes text[], p_date_created timestamptz[], p_date_updated timestamptz[],
    p_requests integer, p_retries integer, p_digest text DEFAULT NULL,
    p_lease bigint DEFAULT NULL, OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    SELECT d.inserted, d.updated, d.unchanged, d.deleted
      FROM sync_dimension_page(
               p_run_id, p_service, 'channels', p_first, p_next_url,
               CASE WHEN NOT sync_dimension_page_known(p_service, 'channels', p_first, p_digest)
               THEN array(SELECT jsonb_populate_record(NULL::channels, jsonb_build_object(
                                'service_sid', p_service, 'channel_sid', t.sid,
                                'friendly_name', t.friendly_name, 'unique_name', t.unique_name,
                                'type', CASE WHEN t.type IN ('public', 'private') THEN t.type END,
                                'created_by', t.created_by, 'attributes', t.attributes,
                                'date_created', t.date_created, 'date_updated', t.date_updated,
                                'members_count',
                                CASE WHEN t.members_count >= 0 THEN t.members_count END,
                                'messages_count',
                                CASE WHEN t.messages_count >= 0 THEN t.messages_count END))
                       FROM unnest(p_sid, p_friendly_name, p_unique_name, p_type, p_created_by,
                                   p_members_count, p_messages_count, p_attributes,
                                   p_date_created, p_date_updated) WITH ORDINALITY
                            AS t(sid, friendly_name, unique_name, type, created_by,
                                 members_count, messages_count, attributes, date_created,
                                 date_updated, ord)
                      ORDER BY t.ord) END,
               p_digest, cardinality(p_sid), p_requests, p_retries, p_lease) d;
$fn$;

-- sync_dimension_failed(): listing p_listing ('service', 'users' or
-- 'channels') of a service failed in this run: its cursor keeps its
-- position (the next sweep resumes there) with state failed and the error,
-- the error goes to sync_errors with "user" '@' || p_listing ('@service',
-- '@users', '@channels'), and the run counts the requests and retries.
-- p_kind and p_page as for sync_user_error().  Nothing is done if the
-- caller's lease token p_lease is not the listing's; else the lease ends.
CREATE OR REPLACE FUNCTION sync_dimension_failed(
    p_run_id bigint, p_service text, p_listing text,
    p_error text, p_kind text, p_page integer, p_requests integer, p_retries integer,
    p_lease bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    IF NOT sync_dimension_begin(p_service, p_listing, p_lease) THEN
        RETURN;
    END IF;
    INSERT INTO sync_dimension_cursors AS c
           (service_sid, listing, run_id, state, last_error, last_error_at)
    VALUES (p_service, p_listing, p_run_id, 'failed', p_error, now())
    ON CONFLICT (service_sid, listing) DO UPDATE
       SET run_id = EXCLUDED.run_id, state = EXCLUDED.state,
           last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at,
           lease_instance = NULL, lease_expires_at = NULL, updated_at = now();
    INSERT INTO sync_errors (service_sid, "user", page, kind, message)
    VALUES (p_service, '@' || p_listing, p_page, p_kind, p_error);
    PERFORM sync_run_add(p_run_id, p_requests => p_requests, p_retries => p_retries);
END
$fn$;

-- sync_merge_conversations(): the conversations part of sync_merge_user(),
-- the same for user_conversations, their past versions and events as it
-- does for memberships; p_win is the key whose data wins where both keys
-- hold a conversation.  Returns the number of conversations moved or
-- dropped.  The caller holds both keys' advisory locks, and moves the
-- cursor and its listing's pages.
CREATE OR REPLACE FUNCTION sync_merge_conversations(
    p_service text, p_identity text, p_sid text, p_win text)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    v_lose    text := CASE WHEN p_win = p_sid THEN p_identity ELSE p_sid END;
    v_dropped integer;
    v_moved   integer;
BEGIN
    CREATE TEMPORARY TABLE IF NOT EXISTS sync_merge_conversation_overlap
        (conversation_sid text PRIMARY KEY, win_from timestamptz, win_first timestamptz)
        ON COMMIT DROP;
    TRUNCATE sync_merge_conversation_overlap;
    INSERT INTO sync_merge_conversation_overlap
    SELECT w.conversation_sid, w.first_seen_at, least(w.first_seen_at, l.first_seen_at)
      FROM user_conversations w
      JOIN user_conversations l
        ON l.service_sid = p_service AND l.user_sid = v_lose
       AND l.conversation_sid = w.conversation_sid
     WHERE w.service_sid = p_service AND w.user_sid = p_win;

    -- The loser's current version, where it began before the winner's history.
    INSERT INTO user_conversation_past_versions
           (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
            conversation_state, notification_level, unread_messages_count,
            last_read_message_index, friendly_name, unique_name, created_by, date_created,
            date_updated, date_inactive, date_closed, url, conversation_url, participant_url,
            valid_from, valid_to, is_deleted)
    SELECT l.service_sid, l.user_sid, l.conversation_sid, l.account_sid, l.participant_sid,
           l.conversation_state, l.notification_level, l.unread_messages_count,
           l.last_read_message_index, l.friendly_name, l.unique_name, l.created_by,
           l.date_created, l.date_updated, l.date_inactive, l.date_closed, l.url,
           l.conversation_url, l.participant_url,
           coalesce(l.deleted_at, l.updated_at), o.win_from, l.deleted_at IS NOT NULL
      FROM user_conversations l
      JOIN sync_merge_conversation_overlap o ON o.conversation_sid = l.conversation_sid
     WHERE l.service_sid = p_service AND l.user_sid = v_lose
       AND coalesce(l.deleted_at, l.updated_at) < o.win_from;
    -- Its past versions: cut where the winner's begins, gone from there on.
    DELETE FROM user_conversation_past_versions v
     USING sync_merge_conversation_overlap o
     WHERE v.service_sid = p_service AND v.user_sid = v_lose
       AND v.conversation_sid = o.conversation_sid AND v.valid_from >= o.win_from;
    UPDATE user_conversation_past_versions v SET valid_to = o.win_from
      FROM sync_merge_conversation_overlap o
     WHERE v.service_sid = p_service AND v.user_sid = v_lose
       AND v.conversation_sid = o.conversation_sid AND v.valid_to > o.win_from;
    DELETE FROM conversation_event_log e
     USING sync_merge_conversation_overlap o
     WHERE e.service_sid = p_service AND e.user_sid = v_lose
       AND e.conversation_sid = o.conversation_sid AND e.at >= o.win_from;
    DELETE FROM user_conversations l
     USING sync_merge_conversation_overlap o
     WHERE l.service_sid = p_service AND l.user_sid = v_lose
       AND l.conversation_sid = o.conversation_sid;
    GET DIAGNOSTICS v_dropped = ROW_COUNT;
    UPDATE user_conversations w SET first_seen_at = o.win_first
      FROM sync_merge_conversation_overlap o
     WHERE w.service_sid = p_service AND w.user_sid = p_win
       AND w.conversation_sid = o.conversation_sid AND w.first_seen_at <> o.win_first;

    UPDATE user_conversation_past_versions SET user_sid = p_sid
     WHERE service_sid = p_service AND user_sid = p_identity;
    UPDATE conversation_event_log SET user_sid = p_sid
     WHERE service_sid = p_service AND user_sid = p_identity;
    UPDATE user_conversations SET user_sid = p_sid
     WHERE service_sid = p_service AND user_sid = p_identity;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_dropped + v_moved;
END
$fn$;

-- sync_merge_user(): the user configured by identity p_identity is User SID
-- p_sid: what is stored under (p_service, p_identity) is stored under p_sid
-- from now on (memberships and conversations, their past versions and
-- events, the cursor and the channels or conversations a listing in
-- progress has seen; sync_errors keeps the user as configured).  Where both
-- keys hold a channel, or a conversation (the user was configured both
-- ways, at once or one after the other), the key with a cursor wins, or of
-- two the one whose last listing completed later: its membership stays, and
-- of the other's history what comes before the winner first saw the channel
-- is kept (its current version archived up to then); the rest covers the
-- same time and goes.  first_seen_at is the earlier of the two.  The
-- winner's cursor stays, the other goes; the cursor keeps no digest (the
-- next listing is sent whole) and, if it was the identity's, no next page
-- (a URL of the identity's listing: a listing in progress starts again).
-- Returns the number of memberships and conversations moved or dropped;
-- NULL, and nothing done, if the session's instance is no longer live
-- (sync_fence_stale()).
CREATE OR REPLACE FUNCTION sync_merge_user(p_service text, p_identity text, p_sid text)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    v_win     text;  -- the key whose data wins where both have a channel
    v_lose    text;
    v_dropped integer;
    v_moved   integer;
BEGIN
    IF sync_fence_stale() THEN
        RETURN NULL;
    END IF;
    IF p_identity = p_sid THEN
        RETURN 0;
    END IF;
    -- Both keys' locks, as sync_page() takes them, in one order.
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_service || '/' || k))
       FROM unnest(ARRAY[p_identity, p_sid]) AS k ORDER BY k;
    -- The key with a cursor, or of two the one whose last listing completed later.
    SELECT CASE WHEN s.user_sid IS NULL AND i.user_sid IS NOT NULL THEN p_identity
                WHEN i.user_sid IS NULL THEN p_sid
                WHEN coalesce(i.last_complete_at, '-infinity')
                     > coalesce(s.last_complete_at, '-infinity') THEN p_identity
                ELSE p_sid END
      INTO v_win
      FROM (SELECT) one
      LEFT JOIN sync_cursors i ON i.service_sid = p_service AND i.user_sid = p_identity
      LEFT JOIN sync_cursors s ON s.service_sid = p_service AND s.user_sid = p_sid;
    v_lose := CASE WHEN v_win = p_sid THEN p_identity ELSE p_sid END;

    CREATE TEMPORARY TABLE IF NOT EXISTS sync_merge_overlap
        (channel_sid text PRIMARY KEY, win_from timestamptz, win_first timestamptz,
         first_invited timestamptz, first_joined timestamptz)
        ON COMMIT DROP;
    TRUNCATE sync_merge_overlap;
    INSERT INTO sync_merge_overlap
    SELECT w.channel_sid, w.first_seen_at, least(w.first_seen_at, l.first_seen_at),
           least(w.first_invited_at, l.first_invited_at), least(w.first_joined_at, l.first_joined_at)
      FROM user_channels w
      JOIN user_channels l
        ON l.service_sid = p_service AND l.user_sid = v_lose AND l.channel_sid = w.channel_sid
     WHERE w.service_sid = p_service AND w.user_sid = v_win;

    -- The loser's current version, where it began before the winner's history.
    INSERT INTO user_channel_past_versions
           (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
            last_consumed_message_index, unread_messages_count, channel_url, member_url,
            notification_level, valid_from, valid_to, is_deleted)
    SELECT l.service_sid, l.user_sid, l.channel_sid, l.account_sid, l.member_sid, l.status,
           l.last_consumed_message_index, l.unread_messages_count, l.channel_url, l.member_url,
           l.notification_level, coalesce(l.deleted_at, l.updated_at), o.win_from,
           l.deleted_at IS NOT NULL
      FROM user_channels l
      JOIN sync_merge_overlap o ON o.channel_sid = l.channel_sid
     WHERE l.service_sid = p_service AND l.user_sid = v_lose
       AND coalesce(l.deleted_at, l.updated_at) < o.win_from;
    -- Its past versions: cut where the winner's begins, gone from there on.
    DELETE FROM user_channel_past_versions v
     USING sync_merge_overlap o
     WHERE v.service_sid = p_service AND v.user_sid = v_lose AND v.channel_sid = o.channel_sid
       AND v.valid_from >= o.win_from;
    UPDATE user_channel_past_versions v SET valid_to = o.win_from
      FROM sync_merge_overlap o
     WHERE v.service_sid = p_service AND v.user_sid = v_lose AND v.channel_sid = o.channel_sid
       AND v.valid_to > o.win_from;
    DELETE FROM membership_event_log e
     USING sync_merge_overlap o
     WHERE e.service_sid = p_service AND e.user_sid = v_lose AND e.channel_sid = o.channel_sid
       AND e.at >= o.win_from;
    DELETE FROM user_channels l
     USING sync_merge_overlap o
     WHERE l.service_sid = p_service AND l.user_sid = v_lose AND l.channel_sid = o.channel_sid;
    GET DIAGNOSTICS v_dropped = ROW_COUNT;
    UPDATE user_channels w
       SET first_seen_at = o.win_first, first_invited_at = o.first_invited,
           first_joined_at = o.first_joined
      FROM sync_merge_overlap o
     WHERE w.service_sid = p_service AND w.user_sid = v_win AND w.channel_sid = o.channel_sid
       AND (w.first_seen_at, w.first_invited_at, w.first_joined_at)
           IS DISTINCT FROM (o.win_first, o.first_invited, o.first_joined);

    UPDATE user_channel_past_versions SET user_sid = p_sid
     WHERE service_sid = p_service AND user_sid = p_identity;
    UPDATE membership_event_log SET user_sid = p_sid
     WHERE service_sid = p_service AND user_sid = p_identity;
    UPDATE user_channels SET user_sid = p_sid
     WHERE service_sid = p_service AND user_sid = p_identity;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    v_dropped := v_dropped + sync_merge_conversations(p_service, p_identity, p_sid, v_win);

    -- The winner's cursor under the SID, the other's gone.  Their pages go
    -- with them (sync_listing_pages follows its cursor), none
    -- to be skipped: the table no longer holds what their digests stand for.
    UPDATE sync_listing_pages SET digest = NULL
     WHERE service_sid = p_service AND user_sid IN (p_identity, p_sid) AND digest IS NOT NULL;
    DELETE FROM sync_cursors c
     WHERE c.service_sid = p_service AND c.user_sid = v_lose
       AND EXISTS (SELECT FROM sync_cursors w
                    WHERE w.service_sid = p_service AND w.user_sid = v_win);
    UPDATE sync_cursors
       SET next_page_url = CASE WHEN user_sid = p_identity THEN NULL ELSE next_page_url END,
           pages_done = CASE WHEN user_sid = p_identity AND state = 'running' THEN 0
                             ELSE pages_done END,
           user_sid = p_sid, listing_digest = NULL, listing_rows = NULL, updated_at = now()
     WHERE service_sid = p_service AND user_sid IN (p_identity, p_sid);
    RETURN v_dropped + v_moved;
END
$fn$;

-- sync_identity_user(): the User SID of the service's user with identity
-- p_identity, as the users listing has it: of several, the one not deleted,
-- else the last updated, then the greatest SID (the rule of sync_user_keys
-- too); NULL if the listing knows no such identity.
--
-- PL/pgSQL, with its plan kept (plan_cache_mode auto): a SQL function that
-- cannot be inlined is planned again at every call, and this one is called
-- for every user of a users listing and every cursor a first sweep adds.
CREATE OR REPLACE FUNCTION sync_identity_user(p_service text, p_identity text)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT SET plan_cache_mode = auto
AS $fn$
BEGIN
    RETURN (SELECT u.user_sid FROM users u
             WHERE u.service_sid = p_service AND u.identity = p_identity
             ORDER BY u.deleted_at IS NULL DESC, u.updated_at DESC, u.user_sid DESC
             LIMIT 1);
END
$fn$;

-- sync_stored_under(): is anything stored under user key p_key of the
-- service (a cursor, memberships or conversations)?
CREATE OR REPLACE FUNCTION sync_stored_under(p_service text, p_key text)
RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $fn$
    SELECT EXISTS (SELECT FROM sync_cursors c
                    WHERE c.service_sid = p_service AND c.user_sid = p_key)
        OR EXISTS (SELECT FROM user_channels uc
                    WHERE uc.service_sid = p_service AND uc.user_sid = p_key)
        OR EXISTS (SELECT FROM user_conversations uc
                    WHERE uc.service_sid = p_service AND uc.user_sid = p_key);
$fn$;

-- sync_resolve_users(): the keys chatsyncd lists the memberships of service
-- p_service under, in order.  With p_all, every user of the service the
-- users listing shows (not deleted), by User SID, what is stored under their
-- identities merged into them.  Else each of p_users (as
-- configured), in order, the first of duplicates kept: a User SID is
-- itself; an identity the users listing knows is that user's SID (of
-- several users with that identity, the one not deleted, else the last
-- updated, then the greatest User SID, as in sync_user_keys), and what
-- is stored under the identity is merged into it (sync_merge_user()); an
-- identity it does not know stays as it is.  One NULL row, nothing merged,
-- if the session's instance is no longer live (sync_fence_stale()).
CREATE OR REPLACE FUNCTION sync_resolve_users(p_service text, p_users text[], p_all boolean)
RETURNS TABLE (user_key text)
LANGUAGE plpgsql SET search_path FROM CURRENT SET plan_cache_mode = force_custom_plan
AS $fn$
DECLARE
    v_configured text[];
    v_keys       text[];
    v_user       text;
    v_sid        text;
BEGIN
    IF sync_fence_stale() THEN
        user_key := NULL;  -- one NULL row: refused, nothing merged
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_all THEN
        -- What an earlier configuration stored under an identity moves to its SID.
        FOR v_user, v_sid IN
            SELECT u.identity, u.user_sid FROM users u
             WHERE u.service_sid = p_service AND u.deleted_at IS NULL
               AND u.identity IS NOT NULL AND u.identity <> u.user_sid
               AND sync_identity_user(p_service, u.identity) = u.user_sid
               AND sync_stored_under(p_service, u.identity)
             ORDER BY u.user_sid
        LOOP
            PERFORM sync_merge_user(p_service, v_user, v_sid);
        END LOOP;
        RETURN QUERY
        SELECT u.user_sid FROM users u
         WHERE u.service_sid = p_service AND u.deleted_at IS NULL
         ORDER BY u.user_sid;
        RETURN;
    END IF;

    SELECT array_agg(x.configured ORDER BY x.ord),
           array_agg(coalesce(CASE WHEN x.configured !~ '^US[0-9a-fA-F]{32}$'
                                   THEN sync_identity_user(p_service, x.configured) END,
                              x.configured) ORDER BY x.ord)
      INTO v_configured, v_keys
      FROM unnest(p_users) WITH ORDINALITY AS x(configured, ord)
     WHERE x.configured IS NOT NULL;

    -- The identities resolved under which something is stored.
    FOR v_user, v_sid IN
        SELECT t.configured, t.key
          FROM unnest(v_configured, v_keys) WITH ORDINALITY AS t(configured, key, ord)
         WHERE t.key <> t.configured AND sync_stored_under(p_service, t.configured)
         ORDER BY t.ord
    LOOP
        PERFORM sync_merge_user(p_service, v_user, v_sid);
    END LOOP;

    RETURN QUERY
    SELECT t.key FROM unnest(v_keys) WITH ORDINALITY AS t(key, ord)
     GROUP BY t.key ORDER BY min(t.ord);
END
$fn$;

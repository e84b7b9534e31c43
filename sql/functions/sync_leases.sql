-- Several chatsyncd on one schema (see 012_leases.sql): the instances, the
-- sweep they share, and the leases on the users and dimension listings they
-- claim.

-- sync_instance_register(): a chatsyncd starts working on the schema: its
-- row in sync_instances, live for p_seconds.  Returns its instance_id,
-- which its sessions carry in the setting chatsync.instance.  Rows of
-- instances gone for a week are dropped.
CREATE OR REPLACE FUNCTION sync_instance_register(
    p_name text, p_hostname text, p_pid integer, p_started_at timestamptz, p_seconds integer)
RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_id bigint;
BEGIN
    DELETE FROM sync_instances WHERE expires_at < now() - interval '7 days';
    INSERT INTO sync_instances (name, hostname, pid, started_at, expires_at)
    VALUES (p_name, p_hostname, p_pid, p_started_at, now() + make_interval(secs => p_seconds))
    RETURNING instance_id INTO v_id;
    RETURN v_id;
END
$fn$;

-- sync_instance_heartbeat(): the instance is alive for p_seconds more (or,
-- with p_stop, stops: it no longer counts as live).  Returns how many
-- instances are live now, itself included; 0 if its row is gone.
CREATE OR REPLACE FUNCTION sync_instance_heartbeat(
    p_instance bigint, p_seconds integer, p_stop boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    UPDATE sync_instances
       SET heartbeat_at = now(),
           expires_at = CASE WHEN p_stop THEN now() ELSE now() + make_interval(secs => p_seconds) END,
           stopped_at = CASE WHEN p_stop THEN now() END
     WHERE instance_id = p_instance;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    RETURN (SELECT count(*) FROM sync_instances
             WHERE stopped_at IS NULL AND expires_at > now()) + (CASE WHEN p_stop THEN 1 ELSE 0 END);
END
$fn$;

-- sync_fence_stale(): is this session's instance (the setting
-- chatsync.instance) no longer live?  Its row was dropped, or it has not
-- been heard of for longer than its lease: what it does outside the
-- leases (merging what is stored under an identity into its User SID) is
-- refused.  A session that names no instance is never stale.
CREATE OR REPLACE FUNCTION sync_fence_stale()
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $fn$
DECLARE
    v_instance bigint := nullif(current_setting('chatsync.instance', true), '')::bigint;
BEGIN
    RETURN v_instance IS NOT NULL
       AND NOT EXISTS (SELECT FROM sync_instances i
                        WHERE i.instance_id = v_instance AND i.expires_at > now());
END
$fn$;

-- sync_lease_valid(): may a caller with lease token p_lease write a listing
-- whose cursor holds p_token, p_instance and p_expires (read under its row
-- lock)?  With a token: only if it is the cursor's.  Without one (a tool,
-- a test): only while no lease on it is live.
CREATE OR REPLACE FUNCTION sync_lease_valid(
    p_lease bigint, p_token bigint, p_instance bigint, p_expires timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $fn$
    SELECT CASE WHEN p_lease IS NOT NULL THEN p_token IS NOT DISTINCT FROM p_lease
                ELSE p_instance IS NULL OR p_expires IS NULL OR p_expires <= now() END;
$fn$;

-- sync_user_lease_held(): takes the row lock of the user's cursor and says
-- whether p_lease may write its listing (sync_lease_valid()); a user
-- without a cursor may be written only without a token.
CREATE OR REPLACE FUNCTION sync_user_lease_held(p_service text, p_user text, p_lease bigint)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    c record;
BEGIN
    SELECT lease_token, lease_instance, lease_expires_at INTO c
      FROM sync_cursors WHERE service_sid = p_service AND user_sid = p_user
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN p_lease IS NULL;
    END IF;
    RETURN sync_lease_valid(p_lease, c.lease_token, c.lease_instance, c.lease_expires_at);
END
$fn$;

-- sync_dimension_lease_held(): the same for a dimension listing's cursor.
CREATE OR REPLACE FUNCTION sync_dimension_lease_held(
    p_service text, p_listing text, p_lease bigint)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    c record;
BEGIN
    SELECT lease_token, lease_instance, lease_expires_at INTO c
      FROM sync_dimension_cursors WHERE service_sid = p_service AND listing = p_listing
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN p_lease IS NULL;
    END IF;
    RETURN sync_lease_valid(p_lease, c.lease_token, c.lease_instance, c.lease_expires_at);
END
$fn$;

-- sync_run_join(): the sweep instance p_instance is to work on.  The open
-- sweep if there is one (resumed: true); else, if the last one started at
-- least p_interval seconds ago (less one second), or p_force, a new one
-- (resumed: false); else no run, and wait_seconds until it may begin.
-- Under an advisory lock: two instances never open two sweeps at once.
CREATE OR REPLACE FUNCTION sync_run_join(
    p_instance bigint, p_interval integer, p_force boolean,
    OUT run_id bigint, OUT resumed boolean, OUT wait_seconds double precision)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_last timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext('sync_runs'));
    SELECT r.run_id INTO run_id FROM sync_runs r
     WHERE r.finished_at IS NULL ORDER BY r.run_id DESC LIMIT 1;
    resumed := FOUND;
    IF NOT resumed THEN
        SELECT max(r.started_at) INTO v_last FROM sync_runs r;
        wait_seconds := extract(epoch FROM
            v_last + make_interval(secs => p_interval - 1) - clock_timestamp());
        IF NOT p_force AND wait_seconds > 0 THEN
            run_id := NULL;
            RETURN;
        END IF;
        INSERT INTO sync_runs DEFAULT VALUES RETURNING sync_runs.run_id INTO run_id;
    END IF;
    wait_seconds := 0;
    UPDATE sync_instances SET run_id = sync_run_join.run_id WHERE instance_id = p_instance;
END
$fn$;

-- sync_lease_claim(): instance p_instance claims, for p_seconds, up to
-- p_limit of p_users (of service p_service, in the order given: the
-- stalest first) that are due in sweep p_run_id and that no live lease of
-- another instance holds (one of its own it may claim again: a listing it
-- dropped, for a lost connection say), skipping those whose cursor another
-- session has locked (a page being applied).  A user never listed gets its cursor here.  Returns a
-- row per user of p_users, by its position (ord, from 1): outcome
-- 'claimed' (with the new lease token, where its listing stands, and of
-- the pages stored for it, by page number: their digests, comma-separated,
-- "" for one without (see sync_listing_unchanged.sql), their entries and
-- the next page each named (014_page_bodies.sql); of a listing on one
-- page, the digest on its cursor, entries and next page NULL),
-- 'done' (finished or failed in this sweep), or 'pending' (due, but held by
-- another or left for a later claim).
CREATE OR REPLACE FUNCTION sync_lease_claim(
    p_run_id bigint, p_instance bigint, p_seconds integer, p_service text, p_users text[],
    p_limit integer)
RETURNS TABLE (ord integer, outcome text, lease_token bigint, run_id bigint, state text,
               next_page_url text, pages_done integer, digests text, entries integer[],
               next_urls text[])
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    INSERT INTO sync_cursors AS c (service_sid, user_sid, run_id, state)
    SELECT p_service, u.user_sid, p_run_id, 'running'
      FROM unnest(p_users) AS u(user_sid)
     WHERE NOT EXISTS (SELECT FROM sync_cursors k
                        WHERE k.service_sid = p_service AND k.user_sid = u.user_sid)
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    WITH wanted AS (
        SELECT c.user_sid, w.ord
          FROM unnest(p_users) WITH ORDINALITY AS w(user_sid, ord)
          JOIN sync_cursors c ON c.service_sid = p_service AND c.user_sid = w.user_sid
         WHERE NOT (c.run_id = p_run_id AND c.state <> 'running')
           AND (c.lease_instance IS NULL OR c.lease_expires_at <= now()
                OR c.lease_instance = p_instance)
         ORDER BY w.ord
         LIMIT p_limit
           FOR NO KEY UPDATE OF c SKIP LOCKED
    ), claimed AS (
        UPDATE sync_cursors c
           SET lease_instance = p_instance, lease_token = nextval('sync_lease_tokens'),
               lease_expires_at = now() + make_interval(secs => p_seconds)
          FROM wanted k
         WHERE c.service_sid = p_service AND c.user_sid = k.user_sid
        RETURNING k.ord, c.user_sid, c.lease_token, c.run_id, c.state, c.next_page_url,
                  c.pages_done,
                  CASE WHEN c.listing_rows IS NOT NULL THEN c.listing_digest END AS digest
    )
    SELECT w.ord::integer,
           CASE WHEN k.ord IS NOT NULL THEN 'claimed'
                WHEN c.run_id = p_run_id AND c.state <> 'running' THEN 'done'
                ELSE 'pending' END,
           k.lease_token, k.run_id, k.state, k.next_page_url, k.pages_done,
           coalesce(k.digest, s.digests),
           CASE WHEN k.digest IS NOT NULL THEN ARRAY[NULL::integer] ELSE s.entries END,
           CASE WHEN k.digest IS NOT NULL THEN ARRAY[NULL::text] ELSE s.next_urls END
      FROM unnest(p_users) WITH ORDINALITY AS w(user_sid, ord)
      LEFT JOIN sync_cursors c ON c.service_sid = p_service AND c.user_sid = w.user_sid
      LEFT JOIN claimed k ON k.ord = w.ord
      LEFT JOIN LATERAL (
          SELECT string_agg(coalesce(p.digest, ''), ',' ORDER BY g.n) AS digests,
                 array_agg(p.entries ORDER BY g.n) AS entries,
                 array_agg(p.next_page_url ORDER BY g.n) AS next_urls
            FROM generate_series(1, (SELECT max(m.page_no) FROM sync_listing_pages m
                                      WHERE m.service_sid = p_service
                                        AND m.user_sid = k.user_sid)) AS g(n)
            LEFT JOIN sync_listing_pages p
                   ON p.service_sid = p_service AND p.user_sid = k.user_sid
                  AND p.page_no = g.n
           WHERE k.digest IS NULL) AS s ON k.ord IS NOT NULL
     ORDER BY w.ord;
END
$fn$;

-- sync_dimension_claim(): the same for dimension listing p_listing of a
-- service, one row: 'claimed' (token and position), 'done' or 'pending'.
CREATE OR REPLACE FUNCTION sync_dimension_claim(
    p_run_id bigint, p_instance bigint, p_seconds integer, p_service text, p_listing text)
RETURNS TABLE (outcome text, lease_token bigint, run_id bigint, state text,
               next_page_url text, pages_done integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    c record;
BEGIN
    INSERT INTO sync_dimension_cursors (service_sid, listing, run_id, state)
    VALUES (p_service, p_listing, p_run_id, 'running')
    ON CONFLICT DO NOTHING;
    SELECT * INTO c FROM sync_dimension_cursors d
     WHERE d.service_sid = p_service AND d.listing = p_listing
       FOR NO KEY UPDATE SKIP LOCKED;
    IF FOUND AND c.run_id = p_run_id AND c.state <> 'running' THEN
        outcome := 'done';
    ELSIF NOT FOUND OR NOT (c.lease_instance IS NULL OR c.lease_expires_at <= now()
                            OR c.lease_instance = p_instance) THEN
        outcome := 'pending';
    ELSE
        outcome := 'claimed';
        UPDATE sync_dimension_cursors d
           SET lease_instance = p_instance, lease_token = nextval('sync_lease_tokens'),
               lease_expires_at = now() + make_interval(secs => p_seconds)
         WHERE d.service_sid = p_service AND d.listing = p_listing
        RETURNING d.lease_token, d.run_id, d.state, d.next_page_url, d.pages_done
             INTO lease_token, run_id, state, next_page_url, pages_done;
    END IF;
    RETURN NEXT;
END
$fn$;

-- sync_lease_renew(): instance p_instance keeps the leases it holds, each
-- given by its service, its user (or, where p_dimension, its dimension
-- listing) and its token, for p_seconds more.  Returns the positions (from
-- 1) of those it no longer holds: another instance took them over.  A
-- cursor locked by a page being applied is not waited for: its lease is
-- kept if its token is still the one given, and renewed next time.
CREATE OR REPLACE FUNCTION sync_lease_renew(
    p_instance bigint, p_seconds integer, p_services text[], p_keys text[], p_tokens bigint[],
    p_dimension boolean[])
RETURNS TABLE (ord integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
BEGIN
    RETURN QUERY
    WITH held AS (
        SELECT * FROM unnest(p_services, p_keys, p_tokens, p_dimension)
                      WITH ORDINALITY AS h(service_sid, key, token, dimension, ord)
    ), users_free AS (
        SELECT c.service_sid, c.user_sid FROM sync_cursors c JOIN held h
            ON NOT h.dimension AND c.service_sid = h.service_sid AND c.user_sid = h.key
           FOR NO KEY UPDATE OF c SKIP LOCKED
    ), users_kept AS (
        UPDATE sync_cursors c
           SET lease_expires_at = now() + make_interval(secs => p_seconds)
          FROM users_free f
         WHERE c.service_sid = f.service_sid AND c.user_sid = f.user_sid
        RETURNING c.service_sid, c.user_sid, c.lease_token, c.lease_instance
    ), dimensions_free AS (
        SELECT c.service_sid, c.listing FROM sync_dimension_cursors c JOIN held h
            ON h.dimension AND c.service_sid = h.service_sid AND c.listing = h.key
           FOR NO KEY UPDATE OF c SKIP LOCKED
    ), dimensions_kept AS (
        UPDATE sync_dimension_cursors c
           SET lease_expires_at = now() + make_interval(secs => p_seconds)
          FROM dimensions_free f
         WHERE c.service_sid = f.service_sid AND c.listing = f.listing
        RETURNING c.service_sid, c.listing, c.lease_token, c.lease_instance
    )
    SELECT h.ord::integer FROM held h
     WHERE NOT h.dimension AND NOT EXISTS (
               SELECT FROM users_kept k
                WHERE k.service_sid = h.service_sid AND k.user_sid = h.key
                  AND k.lease_token = h.token AND k.lease_instance = p_instance)
       AND NOT EXISTS (
               SELECT FROM sync_cursors c
                WHERE c.service_sid = h.service_sid AND c.user_sid = h.key
                  AND c.lease_token = h.token AND c.lease_instance = p_instance
                  AND NOT EXISTS (SELECT FROM users_free f
                                   WHERE f.service_sid = c.service_sid
                                     AND f.user_sid = c.user_sid))
        OR h.dimension AND NOT EXISTS (
               SELECT FROM dimensions_kept k
                WHERE k.service_sid = h.service_sid AND k.listing = h.key
                  AND k.lease_token = h.token AND k.lease_instance = p_instance)
       AND NOT EXISTS (
               SELECT FROM sync_dimension_cursors c
                WHERE c.service_sid = h.service_sid AND c.listing = h.key
                  AND c.lease_token = h.token AND c.lease_instance = p_instance
                  AND NOT EXISTS (SELECT FROM dimensions_free f
                                   WHERE f.service_sid = c.service_sid
                                     AND f.listing = c.listing))
     ORDER BY h.ord;
END
$fn$;

-- sync_lease_release(): gives up leases as sync_lease_renew() names them
-- (a stop): each is free for another instance at once.  Where the listing
-- stands stays on its cursor; a cursor locked by a page being applied is
-- not waited for (its lease expires in its time).
CREATE OR REPLACE FUNCTION sync_lease_release(
    p_instance bigint, p_services text[], p_keys text[], p_tokens bigint[], p_dimension boolean[])
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    WITH held AS (
        SELECT * FROM unnest(p_services, p_keys, p_tokens, p_dimension)
                      AS h(service_sid, key, token, dimension)
    ), users_free AS (
        SELECT c.service_sid, c.user_sid FROM sync_cursors c JOIN held h
            ON NOT h.dimension AND c.service_sid = h.service_sid AND c.user_sid = h.key
           AND c.lease_token = h.token AND c.lease_instance = p_instance
           FOR NO KEY UPDATE OF c SKIP LOCKED
    ), users_freed AS (
        UPDATE sync_cursors c SET lease_instance = NULL, lease_expires_at = NULL
          FROM users_free f
         WHERE c.service_sid = f.service_sid AND c.user_sid = f.user_sid
    ), dimensions_free AS (
        SELECT c.service_sid, c.listing FROM sync_dimension_cursors c JOIN held h
            ON h.dimension AND c.service_sid = h.service_sid AND c.listing = h.key
           AND c.lease_token = h.token AND c.lease_instance = p_instance
           FOR NO KEY UPDATE OF c SKIP LOCKED
    )
    UPDATE sync_dimension_cursors c SET lease_instance = NULL, lease_expires_at = NULL
      FROM dimensions_free f
     WHERE c.service_sid = f.service_sid AND c.listing = f.listing;
$fn$;

-- sync_instance_gone(): instance p_instance is known to be gone without a
-- word (its process is no longer there: a start on its host finds so):
-- it is live no more, and its leases are free at once.
CREATE OR REPLACE FUNCTION sync_instance_gone(p_instance bigint)
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    UPDATE sync_instances SET expires_at = least(expires_at, now())
     WHERE instance_id = p_instance;
    UPDATE sync_cursors SET lease_expires_at = now()
     WHERE lease_instance = p_instance AND lease_expires_at > now();
    UPDATE sync_dimension_cursors SET lease_expires_at = now()
     WHERE lease_instance = p_instance AND lease_expires_at > now();
$fn$;

-- 004_current_versions: a membership's current version is stored once.
--
-- Until now every version was a row of user_channel_history, the current one
-- included, so each membership was written twice: its row in user_channels
-- and an identical open version.  The history table now keeps the versions
-- that ended (user_channel_past_versions); the current version of a live
-- membership is its user_channels row, valid since updated_at.
-- user_channel_history becomes a view over both, with the columns it had and
-- the same rows, readable by whoever could read the table.  Two things
-- differ: history_id is NULL for current versions (a version gets its id
-- when it ends), and the view cannot be written to (delete old versions
-- from user_channel_past_versions).
--
-- sync_page() inserts new memberships with a plain INSERT (one chatsyncd
-- holds the schema's advisory lock, and it never commits two pages of one
-- user at once, so no other session adds the same key), skips comparing
-- when the user has no rows yet, copies a version to the past only when it
-- changes or ends, and
-- sync_listing_unchanged() lets a client that knows a one-page listing is
-- unchanged move the cursor without sending the page.

DROP FUNCTION sync_page(bigint, text, text, boolean, text, text[], text[], text[], text[],
                        bigint[], bigint[], text[], text[], integer, integer, integer, text);

DELETE FROM user_channel_history WHERE valid_to IS NULL;
DROP INDEX user_channel_history_current_idx;
ALTER TABLE user_channel_history RENAME TO user_channel_past_versions;
ALTER TABLE user_channel_past_versions
    RENAME CONSTRAINT user_channel_history_pkey TO user_channel_past_versions_pkey;
ALTER INDEX user_channel_history_key_idx RENAME TO user_channel_past_versions_key_idx;
ALTER TABLE user_channel_past_versions ALTER COLUMN valid_to SET NOT NULL;

-- Every version of every membership (slowly changing dimension, type 2):
-- the past ones, and the current one of each live membership (valid_to NULL,
-- history_id NULL).
CREATE VIEW user_channel_history AS
SELECT history_id, service_sid, user_sid, channel_sid, account_sid, member_sid, status,
       last_consumed_message_index, unread_messages_count, channel_url, member_url,
       valid_from, valid_to
  FROM user_channel_past_versions
UNION ALL
SELECT NULL::bigint, service_sid, user_sid, channel_sid, account_sid, member_sid, status,
       last_consumed_message_index, unread_messages_count, channel_url, member_url,
       updated_at, NULL::timestamptz
  FROM user_channels
 WHERE deleted_at IS NULL;

-- Whoever could read the history table can read the view.
DO $grant$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT DISTINCT a.grantee
               FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.oid = 'user_channel_past_versions'::regclass
                AND a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        IF g.grantee = 0 THEN
            GRANT SELECT ON user_channel_history TO PUBLIC;
        ELSE
            EXECUTE format('GRANT SELECT ON user_channel_history TO %s', g.grantee::regrole);
        END IF;
    END LOOP;
END
$grant$;

-- How many distinct memberships the listing behind listing_digest held.
ALTER TABLE sync_cursors ADD COLUMN listing_rows integer;

-- Applies one page of a user's listing and advances its cursor, atomically.
-- p_next_url NULL means this was the listing's last page: memberships not
-- listed by any of its pages are then marked deleted.
CREATE FUNCTION sync_page(
    p_run_id bigint, p_service text, p_user text, p_first boolean, p_next_url text,
    p_channel text[], p_account text[], p_member text[], p_status text[],
    p_lcmi bigint[], p_unread bigint[], p_channel_url text[], p_member_url text[],
    p_rejected integer, p_requests integer, p_retries integer, p_digest text,
    OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = force_custom_plan  -- see 003_custom_plans
AS $fn$
DECLARE
    v_distinct integer;
    v_single   boolean := p_first AND p_next_url IS NULL;
    v_fresh    boolean := false;  -- the user has no stored membership at all
BEGIN
    -- Two pages of one user are never applied at once, even by mistake.
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_service || '/' || p_user));
    IF p_first AND NOT v_single THEN
        DELETE FROM sync_seen WHERE service_sid = p_service AND user_sid = p_user;
    END IF;
    IF p_first THEN
        v_fresh := NOT EXISTS (SELECT 1 FROM user_channels
                                WHERE service_sid = p_service AND user_sid = p_user);
    END IF;

    IF v_fresh THEN
        -- A user's first listing: nothing to compare with.
        INSERT INTO user_channels
               (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                last_consumed_message_index, unread_messages_count, channel_url, member_url)
        SELECT DISTINCT ON (t.channel_sid)
               p_service, p_user, t.channel_sid, t.account_sid, t.member_sid, t.status,
               t.lcmi, t.unread, t.channel_url, t.member_url
          FROM unnest(p_channel, p_account, p_member, p_status, p_lcmi, p_unread,
                      p_channel_url, p_member_url) WITH ORDINALITY
               AS t(channel_sid, account_sid, member_sid, status, lcmi, unread,
                    channel_url, member_url, ord)
         ORDER BY t.channel_sid, t.ord DESC;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        updated := 0;
        v_distinct := inserted;
    ELSE
        -- All parts of one statement see the tables as they were before it, so
        -- "archived" copies the versions that "modified" replaces.
        WITH incoming AS (
            SELECT DISTINCT ON (t.channel_sid) t.*
              FROM unnest(p_channel, p_account, p_member, p_status, p_lcmi, p_unread,
                          p_channel_url, p_member_url) WITH ORDINALITY
                   AS t(channel_sid, account_sid, member_sid, status, lcmi, unread,
                        channel_url, member_url, ord)
             ORDER BY t.channel_sid, t.ord DESC
        ), changed AS (
            SELECT i.*, uc.channel_sid IS NOT NULL AS existed
              FROM incoming i
              LEFT JOIN user_channels uc
                     ON uc.service_sid = p_service AND uc.user_sid = p_user
                    AND uc.channel_sid = i.channel_sid
             WHERE uc.channel_sid IS NULL
                OR uc.deleted_at IS NOT NULL
                OR (uc.account_sid, uc.member_sid, uc.status, uc.last_consumed_message_index,
                    uc.unread_messages_count, uc.channel_url, uc.member_url)
                   IS DISTINCT FROM
                   (i.account_sid, i.member_sid, i.status, i.lcmi, i.unread,
                    i.channel_url, i.member_url)
        ), added AS (
            INSERT INTO user_channels
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url)
            SELECT p_service, p_user, c.channel_sid, c.account_sid, c.member_sid, c.status,
                   c.lcmi, c.unread, c.channel_url, c.member_url
              FROM changed c
             WHERE NOT c.existed
            RETURNING 1
        ), archived AS (
            INSERT INTO user_channel_past_versions
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url,
                    valid_from, valid_to)
            SELECT uc.service_sid, uc.user_sid, uc.channel_sid, uc.account_sid, uc.member_sid,
                   uc.status, uc.last_consumed_message_index, uc.unread_messages_count,
                   uc.channel_url, uc.member_url, uc.updated_at, now()
              FROM changed c
              JOIN user_channels uc
                ON uc.service_sid = p_service AND uc.user_sid = p_user
               AND uc.channel_sid = c.channel_sid
             WHERE c.existed AND uc.deleted_at IS NULL
        ), modified AS (
            UPDATE user_channels uc
               SET account_sid = c.account_sid,
                   member_sid = c.member_sid,
                   status = c.status,
                   last_consumed_message_index = c.lcmi,
                   unread_messages_count = c.unread,
                   channel_url = c.channel_url,
                   member_url = c.member_url,
                   updated_at = now(),
                   deleted_at = NULL
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
    IF p_next_url IS NULL THEN
        -- A user's first listing, on one page, can have left nothing behind.
        IF NOT (v_fresh AND v_single) THEN
            WITH gone AS (
                SELECT uc.*
                  FROM user_channels uc
                 WHERE uc.service_sid = p_service AND uc.user_sid = p_user
                   AND uc.deleted_at IS NULL
                   AND uc.channel_sid NOT IN (SELECT unnest(p_channel))
                   AND (v_single OR NOT EXISTS (
                           SELECT 1 FROM sync_seen s
                            WHERE s.service_sid = p_service AND s.user_sid = p_user
                              AND s.channel_sid = uc.channel_sid))
            ), archived AS (
                INSERT INTO user_channel_past_versions
                       (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                        last_consumed_message_index, unread_messages_count, channel_url,
                        member_url, valid_from, valid_to)
                SELECT g.service_sid, g.user_sid, g.channel_sid, g.account_sid, g.member_sid,
                       g.status, g.last_consumed_message_index, g.unread_messages_count,
                       g.channel_url, g.member_url, g.updated_at, now()
                  FROM gone g
            ), marked AS (
                UPDATE user_channels uc
                   SET deleted_at = now(), updated_at = now()
                  FROM gone g
                 WHERE uc.service_sid = p_service AND uc.user_sid = p_user
                   AND uc.channel_sid = g.channel_sid
            )
            SELECT count(*) INTO deleted FROM gone;
        END IF;
        IF NOT v_single THEN
            DELETE FROM sync_seen WHERE service_sid = p_service AND user_sid = p_user;
        END IF;
    ELSE
        INSERT INTO sync_seen (service_sid, user_sid, channel_sid)
        SELECT p_service, p_user, c FROM unnest(p_channel) AS c
        ON CONFLICT DO NOTHING;
    END IF;

    INSERT INTO sync_cursors AS c
           (service_sid, user_sid, run_id, state, next_page_url, pages_done,
            last_complete_at, listing_digest, listing_rows, updated_at)
    VALUES (p_service, p_user, p_run_id,
            CASE WHEN p_next_url IS NULL THEN 'complete' ELSE 'running' END,
            p_next_url, 1,
            CASE WHEN p_next_url IS NULL THEN now() END,
            CASE WHEN v_single THEN p_digest END,
            CASE WHEN v_single AND p_digest IS NOT NULL THEN v_distinct END, now())
    ON CONFLICT (service_sid, user_sid) DO UPDATE
       SET run_id = EXCLUDED.run_id,
           state = EXCLUDED.state,
           next_page_url = EXCLUDED.next_page_url,
           pages_done = CASE WHEN p_first THEN 1 ELSE c.pages_done + 1 END,
           last_complete_at = coalesce(EXCLUDED.last_complete_at, c.last_complete_at),
           listing_digest = EXCLUDED.listing_digest,
           listing_rows = EXCLUDED.listing_rows,
           last_error = CASE WHEN p_next_url IS NULL THEN NULL ELSE c.last_error END,
           last_error_at = CASE WHEN p_next_url IS NULL THEN NULL ELSE c.last_error_at END,
           updated_at = now();

    UPDATE sync_runs
       SET pages = pages + 1,
           users_ok = users_ok + (p_next_url IS NULL)::integer,
           rows_received = rows_received + coalesce(cardinality(p_channel), 0) + p_rejected,
           rows_inserted = rows_inserted + inserted,
           rows_updated = rows_updated + updated,
           rows_unchanged = rows_unchanged + unchanged,
           rows_deleted = rows_deleted + deleted,
           rows_rejected = rows_rejected + p_rejected,
           http_requests = http_requests + p_requests,
           http_retries = http_retries + p_retries
     WHERE run_id = p_run_id;
END
$fn$;

-- A one-page listing whose digest equals the one on the user's cursor holds
-- exactly what the table holds: only the cursor and the run's counters move.
-- Returns the number of memberships it left unchanged, or NULL (nothing
-- done) if the cursor's digest is not p_digest; the client then sends the
-- page to sync_page().
CREATE FUNCTION sync_listing_unchanged(
    p_run_id bigint, p_service text, p_user text, p_digest text, p_received integer,
    p_rejected integer, p_requests integer, p_retries integer)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_rows integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(p_service || '/' || p_user));
    UPDATE sync_cursors
       SET run_id = p_run_id, state = 'complete', next_page_url = NULL, pages_done = 1,
           last_complete_at = now(), last_error = NULL, last_error_at = NULL,
           updated_at = now()
     WHERE service_sid = p_service AND user_sid = p_user
       AND listing_digest = p_digest AND listing_rows IS NOT NULL
    RETURNING listing_rows INTO v_rows;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE sync_runs
       SET pages = pages + 1,
           users_ok = users_ok + 1,
           rows_received = rows_received + p_received + p_rejected,
           rows_unchanged = rows_unchanged + v_rows,
           rows_rejected = rows_rejected + p_rejected,
           http_requests = http_requests + p_requests,
           http_retries = http_retries + p_retries
     WHERE run_id = p_run_id;
    RETURN v_rows;
END
$fn$;

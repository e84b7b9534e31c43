-- 002_listing_digest: a one-page listing that has not changed since it was
-- last applied costs one cursor update instead of a comparison of every row.
--
-- The writer sends a digest of the page's rows; sync_cursors keeps the digest
-- of the last one-page listing applied for each user (NULL after a listing of
-- several pages, whose deletions the digest would not describe).

ALTER TABLE sync_cursors ADD COLUMN listing_digest text;

DROP FUNCTION sync_page(bigint, text, text, boolean, text, text[], text[], text[], text[],
                        bigint[], bigint[], text[], text[], integer, integer, integer);

-- As in 001_initial, with p_digest.
CREATE FUNCTION sync_page(
    p_run_id bigint, p_service text, p_user text, p_first boolean, p_next_url text,
    p_channel text[], p_account text[], p_member text[], p_status text[],
    p_lcmi bigint[], p_unread bigint[], p_channel_url text[], p_member_url text[],
    p_rejected integer, p_requests integer, p_retries integer, p_digest text,
    OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_changed  text[];
    v_distinct integer;
    v_single   boolean := p_first AND p_next_url IS NULL;
BEGIN
    -- A one-page listing identical to the last one that was applied: the
    -- table already holds exactly this, so nothing but the cursor moves.
    IF v_single AND p_digest IS NOT NULL AND EXISTS (
           SELECT 1 FROM sync_cursors
            WHERE service_sid = p_service AND user_sid = p_user AND listing_digest = p_digest) THEN
        inserted := 0;
        updated := 0;
        deleted := 0;
        unchanged := (SELECT count(DISTINCT c) FROM unnest(p_channel) AS c);
    ELSE
        IF p_first AND NOT v_single THEN
            DELETE FROM sync_seen WHERE service_sid = p_service AND user_sid = p_user;
        END IF;

        WITH incoming AS (
            SELECT DISTINCT ON (t.channel_sid) t.*
            FROM unnest(p_channel, p_account, p_member, p_status, p_lcmi, p_unread,
                        p_channel_url, p_member_url) WITH ORDINALITY
                 AS t(channel_sid, account_sid, member_sid, status, lcmi, unread,
                      channel_url, member_url, ord)
            ORDER BY t.channel_sid, t.ord DESC
        ), changed AS (
            SELECT i.*
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
        ), upserted AS (
            INSERT INTO user_channels AS uc
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url)
            SELECT p_service, p_user, c.channel_sid, c.account_sid, c.member_sid, c.status,
                   c.lcmi, c.unread, c.channel_url, c.member_url
            FROM changed c
            ON CONFLICT (service_sid, user_sid, channel_sid) DO UPDATE
               SET account_sid = EXCLUDED.account_sid,
                   member_sid = EXCLUDED.member_sid,
                   status = EXCLUDED.status,
                   last_consumed_message_index = EXCLUDED.last_consumed_message_index,
                   unread_messages_count = EXCLUDED.unread_messages_count,
                   channel_url = EXCLUDED.channel_url,
                   member_url = EXCLUDED.member_url,
                   updated_at = now(),
                   deleted_at = NULL
            RETURNING uc.channel_sid, (uc.xmax = 0) AS is_new
        )
        SELECT coalesce(array_agg(u.channel_sid), '{}'),
               count(*) FILTER (WHERE u.is_new),
               count(*) FILTER (WHERE NOT u.is_new),
               (SELECT count(*) FROM incoming)
          INTO v_changed, inserted, updated, v_distinct
          FROM upserted u;
        unchanged := v_distinct - inserted - updated;

        IF cardinality(v_changed) > 0 THEN
            UPDATE user_channel_history h
               SET valid_to = now()
             WHERE h.service_sid = p_service AND h.user_sid = p_user
               AND h.channel_sid = ANY (v_changed) AND h.valid_to IS NULL;
            INSERT INTO user_channel_history
                   (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                    last_consumed_message_index, unread_messages_count, channel_url, member_url,
                    valid_from)
            SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                   last_consumed_message_index, unread_messages_count, channel_url, member_url,
                   now()
              FROM user_channels
             WHERE service_sid = p_service AND user_sid = p_user AND channel_sid = ANY (v_changed);
        END IF;

        deleted := 0;
        IF p_next_url IS NULL THEN
            WITH gone AS (
                UPDATE user_channels uc
                   SET deleted_at = now(), updated_at = now()
                 WHERE uc.service_sid = p_service AND uc.user_sid = p_user
                   AND uc.deleted_at IS NULL
                   AND uc.channel_sid NOT IN (SELECT unnest(p_channel))
                   AND (v_single OR NOT EXISTS (
                           SELECT 1 FROM sync_seen s
                            WHERE s.service_sid = p_service AND s.user_sid = p_user
                              AND s.channel_sid = uc.channel_sid))
                RETURNING uc.channel_sid
            ), closed AS (
                UPDATE user_channel_history h
                   SET valid_to = now()
                  FROM gone g
                 WHERE h.service_sid = p_service AND h.user_sid = p_user
                   AND h.channel_sid = g.channel_sid AND h.valid_to IS NULL
            )
            SELECT count(*) INTO deleted FROM gone;
            IF NOT v_single THEN
                DELETE FROM sync_seen WHERE service_sid = p_service AND user_sid = p_user;
            END IF;
        ELSE
            INSERT INTO sync_seen (service_sid, user_sid, channel_sid)
            SELECT p_service, p_user, c FROM unnest(p_channel) AS c
            ON CONFLICT DO NOTHING;
        END IF;

    END IF;

    INSERT INTO sync_cursors AS c
           (service_sid, user_sid, run_id, state, next_page_url, pages_done,
            last_complete_at, listing_digest, updated_at)
    VALUES (p_service, p_user, p_run_id,
            CASE WHEN p_next_url IS NULL THEN 'complete' ELSE 'running' END,
            p_next_url, 1,
            CASE WHEN p_next_url IS NULL THEN now() END,
            CASE WHEN v_single THEN p_digest END, now())
    ON CONFLICT (service_sid, user_sid) DO UPDATE
       SET run_id = EXCLUDED.run_id,
           state = EXCLUDED.state,
           next_page_url = EXCLUDED.next_page_url,
           pages_done = CASE WHEN p_first THEN 1 ELSE c.pages_done + 1 END,
           last_complete_at = coalesce(EXCLUDED.last_complete_at, c.last_complete_at),
           listing_digest = EXCLUDED.listing_digest,
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


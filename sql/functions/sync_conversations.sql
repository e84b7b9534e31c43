-- A user's conversations (migration 010): sync_conversations_page() applies
-- one page of the listing GET /v1/Services/{IS}/Users/{user}/Conversations
-- as sync_page() applies one of a user's Chat memberships, and
-- sync_conversations_gone() is its sync_memberships_gone().  Everything
-- said of memberships there holds here, a conversation's state
-- (conversation_state) in place of a membership's status.  The two share a
-- user's cursor, its advisory lock and sync_listing_pages (listed holding
-- conversation SIDs): a user key of a service is listed through one API.
-- sync_listing_unchanged() serves both as it is.

-- sync_conversations_gone(): the end of a complete listing of a user's
-- conversations, or of the user (deleted: p_listed empty): its live
-- conversations not listed are marked deleted.  Listed are the
-- conversations of p_listed and, when p_last_page is more than 1, those
-- the listing's earlier pages listed.  Each one's version is copied to
-- user_conversation_past_versions, and with p_events a 'removed' event is
-- logged (not for a user's first listing).  Returns how many.  The caller
-- holds the user's advisory lock (see sync_page()).
CREATE OR REPLACE FUNCTION sync_conversations_gone(
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
          FROM user_conversations uc
         WHERE uc.service_sid = p_service AND uc.user_sid = p_user
           AND uc.deleted_at IS NULL
           AND uc.conversation_sid NOT IN (
                   SELECT unnest(p_listed)
                   UNION ALL
                   SELECT unnest(p.listed)
                     FROM sync_listing_pages p
                    WHERE p_last_page > 1
                      AND p.service_sid = p_service AND p.user_sid = p_user
                      AND p.page_no < p_last_page)
    ), archived AS (
        INSERT INTO user_conversation_past_versions
               (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
                conversation_state, notification_level, unread_messages_count,
                last_read_message_index, friendly_name, unique_name, created_by,
                date_created, date_updated, date_inactive, date_closed, url,
                conversation_url, participant_url, valid_from, valid_to)
        SELECT g.service_sid, g.user_sid, g.conversation_sid, g.account_sid, g.participant_sid,
               g.conversation_state, g.notification_level, g.unread_messages_count,
               g.last_read_message_index, g.friendly_name, g.unique_name, g.created_by,
               g.date_created, g.date_updated, g.date_inactive, g.date_closed, g.url,
               g.conversation_url, g.participant_url, g.updated_at, now()
          FROM gone g
    ), marked AS (
        UPDATE user_conversations uc
           SET deleted_at = now(), updated_at = now()
          FROM gone g
         WHERE uc.service_sid = p_service AND uc.user_sid = p_user
           AND uc.conversation_sid = g.conversation_sid
    ), events AS (
        INSERT INTO conversation_event_log
               (at, service_sid, user_sid, conversation_sid, event, old_state, new_state)
        SELECT now(), g.service_sid, g.user_sid, g.conversation_sid, 'removed',
               g.conversation_state, NULL
          FROM gone g
         WHERE p_events
    )
    SELECT count(*) INTO v_deleted FROM gone;
    RETURN v_deleted;
END
$fn$;

-- sync_conversations_page(): applies one page of a user's listing of
-- conversations and advances its cursor, atomically, as sync_page() does
-- for memberships: p_next_url NULL means this was the listing's last page
-- (conversations not listed by any of its pages are then marked deleted,
-- sync_conversations_gone()); a caller whose lease token p_lease is not
-- the user's changes nothing and gets NULL counts; of two entries of a page with one
-- conversation SID the last counts; a row is written only when one of its
-- values differs (or it had been deleted), its version copied to
-- user_conversation_past_versions first; p_digest and the arguments after
-- p_lease are those of sync_page().  A user's first listing logs no event.
CREATE OR REPLACE FUNCTION sync_conversations_page(
    p_run_id bigint, p_service text, p_user text, p_first boolean, p_next_url text,
    p_conversation text[], p_account text[], p_participant text[], p_state text[],
    p_notification_level text[], p_unread bigint[], p_last_read bigint[],
    p_friendly_name text[], p_unique_name text[], p_created_by text[],
    p_date_created timestamptz[], p_date_updated timestamptz[],
    p_date_inactive timestamptz[], p_date_closed timestamptz[],
    p_url text[], p_conversation_url text[], p_participant_url text[],
    p_rejected integer, p_requests integer, p_retries integer, p_digest text,
    p_lease bigint DEFAULT NULL, p_page integer DEFAULT NULL, p_earlier text[] DEFAULT NULL,
    p_skipped_pages integer DEFAULT 0, p_skipped_rows integer DEFAULT 0, OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = auto SET enable_seqscan = off
AS $fn$
DECLARE
    v_distinct integer;
    v_single   boolean;
    v_empty    boolean := false;  -- the user has no stored conversation at all
    v_fresh    boolean := false;  -- none of the page's conversations is stored for the user
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
    -- stores the page when none of its conversations is stored for the user.
    -- Else (an earlier page listed one of them) it fails on the key, its
    -- subtransaction alone is undone, and the page is compared as always.
    IF NOT v_events THEN
        IF p_first THEN
            v_empty := NOT EXISTS (SELECT 1 FROM user_conversations
                                    WHERE service_sid = p_service AND user_sid = p_user);
        END IF;
        BEGIN
            INSERT INTO user_conversations
                   (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
                    conversation_state, notification_level, unread_messages_count,
                    last_read_message_index, friendly_name, unique_name, created_by,
                    date_created, date_updated, date_inactive, date_closed, url,
                    conversation_url, participant_url)
            SELECT DISTINCT ON (t.conversation_sid)
                   p_service, p_user, t.conversation_sid, t.account_sid, t.participant_sid,
                   t.state, t.notification_level, t.unread, t.last_read, t.friendly_name,
                   t.unique_name, t.created_by, t.date_created, t.date_updated,
                   t.date_inactive, t.date_closed, t.url, t.conversation_url,
                   t.participant_url
              FROM unnest(p_conversation, p_account, p_participant, p_state,
                          p_notification_level, p_unread, p_last_read, p_friendly_name,
                          p_unique_name, p_created_by, p_date_created, p_date_updated,
                          p_date_inactive, p_date_closed, p_url, p_conversation_url,
                          p_participant_url) WITH ORDINALITY
                   AS t(conversation_sid, account_sid, participant_sid, state,
                        notification_level, unread, last_read, friendly_name, unique_name,
                        created_by, date_created, date_updated, date_inactive, date_closed,
                        url, conversation_url, participant_url, ord)
             ORDER BY t.conversation_sid, t.ord DESC;
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
            SELECT DISTINCT ON (t.conversation_sid) t.*
              FROM unnest(p_conversation, p_account, p_participant, p_state,
                          p_notification_level, p_unread, p_last_read, p_friendly_name,
                          p_unique_name, p_created_by, p_date_created, p_date_updated,
                          p_date_inactive, p_date_closed, p_url, p_conversation_url,
                          p_participant_url) WITH ORDINALITY
                   AS t(conversation_sid, account_sid, participant_sid, state,
                        notification_level, unread, last_read, friendly_name, unique_name,
                        created_by, date_created, date_updated, date_inactive, date_closed,
                        url, conversation_url, participant_url, ord)
             ORDER BY t.conversation_sid, t.ord DESC
        ), changed AS (
            SELECT i.*, uc.conversation_sid IS NOT NULL AS existed,
                   uc.deleted_at AS old_deleted_at, uc.conversation_state AS old_state
              FROM incoming i
              LEFT JOIN user_conversations uc
                     ON uc.service_sid = p_service AND uc.user_sid = p_user
                    AND uc.conversation_sid = i.conversation_sid
             WHERE uc.conversation_sid IS NULL
                OR uc.deleted_at IS NOT NULL
                OR (uc.account_sid, uc.participant_sid, uc.conversation_state,
                    uc.notification_level, uc.unread_messages_count, uc.last_read_message_index,
                    uc.friendly_name, uc.unique_name, uc.created_by, uc.date_created,
                    uc.date_updated, uc.date_inactive, uc.date_closed, uc.url,
                    uc.conversation_url, uc.participant_url)
                   IS DISTINCT FROM
                   (i.account_sid, i.participant_sid, i.state, i.notification_level, i.unread,
                    i.last_read, i.friendly_name, i.unique_name, i.created_by, i.date_created,
                    i.date_updated, i.date_inactive, i.date_closed, i.url, i.conversation_url,
                    i.participant_url)
        ), added AS (
            INSERT INTO user_conversations
                   (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
                    conversation_state, notification_level, unread_messages_count,
                    last_read_message_index, friendly_name, unique_name, created_by,
                    date_created, date_updated, date_inactive, date_closed, url,
                    conversation_url, participant_url)
            SELECT p_service, p_user, c.conversation_sid, c.account_sid, c.participant_sid,
                   c.state, c.notification_level, c.unread, c.last_read, c.friendly_name,
                   c.unique_name, c.created_by, c.date_created, c.date_updated,
                   c.date_inactive, c.date_closed, c.url, c.conversation_url,
                   c.participant_url
              FROM changed c
             WHERE NOT c.existed
            RETURNING 1
        ), archived AS (
            -- The version a change replaces (valid since updated_at); for a
            -- conversation that comes back, the time it was gone, a version of its
            -- own (is_deleted).
            INSERT INTO user_conversation_past_versions
                   (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
                    conversation_state, notification_level, unread_messages_count,
                    last_read_message_index, friendly_name, unique_name, created_by,
                    date_created, date_updated, date_inactive, date_closed, url,
                    conversation_url, participant_url, valid_from, valid_to, is_deleted)
            SELECT uc.service_sid, uc.user_sid, uc.conversation_sid, uc.account_sid,
                   uc.participant_sid, uc.conversation_state, uc.notification_level,
                   uc.unread_messages_count, uc.last_read_message_index, uc.friendly_name,
                   uc.unique_name, uc.created_by, uc.date_created, uc.date_updated,
                   uc.date_inactive, uc.date_closed, uc.url, uc.conversation_url,
                   uc.participant_url,
                   coalesce(uc.deleted_at, uc.updated_at), now(), uc.deleted_at IS NOT NULL
              FROM changed c
              JOIN user_conversations uc
                ON uc.service_sid = p_service AND uc.user_sid = p_user
               AND uc.conversation_sid = c.conversation_sid
             WHERE c.existed
        ), events AS (
            INSERT INTO conversation_event_log
                   (at, service_sid, user_sid, conversation_sid, event, old_state, new_state)
            SELECT now(), p_service, p_user, c.conversation_sid,
                   CASE WHEN NOT c.existed OR c.old_deleted_at IS NOT NULL THEN 'added'
                        ELSE 'state_changed' END,
                   CASE WHEN c.existed AND c.old_deleted_at IS NULL THEN c.old_state END,
                   c.state
              FROM changed c
             WHERE v_events
               AND (NOT c.existed OR c.old_deleted_at IS NOT NULL
                    -- a NULL state (none sent, or one of an unexpected type) is no change
                    OR (c.old_state <> c.state))
        ), modified AS (
            UPDATE user_conversations uc
               SET account_sid = c.account_sid,
                   participant_sid = c.participant_sid,
                   conversation_state = c.state,
                   notification_level = c.notification_level,
                   unread_messages_count = c.unread,
                   last_read_message_index = c.last_read,
                   friendly_name = c.friendly_name,
                   unique_name = c.unique_name,
                   created_by = c.created_by,
                   date_created = c.date_created,
                   date_updated = c.date_updated,
                   date_inactive = c.date_inactive,
                   date_closed = c.date_closed,
                   url = c.url,
                   conversation_url = c.conversation_url,
                   participant_url = c.participant_url,
                   updated_at = now(),
                   deleted_at = NULL
              FROM changed c
             WHERE c.existed
               AND uc.service_sid = p_service AND uc.user_sid = p_user
               AND uc.conversation_sid = c.conversation_sid
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
        deleted := sync_conversations_gone(p_service, p_user, p_conversation, v_page,
                                           v_events);
    END IF;

    PERFORM sync_listing_advance(p_run_id, p_service, p_user, v_page, p_next_url,
                                 p_conversation, p_digest, v_distinct, p_rejected, p_requests,
                                 p_retries, inserted, updated, unchanged, deleted,
                                 p_skipped_pages, p_skipped_rows);
END
$fn$;

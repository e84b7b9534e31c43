-- 001_initial: memberships, their history, sync cursors and runs.
--
-- Applied by chatsyncd with search_path set to the configured schema; the
-- functions keep that schema (SET search_path FROM CURRENT).

-- The current state of every membership chatsyncd has seen.
CREATE TABLE user_channels (
    service_sid                 text        NOT NULL,
    user_sid                    text        NOT NULL,   -- the configured user: a User SID or an identity
    channel_sid                 text        NOT NULL,
    account_sid                 text,
    member_sid                  text,
    status                      text,                   -- joined, invited, not_participating (as received)
    last_consumed_message_index bigint,
    unread_messages_count       bigint,
    channel_url                 text,                   -- links.channel
    member_url                  text,                   -- links.member
    first_seen_at               timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),  -- last change of any value
    deleted_at                  timestamptz,            -- set when a complete sweep no longer lists it
    PRIMARY KEY (service_sid, user_sid, channel_sid)
);

-- "Who is in channel X?"
CREATE INDEX user_channels_channel_idx ON user_channels (service_sid, channel_sid);

-- Every version of every membership (slowly changing dimension, type 2).
CREATE TABLE user_channel_history (
    history_id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_sid                 text        NOT NULL,
    user_sid                    text        NOT NULL,
    channel_sid                 text        NOT NULL,
    account_sid                 text,
    member_sid                  text,
    status                      text,
    last_consumed_message_index bigint,
    unread_messages_count       bigint,
    channel_url                 text,
    member_url                  text,
    valid_from                  timestamptz NOT NULL,
    valid_to                    timestamptz,            -- NULL for the current version
    CHECK (valid_to IS NULL OR valid_to >= valid_from)
);

CREATE UNIQUE INDEX user_channel_history_current_idx
    ON user_channel_history (service_sid, user_sid, channel_sid) WHERE valid_to IS NULL;
CREATE INDEX user_channel_history_key_idx
    ON user_channel_history (service_sid, user_sid, channel_sid, valid_from);

-- One row per sweep over every configured user.
CREATE TABLE sync_runs (
    run_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,                        -- NULL while in progress or interrupted
    users_ok        integer     NOT NULL DEFAULT 0,
    users_failed    integer     NOT NULL DEFAULT 0,
    pages           bigint      NOT NULL DEFAULT 0,
    rows_received   bigint      NOT NULL DEFAULT 0,
    rows_inserted   bigint      NOT NULL DEFAULT 0,
    rows_updated    bigint      NOT NULL DEFAULT 0,
    rows_unchanged  bigint      NOT NULL DEFAULT 0,
    rows_deleted    bigint      NOT NULL DEFAULT 0,
    rows_rejected   bigint      NOT NULL DEFAULT 0,
    http_requests   bigint      NOT NULL DEFAULT 0,
    http_retries    bigint      NOT NULL DEFAULT 0
);

-- Where each user's listing stands.
CREATE TABLE sync_cursors (
    service_sid      text        NOT NULL,
    user_sid         text        NOT NULL,
    run_id           bigint      NOT NULL REFERENCES sync_runs,  -- the sweep that last moved it
    state            text        NOT NULL CHECK (state IN ('running', 'complete', 'failed')),
    next_page_url    text,                              -- next page of the listing in progress
    pages_done       integer     NOT NULL DEFAULT 0,    -- pages committed of that listing
    last_complete_at timestamptz,                       -- when the last complete listing committed
    last_error       text,
    last_error_at    timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_sid, user_sid)
);

-- Channels listed so far by a listing that spans several pages, so that its
-- last page can tell which memberships disappeared.
CREATE TABLE sync_seen (
    service_sid text NOT NULL,
    user_sid    text NOT NULL,
    channel_sid text NOT NULL,
    PRIMARY KEY (service_sid, user_sid, channel_sid)
);

-- Applies one page of a user's listing and advances its cursor, atomically.
-- p_next_url NULL means this was the listing's last page: memberships not
-- listed by any of its pages are then marked deleted.
CREATE FUNCTION sync_page(
    p_run_id bigint, p_service text, p_user text, p_first boolean, p_next_url text,
    p_channel text[], p_account text[], p_member text[], p_status text[],
    p_lcmi bigint[], p_unread bigint[], p_channel_url text[], p_member_url text[],
    p_rejected integer, p_requests integer, p_retries integer,
    OUT inserted integer, OUT updated integer, OUT unchanged integer, OUT deleted integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_changed  text[];
    v_distinct integer;
    v_single   boolean := p_first AND p_next_url IS NULL;
BEGIN
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

    INSERT INTO sync_cursors AS c
           (service_sid, user_sid, run_id, state, next_page_url, pages_done,
            last_complete_at, updated_at)
    VALUES (p_service, p_user, p_run_id,
            CASE WHEN p_next_url IS NULL THEN 'complete' ELSE 'running' END,
            p_next_url, 1,
            CASE WHEN p_next_url IS NULL THEN now() END, now())
    ON CONFLICT (service_sid, user_sid) DO UPDATE
       SET run_id = EXCLUDED.run_id,
           state = EXCLUDED.state,
           next_page_url = EXCLUDED.next_page_url,
           pages_done = CASE WHEN p_first THEN 1 ELSE c.pages_done + 1 END,
           last_complete_at = coalesce(EXCLUDED.last_complete_at, c.last_complete_at),
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

-- Records that a user's listing failed in this run; its cursor stays where it was.
CREATE FUNCTION sync_user_failed(
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
    UPDATE sync_runs
       SET users_failed = users_failed + 1,
           http_requests = http_requests + p_requests,
           http_retries = http_retries + p_retries
     WHERE run_id = p_run_id;
$fn$;

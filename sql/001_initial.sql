-- 001_initial: memberships, their history, sync cursors and runs.
--
-- Applied by chatsyncd with search_path set to the configured schema.  The
-- functions that write these tables are in sql/functions/, applied after the
-- migrations.

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

-- 010_conversations: a user's conversations, as the Conversations API lists
-- them (GET /v1/Services/{IS}/Users/{user}/Conversations), beside its Chat
-- memberships.
--
-- Each table mirrors the one of memberships, column for column where the
-- two APIs say the same thing:
--
-- - user_conversations: the current state of every conversation of a user
--   chatsyncd has seen (as user_channels);
-- - user_conversation_past_versions: the versions that ended, a removal
--   being a version of its own (is_deleted), as user_channel_past_versions;
-- - conversation_event_log: one row per change a sweep observed (added,
--   removed, state_changed), as membership_event_log.
--
-- sync_conversations_page() writes them (functions/sync_conversations.sql).
-- sync_cursors, sync_seen (channel_sid holds the conversation's SID), sync_runs
-- and sync_errors serve both: a user key of a service is listed through one
-- API or the other, never both.
--
-- conversation_state and notification_level are stored as received, without
-- a CHECK: a value the API adds later (or one this version does not know) is
-- kept rather than failing the whole page.

CREATE TABLE user_conversations (
    service_sid             text        NOT NULL,
    user_sid                text        NOT NULL,   -- the configured user: a User SID or an identity
    conversation_sid        text        NOT NULL,
    account_sid             text,
    participant_sid         text,
    conversation_state      text,                   -- inactive, active, closed (as received)
    notification_level      text,                   -- default, muted (as received)
    unread_messages_count   bigint,
    last_read_message_index bigint,
    friendly_name           text,
    unique_name             text,
    created_by              text,
    date_created            timestamptz,
    date_updated            timestamptz,
    date_inactive           timestamptz,
    date_closed             timestamptz,
    url                     text,
    conversation_url        text,                   -- links.conversation
    participant_url         text,                   -- links.participant
    first_seen_at           timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),  -- last change of any value
    deleted_at              timestamptz,            -- set when a complete listing no longer shows it
    PRIMARY KEY (service_sid, user_sid, conversation_sid)
);

-- "Who is in conversation X?", with or without its service.
CREATE INDEX user_conversations_conversation_idx
    ON user_conversations (conversation_sid, service_sid);

CREATE TABLE user_conversation_past_versions (
    history_id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_sid             text        NOT NULL,
    user_sid                text        NOT NULL,
    conversation_sid        text        NOT NULL,
    account_sid             text,
    participant_sid         text,
    conversation_state      text,
    notification_level      text,
    unread_messages_count   bigint,
    last_read_message_index bigint,
    friendly_name           text,
    unique_name             text,
    created_by              text,
    date_created            timestamptz,
    date_updated            timestamptz,
    date_inactive           timestamptz,
    date_closed             timestamptz,
    url                     text,
    conversation_url        text,
    participant_url         text,
    valid_from              timestamptz NOT NULL,
    valid_to                timestamptz NOT NULL,
    is_deleted              boolean     NOT NULL DEFAULT false,
    CHECK (valid_to >= valid_from)
);

-- A key's versions in order; a conversation's versions by when they ended;
-- and the versions retention prunes (sync_prune()).
CREATE INDEX user_conversation_past_versions_key_idx
    ON user_conversation_past_versions (service_sid, user_sid, conversation_sid, valid_from);
CREATE INDEX user_conversation_past_versions_conversation_idx
    ON user_conversation_past_versions (conversation_sid, valid_to);
CREATE INDEX user_conversation_past_versions_valid_to_idx
    ON user_conversation_past_versions (valid_to);

CREATE TABLE conversation_event_log (
    event_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL,
    service_sid      text NOT NULL,
    user_sid         text NOT NULL,        -- as in user_conversations
    conversation_sid text NOT NULL,
    event            text NOT NULL CHECK (event IN ('added', 'removed', 'state_changed')),
    old_state        text,
    new_state        text
);
CREATE INDEX conversation_event_log_at_idx ON conversation_event_log (at);
CREATE INDEX conversation_event_log_key_idx
    ON conversation_event_log (service_sid, user_sid, conversation_sid, at);
CREATE INDEX conversation_event_log_conversation_idx
    ON conversation_event_log (conversation_sid, at);

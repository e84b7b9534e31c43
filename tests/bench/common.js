'use strict';
// Shared by the reference implementations (ref_naive.js, ref_pooled.js, and
// for Conversations ref_conv_naive.js, ref_conv_pooled.js): the command line,
// the user list and the tables they write.
//
// Command line:  --base-url URL --account-sid AC... --service IS... --users FILE
//                [--page-size N] [--concurrency N] [--limit-users N]
// Environment:   TWILIO_AUTH_TOKEN (the fake's token); PGHOST, PGDATABASE,
//                PGUSER etc. for PostgreSQL (read by `pg` itself).

const fs = require('fs');

function usage(name, message) {
  process.stderr.write(`${name}: ${message}\n` +
    `usage: node ${name} --base-url URL --account-sid AC... --service IS... --users FILE ` +
    `[--page-size N] [--concurrency N] [--limit-users N]\n`);
  process.exit(1);
}

function parseArgs(name, argv) {
  const opts = { pageSize: 1000, concurrency: 16, limitUsers: 0 };
  const keys = {
    '--base-url': 'baseUrl', '--account-sid': 'accountSid', '--service': 'service',
    '--users': 'usersFile', '--page-size': 'pageSize', '--concurrency': 'concurrency',
    '--limit-users': 'limitUsers',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = keys[argv[i]];
    if (!key || i + 1 >= argv.length) usage(name, `bad argument "${argv[i]}"`);
    opts[key] = argv[i + 1];
  }
  for (const k of ['pageSize', 'concurrency', 'limitUsers']) {
    opts[k] = Number(opts[k]);
    if (!Number.isInteger(opts[k]) || opts[k] < 0) usage(name, `--${k} must be a number`);
  }
  for (const k of ['baseUrl', 'accountSid', 'service', 'usersFile']) {
    if (!opts[k]) usage(name, `missing --${k}`);
  }
  opts.authToken = process.env.TWILIO_AUTH_TOKEN;
  if (!opts.authToken) usage(name, 'TWILIO_AUTH_TOKEN is not set');
  opts.users = fs.readFileSync(opts.usersFile, 'utf8').split('\n').filter((u) => u !== '');
  if (opts.limitUsers > 0) opts.users = opts.users.slice(0, opts.limitUsers);
  return opts;
}

// The same shape as chatsyncd's user_channels (sql/001_initial.sql): columns,
// defaults, primary key and the secondary index.
const DDL = `
CREATE SCHEMA IF NOT EXISTS ref;
CREATE TABLE IF NOT EXISTS ref.user_channels (
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
    first_seen_at               timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    PRIMARY KEY (service_sid, user_sid, channel_sid)
);
CREATE INDEX IF NOT EXISTS user_channels_channel_idx ON ref.user_channels (service_sid, channel_sid);
`;

// The same shape as chatsyncd's user_conversations (sql/010_conversations.sql):
// columns, defaults, primary key and the secondary index.
const CONV_DDL = `
CREATE SCHEMA IF NOT EXISTS ref;
CREATE TABLE IF NOT EXISTS ref.user_conversations (
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
    first_seen_at           timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz,
    PRIMARY KEY (service_sid, user_sid, conversation_sid)
);
CREATE INDEX IF NOT EXISTS user_conversations_conversation_idx
    ON ref.user_conversations (conversation_sid, service_sid);
`;

// The values of one user's conversation (a UserConversationInstance), in the
// column order of ref.user_conversations after service_sid and user_sid.
function conversationValues(uc) {
  const timers = uc.timers || {};
  const links = uc.links || {};
  return [
    uc.conversationSid, uc.accountSid, uc.participantSid, uc.conversationState,
    uc.notificationLevel, uc.unreadMessagesCount, uc.lastReadMessageIndex,
    uc.friendlyName, uc.uniqueName, uc.createdBy, uc.dateCreated, uc.dateUpdated,
    timers.date_inactive || null, timers.date_closed || null,
    uc.url, links.conversation || null, links.participant || null,
  ];
}

module.exports = { parseArgs, DDL, CONV_DDL, conversationValues };

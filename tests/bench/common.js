'use strict';
// Shared by the two reference implementations (ref_naive.js, ref_pooled.js):
// the command line, the user list and the table they write.
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

module.exports = { parseArgs, DDL };

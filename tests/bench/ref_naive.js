#!/usr/bin/env node
'use strict';
// Reference 2 of the benchmark: the sync written the way Twilio's documentation
// shows it.  One Twilio client, each user listed one after another with
// userChannels.each(), and every channel upserted on its own with `pg`: one
// INSERT ... ON CONFLICT DO UPDATE per row, in autocommit (one commit per row).
//
// usage: node ref_naive.js --base-url URL --account-sid AC... --service IS... --users FILE
//                          [--page-size N] [--limit-users N]
// TWILIO_AUTH_TOKEN and the PG* variables come from the environment.

const { parseArgs, DDL } = require('./common');
const { Client } = require('pg');

const UPSERT = `
INSERT INTO ref.user_channels
       (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
        last_consumed_message_index, unread_messages_count, channel_url, member_url)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (service_sid, user_sid, channel_sid) DO UPDATE
   SET account_sid = EXCLUDED.account_sid,
       member_sid = EXCLUDED.member_sid,
       status = EXCLUDED.status,
       last_consumed_message_index = EXCLUDED.last_consumed_message_index,
       unread_messages_count = EXCLUDED.unread_messages_count,
       channel_url = EXCLUDED.channel_url,
       member_url = EXCLUDED.member_url,
       updated_at = now()`;

async function main() {
  const opts = parseArgs('ref_naive.js', process.argv.slice(2));
  const accountSid = opts.accountSid;
  const authToken = opts.authToken;
  const client = require('twilio')(accountSid, authToken, {});
  client.ipMessaging.baseUrl = opts.baseUrl; // the fake Twilio API instead of https://ip-messaging.twilio.com

  const db = new Client();
  await db.connect();
  await db.query(DDL);

  let rows = 0;
  for (const user of opts.users) {
    const writes = [];
    await client.ipMessaging.v1
      .services(opts.service)
      .users(user)
      .userChannels.each({ pageSize: opts.pageSize }, (uc) => {
        writes.push(db.query(UPSERT, [
          opts.service, user, uc.channelSid, uc.accountSid, uc.memberSid, uc.status,
          uc.lastConsumedMessageIndex, uc.unreadMessagesCount,
          uc.links ? uc.links.channel : null, uc.links ? uc.links.member : null,
        ]));
      });
    await Promise.all(writes);
    rows += writes.length;
  }
  await db.end();
  process.stderr.write(`ref_naive: ${opts.users.length} users, ${rows} rows\n`);
}

main().catch((err) => {
  process.stderr.write(`ref_naive: ${err.stack || err}\n`);
  process.exit(1);
});

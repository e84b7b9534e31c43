#!/usr/bin/env node
'use strict';
// Reference 2 of the Conversations scenarios: each user's conversations synced
// the way Twilio's documentation shows it.  One Twilio client, each user listed
// one after another with
// conversations.v1.services(IS).users(U).userConversations.each(), and every
// conversation upserted on its own with `pg`: one INSERT ... ON CONFLICT DO
// UPDATE per row, in autocommit (one commit per row; unchanged rows are
// rewritten).  ref_naive.js does the same for IP Messaging's userChannels.
//
// usage: node ref_conv_naive.js --base-url URL --account-sid AC... --service IS... --users FILE
//                               [--page-size N] [--limit-users N]
// TWILIO_AUTH_TOKEN and the PG* variables come from the environment.

const { parseArgs, CONV_DDL, conversationValues } = require('./common');
const { Client } = require('pg');

const UPSERT = `
INSERT INTO ref.user_conversations
       (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
        conversation_state, notification_level, unread_messages_count,
        last_read_message_index, friendly_name, unique_name, created_by, date_created,
        date_updated, date_inactive, date_closed, url, conversation_url, participant_url)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT (service_sid, user_sid, conversation_sid) DO UPDATE
   SET account_sid = EXCLUDED.account_sid,
       participant_sid = EXCLUDED.participant_sid,
       conversation_state = EXCLUDED.conversation_state,
       notification_level = EXCLUDED.notification_level,
       unread_messages_count = EXCLUDED.unread_messages_count,
       last_read_message_index = EXCLUDED.last_read_message_index,
       friendly_name = EXCLUDED.friendly_name,
       unique_name = EXCLUDED.unique_name,
       created_by = EXCLUDED.created_by,
       date_created = EXCLUDED.date_created,
       date_updated = EXCLUDED.date_updated,
       date_inactive = EXCLUDED.date_inactive,
       date_closed = EXCLUDED.date_closed,
       url = EXCLUDED.url,
       conversation_url = EXCLUDED.conversation_url,
       participant_url = EXCLUDED.participant_url,
       updated_at = now()`;

async function main() {
  const opts = parseArgs('ref_conv_naive.js', process.argv.slice(2));
  const client = require('twilio')(opts.accountSid, opts.authToken, {});
  client.conversations.baseUrl = opts.baseUrl; // the fake instead of https://conversations.twilio.com

  const db = new Client();
  await db.connect();
  await db.query(CONV_DDL);

  let rows = 0;
  for (const user of opts.users) {
    const writes = [];
    await client.conversations.v1
      .services(opts.service)
      .users(user)
      .userConversations.each({ pageSize: opts.pageSize }, (uc) => {
        writes.push(db.query(UPSERT, [opts.service, user, ...conversationValues(uc)]));
      });
    await Promise.all(writes);
    rows += writes.length;
  }
  await db.end();
  process.stderr.write(`ref_conv_naive: ${opts.users.length} users, ${rows} rows\n`);
}

main().catch((err) => {
  process.stderr.write(`ref_conv_naive: ${err.stack || err}\n`);
  process.exit(1);
});

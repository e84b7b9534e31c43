#!/usr/bin/env node
'use strict';
// Reference 3 of the Conversations scenarios: the same sync as
// ref_conv_naive.js, written well, as ref_pooled.js is for IP Messaging.
// --concurrency R users are listed at once by R async workers over one Twilio
// client with a keep-alive agent; each page of a user's conversations (PageSize
// 50, the API's most) is written with one batched upsert (unnest of arrays, a
// prepared statement) through a pg Pool of R connections, and a row whose
// values did not change is not rewritten.  While a page is being written, the
// user's next page is already being fetched.
//
// usage: node ref_conv_pooled.js --base-url URL --account-sid AC... --service IS... --users FILE
//                                [--page-size N] [--concurrency R] [--limit-users N]
// TWILIO_AUTH_TOKEN and the PG* variables come from the environment.

const http = require('http');
const { parseArgs, CONV_DDL, conversationValues } = require('./common');
const { Pool } = require('pg');
const twilio = require('twilio');

const UPSERT = `
INSERT INTO ref.user_conversations AS uc
       (service_sid, user_sid, conversation_sid, account_sid, participant_sid,
        conversation_state, notification_level, unread_messages_count,
        last_read_message_index, friendly_name, unique_name, created_by, date_created,
        date_updated, date_inactive, date_closed, url, conversation_url, participant_url)
SELECT $1, $2, t.*
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[],
              $9::bigint[], $10::text[], $11::text[], $12::text[], $13::timestamptz[],
              $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::text[],
              $18::text[], $19::text[]) AS t
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
       updated_at = now(),
       deleted_at = NULL
 WHERE (uc.account_sid, uc.participant_sid, uc.conversation_state, uc.notification_level,
        uc.unread_messages_count, uc.last_read_message_index, uc.friendly_name,
        uc.unique_name, uc.created_by, uc.date_created, uc.date_updated, uc.date_inactive,
        uc.date_closed, uc.url, uc.conversation_url, uc.participant_url, uc.deleted_at)
       IS DISTINCT FROM
       (EXCLUDED.account_sid, EXCLUDED.participant_sid, EXCLUDED.conversation_state,
        EXCLUDED.notification_level, EXCLUDED.unread_messages_count,
        EXCLUDED.last_read_message_index, EXCLUDED.friendly_name, EXCLUDED.unique_name,
        EXCLUDED.created_by, EXCLUDED.date_created, EXCLUDED.date_updated,
        EXCLUDED.date_inactive, EXCLUDED.date_closed, EXCLUDED.url,
        EXCLUDED.conversation_url, EXCLUDED.participant_url, NULL::timestamptz)`;

const COLUMNS = 17; // the upsert's arrays, $3 .. $19

// One page's rows as the upsert's parameters; a conversation listed twice keeps its last entry.
function pageParams(service, user, instances) {
  const byConversation = new Map();
  for (const uc of instances) byConversation.set(uc.conversationSid, uc);
  const cols = Array.from({ length: COLUMNS }, () => []);
  for (const uc of byConversation.values()) {
    conversationValues(uc).forEach((v, i) => cols[i].push(v));
  }
  return { values: [service, user, ...cols], rows: byConversation.size };
}

async function syncUser(client, pool, opts, user) {
  let rows = 0;
  let page = await client.conversations.v1
    .services(opts.service)
    .users(user)
    .userConversations.page({ pageSize: opts.pageSize });
  while (page) {
    const next = page.nextPage(); // undefined on the last page
    if (next) next.catch(() => {}); // its error is reported when awaited below
    const p = pageParams(opts.service, user, page.instances);
    if (p.rows > 0) await pool.query({ name: 'upsert_page', text: UPSERT, values: p.values });
    rows += p.rows;
    page = await next;
  }
  return rows;
}

async function main() {
  const opts = parseArgs('ref_conv_pooled.js', process.argv.slice(2));
  const r = Math.max(1, opts.concurrency);
  const httpClient = new twilio.RequestClient({ keepAlive: true, maxSockets: r });
  // RequestClient builds only an https agent; the fake speaks plain http on loopback.
  httpClient.axios.defaults.httpAgent = new http.Agent({ keepAlive: true, maxSockets: r });
  const client = twilio(opts.accountSid, opts.authToken, { httpClient });
  client.conversations.baseUrl = opts.baseUrl;

  const pool = new Pool({ max: r });
  await pool.query(CONV_DDL);

  let nextUser = 0;
  let rows = 0;
  async function worker() {
    while (nextUser < opts.users.length) {
      const user = opts.users[nextUser++];
      rows += await syncUser(client, pool, opts, user);
    }
  }
  await Promise.all(Array.from({ length: r }, worker));
  await pool.end();
  process.stderr.write(`ref_conv_pooled: ${opts.users.length} users, ${rows} rows, concurrency ${r}\n`);
}

main().catch((err) => {
  process.stderr.write(`ref_conv_pooled: ${err.stack || err}\n`);
  process.exit(1);
});

#!/usr/bin/env node
'use strict';
// Reference 3 of the benchmark: the same sync as ref_naive.js, written well.
// --concurrency R users are listed at once by R async workers over one Twilio
// client with a keep-alive agent; each page (PageSize 1000) is written with one
// batched upsert (unnest of arrays, a prepared statement) through a pg Pool of R
// connections, and a row whose values did not change is not rewritten.  While a
// page is being written, the user's next page is already being fetched.
//
// usage: node ref_pooled.js --base-url URL --account-sid AC... --service IS... --users FILE
//                           [--page-size N] [--concurrency R] [--limit-users N]
// TWILIO_AUTH_TOKEN and the PG* variables come from the environment.

const http = require('http');
const { parseArgs, DDL } = require('./common');
const { Pool } = require('pg');
const twilio = require('twilio');

const UPSERT = `
INSERT INTO ref.user_channels AS uc
       (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
        last_consumed_message_index, unread_messages_count, channel_url, member_url)
SELECT $1, $2, t.*
  FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
              $9::text[], $10::text[]) AS t
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
 WHERE (uc.account_sid, uc.member_sid, uc.status, uc.last_consumed_message_index,
        uc.unread_messages_count, uc.channel_url, uc.member_url, uc.deleted_at)
       IS DISTINCT FROM
       (EXCLUDED.account_sid, EXCLUDED.member_sid, EXCLUDED.status,
        EXCLUDED.last_consumed_message_index, EXCLUDED.unread_messages_count,
        EXCLUDED.channel_url, EXCLUDED.member_url, NULL::timestamptz)`;

// One page's rows as the upsert's parameters; a channel listed twice keeps its last entry.
function pageParams(service, user, instances) {
  const byChannel = new Map();
  for (const uc of instances) byChannel.set(uc.channelSid, uc);
  const cols = [[], [], [], [], [], [], [], []];
  for (const uc of byChannel.values()) {
    cols[0].push(uc.channelSid);
    cols[1].push(uc.accountSid);
    cols[2].push(uc.memberSid);
    cols[3].push(uc.status);
    cols[4].push(uc.lastConsumedMessageIndex);
    cols[5].push(uc.unreadMessagesCount);
    cols[6].push(uc.links ? uc.links.channel : null);
    cols[7].push(uc.links ? uc.links.member : null);
  }
  return { values: [service, user, ...cols], rows: byChannel.size };
}

async function syncUser(client, pool, opts, user) {
  let rows = 0;
  let page = await client.ipMessaging.v1
    .services(opts.service)
    .users(user)
    .userChannels.page({ pageSize: opts.pageSize });
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
  const opts = parseArgs('ref_pooled.js', process.argv.slice(2));
  const r = Math.max(1, opts.concurrency);
  const httpClient = new twilio.RequestClient({ keepAlive: true, maxSockets: r });
  // RequestClient builds only an https agent; the fake speaks plain http on loopback.
  httpClient.axios.defaults.httpAgent = new http.Agent({ keepAlive: true, maxSockets: r });
  const client = twilio(opts.accountSid, opts.authToken, { httpClient });
  client.ipMessaging.baseUrl = opts.baseUrl;

  const pool = new Pool({ max: r });
  await pool.query(DDL);

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
  process.stderr.write(`ref_pooled: ${opts.users.length} users, ${rows} rows, concurrency ${r}\n`);
}

main().catch((err) => {
  process.stderr.write(`ref_pooled: ${err.stack || err}\n`);
  process.exit(1);
});

-- tests/bench/analyst_data.sql - a large, consistent chatsync schema for the
-- analyst queries (tests/bench/analyst.sh, tests/bench/README.md).
--
-- Run with psql against a schema that chatsyncd --migrate has just created,
-- with these variables:
--   users     configured users, half in each of two services
--   channels  channels per service
--   per_user  memberships per user, on average (per_user - 55 to per_user + 55)
--   days      how far back the history goes (one sweep an hour)
--
-- Everything is set-based (generate_series) and deterministic (hashint8 of a
-- membership's number).  The data follow chatsync's model:
--
-- - a sweep an hour (sync_runs); each user's page is committed at the same
--   second of every sweep (under 200 s after its start), and every change is
--   seen by a sweep, so versions start and end at their user's sweeps;
-- - each membership has 5 to 14 past versions, one after the other without
--   gap or overlap from first_seen_at to the current version, which is its
--   user_channels row (valid from updated_at);
-- - 70 % of memberships came with their user's first listing, the others
--   later, with an 'added' event;
-- - 3 % were invited and never joined, 27 % were invited and joined later (a
--   'status_changed' event), the rest joined at once (first_invited_at and
--   first_joined_at as sync_page() sets them);
-- - 20 % were gone for a while: a removal period (is_deleted) in the middle
--   of their history, with the values of the version before it, from a
--   'removed' event to an 'added' event;
-- - 5 % are gone now: user_channels.deleted_at, and a 'removed' event;
-- - one user in ten is configured by identity (resolved by users); 20
--   configured users were never synced; each sweep fails for one user in 200
--   (sync_errors, sync_runs.users_failed, sync_cursors of the last sweep).
--
-- The big tables are written in the order chatsyncd writes them (past
-- versions as they ended, events as they happened), without their secondary
-- indexes, which are built again afterwards from their own definitions.

\set ON_ERROR_STOP on
SET search_path TO chatsync;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';

SELECT date_trunc('hour', now()) - make_interval(days => :days) AS base,
       :days * 24 AS runs \gset

-- The secondary indexes of the big tables, dropped for the load.
CREATE TEMP TABLE gen_indexes AS
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
  FROM pg_index i
 WHERE i.indrelid IN ('user_channels'::regclass, 'user_channel_past_versions'::regclass,
                      'membership_event_log'::regclass, 'sync_errors'::regclass)
   AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid);
SELECT format('DROP INDEX %s', name) FROM gen_indexes \gexec

-- Names: service s (1 or 2), user u (in service 1 + u % 2; one in ten
-- configured by identity), channel c of service s, membership m.
CREATE FUNCTION pg_temp.service_sid(s bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT 'IS' || lpad(to_hex(s), 32, '0') $$;
CREATE FUNCTION pg_temp.user_sid(u bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT 'US' || lpad(to_hex(u), 32, '0') $$;
CREATE FUNCTION pg_temp.configured(u bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT CASE WHEN u % 10 = 0 THEN 'user' || u || '@example.com'
                  ELSE 'US' || lpad(to_hex(u), 32, '0') END $$;
CREATE FUNCTION pg_temp.channel_sid(s bigint, c bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT 'CH' || lpad(to_hex(s * 1000000 + c), 32, '0') $$;
CREATE FUNCTION pg_temp.member_sid(m bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT 'MB' || lpad(to_hex(m), 32, '0') $$;
-- When user u's page of sweep k was committed (psql leaves the body of a
-- function alone: base goes in with format).
SELECT format($f$CREATE FUNCTION pg_temp.at(u bigint, k bigint) RETURNS timestamptz
    IMMUTABLE LANGUAGE sql
    AS $$ SELECT %L::timestamptz + k * interval '1 hour' + (u %% 200) * interval '1 second' $$
$f$, :'base') \gexec

-- ---------------------------------------------------------- services, users, channels

INSERT INTO services (service_sid, account_sid, friendly_name, date_created, date_updated,
                      first_seen_at, updated_at)
SELECT pg_temp.service_sid(s), 'AC' || repeat('a', 32), 'Service ' || s,
       :'base'::timestamptz - interval '400 days', :'base'::timestamptz - interval '10 days',
       :'base'::timestamptz, :'base'::timestamptz
  FROM generate_series(1, 2) s;

-- The configured users, and a fifth more in the users listing only, some deleted.
INSERT INTO users (service_sid, user_sid, identity, friendly_name, role_sid, joined_channels_count,
                   is_online, is_notifiable, date_created, date_updated, first_seen_at, updated_at,
                   deleted_at)
SELECT pg_temp.service_sid(1 + u % 2), pg_temp.user_sid(u), 'user' || u || '@example.com',
       'User ' || u, 'RL' || repeat('b', 32), :per_user, u % 3 = 0, true,
       :'base'::timestamptz - interval '200 days',
       :'base'::timestamptz + (u % 90) * interval '1 day', :'base'::timestamptz,
       :'base'::timestamptz + (u % 90) * interval '1 day',
       CASE WHEN u > :users AND u % 7 = 0 THEN now() - interval '3 days' END
  FROM generate_series(1, :users + :users / 5) u;

INSERT INTO channels (service_sid, channel_sid, friendly_name, unique_name, type, members_count,
                      messages_count, created_by, date_created, date_updated, first_seen_at,
                      updated_at)
SELECT pg_temp.service_sid(s), pg_temp.channel_sid(s, c), 'Channel ' || s || '-' || c,
       'channel-' || s || '-' || c, CASE WHEN c % 4 = 0 THEN 'private' ELSE 'public' END,
       :per_user * :users / 2 / :channels, c * 17 % 5000, 'system',
       :'base'::timestamptz - interval '300 days', :'base'::timestamptz,
       :'base'::timestamptz, :'base'::timestamptz
  FROM generate_series(1, 2) s, generate_series(1, :channels) c;

-- ------------------------------------------------------------------ sweeps and errors

INSERT INTO sync_runs (started_at, finished_at, users_ok, users_failed, pages, rows_received,
                       rows_inserted, rows_updated, rows_unchanged, rows_deleted, http_requests,
                       http_retries)
SELECT :'base'::timestamptz + k * interval '1 hour',
       :'base'::timestamptz + k * interval '1 hour' + (200 + k % 60) * interval '1 second',
       :users - greatest(1, :users / 200), greatest(1, :users / 200), :users,
       :users * :per_user, CASE WHEN k = 0 THEN :users * :per_user ELSE :users / 2 END,
       :users * 12, :users * (:per_user - 13), :users / 50, :users + k % 11, k % 7
  FROM generate_series(0, :runs - 1) k
 ORDER BY k;
SELECT max(run_id) AS last_run FROM sync_runs \gset

-- Each sweep k fails for users/200 users (at least one), distinct within it.
CREATE TEMP TABLE gen_errors AS
SELECT k, e, 1 + (k * 7919 + e * 197) % :users AS u,
       (ARRAY['http 429', 'http 429', 'http 429', 'http 429', 'http 500', 'http 500',
              'http 500', 'transport', 'transport', 'http 404'])[1 + (k + e) % 10] AS kind
  FROM generate_series(0, :runs - 1) k, generate_series(0, greatest(1, :users / 200) - 1) e;
INSERT INTO sync_errors (at, service_sid, "user", page, kind, message)
SELECT pg_temp.at(u, k) + interval '20 seconds', pg_temp.service_sid(1 + u % 2),
       pg_temp.configured(u), CASE WHEN kind = 'http 404' THEN NULL ELSE 1 END, kind,
       CASE kind
       WHEN 'http 429' THEN 'could not fetch page 1: HTTP 429 Too Many Requests after 3 retries'
       WHEN 'http 500' THEN 'could not fetch page 1: HTTP 500 Internal Server Error after 3 retries'
       WHEN 'transport' THEN 'could not fetch page 1: Operation timed out after 30000 milliseconds'
       ELSE 'user not found (HTTP 404)' END
  FROM gen_errors
 ORDER BY k, u;

INSERT INTO sync_config (interval_seconds, recorded_at) VALUES (3600, :'base'::timestamptz);
INSERT INTO sync_configured_users (service_sid, "user")
SELECT pg_temp.service_sid(1 + u % 2), pg_temp.configured(u) FROM generate_series(1, :users) u
UNION ALL
SELECT pg_temp.service_sid(1 + p % 2), 'pending' || p || '@example.com'
  FROM generate_series(1, 20) p;

-- After the last sweep: complete, or failed in it (and complete in the one before).
INSERT INTO sync_cursors (service_sid, user_sid, run_id, state, pages_done, last_complete_at,
                          last_error, last_error_at, updated_at, listing_digest, listing_rows)
SELECT pg_temp.service_sid(1 + u % 2), pg_temp.configured(u), :last_run,
       CASE WHEN f.u IS NULL THEN 'complete' ELSE 'failed' END, 1,
       pg_temp.at(u, :runs - CASE WHEN f.u IS NULL THEN 1 ELSE 2 END),
       f.message, f.at, pg_temp.at(u, :runs - 1), md5(pg_temp.configured(u)), :per_user
  FROM generate_series(1, :users) u
  LEFT JOIN (SELECT e.u, s.message, s.at
               FROM gen_errors e
               JOIN sync_errors s ON s.at = pg_temp.at(e.u, e.k) + interval '20 seconds'
                                 AND s."user" = pg_temp.configured(e.u)
              WHERE e.k = :runs - 1) f USING (u);

-- ------------------------------------------------------------------ memberships

-- One row per membership m of user u in channel c, with hashes h and g that decide:
--   kind  'never' (invited, never joined), 'later' (invited, joined later), 'joined'
--   n     its past versions (5..14), ended by sweeps k1 < k2 < ... < kn
--   k0    the sweep that first saw it (0: its user's first listing)
--   r     its removal period's version, if it has one (1 + n/2: in the middle)
--   gone  deleted now
CREATE TEMP TABLE gen_m AS
SELECT m, u, s, c, h,
       CASE WHEN h % 100 < 3 THEN 'never' WHEN h % 100 < 30 THEN 'later' ELSE 'joined' END AS kind,
       5 + g % 10 AS n,
       CASE WHEN (g / 10) % 100 < 30 THEN 1 + (g / 1000) % (:runs - 200) ELSE 0 END AS k0,
       CASE WHEN (h / 100) % 100 < 20 THEN 1 + (5 + g % 10) / 2 END AS r,
       (h / 10000) % 100 < 5 AS gone
  FROM (SELECT row_number() OVER (ORDER BY u, j) AS m, u, 1 + u % 2 AS s,
               1 + (u * 131 + j) % :channels AS c
          FROM generate_series(1, :users) u,
               generate_series(0, :per_user - 56 + (u * 41) % 111) j) x,
       LATERAL (SELECT hashint8(x.m) & 2147483647 AS h,
                       (hashint8(x.m) >> 33) & 1073741823 AS g) hh;

-- The sweep that ended membership m's version i (i = 0: the one that first
-- saw it), spread over the sweeps since k0 with a jitter, always increasing.
SELECT format($f$CREATE FUNCTION pg_temp.k(m bigint, k0 bigint, n bigint, i bigint)
    RETURNS bigint IMMUTABLE LANGUAGE sql AS $$
    SELECT CASE WHEN i = 0 THEN k0
                ELSE k0 + floor((%s - 1 - k0) * (i + 0.1 + 0.8 * (hashint8(m * 16 + i) & 1023)
                                                    / 1024.0) / (n + 1))::bigint END
$$
$f$, :runs) \gexec
-- The values of a membership's live version j (j = n + 1: the current one).
CREATE FUNCTION pg_temp.status(kind text, j bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT CASE WHEN kind = 'never' OR (kind = 'later' AND j = 1) THEN 'invited'
                  ELSE 'joined' END $$;
-- Unread messages: none for 57 % of versions, 1 to 10 for 30 %, 11 to 200
-- for 10 %, unknown (no read horizon yet: NULL) for 3 %.
CREATE FUNCTION pg_temp.unread(h bigint, j bigint) RETURNS bigint IMMUTABLE LANGUAGE sql
AS $$ SELECT CASE WHEN x < 3 THEN NULL WHEN x < 60 THEN 0 WHEN x < 90 THEN 1 + x % 10
                  ELSE 11 + (h / 7 + j * 13) % 190 END
        FROM (SELECT (h / 7 + j * 29) % 100 AS x) x $$;
CREATE FUNCTION pg_temp.channel_url(s bigint, c bigint) RETURNS text IMMUTABLE LANGUAGE sql
AS $$ SELECT 'https://chat.twilio.com/v2/Services/' || pg_temp.service_sid(s) || '/Channels/'
             || pg_temp.channel_sid(s, c) $$;

-- The current version of each membership, in the order of their last change.
INSERT INTO user_channels (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
                           last_consumed_message_index, unread_messages_count, channel_url,
                           member_url, first_seen_at, updated_at, deleted_at,
                           first_invited_at, first_joined_at)
SELECT pg_temp.service_sid(s), pg_temp.configured(u), pg_temp.channel_sid(s, c),
       'AC' || repeat('a', 32), pg_temp.member_sid(m), pg_temp.status(kind, j),
       10 * j + h % 10, pg_temp.unread(h, j), pg_temp.channel_url(s, c),
       pg_temp.channel_url(s, c) || '/Members/' || pg_temp.member_sid(m),
       pg_temp.at(u, k0), pg_temp.at(u, kn), CASE WHEN gone THEN pg_temp.at(u, kn) END,
       CASE WHEN kind <> 'joined' THEN pg_temp.at(u, k0) END,
       CASE kind WHEN 'joined' THEN pg_temp.at(u, k0)
                 WHEN 'later' THEN pg_temp.at(u, pg_temp.k(m, k0, n, 1)) END
  FROM (SELECT gm.*, CASE WHEN gone THEN n ELSE n + 1 END AS j,
               pg_temp.k(m, k0, n, n) AS kn
          FROM gen_m gm
         ORDER BY kn, u, c OFFSET 0) x;

-- The past versions, as they ended.  A removal period has the values of the
-- version before it.
INSERT INTO user_channel_past_versions
       (service_sid, user_sid, channel_sid, account_sid, member_sid, status,
        last_consumed_message_index, unread_messages_count, channel_url, member_url,
        valid_from, valid_to, is_deleted)
SELECT pg_temp.service_sid(s), pg_temp.configured(u), pg_temp.channel_sid(s, c),
       'AC' || repeat('a', 32), pg_temp.member_sid(m), pg_temp.status(kind, j),
       10 * j + h % 10, pg_temp.unread(h, j), pg_temp.channel_url(s, c),
       pg_temp.channel_url(s, c) || '/Members/' || pg_temp.member_sid(m),
       pg_temp.at(u, kfrom), pg_temp.at(u, kto), removal
  FROM (SELECT gm.m, gm.u, gm.s, gm.c, gm.h, gm.kind, coalesce(i = r, false) AS removal,
               CASE WHEN i = r THEN i - 1 ELSE i END AS j,
               pg_temp.k(m, k0, n, i - 1) AS kfrom, pg_temp.k(m, k0, n, i) AS kto
          FROM gen_m gm, generate_series(1, gm.n) i
         ORDER BY kto, u, c OFFSET 0) x;

-- The events those versions imply, as they happened: a membership that came
-- after its user's first listing was added; 'later' changed status when its
-- first version ended; a removal period starts with 'removed' and ends with
-- 'added'; a membership gone now was removed when its last version ended.
INSERT INTO membership_event_log (at, service_sid, user_sid, channel_sid, event, old_status,
                                  new_status)
SELECT pg_temp.at(u, k), pg_temp.service_sid(s), pg_temp.configured(u),
       pg_temp.channel_sid(s, c), event, old_status, new_status
  FROM (SELECT gm.u, gm.s, gm.c, e.*
          FROM gen_m gm,
               LATERAL (SELECT k0 AS k, 'added' AS event, NULL AS old_status,
                               pg_temp.status(kind, 1) AS new_status
                         WHERE k0 > 0
                        UNION ALL
                        SELECT pg_temp.k(m, k0, n, 1), 'status_changed', 'invited', 'joined'
                         WHERE kind = 'later'
                        UNION ALL
                        SELECT pg_temp.k(m, k0, n, r - 1), 'removed', pg_temp.status(kind, r - 1),
                               NULL
                         WHERE r IS NOT NULL
                        UNION ALL
                        SELECT pg_temp.k(m, k0, n, r), 'added', NULL, pg_temp.status(kind, r + 1)
                         WHERE r IS NOT NULL
                        UNION ALL
                        SELECT pg_temp.k(m, k0, n, n), 'removed', pg_temp.status(kind, n), NULL
                         WHERE gone) e
         ORDER BY k, u, c OFFSET 0) x;

-- What the sweeps keep, as chatsyncd rebuilds it after migration 009: the
-- users' keys (the triggers made them already) and the first invitations
-- and joins (set above, and left as they are where they agree).
SELECT sync_rebuild_kept_state();

-- The secondary indexes again.
SELECT def FROM gen_indexes \gexec

#!/usr/bin/env bash
# What migration 009 keeps (sql/functions/sync_user_keys.sql,
# sync_kept_state.sql) and the views that read it: a membership's first
# invitation and first join as sync_page() sets them, sync_merge_user()
# merges them and sync_rebuild_kept_state() rebuilds them from the history,
# and as retention leaves them; membership_invitations and Q9 over them;
# sync_user_keys as its triggers keep it, against the resolution written out
# the long way, and the joins the views skip with it; channel_unread_hourly
# checked hour by hour against a count of the versions alive at each hour's
# end.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

S=$SERVICE_SID
FAKE_URL=http://127.0.0.1:9 write_config "$TEST_TMP/c.conf" alice # --migrate makes no request
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/c.conf" --migrate 2>>"$TEST_TMP/err"
is "$?" 0 "chatsyncd --migrate creates the schema"
# The instance the writer works for, live for an hour.
instance=$(sql "SELECT chatsync.sync_instance_register('test', 'localhost', $$, now(), 3600)")

as() { # as INSTANCE QUERY: QUERY in schema chatsync, on a session naming INSTANCE
	PGOPTIONS="-c client_min_messages=warning -c search_path=chatsync -c chatsync.instance=$1" \
		psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}
w() { as "$instance" "$1"; } # w QUERY: as the writer
q() { sql "SET search_path TO chatsync; $1"; }
run() { q "INSERT INTO sync_runs DEFAULT VALUES RETURNING run_id"; }
# page RUN USER CHANNELS STATUSES UNREADS: a whole listing of USER on one page.
page() {
	w "SELECT * FROM sync_page($1, '$S', '$2', true, NULL, '{$3}', NULL, NULL, '{$4}',
	     NULL, '{$5}', NULL, NULL, 0, 1, 0, NULL)" >/dev/null
}
firsts() { # firsts USER: channel:invited?:joined?:joined after invited? of each membership
	q "SELECT string_agg(channel_sid || ':' || (first_invited_at IS NOT NULL) || ':'
	                     || (first_joined_at IS NOT NULL) || ':'
	                     || coalesce((first_joined_at > first_invited_at)::text, '-'),
	                     ',' ORDER BY channel_sid)
	     FROM user_channels WHERE user_sid = '$1'"
}
# --- first invitation, first join ------------------------------------------------
R1=$(run)
page "$R1" alice CH1,CH2,CH3 invited,joined,invited 1,2,3
page "$R1" bob CH1,CH4 joined,not_participating 4,5
is "$(firsts alice)" "CH1:true:false:-,CH2:false:true:-,CH3:true:false:-" \
	"a first listing: the invited are first invited now, the joined first joined now"
is "$(firsts bob)" "CH1:false:true:-,CH4:false:false:-" "not_participating is neither"
sleep 0.01
R2=$(run)
page "$R2" alice CH1,CH2,CH3 joined,joined,invited 1,2,3
page "$R2" bob CH1,CH4 joined,invited 4,5
is "$(firsts alice)" "CH1:true:true:true,CH2:false:true:-,CH3:true:false:-" \
	"alice joins CH1: first joined after first invited; CH3 still only invited"
is "$(firsts bob)" "CH1:false:true:-,CH4:true:false:-" "bob is invited to CH4 on a later sweep"
first_ch1=$(q "SELECT first_invited_at FROM user_channels WHERE user_sid = 'alice' AND channel_sid = 'CH1'")
sleep 0.01
R3=$(run)
page "$R3" alice CH1,CH2 invited,joined 1,2 # invited to CH1 again; CH3 goes, never joined
is "$(q "SELECT first_invited_at FROM user_channels WHERE user_sid = 'alice' AND channel_sid = 'CH1'")" \
	"$first_ch1" "invited again: the first invitation stays the first"
is "$(q "SELECT string_agg(user_sid || ':' || channel_sid || ':' || (joined_at IS NULL) || ':' || is_deleted,
	                     ',' ORDER BY user_sid, channel_sid)
	   FROM membership_invitations")" \
	"alice:CH1:false:false,alice:CH3:true:true,bob:CH4:true:false" \
	"membership_invitations: every membership ever invited, removed ones too, with whether it joined"
awk '/^-- Q9:/ { on = 1; next } on && /^-- Q[0-9]+:/ { exit } on' "$top_srcdir/doc/questions.sql" >"$TEST_TMP/q9.sql"
is "$(PGOPTIONS="-c search_path=chatsync" psql -X -q -A -t -F'|' -f "$TEST_TMP/q9.sql" | cut -d'|' -f2,4 | paste -sd,)" \
	"alice|CH3,bob|CH4" "Q9: invitations never followed by a join, the removed one included"
plan=$(q "SET enable_seqscan = off; EXPLAIN SELECT * FROM membership_invitations WHERE joined_at IS NULL")
echo "$plan" | grep -q user_channels_never_joined_idx
ok $? "the partial index of the never joined serves Q9's condition"

# --- a merge ---------------------------------------------------------------------------
R7=$(run)
page "$R7" carol CH5 invited 0
sleep 0.01
page "$R7" "US$(printf '%032x' 7)" CH5 joined 0
is "$(w "SELECT sync_merge_user('$S', 'carol', 'US$(printf '%032x' 7)')")" 1 \
	"carol, by identity and by SID, both in CH5: merged"
is "$(firsts "US$(printf '%032x' 7)")" "CH5:true:true:true" \
	"the merged membership keeps the identity's first invitation and the SID's first join"

# --- sync_user_keys, kept by triggers -----------------------------------------------------
# oracle: each key with a cursor resolved as the users listing has it, written
# out the long way (by SID; else by identity, the best of several; else itself).
oracle="SELECT c.service_sid, c.user_sid AS configured,
                 coalesce(b.user_sid, i.user_sid, c.user_sid) AS user_sid,
                 coalesce(b.identity, i.identity,
                          CASE WHEN c.user_sid !~ '^US[0-9a-fA-F]{32}$' THEN c.user_sid END) AS identity,
                 coalesce(b.friendly_name, CASE WHEN b.user_sid IS NULL THEN i.friendly_name END) AS user_name
            FROM sync_cursors c
            LEFT JOIN users b ON b.service_sid = c.service_sid AND b.user_sid = c.user_sid
            LEFT JOIN LATERAL (SELECT * FROM users u
                                WHERE u.service_sid = c.service_sid AND u.identity = c.user_sid
                                  AND b.user_sid IS NULL
                                ORDER BY u.deleted_at IS NULL DESC, u.updated_at DESC, u.user_sid DESC
                                LIMIT 1) i ON true"
kept="SELECT service_sid, configured, user_sid, identity, user_name FROM sync_user_keys"
consistent() { q "SELECT (SELECT count(*) FROM (($oracle) EXCEPT ($kept)) a) + (SELECT count(*) FROM (($kept) EXCEPT ($oracle)) b)"; }
key() { q "SELECT user_sid || '|' || coalesce(identity, '-') || '|' || coalesce(user_name, '-') FROM user_keys WHERE configured = '$1'"; }
UA=US$(printf '%032x' 100) UB=US$(printf '%032x' 101) UC=US$(printf '%032x' 102)
is "$(key alice)|$(consistent)" "alice|alice|-|0" "a key the users listing does not know stands for itself"
w "INSERT INTO users (service_sid, user_sid, identity, friendly_name) VALUES ('$S', '$UA', 'alice', 'Alice')" >/dev/null
is "$(key alice)|$(consistent)" "$UA|alice|Alice|0" "a user with that identity listed: the key stands for that User SID and name"
w "UPDATE users SET friendly_name = 'Alice A.', updated_at = now() WHERE user_sid = '$UA'" >/dev/null
is "$(key alice)" "$UA|alice|Alice A." "renamed: the new name"
w "INSERT INTO users (service_sid, user_sid, identity, friendly_name, updated_at)
   VALUES ('$S', '$UB', 'alice', 'Alice B', now() + interval '1 minute')" >/dev/null
is "$(key alice)|$(consistent)" "$UB|alice|Alice B|0" "a second user with the identity, updated later: the key moves to it"
w "UPDATE users SET deleted_at = now() WHERE user_sid = '$UB'" >/dev/null
is "$(key alice)|$(consistent)" "$UA|alice|Alice A.|0" "that one deleted: back to the one not deleted"
w "DELETE FROM users WHERE user_sid IN ('$UA', '$UB')" >/dev/null
is "$(key alice)|$(consistent)" "alice|alice|-|0" "both gone from the table: the key stands for itself again"
R8=$(run)
page "$R8" "$UC" CH1 joined 0
is "$(key "$UC")" "$UC|-|-" "a new cursor under a User SID the listing does not know: a key of its own"
w "INSERT INTO users (service_sid, user_sid, identity, friendly_name) VALUES ('$S', '$UC', 'cy', 'Cy')" >/dev/null
is "$(key "$UC")|$(consistent)" "$UC|cy|Cy|0" "listed later: its identity and name"
is "$(q "SELECT count(*) FROM sync_user_keys")" "$(q "SELECT count(*) FROM sync_cursors")" "one key per cursor"
w "INSERT INTO users (service_sid, user_sid, identity)
   SELECT '$S', 'US' || lpad(to_hex(1000 + i), 32, '0'), 'many-' || i FROM generate_series(1, 300) i" >/dev/null
# One transaction: pg_stat_xact_user_functions counts its calls (track_functions = pl).
calls=$(w "INSERT INTO sync_cursors (service_sid, user_sid, run_id, state) VALUES ('$S', 'dee', $R8, 'running');
	SELECT calls FROM pg_stat_xact_user_functions WHERE funcname = 'sync_identity_user'")
is "$calls|$(key dee)|$(consistent)" "1|dee|dee|-|0" \
	"a cursor added with 301 users listed: its key resolved with one identity lookup, not one per user"
w "UPDATE sync_cursors SET user_sid = 'many-7' WHERE service_sid = '$S' AND user_sid = 'dee'" >/dev/null
is "$(q "SELECT count(*) FROM sync_user_keys WHERE configured = 'dee'")|$(key many-7)|$(consistent)" \
	"0|US$(printf '%032x' 1007)|many-7|-|0" "a cursor moved to another key: the old key goes, the new one resolves"
w "DELETE FROM sync_cursors WHERE service_sid = '$S' AND user_sid = 'many-7'" >/dev/null
w "DELETE FROM users WHERE identity LIKE 'many-%'" >/dev/null
is "$(q "SELECT count(*) FROM sync_user_keys WHERE configured = 'many-7'")|$(consistent)" "0|0" \
	"a cursor deleted: its key goes"
xmins=$(q "SELECT string_agg(xmin::text, ',' ORDER BY configured) FROM sync_user_keys")
w "SELECT sync_user_keys_refresh_service(NULL)" >/dev/null
is "$(q "SELECT string_agg(xmin::text, ',' ORDER BY configured) FROM sync_user_keys")|$(consistent)" "$xmins|0" \
	"refreshing every key of every service rewrites none that is right"
q "UPDATE sync_user_keys SET user_name = 'wrong' WHERE configured = '$UC'" >/dev/null
w "SELECT sync_user_keys_refresh_service('$S')" >/dev/null
is "$(key "$UC")|$(consistent)" "$UC|cy|Cy|0" "and sets right one that is not"
plan=$(q "EXPLAIN SELECT channel_sid, status, count(*) FROM memberships GROUP BY 1, 2")
echo "$plan" | grep -Eq "sync_user_keys|sync_cursors"
ok $((!$?)) "memberships counted by channel and status read neither the keys nor the cursors"
plan=$(q "EXPLAIN SELECT date_trunc('day', at), count(*) FROM membership_events GROUP BY 1")
echo "$plan" | grep -Eq "sync_user_keys|sync_cursors"
ok $((!$?)) "nor do the events counted by day"
is "$(q "SELECT count(*) FROM memberships WHERE user_sid = '$UC'")|$(q "SELECT identity FROM memberships WHERE user_sid = '$UC'")" \
	"1|cy" "a membership is found by the User SID its key stands for"

# --- sync_rebuild_kept_state, and channel_unread_hourly against the versions alive ------
# A history of 40 hours over 3 channels and 6 users: every membership's
# versions one after another, some with no unread count, some removal
# periods, some memberships gone now; then every timestamp as written.
q "TRUNCATE user_channels, user_channel_past_versions;
   SELECT setseed(0.42);
   CREATE TEMP TABLE v AS
   SELECT m.u, m.c, i, now() - interval '40 hours' + (i * 4 + m.u) * interval '1 hour'
            + (random() * 50) * interval '1 minute' AS t0,
          CASE WHEN random() < 0.2 THEN NULL ELSE floor(random() * 20)::bigint END AS unread,
          CASE WHEN random() < 0.3 THEN 'invited' ELSE 'joined' END AS status,
          random() < 0.15 AS removal
     FROM (SELECT u, c FROM generate_series(1, 6) u, generate_series(1, 3) c
            WHERE (u + c) % 4 <> 0) m, generate_series(0, 8) i;
   INSERT INTO user_channel_past_versions
          (service_sid, user_sid, channel_sid, status, unread_messages_count, valid_from, valid_to,
           is_deleted)
   SELECT '$S', 'u' || a.u, 'CH' || a.c, a.status, a.unread, a.t0, b.t0, a.removal
     FROM v a JOIN v b ON b.u = a.u AND b.c = a.c AND b.i = a.i + 1
    WHERE a.i < 8;
   INSERT INTO sync_cursors (service_sid, user_sid, run_id, state)
   SELECT '$S', 'u' || u, $R8, 'complete' FROM generate_series(1, 6) u;
   INSERT INTO user_channels (service_sid, user_sid, channel_sid, status, unread_messages_count,
                              first_seen_at, updated_at, deleted_at)
   SELECT '$S', 'u' || u, 'CH' || c, status, unread, now() - interval '41 hours', t0,
          CASE WHEN (u * c) % 5 = 0 THEN t0 END
     FROM v WHERE i = 8" >/dev/null
is "$(q "SELECT count(*) FROM user_channel_past_versions")" 104 "a history of 104 past versions (13 memberships)"
w "SELECT sync_rebuild_kept_state()" >/dev/null
is "$?" 0 "sync_rebuild_kept_state() runs"
# each hour from the first to the current one, each version alive at the hour's end
# (now, for the current hour): members and unread, as the definition has it
expected="SELECT h AS hour, service_sid, channel_sid, count(*)::integer AS members,
                 sum(unread_messages_count) AS unread
            FROM generate_series(date_trunc('hour', now() - interval '41 hours'),
                                 date_trunc('hour', now()), interval '1 hour') h,
                 (SELECT service_sid, channel_sid, unread_messages_count, valid_from, valid_to
                    FROM user_channel_past_versions WHERE NOT is_deleted
                  UNION ALL
                  SELECT service_sid, channel_sid, unread_messages_count, updated_at, 'infinity'
                    FROM user_channels WHERE deleted_at IS NULL) x
           WHERE x.valid_from <= least(h + interval '1 hour', now())
             AND least(h + interval '1 hour', now()) < x.valid_to
           GROUP BY h, service_sid, channel_sid"
got="SELECT hour, service_sid, channel_sid, members, unread_messages_count FROM channel_unread_hourly"
is "$(q "SELECT count(*) FROM (($expected) EXCEPT ($got)) a")|$(q "SELECT count(*) FROM (($got) EXCEPT ($expected)) b")" \
	"0|0" "channel_unread_hourly: each channel's members and unread at the end of every hour, exactly"
is "$(q "SELECT count(DISTINCT hour) >= 39 FROM channel_unread_hourly")" t "(over the 39 hours and more of the history)"
is "$(q "SELECT count(*) FROM (($expected) EXCEPT ($got)) a WHERE channel_sid = 'CH2'")|$(q "SELECT count(*) > 30 FROM channel_unread_hourly WHERE channel_sid = 'CH2'")" \
	"0|t" "asked for one channel, the same hours and values"
plan=$(q "SET enable_seqscan = off; EXPLAIN SELECT * FROM channel_unread_hourly WHERE channel_sid = 'CH2'")
echo "$plan" | grep -q "user_channel_past_versions_channel_idx"
ok $? "one channel's hours read the history through its channel index"
is "$(q "SELECT count(*) || '|' || count(*) FILTER (WHERE (uc.first_invited_at, uc.first_joined_at)
	                                            IS DISTINCT FROM (f.invited, f.joined))
	     FROM user_channels uc,
	          LATERAL (SELECT min(valid_from) FILTER (WHERE status = 'invited') AS invited,
	                          min(valid_from) FILTER (WHERE status = 'joined') AS joined
	                     FROM (SELECT status, valid_from FROM user_channel_past_versions p
	                            WHERE p.user_sid = uc.user_sid AND p.channel_sid = uc.channel_sid
	                              AND NOT p.is_deleted
	                           UNION ALL SELECT uc.status, uc.updated_at WHERE uc.deleted_at IS NULL) x) f")" \
	"13|0" \
	"and every membership's first invitation and join: the first version of that status"
is "$(q "SELECT rebuilt FROM sync_kept_state")" t "the rebuild is recorded"

# --- retention -------------------------------------------------------------------------
firsts_now=$(q "SELECT string_agg(user_sid || channel_sid || coalesce(first_invited_at::text, '-') || coalesce(first_joined_at::text, '-'), ',' ORDER BY 1) FROM user_channels")
while [ "$(w "SELECT sync_prune(0, 50)")" != 0 ]; do :; done
is "$(q "SELECT count(*) FROM user_channel_past_versions")|$(q "SELECT string_agg(user_sid || channel_sid || coalesce(first_invited_at::text, '-') || coalesce(first_joined_at::text, '-'), ',' ORDER BY 1) FROM user_channels")" \
	"0|$firsts_now" "every past version pruned: the first invitations and joins stay"

# --- a first listing on two pages -----------------------------------------------------
R9=$(run)
# A first listing on two pages whose second lists CH6 again, joined now: the
# plain INSERT of page 2 fails on the key, and the page is compared.
sp() { # sp USER FIRST NEXT CHANNELS STATUSES: one page; inserted|updated|unchanged
	w "SELECT inserted || '|' || updated || '|' || unchanged
	     FROM sync_page($R9, '$S', '$1', $2, $3, '{$4}', NULL, NULL, '{$5}', NULL, '{1}', NULL, NULL,
	                    0, 1, 0, NULL)"
}
is "$(sp dora true "'http://x/dora/p2'" CH6,CH7 invited,joined)" "2|0|0" "dora's first page: 2 inserted"
sleep 0.01
is "$(sp dora false NULL CH0,CH6,CH8 invited,joined,invited)|$(firsts dora)" \
	"2|1|0|CH0:true:false:-,CH6:true:true:true,CH7:false:true:-,CH8:true:false:-" \
	"her second page lists CH6 again, joined: compared, CH6 first joined after first invited, CH0 and CH8 inserted"
is "$(q "SELECT string_agg(channel_sid || ':' || status, ',') FROM user_channel_past_versions WHERE user_sid = 'dora'")|$(q "SELECT count(*) FROM membership_event_log WHERE user_sid = 'dora'")" \
	"CH6:invited|0" "CH6's first version ended; no event (a first listing)"

done_testing

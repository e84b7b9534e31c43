#!/usr/bin/env bash
# The dimension listings: the service, its users and its channels land in
# their tables as the fake API serves them, change and are deleted with it,
# and cost no write when unchanged; users = "all" discovers the users and
# forgets those the API deleted; an identity is listed under its User SID,
# one user configured both ways is one user, and what an older database
# stored under the identity moves to the SID with its history; a kill -9 in
# the middle of the users listing resumes at its committed cursor.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1
export DIMENSIONS=true

NAMED="alice,bob,carol"
CH=12
DATA=(--users "$NAMED" --user-count 3 --channels $CH)
N_USERS=6

# dump_table TABLE KIND [ARGS]: the fake's --dump-KIND rows in TABLE (text columns).
dump_table() {
	local table=$1 kind=$2 cols
	shift 2
	case $kind in
	service) cols="sid, account_sid, friendly_name, date_created, date_updated, dsr, dcr, dccr, rse, re, tit, cri, url" ;;
	users) cols="service_sid, sid, identity, account_sid, friendly_name, role_sid, attributes, is_online, is_notifiable, joined_channels_count, date_created, date_updated, url" ;;
	channels) cols="service_sid, sid, account_sid, friendly_name, unique_name, attributes, type, created_by, members_count, messages_count, date_created, date_updated, url" ;;
	esac
	sql "DROP TABLE IF EXISTS $table; CREATE TABLE $table ($(sed 's/,/ text,/g' <<<"$cols") text)" >/dev/null
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" "${DATA[@]}" "$@" --dump-"$kind" |
		psql -X -q -v ON_ERROR_STOP=1 -c "\\copy $table FROM STDIN"
}

# differ QUERY-A QUERY-B: the number of rows in one and not the other.
differ() {
	sql "SELECT count(*) FROM (($1 EXCEPT ALL $2) UNION ALL ($2 EXCEPT ALL $1)) d"
}

USER_COLS="u.service_sid, u.user_sid, u.identity, u.friendly_name, u.role_sid,
           u.joined_channels_count::text, u.is_online::text, u.is_notifiable::text,
           u.attributes, u.date_created, u.date_updated"
DUMP_USER_COLS="service_sid, sid, identity, friendly_name, role_sid, joined_channels_count,
                CASE is_online WHEN 't' THEN 'true' WHEN 'f' THEN 'false' ELSE is_online END,
                CASE is_notifiable WHEN 't' THEN 'true' WHEN 'f' THEN 'false' ELSE is_notifiable END,
                ATTR, date_created::timestamptz, date_updated::timestamptz"
CHANNEL_COLS="c.service_sid, c.channel_sid, c.friendly_name, c.unique_name, c.type, c.created_by,
              c.members_count::text, c.messages_count::text, c.attributes, c.date_created, c.date_updated"
DUMP_CHANNEL_COLS="service_sid, sid, friendly_name, unique_name, type, created_by, members_count,
                   messages_count, ATTR, date_created::timestamptz, date_updated::timestamptz"

# users_differ SCHEMA [attributes]: rows of the live users unlike the fake's public.users.
users_differ() {
	differ "SELECT $USER_COLS FROM $1.users u WHERE u.deleted_at IS NULL" \
		"SELECT ${DUMP_USER_COLS/ATTR/${2:-NULL::text}} FROM public.users"
}
channels_differ() {
	differ "SELECT $CHANNEL_COLS FROM $1.channels c WHERE c.deleted_at IS NULL" \
		"SELECT ${DUMP_CHANNEL_COLS/ATTR/${2:-NULL::text}} FROM public.channels"
}

# stat_writes SCHEMA: tuples inserted, updated and deleted in its dimension tables so far.
stat_writes() {
	sql "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables
	      WHERE schemaname = '$1' AND relname IN ('services', 'users', 'channels', 'sync_dimension_pages')"
}

fake_start api "${DATA[@]}" || exit 1
dump_table public.users users
dump_table public.channels channels
dump_table public.service service
sid_of() { sql "SELECT sid FROM public.users WHERE identity = '$1'"; }
ALICE=$(sid_of alice)
BOB=$(sid_of bob)
ok $([[ $ALICE =~ ^US[0-9a-f]{32}$ && $BOB =~ ^US ]] && echo 0 || echo 1) "the fake gives alice and bob User SIDs"

# ---------------------------------------------------------------- names land
# alice twice (by identity and by SID), bob, and an identity the users listing does not know.
named() { SCHEMA=named write_config "$TEST_TMP/named.conf" alice "$ALICE" bob u-unknown; }
disc() { SCHEMA=disc write_config "$TEST_TMP/disc.conf" all; }
named
run_once "$TEST_TMP/named.conf"
is "$?" 0 "a sweep with the dimension listings succeeds"
is "$(differ "SELECT service_sid, account_sid, friendly_name, date_created, date_updated FROM named.services" \
	"SELECT sid, account_sid, friendly_name, date_created::timestamptz, date_updated::timestamptz FROM public.service")" 0 \
	"services: the service as the API serves it"
is "$(sql "SELECT count(*) FROM named.users")|$(users_differ named)" "$N_USERS|0" \
	"users: every user of the listing, as the API serves them, attributes left out"
is "$(sql "SELECT count(*) FROM named.channels")|$(channels_differ named)" \
	"$(sql "SELECT count(*) FROM public.channels")|0" \
	"channels: every channel, public and private, as the API serves them"
ok $([ "$(sql "SELECT count(DISTINCT type) FROM named.channels")" = 2 ] && echo 0 || echo 1) \
	"channels: both types are there"

load_expected "${DATA[@]}" -- "$ALICE" "$BOB" u-unknown
is "$(SCHEMA=named diff_expected)" 0 \
	"memberships: under the User SID for alice and bob, under the identity for the unknown user"
is "$(sql "SELECT string_agg(user_sid, ',' ORDER BY user_sid) FROM named.sync_cursors")" \
	"$(printf '%s\n' "$ALICE" "$BOB" u-unknown | sort | paste -sd,)" \
	"alice configured by identity and by SID is one user: one cursor, no rows twice"
is "$(sql "SELECT count(*) FROM named.memberships WHERE identity = 'alice'")|$(sql "SELECT count(*) FROM public.expected WHERE user_sid = '$ALICE'")" \
	"$(sql "SELECT count(*) FROM public.expected WHERE user_sid = '$ALICE'")|$(sql "SELECT count(*) FROM public.expected WHERE user_sid = '$ALICE'")" \
	"memberships view: alice's memberships once each"
is "$(sql "SELECT count(*) FROM named.memberships m
              JOIN named.users u USING (service_sid, user_sid)
              JOIN named.channels c USING (service_sid, channel_sid)
              JOIN named.services s USING (service_sid)
            WHERE m.user_name IS NOT DISTINCT FROM u.friendly_name
              AND m.channel_name IS NOT DISTINCT FROM c.friendly_name
              AND m.channel_unique_name IS NOT DISTINCT FROM c.unique_name
              AND m.channel_type = c.type AND m.service_name = s.friendly_name")" \
	"$(sql "SELECT count(*) FROM public.expected WHERE user_sid LIKE 'US%'")" \
	"memberships view: each membership of a listed user, with the names of its service, user and channel"
is "$(sql "SELECT \"user\" || ':' || user_sid || ':' || state FROM named.sync_health ORDER BY \"user\"" | paste -sd' ')" \
	"$(printf '%s\n' "$ALICE:$ALICE:complete" "alice:$ALICE:complete" "bob:$BOB:complete" "u-unknown:u-unknown:complete" | sort | paste -sd' ')" \
	"sync_health: each user as configured, with its User SID and state"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/named.conf" --status >"$TEST_TMP/status.out" 2>&1
is "$(awk '$2 == "alice" || $2 == "bob" || $2 == "u-unknown" || $2 == "'"$ALICE"'" { print $2 ":" $6 }' "$TEST_TMP/status.out" | sort | paste -sd' ')" \
	"$(printf '%s\n' "$ALICE:complete" alice:complete bob:complete u-unknown:complete | sort | paste -sd' ')" \
	"--status: each user as configured, an identity with the state of its User SID's cursor"
is "$(sql "SELECT string_agg(listing || ':' || state, ',' ORDER BY listing) FROM named.sync_dimension_cursors")" \
	"channels:complete,service:complete,users:complete" "the three dimension listings are complete"

# ---------------------------------------------------------------- unchanged: no write
before=$(stat_writes named)
run_once "$TEST_TMP/named.conf"
is "$?" 0 "a second sweep of the same data succeeds"
is "$(($(stat_writes named) - before))" 0 "unchanged dimensions: not one tuple written to services, users, channels or sync_dimension_pages"

# ---------------------------------------------------------------- changes and deletions
fake_stop
fake_start api1 "${DATA[@]}" --variant 1 || exit 1
dump_table public.users users --variant 1
dump_table public.channels channels --variant 1
dump_table public.service service --variant 1
named
run_once "$TEST_TMP/named.conf"
is "$?" 0 "a sweep of data set 1 succeeds"
is "$(sql "SELECT friendly_name FROM named.services")" "$(sql "SELECT friendly_name FROM public.service")" \
	"services: the new name"
is "$(users_differ named)|$(sql "SELECT count(*) FROM named.users WHERE deleted_at IS NULL")" \
	"0|$(sql "SELECT count(*) FROM public.users")" "users: renamed ones changed, deleted ones no longer live"
is "$(sql "SELECT count(*) FROM named.users WHERE deleted_at IS NOT NULL")" "$((N_USERS - $(sql "SELECT count(*) FROM public.users")))" \
	"users: a user the listing no longer has is marked deleted"
is "$(channels_differ named)|$(sql "SELECT count(*) FROM named.channels WHERE deleted_at IS NOT NULL") " \
	"0|$(sql "SELECT count(*) FROM named.channels c WHERE NOT EXISTS (SELECT FROM public.channels p WHERE p.sid = c.channel_sid)") " \
	"channels: renamed ones changed, deleted ones marked deleted"
is "$(sql "SELECT count(*) FROM named.users WHERE first_seen_at = updated_at AND friendly_name LIKE '%(variant 1)'")" 0 \
	"users: a renamed user keeps its first_seen_at and gets a new updated_at"

# ---------------------------------------------------------------- discovery
fake_stop
fake_start api0 "${DATA[@]}" || exit 1
dump_table public.users users
disc
run_once "$TEST_TMP/disc.conf"
is "$?" 0 "users = \"all\": the sweep succeeds"
mapfile -t ALL < <(sql "SELECT sid FROM public.users ORDER BY sid")
load_expected "${DATA[@]}" -- "${ALL[@]}"
is "$(SCHEMA=disc diff_expected)" 0 "users = \"all\": every user of the listing is synced, under its User SID"
is "$(sql "SELECT count(*) FROM disc.sync_health WHERE state = 'complete' AND identity IS NOT NULL")" "$N_USERS" \
	"users = \"all\": sync_health has each discovered user, with its identity"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/disc.conf" --status >"$TEST_TMP/status.out" 2>&1
is "$(grep -c ' complete' "$TEST_TMP/status.out")" "$N_USERS" "--status lists each discovered user, complete"
fake_stop
fake_start api1b "${DATA[@]}" --variant 1 || exit 1
dump_table public.users users --variant 1
disc
run_once "$TEST_TMP/disc.conf"
is "$?" 0 "users = \"all\", data set 1: the sweep succeeds"
GONE=$(sql "SELECT string_agg(user_sid, ',') FROM disc.users WHERE deleted_at IS NOT NULL")
ok $([ -n "$GONE" ] && echo 0 || echo 1) "data set 1 deletes a user ($GONE)"
mapfile -t LIVE < <(sql "SELECT sid FROM public.users ORDER BY sid")
load_expected "${DATA[@]}" --variant 1 -- "${LIVE[@]}"
is "$(SCHEMA=disc diff_expected)" 0 "the live memberships are those of the users still listed"
is "$(sql "SELECT count(*) FROM disc.user_channels WHERE user_sid = '$GONE' AND deleted_at IS NULL")|$(sql "SELECT count(*) > 0 FROM disc.user_channels WHERE user_sid = '$GONE'")" \
	"0|t" "a user gone from the users listing has every membership soft-deleted"
is "$(sql "SELECT count(*) FROM disc.membership_events WHERE user_sid = '$GONE' AND event = 'removed'")" \
	"$(sql "SELECT count(*) FROM disc.user_channels WHERE user_sid = '$GONE'")" "each of those is a 'removed' event"
is "$(sql "SELECT count(*) FROM disc.sync_health WHERE user_sid = '$GONE'")|$(sql "SELECT count(*) FROM disc.sync_health")" \
	"0|$((N_USERS - 1))" "sync_health no longer lists the deleted user"
fake_stop
fake_start api2 "${DATA[@]}" --variant 2 || exit 1
disc
run_once "$TEST_TMP/disc.conf"
is "$?" 0 "users = \"all\", data set 2: the sweep succeeds"
is "$(sql "SELECT count(*) FROM disc.users WHERE deleted_at IS NULL")|$(sql "SELECT count(*) > 0 FROM disc.user_channels WHERE user_sid = '$GONE' AND deleted_at IS NULL")" \
	"$N_USERS|t" "a user back in the listing is live again, and so are its memberships"

# ---------------------------------------------------------------- an older database: merge
# Synced by identity without the dimensions (as before they existed), with history.
fake_stop
fake_start api0m "${DATA[@]}" || exit 1
SCHEMA=merge DIMENSIONS=false write_config "$TEST_TMP/merge-off.conf" alice bob
run_once "$TEST_TMP/merge-off.conf"
fake_stop
fake_start api1m "${DATA[@]}" --variant 1 || exit 1
SCHEMA=merge DIMENSIONS=false write_config "$TEST_TMP/merge-off.conf" alice bob
run_once "$TEST_TMP/merge-off.conf"
is "$(sql "SELECT string_agg(DISTINCT user_sid, ',' ORDER BY user_sid) FROM merge.user_channels")" "alice,bob" \
	"without the dimensions, memberships are stored under the identity"
past=$(sql "SELECT count(*) FROM merge.user_channel_past_versions")
events=$(sql "SELECT count(*) FROM merge.membership_event_log")
rows=$(sql "SELECT count(*) FROM merge.user_channels")
ok $([ "$past" -gt 0 ] && [ "$events" -gt 0 ] && echo 0 || echo 1) "that history has past versions ($past) and events ($events)"
SCHEMA=merge write_config "$TEST_TMP/merge.conf" alice bob "$BOB"
run_once "$TEST_TMP/merge.conf"
is "$?" 0 "with the dimensions on, the sweep succeeds"
is "$(sql "SELECT string_agg(DISTINCT user_sid, ',' ORDER BY user_sid) FROM merge.user_channels")" \
	"$(printf '%s\n' "$ALICE" "$BOB" | sort | paste -sd,)" "every membership moved to its User SID"
is "$(sql "SELECT count(*) FROM merge.user_channel_past_versions")|$(sql "SELECT count(*) FROM merge.membership_event_log")|$(sql "SELECT count(*) FROM merge.user_channels")" \
	"$past|$events|$rows" "no history lost, nothing doubled"
is "$(sql "SELECT count(*) FROM merge.user_channel_past_versions WHERE user_sid IN ('alice', 'bob')")|$(sql "SELECT count(*) FROM merge.sync_cursors WHERE user_sid IN ('alice', 'bob')")" \
	"0|0" "nothing is left under the identities"
load_expected "${DATA[@]}" --variant 1 -- "$ALICE" "$BOB"
is "$(SCHEMA=merge diff_expected)" 0 "the memberships are the API's"

# The same database later says users = "all": what was stored under the
# identities moves to the SIDs there too, and nobody is listed twice.
SCHEMA=merge write_config "$TEST_TMP/merge-all.conf" all
run_once "$TEST_TMP/merge-all.conf"
is "$?" 0 "users = \"all\" on a database synced by identity: the sweep succeeds"
is "$(sql "SELECT count(*) FROM merge.user_channels WHERE user_sid !~ '^US'")|$(sql "SELECT count(*) FROM merge.sync_cursors WHERE user_sid !~ '^US'")" \
	"0|0" "nothing is left under an identity"
is "$(sql "SELECT count(*) FROM (SELECT user_sid, channel_sid FROM merge.memberships GROUP BY 1, 2 HAVING count(*) > 1) d")" 0 \
	"the memberships view has each membership once"

# ---------------------------------------------------------------- attributes
SCHEMA=attrs SYNC_EXTRA="store_attributes = true;" write_config "$TEST_TMP/attrs.conf" alice
run_once "$TEST_TMP/attrs.conf"
dump_table public.users users --variant 1
dump_table public.channels channels --variant 1
is "$(users_differ attrs attributes)|$(channels_differ attrs attributes)" "0|0" \
	"sync.store_attributes = true: the attributes are kept"
is "$(sql "SELECT count(*) FROM attrs.users WHERE attributes IS NOT NULL")" "$(sql "SELECT count(*) FROM public.users WHERE attributes IS NOT NULL")" \
	"... every one the API gives"

# ---------------------------------------------------------------- failures, concurrency
fake_stop
fake_start faulty "${DATA[@]}" --fault "500:@channels:9" || exit 1
SCHEMA=faulty write_config "$TEST_TMP/faulty.conf" alice bob
run_once "$TEST_TMP/faulty.conf"
is "$?" 0 "a channels listing that keeps failing does not fail the users"
is "$(sql "SELECT state || ':' || last_error FROM faulty.sync_dimension_cursors WHERE listing = 'channels'")" \
	"failed:could not fetch page 1 after 2 retries: HTTP 500 (Twilio error 20500: Internal Server Error)" \
	"its cursor says it failed, and why"
is "$(sql "SELECT \"user\" || ':' || kind FROM faulty.sync_errors")" "@channels:http 500" \
	"sync_errors records it as @channels, with its kind"
is "$(sql "SELECT count(*) FROM faulty.channels")|$(sql "SELECT count(*) FROM faulty.users")|$(sql "SELECT count(*) FROM faulty.user_channels WHERE user_sid IN ('$ALICE', '$BOB')")" \
	"0|$N_USERS|$((2 * CH))" "the other listings and the memberships landed"
grep -q "the channels listing failed" "$TEST_TMP/chatsyncd.log"
ok $? "the failure is logged"
fake_stop
fake_start forbidden "${DATA[@]}" --fault "403:@channels:1" || exit 1
SCHEMA=forbidden write_config "$TEST_TMP/forbidden.conf" alice
run_once "$TEST_TMP/forbidden.conf"
is "$?" 0 "a channels listing the credentials may not read (403) does not stop the sweep"
is "$(sql "SELECT \"user\" || ':' || kind FROM forbidden.sync_errors")|$(sql "SELECT count(*) > 0 FROM forbidden.user_channels")" \
	"@channels:http 403|t" "it is recorded as the channels listing's failure, and the memberships land"
fake_stop
fake_api_start "$FAKE_TWILIO" "$TEST_TMP" denied --account-sid "$ACCOUNT_SID" --auth-token not-ours \
	--log "$TEST_TMP/denied.requests" "${DATA[@]}" || exit 1
FAKE_PIDS+=("$FAKE_PID")
SCHEMA=denied write_config "$TEST_TMP/denied.conf" alice
run_once "$TEST_TMP/denied.conf"
is "$?" 1 "credentials refused (401) on the users listing stop the sweep (exit status 1, as for a user)"
is "$(cut -f2 "$TEST_TMP/denied.requests" | paste -sd,)" "@users" "... after that one request"
is "$(sql "SELECT count(*) FROM denied.user_channels")|$(sql "SELECT count(*) FROM denied.sync_cursors")" "0|0" \
	"... before any user is listed, and no user is blamed"

# The channels listing runs beside the users' listings: 3500 channels are four
# pages, each 100 ms away, and alice's memberships need not wait for them.
fake_stop
fake_start wide --users alice --user-count 699 --channels 5 --latency-ms 100 || exit 1
SCHEMA=wide CONCURRENCY=4 write_config "$TEST_TMP/wide.conf" alice
run_once "$TEST_TMP/wide.conf"
is "$?" 0 "a sweep with a four-page channels listing succeeds"
WIDE_ALICE=$(grep -m1 -P '\talice\t' <("$FAKE_TWILIO" --service "$SERVICE_SID" --users alice --dump-users) | cut -f2)
is "$(awk -F'\t' -v a="$WIDE_ALICE" '$2 == "@channels" { last = NR } $2 == a && !first { first = NR }
	END { print (first > 0 && first < last) ? "beside" : "after" }' "$FAKE_LOG")" beside \
	"alice's memberships (under her User SID) are fetched before the channels listing ends"
is "$(sql "SELECT count(*) FROM wide.channels")" 3500 "every channel of the four pages landed"

# ---------------------------------------------------------------- kill -9 in the users listing
fake_stop
BIG=(--users "$NAMED" --user-count 2500 --channels 2)
fake_start slow "${BIG[@]}" --latency-ms 300 || exit 1
SCHEMA=killed write_config "$TEST_TMP/killed.conf" alice
bg_once "$TEST_TMP/killed.conf"
for ((i = 0; i < 300; i++)); do
	[ "$(sql "SELECT pages_done FROM killed.sync_dimension_cursors WHERE listing = 'users' AND state = 'running'" 2>/dev/null)" = 1 ] && break
	nap 0.05
done
kill -9 "$BG_PID"
wait "$BG_PID" 2>/dev/null
BG_PID=
settle
is "$(sql "SELECT pages_done || ':' || (next_page_url IS NOT NULL) FROM killed.sync_dimension_cursors WHERE listing = 'users'")" "1:true" \
	"killed in the users listing: its cursor holds the first page committed"
nap 0.5 # the page the killed process asked for is logged once its latency has passed
before=$(log_lines)
run_to_end "$TEST_TMP/killed.conf" 60
is "$BG_RC" 0 "the next sweep finishes"
is "$(awk -F'\t' -v a="$before" 'NR > a && $2 == "@users" { print $3 }' "$FAKE_LOG" | paste -sd,)" "1,2" \
	"it resumes the users listing at its second page (Page=1): the first is not fetched again"
DATA=("${BIG[@]}")
dump_table public.users users
is "$(sql "SELECT count(*) FROM killed.users")|$(users_differ killed)" "2503|0" \
	"the users table equals the listing, with no row lost or doubled"

done_testing

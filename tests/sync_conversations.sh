#!/usr/bin/env bash
# A service listed through Conversations (api = "conversations"): each user's
# conversations are fetched from /v1/Services/{IS}/Users/{U}/Conversations, 50
# at a time whatever twilio.page_size says, paged to the end, into
# user_conversations with every field the API sends; an unchanged resync
# writes nothing to it nor to its history, one-page listings by their digest;
# a change makes a past version and a state_changed event, a conversation
# gone from a complete listing is deleted and has its removal event; the
# service and its users are listed, without a channels listing, and users =
# "all" syncs the users of that listing; a group without sid is the
# account's default conversation service, as /v1/Configuration names it;
# and a kill -9 at page 2 of 3 resumes at page 2.  (Entries of unexpected types:
# test_conversation.c; the SQL function alone: sync_conversations_sql.sh.)
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=(alice "b/c@x y" US0123456789abcdef0123456789abcdef)
CH=120 # slots: three pages of 50 per user
DATA=(--seed 7 --channels $CH)
SERVICE_EXTRA='api = "conversations";'
export SERVICE_EXTRA

# The columns of user_conversations that the fake's --dump gives, in its order.
CONV_COLS="service_sid, user_sid, conversation_sid, account_sid, participant_sid,
           conversation_state, notification_level, unread_messages_count,
           last_read_message_index, friendly_name, unique_name, created_by, date_created,
           date_updated, date_inactive, date_closed, url, conversation_url, participant_url"

# expect_conv FAKE-ARGS -- USER...: public.conv_expected as the fake serves it.
expect_conv() {
	local args=() u
	while [ "$1" != "--" ]; do
		args+=("$1")
		shift
	done
	shift
	sql "DROP TABLE IF EXISTS public.conv_expected;
	     CREATE TABLE public.conv_expected (service_sid text, user_sid text,
	       conversation_sid text, account_sid text, participant_sid text,
	       conversation_state text, notification_level text, unread_messages_count bigint,
	       last_read_message_index bigint, friendly_name text, unique_name text,
	       created_by text, date_created timestamptz, date_updated timestamptz,
	       date_inactive timestamptz, date_closed timestamptz, url text,
	       conversation_url text, participant_url text)"
	for u in "$@"; do
		"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" --api conversations \
			"${args[@]}" --dump "$u" |
			psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.conv_expected FROM STDIN"
	done
}
# diff_conv [SCHEMA]: live rows of user_conversations (of SCHEMA, default
# chatsync) that differ from public.conv_expected, both ways.
diff_conv() {
	local schema=${1:-chatsync}
	sql "SELECT count(*) FROM (
	       (SELECT $CONV_COLS FROM $schema.user_conversations WHERE deleted_at IS NULL
	        EXCEPT ALL SELECT * FROM public.conv_expected)
	       UNION ALL
	       (SELECT * FROM public.conv_expected
	        EXCEPT ALL SELECT $CONV_COLS FROM $schema.user_conversations
	         WHERE deleted_at IS NULL)) d"
}
# written [SCHEMA]: tuples inserted, updated and deleted in user_conversations
# and its history.
written() {
	sql "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables
	      WHERE schemaname = '${1:-chatsync}'
	        AND relname IN ('user_conversations', 'user_conversation_past_versions',
	                        'conversation_event_log')"
}
# settle_stats: the statistics of the backends that wrote, flushed and visible.
settle_stats() {
	backends_gone
	sleep 1.1
	sql "SELECT pg_stat_clear_snapshot()" >/dev/null
}


# ---------------------------------------------------------------- first sweep
serve conv "${DATA[@]}"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a sweep of a conversations service with twilio.page_size = 1000 exits 0"
expect_conv "${DATA[@]}" -- "${USERS[@]}"
is "$(sql "SELECT count(*) FROM public.conv_expected")" $((CH * ${#USERS[@]})) \
	"(the fake serves $CH conversations to each user)"
is "$(diff_conv)" 0 "user_conversations holds exactly what the API serves, every field"
is "$(sql "SELECT count(*) FROM chatsync.user_channels")" 0 "and user_channels nothing"
is "$(awk -F'\t' '{ print $4 }' "$FAKE_LOG" | grep -c "^/v1/Services/$SERVICE_SID/Users/[^/]*/Conversations?")|$(wc -l <"$FAKE_LOG")" \
	"$((3 * ${#USERS[@]}))|$((3 * ${#USERS[@]}))" \
	"three pages a user, every request a user's conversations"
is "$(awk -F'\t' '{ print $4 }' "$FAKE_LOG" | grep -c 'PageSize=50\b')" "$((3 * ${#USERS[@]}))" \
	"each page asks for 50 entries, the API's most"
is "$(sql "SELECT string_agg(state || ':' || pages_done, ',') FROM chatsync.sync_cursors")" \
	"complete:3,complete:3,complete:3" "every cursor complete after three pages"
is "$(sql "SELECT count(*) FROM chatsync.conversation_event_log")|$(sql "SELECT count(*) FROM chatsync.user_conversation_past_versions")" \
	"0|0" "a first listing writes no event and no past version"

# ---------------------------------------------------------------- unchanged resync
# calls FUNCTION: how many times it was called, in any schema (track_functions).
calls() {
	backends_gone
	sql "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = '$1'"
}
is "$(sql "SELECT count(*) || ':' || count(digest) || ':' || sum(entries) FROM chatsync.sync_listing_pages")" \
	"9:9:$((CH * ${#USERS[@]}))" "each page of a listing on several pages is stored with its digest"
settle_stats
before=$(written)
pages_before=$(calls sync_conversations_page)
unchanged_before=$(calls sync_listing_unchanged)
serve conv2 "${DATA[@]}"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "an unchanged resync exits 0"
settle_stats
is "$(written)" "$before" \
	"it writes no tuple to user_conversations, its past versions or its events"
is "$(sql "SELECT rows_unchanged || ':' || pages || ':' || users_ok FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1")" \
	"$((CH * ${#USERS[@]})):9:3" "and the run counts every row unchanged, and every page"
is "$(($(calls sync_conversations_page) - pages_before)):$(($(calls sync_listing_unchanged) - unchanged_before))" \
	"0:${#USERS[@]}" "no page was sent: each listing of three pages is one sync_listing_unchanged() call"
is "$(grep -c '/Conversations' "$FAKE_LOG")" 9 "(every page was fetched)"

# ---------------------------------------------------------------- one page changed
# Slot 60 is on page 2 of 3: page 1 is skipped, page 2 is sent and changes one
# row, page 3 is sent (a last page ends the listing) and changes nothing; the
# deletions it checks for count page 1's stored SIDs as listed.
pages_before=$(calls sync_conversations_page)
serve conv2b "${DATA[@]}" --bump 60
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a resync with one conversation changed on page 2 of 3 exits 0"
expect_conv "${DATA[@]}" --bump 60 -- "${USERS[@]}"
is "$(diff_conv)" 0 "the table follows the API: the change applied, nothing deleted"
is "$(($(calls sync_conversations_page) - pages_before))" $((2 * ${#USERS[@]})) \
	"pages 2 and 3 of each user were sent, page 1 was not"
settle_stats
is "$(sql "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'chatsync' AND relname = 'user_conversations'")|$(sql "SELECT count(*) FROM chatsync.user_conversation_past_versions")|$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE deleted_at IS NOT NULL")" \
	"${#USERS[@]}|${#USERS[@]}|0" "one row updated per user, one past version each, none deleted"
is "$(sql "SELECT rows_updated || ':' || rows_unchanged || ':' || pages FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1")" \
	"${#USERS[@]}:$(((CH - 1) * ${#USERS[@]})):9" "the run counts the change, the rows left as they were, and every page"

# ---------------------------------------------------------------- changes, deletions
# Variant 1 removes the conversations of slots i % 10 == 1 and changes others.
settle_stats
before=$(written)
serve conv3 "${DATA[@]}" --variant 1 --fault "429:${USERS[0]}:2"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a sweep of the changed data, with two 429s for ${USERS[0]}, exits 0"
expect_conv "${DATA[@]}" --variant 1 -- "${USERS[@]}"
is "$(diff_conv)" 0 "the table follows the API: changes applied, removed conversations deleted"
settle_stats
[ "$(written)" -gt "$before" ]
ok $? "(the count of tuples written moves when a sweep writes)"
is "$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE deleted_at IS NOT NULL")" \
	$((CH / 10 * ${#USERS[@]})) "one conversation in ten is marked deleted"
is "$(sql "SELECT count(*) FROM chatsync.conversation_event_log WHERE event = 'removed'")" \
	"$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE deleted_at IS NOT NULL")" \
	"each deleted conversation has its removal event"
is "$(sql "SELECT count(DISTINCT (user_sid, conversation_sid)) FROM chatsync.user_conversation_past_versions WHERE NOT is_deleted")" \
	"$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE deleted_at IS NOT NULL OR updated_at > first_seen_at")" \
	"each changed or deleted conversation has a past version"
changed_state=$(sql "SELECT count(*) FROM chatsync.user_conversation_past_versions p
                      JOIN chatsync.user_conversations c USING (service_sid, user_sid, conversation_sid)
                     WHERE NOT p.is_deleted AND c.deleted_at IS NULL
                       AND p.conversation_state <> c.conversation_state")
is "$(sql "SELECT count(*) FROM chatsync.conversation_event_log WHERE event = 'state_changed'")" \
	"$changed_state" "each change of a conversation's state is a state_changed event ($changed_state)"

# ---------------------------------------------------------------- the views
is "$(sql "SELECT count(*) FROM chatsync.conversation_memberships")|$(sql "SELECT count(*) FROM (
           SELECT service_sid, conversation_sid, conversation_state, notification_level,
                  unread_messages_count, last_read_message_index, participant_sid,
                  friendly_name, unique_name, date_inactive, date_closed
             FROM chatsync.user_conversations WHERE deleted_at IS NULL
           EXCEPT ALL
           SELECT service_sid, conversation_sid, conversation_state, notification_level,
                  unread_messages_count, last_read_message_index, participant_sid,
                  conversation_name, conversation_unique_name, date_inactive, date_closed
             FROM chatsync.conversation_memberships) d")" \
	"$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE deleted_at IS NULL")|0" \
	"conversation_memberships: one row per live conversation of a user, its values and names"
is "$(sql "SELECT count(*) FROM chatsync.conversation_memberships
            WHERE user_sid = '${USERS[2]}' AND synced_at IS NOT NULL")" "$((CH - CH / 10))" \
	"a user configured by SID is found by it, each row confirmed by its listing"
is "$(sql "SELECT count(*) FILTER (WHERE is_deleted AND is_current) || '|' || count(*) FILTER (WHERE NOT is_current)
             FROM chatsync.conversation_membership_history")" \
	"$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE deleted_at IS NOT NULL")|$(sql "SELECT count(*) FROM chatsync.user_conversation_past_versions")" \
	"conversation_membership_history: each removal a current version of its own, and every past version"
is "$(sql "SELECT string_agg(event || ':' || n, ',' ORDER BY event) FROM (
             SELECT event, count(*) AS n FROM chatsync.conversation_membership_events GROUP BY 1) e")" \
	"$(sql "SELECT string_agg(event || ':' || n, ',' ORDER BY event) FROM (
             SELECT event, count(*) AS n FROM chatsync.conversation_event_log GROUP BY 1) e")" \
	"conversation_membership_events: every event, by kind"

# ---------------------------------------------------------------- one-page listings
serve conv4 --seed 7 --channels 30
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a sweep of 30 conversations a user (one page each) exits 0"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE listing_digest IS NOT NULL")" "${#USERS[@]}" \
	"a one-page listing leaves its digest on the cursor"
is "$(sql "SELECT count(*) FROM chatsync.sync_listing_pages")" 0 \
	"and none of its pages in sync_listing_pages (the three-page listings' are gone)"
settle_stats
before=$(written)
unchanged_before=$(calls sync_listing_unchanged)
serve conv5 --seed 7 --channels 30
run_once "$TEST_TMP/c.conf"
settle_stats
is "$(written)" "$before" "resynced unchanged: nothing written"
is "$(($(calls sync_listing_unchanged) - unchanged_before))" \
	"${#USERS[@]}" "each one-page listing moved only its cursor (sync_listing_unchanged)"

# ---------------------------------------------------------------- names
serve convn "${DATA[@]}" --users "${USERS[0]}"
DIMENSIONS=true write_config "$TEST_TMP/n.conf" "${USERS[@]}"
run_once "$TEST_TMP/n.conf"
is "$?" 0 "a sweep with the dimension listings exits 0"
is "$(awk -F'\t' '$2 ~ /^@/ && $4 !~ /PageToken/ { print $2 " " $4 }' "$FAKE_LOG" | sed 's/IS[0-9a-fA-F]*/IS/' | sort | paste -sd,)" \
	"@service /v1/Services/IS,@users /v1/Services/IS/Users?PageSize=50" \
	"the service and its users are listed, 50 a page, and no channels"
is "$(sql "SELECT identity FROM chatsync.users")" "${USERS[0]}" "the service's user lands in users"

# ---------------------------------------------------------------- users = "all"
serve conva "${DATA[@]}" --users "${USERS[0]},${USERS[1]}"
DIMENSIONS=true write_config "$TEST_TMP/a.conf" all
run_once "$TEST_TMP/a.conf"
is "$?" 0 "a sweep of users = \"all\" on a conversations service exits 0"
is "$(sql "SELECT string_agg(identity || ':' || n, ',' ORDER BY identity) FROM (
             SELECT identity, count(*) AS n FROM chatsync.conversation_memberships
              WHERE user_sid IN (SELECT user_sid FROM chatsync.users) GROUP BY 1) m")" \
	"${USERS[0]}:$CH,${USERS[1]}:$CH" \
	"the users of its users listing are synced, their conversations under their User SIDs"

# ---------------------------------------------------------------- the default service
# A conversations group without sid: the account's default conversation
# service, as GET /v1/Configuration names it.
DEF=IS00000000000000000000000000000def
default_conf() { # default_conf FILE: c.conf's users, no sid
	PAGE_SIZE=1000 write_config "$1" "${USERS[@]}"
	sed -i 's/{ sid = "IS[0-9a-fA-F]*"; /{ /' "$1"
}
serve convd "${DATA[@]}"
default_conf "$TEST_TMP/d.conf"
grep -q 'sid = "IS' "$TEST_TMP/d.conf"
ok $((!$?)) "(the config names no service sid)"
run_once "$TEST_TMP/d.conf"
is "$?" 0 "a sweep of the account's default conversation service exits 0"
is "$(head -n 1 "$FAKE_LOG" | cut -f 1,2,4)|$(awk -F'\t' 'NR > 1 { print $4 }' "$FAKE_LOG" | grep -c '^/v1/Users/[^/]*/Conversations?')|$(wc -l <"$FAKE_LOG")" \
	"200	@configuration	/v1/Configuration|$((3 * ${#USERS[@]}))|$((1 + 3 * ${#USERS[@]}))" \
	"it asks /v1/Configuration first, then lists each user at /v1/Users/{U}/Conversations"
sql "DELETE FROM public.conv_expected"
for u in "${USERS[@]}"; do
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --api conversations "${DATA[@]}" --dump "$u" |
		psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.conv_expected FROM STDIN"
done
is "$(sql "SELECT count(DISTINCT service_sid) || ':' || min(service_sid) FROM public.conv_expected")|$(sql "SELECT count(*) FROM (
       (SELECT $CONV_COLS FROM chatsync.user_conversations WHERE service_sid = '$DEF' AND deleted_at IS NULL
        EXCEPT ALL SELECT * FROM public.conv_expected)
       UNION ALL
       (SELECT * FROM public.conv_expected
        EXCEPT ALL SELECT $CONV_COLS FROM chatsync.user_conversations
         WHERE service_sid = '$DEF' AND deleted_at IS NULL)) d")" \
	"1:$DEF|0" "its rows carry the service SID the API names, and equal what it serves"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE service_sid = '$DEF' AND state = 'complete'")" \
	"${#USERS[@]}" "each user's cursor is under that SID"
serve convd2 "${DATA[@]}" --fault "503:@configuration:2"
default_conf "$TEST_TMP/d.conf"
run_once "$TEST_TMP/d.conf"
is "$?|$(awk -F'\t' '$2 == "@configuration" { print $1 }' "$FAKE_LOG" | paste -sd,)|$(awk -F'\t' '$2 != "@configuration" && $1 == 200' "$FAKE_LOG" | wc -l)" \
	"0|503,503,200|$((3 * ${#USERS[@]}))" \
	"/v1/Configuration is asked again after two 503s (twilio.max_retries), and the sweep goes on"
serve convd3 "${DATA[@]}" --fault "500:@configuration:9"
default_conf "$TEST_TMP/d.conf"
run_once "$TEST_TMP/d.conf"
is "$?|$(wc -l <"$FAKE_LOG")" "3|3" "when /v1/Configuration keeps failing the sweep does not start, and exits 3"
grep -q "could not learn the account's default conversation service: GET .*/v1/Configuration: HTTP 500" "$TEST_TMP/chatsyncd.log"
ok $? "saying why"
TWILIO_AUTH_TOKEN=wrong-token "$CHATSYNCD" -c "$TEST_TMP/d.conf" --once 2>>"$TEST_TMP/chatsyncd.log"
is "$?" 1 "a token the API refuses there exits 1, as for any refused credentials"
status=$(TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/d.conf" --status 2>>"$TEST_TMP/chatsyncd.log")
is "$?|$(echo "$status" | grep -c "default conversation service is asked of the API")" "0|1" \
	"--status, which asks no API, says it leaves the default service's users out (exit 0)"

# The default changes during a sweep: after four listings (one user's three
# pages and a second's first, one user at a time), /v1/Users/{U}/Conversations
# serves another service's conversations, and /v1/Configuration names it.
DEF2=IS00000000000000000000000000000d2f
sql "DELETE FROM chatsync.user_conversations WHERE service_sid = '$DEF';
     DELETE FROM chatsync.sync_cursors WHERE service_sid = '$DEF'"
serve convd4 "${DATA[@]}" --default-service-switch "4:$DEF2"
default_conf "$TEST_TMP/d.conf"
run_once "$TEST_TMP/d.conf"
is "$?|$(grep -c "lists conversations of service $DEF2: the account's default conversation service changed during the sweep" "$TEST_TMP/chatsyncd.log")" \
	"3|2" "a sweep that meets the new default's conversations fails the two listings that met them (exit 3)"
is "$(sql "SELECT string_agg(n::text, ',' ORDER BY n) FROM (SELECT count(*) AS n FROM chatsync.user_conversations
            WHERE service_sid = '$DEF' GROUP BY user_sid) c")|$(sql "SELECT count(*) FROM chatsync.user_conversations
            WHERE service_sid = '$DEF2' OR (service_sid = '$DEF' AND deleted_at IS NOT NULL)")|$(sql "SELECT string_agg(state, ',' ORDER BY state) FROM chatsync.sync_cursors
            WHERE service_sid = '$DEF'")" \
	"50,$CH|0|complete,failed,failed" \
	"under the old default: one user's listing whole, a second's first page, no row of the new one, nothing deleted"
run_once "$TEST_TMP/d.conf"
is "$?|$(grep -c "the account's default conversation service is $DEF2" "$TEST_TMP/chatsyncd.log")" "0|1" \
	"the next sweep asks again, follows the new default and exits 0"
sql "DELETE FROM public.conv_expected"
for u in "${USERS[@]}"; do
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --api conversations --default-service "$DEF2" \
		"${DATA[@]}" --dump "$u" |
		psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.conv_expected FROM STDIN"
done
is "$(sql "SELECT count(*) FROM (
       (SELECT $CONV_COLS FROM chatsync.user_conversations WHERE service_sid = '$DEF2' AND deleted_at IS NULL
        EXCEPT ALL SELECT * FROM public.conv_expected)
       UNION ALL
       (SELECT * FROM public.conv_expected
        EXCEPT ALL SELECT $CONV_COLS FROM chatsync.user_conversations
         WHERE service_sid = '$DEF2' AND deleted_at IS NULL)) d")|$(sql "SELECT count(*) FROM chatsync.user_conversations
         WHERE service_sid = '$DEF' AND deleted_at IS NULL")|$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE service_sid = '$DEF2' AND state = 'complete'")" \
	"0|$((CH + 50))|${#USERS[@]}" \
	"its rows equal what the new default serves, under its SID; the old default's rows are left as they were"

# ---------------------------------------------------------------- kill -9 at page 2 of 3
U=kim
serve conve --seed 7 --channels 150 --latency-ms 400
write_config "$TEST_TMP/k.conf" "$U"
kill_at_page "$TEST_TMP/k.conf" "$U" 1
is "$(sql "SELECT state || ':' || pages_done FROM chatsync.sync_cursors WHERE user_sid = '$U'")" "running:1" \
	"killed -9 with one of three pages committed"
run_once "$TEST_TMP/k.conf"
is "$?" 0 "the next run exits 0"
grep -q "user \"$U\": resuming at page 2" "$TEST_TMP/chatsyncd.log"
ok $? "it resumes at page 2"
is "$(requests "$U" | awk -F'\t' '{ n[$3]++ } END { for (p = 0; p < 3; p++) printf "%s%d", p ? "," : "", (p == 1 && n[p] == 2) ? 1 : n[p] }')" \
	"1,1,1" "no committed page is fetched again, and no page twice but the one in flight"
expect_conv --seed 7 --channels 150 -- "$U"
is "$(sql "SELECT count(*) FROM chatsync.user_conversations WHERE user_sid = '$U' AND deleted_at IS NULL")|$(sql "SELECT count(*) FROM (SELECT * FROM public.conv_expected EXCEPT SELECT $CONV_COLS FROM chatsync.user_conversations WHERE user_sid = '$U') d")" \
	"150|0" "and the table holds the user's 150 conversations, each once"

# ---------------------------------------------------------------- bodies as stored
# A page whose body is, byte for byte, the one whose digest was stored is not
# parsed (sql/014_page_bodies.sql).  The fake's page URLs name its port, so
# these sweeps, into a schema of their own, keep the port of the first.
B=bodies
# unparsed LINE: the pages logged as not parsed, from line LINE of the log on.
unparsed() { tail -n +"$1" "$TEST_TMP/chatsyncd.log" | grep -c 'body as stored: not parsed'; }
log_end() { echo $(($(wc -l <"$TEST_TMP/chatsyncd.log") + 1)); }
SCHEMA=$B serve convb "${DATA[@]}"
port=${FAKE_URL##*:}
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a first sweep into schema $B exits 0"
is "$(sql "SELECT string_agg(page_no || ':' || (digest ~ '^[0-9a-f]{32}:[0-9a-f]{32}\$') || ':' ||
                             coalesce(substring(next_page_url from 'Page=[0-9]+'), '-'), ','
                             ORDER BY user_sid, page_no) FROM $B.sync_listing_pages")" \
	"$(printf '1:true:Page=1,2:true:Page=2,3:true:-,%.0s' 1 2 3 | sed 's/,$//')" \
	"each page's digest has its body's, and pages 1 and 2 keep the next page they named"

settle_stats
before=$(written $B)
pages_before=$(calls sync_conversations_page)
unchanged_before=$(calls sync_listing_unchanged)
mark=$(log_end)
run_once "$TEST_TMP/c.conf" -v -v
is "$?" 0 "a resync from the same API exits 0"
is "$(unparsed "$mark")" 9 "no page of the three listings was parsed: every body was the stored one"
is "$(($(calls sync_conversations_page) - pages_before)):$(($(calls sync_listing_unchanged) - unchanged_before))" \
	"0:${#USERS[@]}" "no page was sent: each listing is one sync_listing_unchanged() call"
settle_stats
is "$(written $B)" "$before" "nothing is written to user_conversations, its past versions or its events"
is "$(sql "SELECT rows_received || ':' || rows_unchanged || ':' || pages || ':' || users_ok FROM $B.sync_runs ORDER BY run_id DESC LIMIT 1")" \
	"$((CH * ${#USERS[@]})):$((CH * ${#USERS[@]})):9:3" \
	"the run counts each page's entries as stored: every row received and unchanged, every page"
is "$(wc -l <"$FAKE_LOG")" 18 "(every page was fetched, once)"

# Digests stored before 014 have no body part: those pages are parsed and
# compared by their entries, and skipped all the same.
sql "CREATE TABLE public.kept_digests AS SELECT * FROM $B.sync_listing_pages;
     UPDATE $B.sync_listing_pages SET digest = left(digest, 32)" >/dev/null
pages_before=$(calls sync_conversations_page)
unchanged_before=$(calls sync_listing_unchanged)
mark=$(log_end)
run_once "$TEST_TMP/c.conf" -v -v
is "$?|$(unparsed "$mark")" "0|0" "with digests of entries alone, a resync exits 0 and parses every page"
is "$(($(calls sync_conversations_page) - pages_before)):$(($(calls sync_listing_unchanged) - unchanged_before))" \
	"0:${#USERS[@]}" "and sends none: each listing is found unchanged by its entries"
settle_stats
is "$(written $B)" "$before" "(nothing written)"
sql "UPDATE $B.sync_listing_pages p SET digest = k.digest FROM public.kept_digests k
      WHERE (p.user_sid, p.page_no) = (k.user_sid, k.page_no)" >/dev/null

# Slot 70, on page 2 of 3, changes (same port): page 1 is skipped unparsed,
# page 2 is parsed and applied, page 3 is parsed and sent whole, as a last
# page after one that was sent always is.
pages_before=$(calls sync_conversations_page)
SCHEMA=$B serve convb2 "${DATA[@]}" --bump 70 --listen "127.0.0.1:$port"
is "${FAKE_URL##*:}" "$port" "(the fake serves the changed data on the same port)"
mark=$(log_end)
run_once "$TEST_TMP/c.conf" -v -v
is "$?" 0 "a resync with a change on page 2 exits 0"
is "$(unparsed "$mark")" 3 "only page 1 of each listing went unparsed"
is "$(($(calls sync_conversations_page) - pages_before))" $((2 * ${#USERS[@]})) \
	"pages 2 and 3 of each user were sent"
expect_conv "${DATA[@]}" --bump 70 -- "${USERS[@]}"
is "$(diff_conv $B)|$(sql "SELECT count(*) FROM $B.user_conversation_past_versions")|$(sql "SELECT count(*) FROM $B.user_conversations WHERE deleted_at IS NOT NULL")" \
	"0|${#USERS[@]}|0" "the table follows the API: one change a user, one past version each, nothing deleted"

# sweep_last_pages_moved: a sweep of c.conf (debug log) during which, once
# every user is claimed, the stored digest of each page 3 changes; its exit
# status is the sweep's.  Sets before, pages_before, unchanged_before and
# mark as they stood before it.
sweep_last_pages_moved() {
	local pid
	settle_stats
	before=$(written $B)
	pages_before=$(calls sync_conversations_page)
	unchanged_before=$(calls sync_listing_unchanged)
	mark=$(log_end)
	TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/c.conf" --once -v -v 2>>"$TEST_TMP/chatsyncd.log" &
	pid=$!
	for _ in $(seq 200); do
		[ "$(sql "SELECT count(*) FROM $B.sync_cursors WHERE lease_instance IS NOT NULL")" = "${#USERS[@]}" ] && break
		sleep 0.02
	done
	sql "UPDATE $B.sync_listing_pages SET digest = repeat('0', 32) || substr(digest, 33) WHERE page_no = 3" >/dev/null
	wait "$pid"
}

# The stored digest of each last page changes between the claim and the
# end of the listing: the listing, sent as unchanged without parsing page
# 3, is refused, and page 3 is parsed then and sent whole.
SCHEMA=$B serve convb3 "${DATA[@]}" --bump 70 --listen "127.0.0.1:$port" --latency-ms 300
sweep_last_pages_moved
is "$?" 0 "a resync whose last pages' stored digests changed under it exits 0"
is "$(unparsed "$mark")" 9 "(every body was the one stored at the claim)"
is "$(($(calls sync_listing_unchanged) - unchanged_before)):$(($(calls sync_conversations_page) - pages_before))" \
	"${#USERS[@]}:${#USERS[@]}" "each listing went as unchanged, was refused, and its page 3 went again whole"
settle_stats
is "$(written $B)|$(diff_conv $B)" "$before|0" "page 3, parsed, matched the table: nothing written, nothing deleted"
is "$(sql "SELECT count(*) FROM $B.sync_listing_pages WHERE page_no = 3 AND digest ~ '^[0-9a-f]{32}:[0-9a-f]{32}\$' AND digest !~ '^0{32}'")" \
	"${#USERS[@]}" "and its digest is stored again as the page's"

# The same, with bodies that are not the stored ones (another port): each
# page is parsed and found unchanged by its entries; the listing, refused
# as unchanged, sends page 3 whole with its own digest, its body's
# included, not the one stored at the claim.
SCHEMA=$B serve convb4 "${DATA[@]}" --bump 70 --latency-ms 300
sql "DROP TABLE IF EXISTS public.claimed_pages;
     CREATE TABLE public.claimed_pages AS SELECT user_sid, digest FROM $B.sync_listing_pages WHERE page_no = 3" >/dev/null
sweep_last_pages_moved
is "$?|$(unparsed "$mark")" "0|0" "(a resync from another port exits 0, every page parsed)"
is "$(($(calls sync_listing_unchanged) - unchanged_before)):$(($(calls sync_conversations_page) - pages_before))" \
	"${#USERS[@]}:${#USERS[@]}" "each listing, refused as unchanged, sent its page 3 whole"
settle_stats
is "$(written $B)" "$before" "(nothing written)"
is "$(sql "SELECT count(*) FILTER (WHERE left(p.digest, 32) = left(c.digest, 32)) || ':' ||
                  count(*) FILTER (WHERE p.digest <> c.digest AND p.digest ~ '^[0-9a-f]{32}:[0-9a-f]{32}\$')
             FROM $B.sync_listing_pages p JOIN public.claimed_pages c USING (user_sid) WHERE p.page_no = 3")" \
	"${#USERS[@]}:${#USERS[@]}" "page 3 is stored with its own digest: the same entries, the body it came with"

# A listing cut short: zed's first listing stores pages 1 and 2, and page 3
# fails.  The next sweep resumes at page 3, whose token has expired, and
# lists again from page 1: pages 1 and 2 arrive as stored and are skipped
# unparsed, page 2 because it names a next page, though no page after it is
# stored; page 3 is fetched and ends the listing.
Z=zed
SCHEMA=$B serve convb5 "${DATA[@]}" --bump 70 --listen "127.0.0.1:$port" --fault "500:$Z:3@2"
SCHEMA=$B write_config "$TEST_TMP/z.conf" "$Z"
run_once "$TEST_TMP/z.conf"
is "$?|$(sql "SELECT state || ':' || pages_done || ':' || (next_page_url IS NOT NULL) FROM $B.sync_cursors WHERE user_sid = '$Z'")|$(sql "SELECT string_agg(page_no || ':' || (next_page_url IS NOT NULL), ',' ORDER BY page_no) FROM $B.sync_listing_pages WHERE user_sid = '$Z'")" \
	"3|failed:2:true|1:true,2:true" "(page 3 of $Z's first listing fails: pages 1 and 2 are stored, each naming its next page)"
SCHEMA=$B serve convb6 "${DATA[@]}" --bump 70 --listen "127.0.0.1:$port" --fault "400:$Z:1@2"
SCHEMA=$B write_config "$TEST_TMP/z.conf" "$Z"
mark=$(log_end)
run_once "$TEST_TMP/z.conf" -v -v
is "$?" 0 "the next sweep exits 0"
is "$(tail -n +"$mark" "$TEST_TMP/chatsyncd.log" | grep -c "user \"$Z\" page 3: .*restarting the listing from page 1")|$(unparsed "$mark")" \
	"1|2" "the resumed page 3 is refused, the listing starts again, and pages 1 and 2 go unparsed"
is "$(requests "$Z" | awk -F'\t' '{ printf "%s%s:%s", (NR > 1 ? "," : ""), $3, $1 }')" "2:400,0:200,1:200,2:200" \
	"page 3 is fetched again after pages 1 and 2"
expect_conv "${DATA[@]}" --bump 70 -- "$Z"
is "$(sql "SELECT state || ':' || pages_done FROM $B.sync_cursors WHERE user_sid = '$Z'")|$(sql "SELECT count(*) FROM $B.user_conversations WHERE user_sid = '$Z' AND deleted_at IS NULL")|$(sql "SELECT count(*) FROM (SELECT * FROM public.conv_expected EXCEPT SELECT $CONV_COLS FROM $B.user_conversations WHERE user_sid = '$Z') d")" \
	"complete:3|$CH|0" "the listing ends at page 3 with all $CH conversations, none deleted"

done_testing

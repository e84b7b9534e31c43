#!/usr/bin/env bash
# A service listed through Chat v2 (api = "chat_v2"): its users' channels are
# fetched from /v2/Services/... 50 at a time whatever twilio.page_size says,
# paged to the end, with v2's notParticipating stored as not_participating,
# into the same tables as v1's; a membership gone from a complete listing is
# deleted only then; a 429 is retried; an expired page token restarts the
# listing; a next page on another host is refused (one under /v1 on the same
# host: test_url.c); the service, its users and its channels are listed
# under /v2 too; and a kill -9 at page 3 of 5 resumes at page 3.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=(alice "b/c@x y" US0123456789abcdef0123456789abcdef)
CH=120 # slots: three pages of 50 per user
DATA=(--seed 5 --channels $CH)
SERVICE_EXTRA='api = "chat_v2";'
export SERVICE_EXTRA

# expect_v2 FAKE-ARGS -- USER...: public.expected as the fake serves it under
# /v2, and public.expected_level the notification_level of each membership
# (the dump's last column).
expect_v2() {
	local args=() u
	while [ "$1" != "--" ]; do
		args+=("$1")
		shift
	done
	shift
	new_dump_table public.expected
	sql "DROP TABLE IF EXISTS public.expected_level;
	     CREATE TABLE public.expected_level (user_sid text, channel_sid text, level text)"
	for u in "$@"; do
		"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" --api chat_v2 \
			"${args[@]}" --dump "$u" >"$TEST_TMP/v2.dump"
		cut -f1-10 "$TEST_TMP/v2.dump" |
			psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.expected FROM STDIN"
		cut -f2,3,11 "$TEST_TMP/v2.dump" |
			psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.expected_level FROM STDIN"
	done
}
# Live memberships whose notification_level is not the one the API sends.
level_differ() {
	sql "SELECT count(*) FROM chatsync.user_channels uc
	       FULL JOIN public.expected_level e USING (user_sid, channel_sid)
	      WHERE (uc.deleted_at IS NULL OR e.user_sid IS NOT NULL)
	        AND uc.notification_level IS DISTINCT FROM e.level"
}


# ---------------------------------------------------------------- paging
serve v2 "${DATA[@]}"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a sweep of a chat_v2 service with twilio.page_size = 1000 exits 0"
expect_v2 "${DATA[@]}" -- "${USERS[@]}"
is "$(sql "SELECT count(*) FROM public.expected")" $((CH * ${#USERS[@]})) "(the fake serves $CH channels to each user)"
is "$(diff_expected)" 0 "the table holds exactly what the API serves under /v2"
is "$(level_differ)|$(sql "SELECT string_agg(DISTINCT notification_level, ',') FROM chatsync.user_channels")" \
	"0|default,muted" "with each membership's notification_level, default or muted"
is "$(awk -F'\t' '{ print $4 }' "$FAKE_LOG" | grep -c '^/v2/Services/')|$(wc -l <"$FAKE_LOG")" \
	"$((3 * ${#USERS[@]}))|$((3 * ${#USERS[@]}))" \
	"three pages a user, every request under /v2/Services/"
is "$(awk -F'\t' '{ print $4 }' "$FAKE_LOG" | grep -c 'PageSize=50\b')" "$((3 * ${#USERS[@]}))" \
	"each page asks for 50 entries, the API's most"
is "$(sql "SELECT count(*) FILTER (WHERE status = 'notParticipating') || '|' || (count(*) FILTER (WHERE status = 'not_participating') > 0)
             FROM chatsync.user_channels")" "0|true" \
	"notParticipating is stored as not_participating, one vocabulary with v1"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE channel_url NOT LIKE 'https://chat.twilio.com/v2/%'")" 0 \
	"the links are v2's, as the API sends them"

# ---------------------------------------------------------------- deletions
# Variant 1 removes the memberships of slots i % 10 == 1 and changes others.
serve v2b "${DATA[@]}" --variant 1 --fault "429:${USERS[0]}:2"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a sweep of the changed data, with two 429s for ${USERS[0]}, exits 0"
expect_v2 "${DATA[@]}" --variant 1 -- "${USERS[@]}"
is "$(diff_expected)" 0 "the table follows the API: changes applied, removed memberships deleted"
is "$(level_differ)" 0 "notification levels follow it too"
is "$(requests "${USERS[0]}" | awk -F'\t' '$1 == 429' | wc -l)|$(requests "${USERS[0]}" | awk -F'\t' '$1 == 200' | wc -l)" \
	"2|3" "the 429s are retried, and the listing's three pages fetched"
is "$(sql "SELECT count(*) FROM chatsync.membership_events WHERE event = 'removed'")" \
	"$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL")" \
	"each deleted membership has its removal event"

# Variant 2 removes slots i % 10 == 2: a listing that fails on its last page
# deletes none of them; a complete one then does.
serve v2c "${DATA[@]}" --variant 2 --fault "500:${USERS[1]}:99@2"
deleted_now() { # deleted_now USER: its memberships the last sweep marked deleted
	sql "SELECT count(*) FROM chatsync.user_channels
	      WHERE user_sid = '$1' AND deleted_at >= (SELECT max(started_at) FROM chatsync.sync_runs)"
}
MAX_RETRIES=0 run_once "$TEST_TMP/c.conf"
is "$(deleted_now "${USERS[1]}")|$(sql "SELECT state || ':' || pages_done FROM chatsync.sync_cursors WHERE user_sid = '${USERS[1]}'")" \
	"0|failed:2" "a listing that failed at its third page marks nothing deleted, and keeps its two pages"
is "$(deleted_now "${USERS[2]}")" 12 "(a complete one in the same sweep deleted its 12 memberships of slots i % 10 == 2)"
serve v2c2 "${DATA[@]}" --variant 2
run_once "$TEST_TMP/c.conf"
is "$(deleted_now "${USERS[1]}")" 12 "completed in the next sweep, the listing deletes them"

# A change of the level alone is a change: sync_page() called without a
# lease token, as a tool would (lev is nobody's to list: no lease holds it).
level_page() { # level_page LEVELS: user lev's listing of CH1 and CH2, both joined
	PGOPTIONS="-c client_min_messages=warning -c search_path=chatsync" \
		psql -X -q -A -t -v ON_ERROR_STOP=1 -c "SELECT inserted || ':' || updated || ':' || unchanged
		  FROM sync_page((SELECT max(run_id) FROM sync_runs), '$SERVICE_SID', 'lev', true, NULL,
		                 '{CH1,CH2}', NULL, NULL, '{joined,joined}', NULL, NULL, NULL, NULL,
		                 0, 1, 0, NULL, '{$1}')"
}
is "$(level_page default,muted)|$(level_page muted,muted)" "2:0:0|0:1:1" \
	"a membership whose notification level alone changes is updated, the other left alone"
is "$(sql "SELECT string_agg(channel_sid || ':' || notification_level, ',' ORDER BY channel_sid)
             FROM chatsync.user_channel_past_versions WHERE user_sid = 'lev'")|$(sql "SELECT string_agg(notification_level, ',' ORDER BY channel_sid) FROM chatsync.user_channels WHERE user_sid = 'lev'")" \
	"CH1:default|muted,muted" "its former level is a past version"

# ---------------------------------------------------------------- the next page
serve v2d "${DATA[@]}" --fault "400:${USERS[0]}:1@1" --fault "foreign:${USERS[1]}:0"
run_once "$TEST_TMP/c.conf"
is "$(requests "${USERS[0]}" | awk -F'\t' '{ print $1 ":" $3 }' | paste -sd,)" "200:0,400:1,200:0,200:1,200:2" \
	"an expired page token (400 on the second page) restarts the listing from the first"
grep -q "service $SERVICE_SID user \"${USERS[1]}\".*refusing next_page_url" "$TEST_TMP/chatsyncd.log"
ok $? "a next_page_url on another host is refused"
is "$(requests "${USERS[1]}" | wc -l)" 1 "and nothing more is requested for that listing"

# ---------------------------------------------------------------- names
serve v2n "${DATA[@]}" --users "${USERS[0]}"
DIMENSIONS=true write_config "$TEST_TMP/n.conf" "${USERS[@]}"
run_once "$TEST_TMP/n.conf"
is "$?" 0 "a sweep with the dimension listings exits 0"
is "$(awk -F'\t' '$2 ~ /^@/ && $4 !~ /PageToken/ { print $2 " " $4 }' "$FAKE_LOG" | sed 's/IS[0-9a-fA-F]*/IS/' | sort | paste -sd,)" \
	"@channels /v2/Services/IS/Channels?Type=public&Type=private&PageSize=100,@service /v2/Services/IS,@users /v2/Services/IS/Users?PageSize=100" \
	"the service, its users and its channels are listed under /v2, 100 a page"
is "$(sql "SELECT count(*) FROM chatsync.channels")|$(sql "SELECT identity FROM chatsync.users")" \
	"$(sql "SELECT count(DISTINCT channel_sid) FROM chatsync.user_channels
	         WHERE user_sid = (SELECT user_sid FROM chatsync.users)")|${USERS[0]}" \
	"the names land, over two pages: the channels of the service's one user, and that user"

# ---------------------------------------------------------------- kill -9 at page 3 of 5
U=kim
serve v2e --seed 5 --channels 250 --latency-ms 400
write_config "$TEST_TMP/k.conf" "$U"
kill_at_page "$TEST_TMP/k.conf" "$U" 2
next=$(sql "SELECT next_page_url FROM chatsync.sync_cursors WHERE user_sid = '$U'")
is "$(sql "SELECT state || ':' || pages_done FROM chatsync.sync_cursors WHERE user_sid = '$U'")" "running:2" \
	"killed -9 with two of five pages committed"
run_once "$TEST_TMP/k.conf"
is "$?" 0 "the next run exits 0"
grep -q "user \"$U\": resuming at page 3" "$TEST_TMP/chatsyncd.log"
ok $? "it resumes at page 3"
# Pages 1, 2, 4 and 5 are fetched once each; page 3 once more if it was in
# flight at the kill (the fake counts pages from 0).
is "$(requests "$U" | awk -F'\t' '{ n[$3]++ } END { for (p = 0; p < 5; p++) printf "%s%d", p ? "," : "", (p == 2 && n[p] == 2) ? 1 : n[p] }')" \
	"1,1,1,1,1" "no committed page is fetched again, and no page twice but the one in flight"
is "$(requests "$U" | awk -F'\t' '$3 == 2 { print $4 }' | sort -u)" "$(echo "$next" | sed 's|^http://[^/]*||')" \
	"the third page is the committed next_page_url"
expect_v2 --seed 5 --channels 250 -- "$U"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE user_sid = '$U' AND deleted_at IS NULL")|$(sql "SELECT count(*) FROM (SELECT * FROM public.expected EXCEPT SELECT $VALUE_COLS FROM chatsync.user_channels WHERE user_sid = '$U') d")" \
	"250|0" "and the table holds the user's 250 memberships, each once"

done_testing

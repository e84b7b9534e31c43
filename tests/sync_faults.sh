#!/usr/bin/env bash
# tests/sync_faults.sh - fault injection: what chatsyncd does when the API, the
# network, the configuration or the database misbehave.
#
#   1  429 storms are retried (Retry-After honoured) and counted
#   2  503s and cut transfers are retried and succeed within max_retries
#   3  a user whose retries are spent is parked; the next sweep resumes it
#   4  401/403 stop the sweep; --once exits 1, the daemon tries again
#   5  an expired resumed cursor restarts the listing once; 404 is "user not found"
#   6  hostile pages (loop, too many pages, too big, long strings, deep nesting)
#   7  redirects are not followed; the auth token appears nowhere
#   8  a group/world-readable config file holding the token is warned about
#   9  the database connection is killed mid-sweep; one user's page fails in SQL
#  10  SIGTERM/SIGINT during a transfer: exit 0 at once, resume at that page
#
# Each part has its own schema (p1..p10) and its own fake API, so parts do
# not see one another's cursors.  Every listing has 25 channels in pages of
# 10 (10 + 10 + 5) unless said otherwise.
. "$(dirname "$0")/lib.sh"
need_tools
export LC_ALL=C
pg_start || { echo "Bail out! could not start PostgreSQL"; exit 1; }

T_START=$SECONDS
CH=25
export PAGE_SIZE=10 BACKOFF_BASE_MS=10 MAX_BACKOFF=1

now_us() { echo "${EPOCHREALTIME/./}"; }

like() { # like GOT PATTERN DESCRIPTION
	local got=$1 pat=$2
	shift 2
	if [[ $got == $pat ]]; then ok 0 "$*"; else ok 1 "$*"; diag "got:  $got" "want: $pat"; fi
}
grep_ok() { # grep_ok PATTERN FILE DESCRIPTION: FILE has a line matching the ERE
	if grep -Eq -- "$1" "$2"; then ok 0 "$3"; else ok 1 "$3"; diag "no line matches /$1/ in $2"; fi
}
grep_not() { # grep_not FIXED-STRING FILE DESCRIPTION
	if grep -Fq -- "$1" "$2"; then ok 1 "$3"; diag "found in $2: $(grep -F -- "$1" "$2" | head -n 1)"; else ok 0 "$3"; fi
}

# new_fake NAME ARGS...: stops the current fake and starts another (same
# port if PORT is set, so that stored next_page_urls still point at it).
new_fake() {
	local name=$1
	shift
	[ -n "${FAKE_PID:-}" ] && fake_stop
	if [ -n "${PORT:-}" ]; then
		fake_start "$name" --listen "127.0.0.1:$PORT" "$@"
	else
		fake_start "$name" "$@"
	fi || { echo "Bail out! could not start fake_twilio $name"; exit 1; }
}

# part N TITLE: a new schema pN, a new chatsyncd log $LOG, a new fake port.
part() {
	export SCHEMA=p$1
	LOG="$TEST_TMP/chatsyncd.p$1.log"
	: >"$LOG"
	PORT=
	diag "--- part $1: $2 ($((SECONDS - T_START)) s)"
}

# sweep CONF [ARGS]: one chatsyncd --once; exit status in RC; then snap.
sweep() {
	local conf=$1
	shift
	echo "----- $(date +%T.%N) --once $*" >>"$LOG"
	TWILIO_AUTH_TOKEN="${TOKEN:-$AUTH_TOKEN}" "$CHATSYNCD" -c "$conf" --once "$@" 2>>"$LOG"
	RC=$?
	snap
}

# start_bg CONF [ARGS]: chatsyncd in the background (lib.sh: bg_start), logging to $LOG.
start_bg() { bg_start "$LOG" "$@"; }

# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds; false on timeout.
wait_for() {
	local i n=$(($1 * 20))
	shift
	for ((i = 0; i < n; i++)); do
		"$@" && return 0
		nap 0.05
	done
	return 1
}


# Per user, from the fake's request log: statuses and page indexes, in order.
statuses() { awk -F'\t' -v u="$1" '$2 == u { printf "%s%s", s, $1; s = "," } END { print "" }' "$FAKE_LOG"; }
pages_asked() { awk -F'\t' -v u="$1" '$2 == u { printf "%s%s", s, $3; s = "," } END { print "" }' "$FAKE_LOG"; }

# snap: reads SCHEMA's cursors, each user's live rows, the latest sync_runs
# row and the history's size in one query (psql is slow to start on a busy
# machine); cursor, rows and run answer from it.
declare -A CUR ROWS RUN
snap() {
	local tag a b c
	CUR=() ROWS=() RUN=()
	while IFS=$'\t' read -r tag a b c; do
		case $tag in
		c) CUR[$a]=$b ROWS[$a]=$c ;;
		r) RUN[$a]=$b ;;
		esac
	done < <(psql -X -q -A -t -F $'\t' -c "
		SELECT 'c', c.user_sid, c.state || ' ' || c.pages_done || ' '
		       || coalesce(substring(c.next_page_url from '\\?.*\$'), '-') || ' ' || coalesce(c.last_error, '-'),
		       (SELECT count(*) FROM $SCHEMA.user_channels uc
		         WHERE (uc.service_sid, uc.user_sid) = (c.service_sid, c.user_sid) AND uc.deleted_at IS NULL)::text
		  FROM $SCHEMA.sync_cursors c
		UNION ALL
		SELECT 'r', key, coalesce(value, '-'), ''
		  FROM (SELECT * FROM $SCHEMA.sync_runs ORDER BY run_id DESC LIMIT 1) r, jsonb_each_text(to_jsonb(r))
		UNION ALL
		SELECT 'r', 'runs', count(*) || ' ' || count(finished_at), '' FROM $SCHEMA.sync_runs
		UNION ALL
		SELECT 'r', 'history_versions', count(*)::text, '' FROM $SCHEMA.user_channel_history")
}
cursor() { echo "${CUR[$1]:-}"; } # cursor USER: state pages_done next-page-query last_error
rows() { echo "${ROWS[$1]:-0}"; }  # rows USER: live rows
# run KEY...: columns of the latest sync_runs row ('-' for NULL), or
# runs ("N F": runs, finished runs), history_versions.
run() {
	local k out=()
	for k; do out+=("${RUN[$k]:-?}"); done
	echo "${out[*]}"
}

# expect FAKE-ARGS -- USER...: like load_expected, with one fake and one psql.
expect() {
	local args=()
	while [ "$1" != "--" ]; do
		args+=("$1")
		shift
	done
	shift
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" "${args[@]}" "${@/#/--dump=}" |
		psql -X -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS public.expected;
		  CREATE TABLE public.expected (service_sid text, user_sid text, channel_sid text,
		    account_sid text, member_sid text, status text, last_consumed_message_index bigint,
		    unread_messages_count bigint, channel_url text, member_url text)" \
			-c "\\copy public.expected FROM pstdin"
}
next_query() { echo "?PageSize=10&Page=$1&PageToken=PT$1"; }


# ============================================================ 1. 429 storms
part 1 "429 storm"
new_fake p1 --channels $CH --fault 429:u-storm:3 --fault 429r:u-slow:2
# Stamp each request-log line with the time it appears (polled every 5 ms),
# without changing the log's format.
(
	exec {fd}<"$FAKE_LOG"
	part_line=
	while :; do
		if IFS= read -r line <&"$fd"; then
			printf '%s\t%s\n' "$EPOCHREALTIME" "$part_line$line"
			part_line=
		else
			part_line+=$line
			nap 0.005
		fi
	done
) >"$TEST_TMP/p1.stamped" &
STAMP_PID=$!
MAX_RETRIES=3 write_config "$TEST_TMP/p1.conf" u-calm u-storm u-slow
t0=$(now_us)
sweep "$TEST_TMP/p1.conf"
t1=$(now_us)
nap 0.05
kill "$STAMP_PID"
wait "$STAMP_PID" 2>/dev/null
is "$RC" 0 "1: a sweep whose 429s stop within max_retries (3) exits 0"
is "$(statuses u-storm)" "429,429,429,200,200,200" "1: u-storm: 3 x 429, then its 3 pages (3 + 3 requests)"
is "$(pages_asked u-storm)" "0,0,0,0,1,2" "1: the retries ask for the same page again"
is "$(statuses u-slow)" "429,429,200,200,200" "1: u-slow: 2 x 429 with Retry-After, then its 3 pages"
is "$(statuses u-calm)" "200,200,200" "1: u-calm is not disturbed"
is "$(run http_retries http_requests users_ok users_failed pages)" \
	"5 14 3 0 9" "1: sync_runs counts 5 retries among 14 requests, 3 users ok, 9 pages"
expect --channels $CH -- u-calm u-storm u-slow
is "$(diff_expected)" 0 "1: the tables equal the API's data exactly"
is "$(cursor u-calm)|$(cursor u-storm)|$(cursor u-slow)" "complete 3 - -|complete 3 - -|complete 3 - -" \
	"1: every cursor complete after 3 pages, no error"
grep_ok 'u-storm" page 1: HTTP 429 .*retry 3 of 3 in' "$LOG" "1: the third retry is logged as 3 of 3"
grep_ok 'u-slow" page 1: HTTP 429 .*retry 1 of 3 in 1\.0 s' "$LOG" "1: the Retry-After: 1 retry waits 1.0 s"
# Gaps between consecutive requests of a user, in ms, from the stamped log.
gaps() {
	awk -F'\t' -v u="$1" '$3 == u { if (n++) { printf "%s%d", s, ($1 - prev) * 1000; s = "," } prev = $1 } END { print "" }' \
		"$TEST_TMP/p1.stamped"
}
slow_gaps=$(gaps u-slow)
storm_gaps=$(gaps u-storm)
diag "request gaps (ms): u-slow $slow_gaps; u-storm $storm_gaps; sweep $(((t1 - t0) / 1000)) ms"
IFS=, read -r g1 g2 _ <<<"$slow_gaps"
((${g1:-0} >= 900 && ${g2:-0} >= 900))
ok $? "1: with Retry-After: 1 each retry of u-slow comes about 1 s after the 429 (gaps $g1, $g2 ms >= 900: the log's stamps are polled)"
IFS=, read -r g1 g2 g3 _ <<<"$storm_gaps"
((${g1:-9999} < 500 && ${g2:-9999} < 500 && ${g3:-9999} < 500))
ok $? "1: without Retry-After the backoff stays small (base 10 ms): gaps $g1, $g2, $g3 ms"
(((t1 - t0) >= 2000000))
ok $? "1: the sweep took >= 2 s ($(((t1 - t0) / 1000)) ms): two Retry-After waits"

# ============================================================ 2. 503, cut transfers
part 2 "503 and cut transfers, cleared within max_retries"
new_fake p2 --channels $CH --fault 503:u-503:2@1 --fault cut:u-cut:2@1
expect_no_past # one data set: no version ends
MAX_RETRIES=2 write_config "$TEST_TMP/p2.conf" u-503 u-cut u-calm
sweep "$TEST_TMP/p2.conf"
is "$RC" 0 "2: 503s and cut transfers that clear within max_retries (2): exit 0"
is "$(statuses u-503)/$(pages_asked u-503)" "200,503,503,200,200/0,1,1,1,2" "2: u-503: page 2 answered 503 twice, then served"
is "$(pages_asked u-cut)" "0,1,1,1,2" "2: u-cut: page 2 cut twice, asked again each time"
grep_ok 'u-cut" page 2: .*; retry 2 of 2 in' "$LOG" "2: a cut transfer is a retryable transport error"
grep_ok 'u-503" page 2: HTTP 503 .*; retry 2 of 2 in' "$LOG" "2: so is a 503"
expect --channels $CH -- u-503 u-cut u-calm
is "$(diff_expected)" 0 "2: the tables equal the API's data exactly (nothing of a cut page doubled or lost)"
is "$(run http_retries users_ok users_failed pages rows_received)" \
	"4 3 0 9 75" "2: 4 retries, 3 users ok, 9 pages, 75 rows received once each"
is "$(run history_versions) $(past_differ)" "75 0" "2: one history version per row, no past version"

# ============================================================ 3. parked user
part 3 "a user whose retries are spent is parked, then resumed"
new_fake p3 --channels $CH --fault 503:u-park:1000@1
PORT=${FAKE_URL##*:}
MAX_RETRIES=2 write_config "$TEST_TMP/p3.conf" u-a u-park u-b
sweep "$TEST_TMP/p3.conf"
is "$RC" 3 "3: a sweep with a parked user exits 3"
is "$(cursor u-park)" "failed 1 $(next_query 1) could not fetch page 2 after 2 retries: HTTP 503 (Twilio error 20500: Service Unavailable)" \
	"3: u-park is failed at pages_done 1, still pointing at page 2, with the error"
is "$(statuses u-park)/$(pages_asked u-park)" "200,503,503,503/0,1,1,1" "3: one request and 2 retries for page 2"
is "$(rows u-park)" 10 "3: its committed page 1 stays"
is "$(cursor u-b)" "complete 3 - -" "3: the rest of the sweep completes (u-b, after u-park)"
is "$(run users_ok users_failed http_retries runs)" \
	"2 1 2 1 1" "3: the run is finished: 2 ok, 1 failed, 2 retries counted"
new_fake p3b --channels $CH # same port, no fault
sweep "$TEST_TMP/p3.conf"
is "$RC" 0 "3: with the fault gone the next sweep exits 0"
is "$(pages_asked u-park)" "1,2" "3: u-park resumes at page index 1 (= pages_done) and asks only pages 2 and 3"
is "$(awk -F'\t' '$2 == "u-park" { print $4; exit }' "$FAKE_LOG")" "/v1/Services/$SERVICE_SID/Users/u-park/Channels$(next_query 1)" \
	"3: its first request is the stored next_page_url"
is "$(pages_asked u-a) $(pages_asked u-b)" "0,1,2 0,1,2" "3: the others are listed once, normally, nothing more"
is "$(log_lines)" 8 "3: 8 requests in all"
expect --channels $CH -- u-a u-park u-b
is "$(diff_expected)" 0 "3: the tables equal the API's data exactly"
is "$(run rows_inserted rows_unchanged pages)" \
	"15 50 8" "3: the resumed sweep inserts only u-park's 15 missing rows"
is "$(cursor u-park)" "complete 3 - -" "3: u-park complete, pages_done 3, error cleared"

# ============================================================ 4. authentication
part 4 "401 and 403"
new_fake p4 --channels $CH --fault 403:u-b:1000
MAX_RETRIES=2 write_config "$TEST_TMP/p4.conf" u-a u-b u-c u-d
sweep "$TEST_TMP/p4.conf"
is "$RC" 1 "4: --once meeting a 403 exits 1"
is "$(statuses u-a)|$(statuses u-b)|$(statuses u-c)|$(statuses u-d)" "200,200,200|403||" \
	"4: the sweep stops at the 403 at once: not retried, u-c and u-d not fetched"
is "$(cursor u-b)" "running 0 - authentication failed" "4: u-b records the authentication failure, still to do in this sweep"
grep_ok 'error: authentication failed \(HTTP 403' "$LOG" "4: the log says authentication failed (HTTP 403 ...)"
is "$(run runs)" "1 0" "4: the sweep stays open, to be resumed"

# Daemon, wrong token: one 401 per interval, never more, and it keeps running.
export SCHEMA=p4d
new_fake p4d --channels $CH
write_config "$TEST_TMP/p4d.conf" u-a u-b u-c u-d
LOG="$TEST_TMP/chatsyncd.p4d.log"
TOKEN=wrong-token start_bg "$TEST_TMP/p4d.conf"
nap 2.5
kill -0 "$BG_PID" 2>/dev/null
ok $? "4: the daemon meeting 401s is still running after 2.5 s"
n401=$(log_lines)
t0=$(now_us)
kill -TERM "$BG_PID"
wait_bg 5
t1=$(now_us)
# Counted once it has ended: a sweep may begin between the count above and the signal.
sweeps=$(grep -cE 'info: (starting|resuming) sweep' "$LOG")
diag "daemon with a wrong token: $n401 requests, $sweeps sweeps in 2.5 s"
((n401 >= 2 && n401 <= 3))
ok $? "4: it tried again at each interval of 1 s: $n401 requests in 2.5 s (2..3)"
is "$(awk -F'\t' '$1 != 401' "$FAKE_LOG" | wc -l)" 0 "4: every one of them a 401"
# The last sweep counted may have started without its 401 answered yet.
errors=$(grep -c 'error: authentication failed (HTTP 401' "$LOG")
((errors == sweeps || errors == sweeps - 1))
ok $? "4: one request per sweep: each sweep stops at its 401 ($errors errors, $sweeps sweeps)"
is "$BG_RC" 0 "4: SIGTERM then exits 0"
((t1 - t0 < 2000000))
ok $? "4: within 2 s ($(((t1 - t0) / 1000)) ms)"
grep_not wrong-token "$LOG" "4: the wrong token is not logged"

# Daemon, 403 for u-a's first two requests: it keeps trying, and syncs everyone once allowed.
export SCHEMA=p4e
new_fake p4e --channels $CH --fault 403:u-a:2
write_config "$TEST_TMP/p4e.conf" u-a u-b u-c
LOG="$TEST_TMP/chatsyncd.p4e.log"
start_bg "$TEST_TMP/p4e.conf"
all_complete() { [ "$(sql "SELECT count(*) FROM $SCHEMA.sync_cursors WHERE state = 'complete'" 2>/dev/null)" = 3 ]; }
t0=$(now_us)
wait_for 8 all_complete
ok $? "4: after two 403s the daemon syncs every user by itself"
t1=$(now_us)
kill -0 "$BG_PID" 2>/dev/null
ok $? "4: and is still running"
kill -TERM "$BG_PID"
wait_bg 5
is "$BG_RC" 0 "4: SIGTERM exits 0"
diag "403 daemon: all complete after $(((t1 - t0) / 1000)) ms; requests: $(awk -F'\t' '{ printf "%s:%s:%s ", $1, $2, $3 }' "$FAKE_LOG")"
is "$(awk -F'\t' 'NR <= 2 { printf "%s%s:%s", s, $1, $2; s = "," } END { print "" }' "$FAKE_LOG")" "403:u-a,403:u-a" \
	"4: the interval after a 403 tries the same user again first (others not fetched meanwhile)"
expect --channels $CH -- u-a u-b u-c
is "$(diff_expected)" 0 "4: the tables equal the API's data exactly"

# ============================================================ 5. expired cursor, 404
part 5 "expired resumed cursor; 404 leaves rows alone"
new_fake p5 --channels $CH
PORT=${FAKE_URL##*:}
write_config "$TEST_TMP/p5.conf" u-x u-exp u-exp2 u-gone u-gone2
sweep "$TEST_TMP/p5.conf"
is "$RC" 0 "5: the first sweep exits 0"
base="$FAKE_URL/v1/Services/$SERVICE_SID/Users"
# The unknown users' rows and history, as a fingerprint to compare after.
gone_sql="SELECT md5(string_agg(user_sid || channel_sid || updated_at || coalesce(deleted_at::text, '-'), ','
                                ORDER BY user_sid, channel_sid))
                 || ' ' || (SELECT count(*) FROM p5.user_channel_history WHERE user_sid IN ('u-gone', 'u-gone2'))
            FROM p5.user_channels WHERE user_sid IN ('u-gone', 'u-gone2')"
before=$(sql "UPDATE p5.sync_cursors SET state = 'running', pages_done = 1,
                     next_page_url = '$base/' || user_sid || '/Channels?PageSize=10&Page=1&PageToken=PTbogus'
               WHERE user_sid IN ('u-exp', 'u-exp2');
              UPDATE p5.sync_cursors SET state = 'running', pages_done = 1,
                     next_page_url = '$base/u-gone2/Channels$(next_query 1)'
               WHERE user_sid = 'u-gone2';
              $gone_sql")
# The data changes (variant 3: 3 memberships gone, others changed), so a
# wrong restart would show in the deletions.
# u-exp2's restarted listing is refused again on page 2: no second restart.
new_fake p5b --channels $CH --variant 3 --fault 404:u-gone:0 --fault 404:u-gone2:0 --fault 400:u-exp2:1@1
sweep "$TEST_TMP/p5.conf"
is "$RC" 3 "5: the sweep with two unknown users and a refused page exits 3"
is "$(statuses u-exp)/$(pages_asked u-exp)" "400,200,200,200/-,0,1,2" \
	"5: u-exp: the refused cursor URL (400), then pages 1..3 from the start"
is "$(grep -c 'u-exp" page 2: HTTP 400 (Twilio error 21481: Invalid PageToken) for a resumed page; restarting the listing from page 1' "$LOG")" 1 \
	"5: one warning names the user, the page and the API's refusal"
is "$(statuses u-exp2)/$(pages_asked u-exp2)" "400,200,400/-,0,1" \
	"5: u-exp2: restarted once; when page 2 of the new listing is refused too, it does not restart again"
is "$(cursor u-exp2)" "failed 1 $(next_query 1) could not fetch page 2: HTTP 400 (Twilio error 21481: Invalid PageToken)" \
	"5: u-exp2 fails there, its new page 1 committed"
is "$(grep -c 'u-exp2" page 2: HTTP 400 .*restarting the listing' "$LOG")" 1 "5: one restart warning for u-exp2"
expect --channels $CH --variant 3 -- u-x u-exp
mapfile -t got < <(psql -X -q -A -t -v ON_ERROR_STOP=1 \
	-c "SELECT (SELECT count(*) FROM public.expected WHERE user_sid = 'u-exp') || '|' || count(*) FILTER (WHERE deleted_at IS NULL)
	           || '|' || count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM p5.user_channels WHERE user_sid = 'u-exp'" \
	-c "SELECT count(*) FROM (
	      (SELECT * FROM public.expected
	       EXCEPT ALL SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status, last_consumed_message_index,
	                         unread_messages_count, channel_url, member_url
	                    FROM p5.user_channels WHERE deleted_at IS NULL AND user_sid IN ('u-x', 'u-exp'))
	      UNION ALL
	      (SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status, last_consumed_message_index,
	              unread_messages_count, channel_url, member_url
	         FROM p5.user_channels WHERE deleted_at IS NULL AND user_sid IN ('u-x', 'u-exp')
	       EXCEPT ALL SELECT * FROM public.expected)) d" \
	-c "$gone_sql")
is "${got[0]:-}" "22|22|3" "5: u-exp ends with the API's 22 memberships, the 3 gone ones marked deleted"
is "${got[1]:-}" 0 "5: u-x and u-exp equal the API's new data exactly (EXCEPT ALL both ways)"
is "$(cursor u-exp)" "complete 3 - -" "5: u-exp complete after 3 pages"
# The versions the change to variant 3 ended: u-x's and u-exp's changed and
# dropped memberships, and those changed on u-exp2's one committed page
# (the first 10 of its listing); nothing of u-exp2's other memberships (no
# deletion without a complete listing) or of the unknown users.
expect_no_past
load_dump public.before --channels $CH -- u-x u-exp u-exp2
load_dump public.after --channels $CH --variant 3 -- u-x u-exp
"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" --channels $CH --variant 3 --dump u-exp2 |
	head -n 10 | psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.after FROM pstdin"
sql "INSERT INTO public.after SELECT * FROM public.before
      WHERE user_sid = 'u-exp2'
        AND channel_sid NOT IN (SELECT channel_sid FROM public.after WHERE user_sid = 'u-exp2')"
expect_past_ended public.before public.after
is "$(past_differ)|$(sql 'SELECT count(*) FROM public.expected_past')" "0|13" \
	"5: past versions: exactly the 13 that the change to variant 3 ended in what was swept (6 + 6 + 1)"
like "$(cursor u-gone)" "failed 3 - user not found: could not fetch page 1: HTTP 404 (Twilio error 20404*" \
	"5: a 404 on page 1 is \"user not found\""
is "$(statuses u-gone2)/$(pages_asked u-gone2)" "404,404/1,0" "5: a 404 on a resumed page restarts once, then page 1's 404 ends it"
like "$(cursor u-gone2)" "failed 1 $(next_query 1) user not found: could not fetch page 1: HTTP 404*" \
	"5: ... as user not found, its cursor left where it was"
is "${got[2]:-}" "$before" "5: the unknown users' rows and history are untouched (none deleted, updated or added)"

# ============================================================ 6. hostile responses
part 6 "hostile pages"
new_fake p6 --channels $CH --fault loop:u-loop:1 --fault deep:u-deep:1 --fault longstr:u-long:1
PORT=${FAKE_URL##*:}
write_config "$TEST_TMP/p6.conf" u-loop u-deep u-long u-fine
sweep "$TEST_TMP/p6.conf"
is "$RC" 3 "6: hostile pages fail their users: exit 3"
like "$(cursor u-loop)" "failed 1 $(next_query 1) page 2: next_page_url \"http://127.0.0.1:$PORT/*Page=0\" repeats a page of this listing (a loop)" \
	"6: loop: page 2 pointing back at page 1 is refused, nothing of it committed, cursor not advanced"
is "$(rows u-loop)|$(pages_asked u-loop)" "10|0,1" "6: loop: only page 1's 10 rows, and page 1 is not fetched again"
like "$(cursor u-deep)" "failed 1 $(next_query 1) could not parse page 2: JSON nested deeper than 32 levels at byte [0-9]*" \
	"6: deep nesting: page 2 refused, error names page and byte offset"
like "$(cursor u-long)" "failed 1 $(next_query 1) could not parse page 2: a string is longer than 65536 bytes at byte [0-9]*" \
	"6: a 100000-byte string: page 2 refused, error names page and byte offset"
is "$(rows u-deep)|$(rows u-long)" "10|10" "6: nothing of those pages committed (10 rows each, page 1's)"
grep_ok 'warning: service IS[0-9a-fA-F]+ user "u-deep": could not parse page 2: JSON nested deeper than 32 levels at byte [0-9]+' \
	"$LOG" "6: the log line names service, user, page and byte offset"
is "$(cursor u-fine)|$(rows u-fine)" "complete 3 - -|25" "6: the healthy user completes"
is "$(run users_ok users_failed)" "1 3" "6: the run counts 1 user ok, 3 failed"

export SCHEMA=p6b
EXTRA='limits: { max_pages = 2; max_body = 65536; max_string = 1048576; };' \
	write_config "$TEST_TMP/p6b.conf" u-many u-big
new_fake p6b --channels $CH --fault longstr:u-big:1
sweep "$TEST_TMP/p6b.conf"
is "$RC" 3 "6: limits.max_pages = 2 and max_body = 65536: exit 3"
is "$(cursor u-many)" "failed 2 $(next_query 2) listing has more than 2 pages (limits.max_pages)" \
	"6: max_pages: a third page is refused, cursor at pages_done 2"
is "$(pages_asked u-many)|$(rows u-many)" "0,1|20" "6: max_pages: the third page is never requested; 20 rows"
like "$(cursor u-big)" "failed 1 $(next_query 1) could not parse page 2: response body larger than 65536 bytes at byte [0-9]*" \
	"6: max_body: a 100 kB page 2 is refused, error names page and byte offset"
off=$(cursor u-big | sed -n 's/.* at byte \([0-9]*\)$/\1/p')
((${off:-99999999} <= 65536))
ok $? "6: max_body: refused at byte ${off:-?} (<= 65536), before reading it all"
is "$(rows u-big)" 10 "6: max_body: nothing of page 2 committed"

# ============================================================ 7. redirects, token
part 7 "redirects are not followed; the token stays home"
new_fake p7 --channels $CH --latency-ms 60 --fault redirect:u-redir:1 --fault 503:u-retry:1 \
	--fault malformed:u-bad:0 --fault foreign:u-foreign:0 --fault cut:u-cut:1 --fault 500:u-500:1000
PORT=${FAKE_URL##*:}
main_log=$FAKE_LOG
main_pid=$FAKE_PID
fake_start p7-elsewhere --listen "127.0.0.2:$PORT" --channels $CH ||
	{ echo "Bail out! could not listen on 127.0.0.2"; exit 1; }
elsewhere_log=$FAKE_LOG
FAKE_LOG=$main_log
FAKE_PID=$main_pid
MAX_RETRIES=2 write_config "$TEST_TMP/p7.conf" u-redir u-retry u-bad u-foreign u-cut u-500 u-fine
start_bg "$TEST_TMP/p7.conf" --once -v -v
seen=0 leaked=0
while kill -0 "$BG_PID" 2>/dev/null; do
	args=$(ps -ww -o args= -p "$BG_PID" 2>/dev/null)
	if [[ $args == *chatsyncd* ]]; then
		seen=$((seen + 1))
		[[ $args == *"$AUTH_TOKEN"* ]] && leaked=$((leaked + 1))
		tr '\0' ' ' <"/proc/$BG_PID/cmdline" 2>/dev/null | grep -qF -- "$AUTH_TOKEN" && leaked=$((leaked + 1))
	fi
	nap 0.05
done
wait_bg 1
snap
is "$BG_RC" 3 "7: the faulty sweep exits 3"
is "$(statuses u-redir)/$(pages_asked u-redir)" "200,302/0,1" "7: the 302 is asked once, not retried"
is "$(cursor u-redir)" "failed 1 $(next_query 1) could not fetch page 2: HTTP 302" "7: u-redir fails with an error naming HTTP 302"
is "$(rows u-redir)" 10 "7: its page 1 stays"
is "$(wc -l <"$elsewhere_log")" 0 "7: the server at 127.0.0.2 never receives a request (redirect and foreign next_page_url)"
((seen > 0 && leaked == 0))
ok $? "7: the token is never in chatsyncd's argv (ps -ww, /proc/PID/cmdline: $seen samples while it ran)"
grep_ok ' debug: ' "$LOG" "7: the run logged at debug level"
grep_not "$AUTH_TOKEN" "$LOG" "7: the auth token never appears in stderr at debug level"
grep_not "$(printf '%s:%s' "$ACCOUNT_SID" "$AUTH_TOKEN" | base64 -w0)" "$LOG" "7: nor the basic-auth header value"
is "$(printf '%s\n' "${CUR[@]}" | grep -cF -- "$AUTH_TOKEN")|$(printf '%s\n' "${CUR[@]}" | grep -c '^failed ')" \
	"0|4" "7: nor in any sync_cursors.last_error (4 errors recorded)"

# ============================================================ 8. config file mode
part 8 "a config file holding the token"
new_fake p8 --channels $CH
write_config "$TEST_TMP/p8.conf" u-a
sed -i "s|^  account_sid = .*|&\n  auth_token = \"$AUTH_TOKEN\";|" "$TEST_TMP/p8.conf"
check_config() { env -u TWILIO_AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p8.conf" --check-config 2>"$TEST_TMP/p8.err"; }
for mode in 644 640 604; do
	chmod $mode "$TEST_TMP/p8.conf"
	out=$(check_config)
	is "$out" "configuration OK" "8: mode $mode: the config loads with its auth_token"
	grep_ok "warning: $TEST_TMP/p8.conf holds twilio.auth_token and is readable by group or others" \
		"$TEST_TMP/p8.err" "8: mode $mode: a warning names the file"
done
grep_not "$AUTH_TOKEN" "$TEST_TMP/p8.err" "8: the warning does not show the token"
chmod 600 "$TEST_TMP/p8.conf"
out=$(check_config)
is "$out|$(wc -l <"$TEST_TMP/p8.err")" "configuration OK|0" "8: mode 600: no warning at all"
chmod 644 "$TEST_TMP/p8.conf"
env -u TWILIO_AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p8.conf" --once 2>"$TEST_TMP/p8.err"
is "$?" 0 "8: a sweep with the token from the file works"
grep_ok "warning: $TEST_TMP/p8.conf holds twilio.auth_token" "$TEST_TMP/p8.err" "8: and warns on load there too"
write_config "$TEST_TMP/p8f.conf" u-a
printf '%s\n' "$AUTH_TOKEN" >"$TEST_TMP/p8.token"
chmod 600 "$TEST_TMP/p8.token"
chmod 644 "$TEST_TMP/p8f.conf"
sed -i "s|^  account_sid = .*|&\n  auth_token_file = \"$TEST_TMP/p8.token\";|" "$TEST_TMP/p8f.conf"
env -u TWILIO_AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p8f.conf" --check-config >/dev/null 2>"$TEST_TMP/p8.err"
is "$?|$(wc -l <"$TEST_TMP/p8.err")" "0|0" "8: a readable config that only names an auth_token_file gets no warning"

# ============================================================ 9. database faults
part 9 "the database connection killed mid-sweep"
new_fake p9 --channels $CH --latency-ms 150
expect_no_past # one data set: no version ends
write_config "$TEST_TMP/p9.conf" u1 u2 u3 u4
start_bg "$TEST_TMP/p9.conf" --once
wait_for 10 eval '[ "$(log_lines)" -ge 5 ]'
killed=$(sql "SELECT bool_and(pg_terminate_backend(pid)) AND count(*) >= 1 FROM pg_stat_activity WHERE application_name LIKE 'chatsyncd%'")
at=$(log_lines)
wait_bg 30
snap
is "$killed" t "9a: chatsyncd's backends terminated ($at requests into a 12-page sweep)"
is "$BG_RC" 0 "9a: chatsyncd still finishes the sweep with exit 0"
grep_ok 'warning: lost the database connection' "$LOG" "9a: it logs the lost connection"
grep -E 'warning: lost the database connection \(' "$LOG" | grep -qv 'no reason given'
ok $? "9a: naming what went wrong ($(grep -m1 -o 'lost the database connection ([^)]*)' "$LOG"))"
grep_ok 'info: reconnected to the database' "$LOG" "9a: and the reconnect"
expect --channels $CH -- u1 u2 u3 u4
is "$(diff_expected)" 0 "9a: the tables equal the API's data exactly"
is "$(past_differ) $(run history_versions)" "0 100" \
	"9a: no past version (no page committed again rewrote a row), no version written twice"
is "$(run runs users_ok users_failed pages rows_inserted)" \
	"1 1 4 0 12 100" "9a: one finished run, 4 users ok, every page committed once"
n=$(log_lines)
# With concurrency 1 a user's last page may be committing while the next
# user's first page is fetched: both are lost with the connections.
((n >= 12 && n <= 14))
ok $? "9a: $n requests: at most the page being fetched and the page being committed are fetched again"

export SCHEMA=p9b
LOG="$TEST_TMP/chatsyncd.p9b.log"
new_fake p9b --channels $CH
write_config "$TEST_TMP/p9b.conf" u-a u-poison u-b
TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p9b.conf" --migrate 2>>"$LOG"
sql "CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS
       \$\$BEGIN RAISE EXCEPTION 'poisoned row for %', NEW.user_sid; END\$\$;
     CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON p9b.user_channels FOR EACH ROW
       WHEN (NEW.user_sid = 'u-poison') EXECUTE FUNCTION public.poison()"
sweep "$TEST_TMP/p9b.conf"
is "$RC" 3 "9b: a statement error for one user's page: exit 3"
is "$(cursor u-poison)" "failed 0 - could not store page 1: poisoned row for u-poison" "9b: u-poison's cursor records the failure with the database's message"
grep_ok 'warning: service IS[0-9a-fA-F]+ user "u-poison": could not store page 1: poisoned row for u-poison' "$LOG" "9b: the log has the database's error, with the user and the page"
is "$(grep -c 'poisoned row for u-poison' "$LOG")" 1 "9b: and says it once"
is "$(rows u-poison)|$(cursor u-a)|$(cursor u-b)" "0|complete 3 - -|complete 3 - -" "9b: nothing of u-poison stored; the others complete"
LOG="$TEST_TMP/chatsyncd.p9b-daemon.log"
start_bg "$TEST_TMP/p9b.conf"
two_runs() { [ "$(sql "SELECT count(finished_at) FROM p9b.sync_runs")" = 2 ]; }
wait_for 5 two_runs
ok $? "9b: the daemon's first sweep finishes despite the poisoned user"
sql "DROP TRIGGER poison ON p9b.user_channels"
poison_done() { [ "$(sql "SELECT state FROM p9b.sync_cursors WHERE user_sid = 'u-poison'")" = complete ]; }
wait_for 5 poison_done
ok $? "9b: once the trigger is gone the next interval syncs u-poison"
kill -0 "$BG_PID" 2>/dev/null
ok $? "9b: the daemon is still running"
kill -TERM "$BG_PID"
wait_bg 5
is "$BG_RC" 0 "9b: SIGTERM exits 0"
grep_ok 'could not store page 1' "$LOG" "9b: the daemon met the poisoned page first"
expect --channels $CH -- u-a u-poison u-b
is "$(diff_expected)" 0 "9b: the tables equal the API's data exactly"

# ============================================================ 10. shutdown
part 10 "SIGTERM and SIGINT during a transfer"
new_fake p10 --channels $CH --fault truncate:u-s:1
PORT=${FAKE_URL##*:}
MAX_RETRIES=0 write_config "$TEST_TMP/p10.conf" u-s
sweep "$TEST_TMP/p10.conf"
like "$RC|$(cursor u-s)" "3|failed 1 $(next_query 1) could not fetch page 2 after 0 retries: *" \
	"10: set-up: u-s has page 1 committed, page 2 pending"
new_fake p10-slow --channels $CH --latency-ms 5000
resuming() { grep -q 'u-s": resuming at page 2' "$LOG"; }
for sig in TERM INT; do
	LOG="$TEST_TMP/chatsyncd.p10-$sig.log"
	start_bg "$TEST_TMP/p10.conf" --once
	wait_for 5 resuming || diag "chatsyncd did not log resuming at page 2"
	nap 0.3
	t0=$(now_us)
	kill -"$sig" "$BG_PID"
	wait_bg 5
	t1=$(now_us)
	snap
	is "$BG_RC" 0 "10: SIG$sig during the 5 s transfer of page 2: exit 0"
	((t1 - t0 <= 2000000))
	ok $? "10: within 2 s of SIG$sig ($(((t1 - t0) / 1000)) ms)"
	is "$(cursor u-s | cut -d' ' -f1-3)|$(rows u-s)" "failed 1 $(next_query 1)|10" \
		"10: after SIG$sig nothing of page 2 is committed, the cursor is where it was"
done
new_fake p10-fast --channels $CH
is "$(wc -l <"$TEST_TMP/p10-slow.requests")" 2 "10: the slow fake did get both interrupted requests"
sweep "$TEST_TMP/p10.conf"
is "$RC" 0 "10: the next run exits 0"
is "$(pages_asked u-s)" "1,2" "10: and resumes at page index 1, the interrupted page"
expect --channels $CH -- u-s
is "$(diff_expected)" 0 "10: the tables equal the API's data exactly"

# ============================================================ 11. a dropped page's retries
part 11 "the database connection is lost while a retried page waits to commit"
new_fake p11 --channels $CH --fault 500:u-r:1
PAGE_SIZE=1000 write_config "$TEST_TMP/p11.conf" u-r
TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p11.conf" --migrate 2>>"$LOG"
# hold_lock TABLE SECONDS: another session holds a SHARE lock on TABLE
# (writes wait) for SECONDS; its psql's pid in LOCKER.
hold_lock() {
	LOCKED_TABLE=$1
	PGAPPNAME=hold_lock psql -X -q -c "BEGIN" -c "LOCK TABLE $1 IN SHARE MODE" \
		-c "SELECT pg_sleep($2)" -c "COMMIT" >/dev/null 2>&1 &
	LOCKER=$!
	wait_for 5 locked || diag "the lock on $1 was not taken"
}
# release_lock: ends hold_lock's session at once, whatever it runs; its lock goes with it.
release_lock() {
	sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hold_lock'" >/dev/null
	wait "$LOCKER" 2>/dev/null
	wait_for 10 eval '! locked'
}
locked() { [ "$(sql "SELECT count(*) FROM pg_locks WHERE relation = '$LOCKED_TABLE'::regclass AND granted AND mode = 'ShareLock'")" = 1 ]; }
# A sync_page() call waits for a lock.
waiting() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sync_page%'")" = 1 ]; }

# The writers wait on a lock until their sessions are ended under them
# (held far longer than that takes, then let go).
hold_lock p11.user_channels 60
start_bg "$TEST_TMP/p11.conf" --once
wait_for 10 waiting
ok $? "11: u-r's page, fetched after one retry, waits for the writer"
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sync_page%'" >/dev/null
release_lock
wait_bg 30
snap
is "$BG_RC" 0 "11: chatsyncd reconnects, fetches the page again and finishes"
is "$(statuses u-r)" "500,200,200" "11: requests: the 500, the retry, the page again"
is "$(run http_requests http_retries users_ok)" "3 1 1" \
	"11: the run counts all three requests and the retry of the dropped page"
expect --channels $CH -- u-r
is "$(diff_expected)" 0 "11: the tables equal the API's data exactly"

# ============================================================ 12. a retry waiting through a reconnect
part 12 "the database connection is lost while another user waits to retry"
new_fake p12 --channels $CH --fault 500:u-w:1
CONCURRENCY=2 PAGE_SIZE=1000 BACKOFF_BASE_MS=3000 MAX_BACKOFF=10 write_config "$TEST_TMP/p12.conf" u-v u-w
TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p12.conf" --migrate 2>>"$LOG"
hold_lock p12.user_channels 60
start_bg "$TEST_TMP/p12.conf" --once
wait_for 10 waiting
ok $? "12: u-v's page waits for the writer while u-w backs off (3 to 6 s) after a 500"
sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sync_page%'" >/dev/null
release_lock
wait_bg 30
snap
is "$BG_RC" 0 "12: chatsyncd reconnects and finishes"
is "$(statuses u-w)|$(statuses u-v)" "500,200|200,200" \
	"12: the waiting retry is dropped with the connection: u-w is fetched once more, not twice"
expect --channels $CH -- u-v u-w
is "$(diff_expected)" 0 "12: the tables equal the API's data exactly"
is "$(run users_ok users_failed)" "2 0" "12: both users ok"

# ============================================================ 13. a stop while a commit is stuck
part 13 "SIGTERM while a page's commit waits on a lock"
new_fake p13 --channels $CH
PAGE_SIZE=1000 write_config "$TEST_TMP/p13.conf" u-t
TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/p13.conf" --migrate 2>>"$LOG"
hold_lock p13.user_channels 8
start_bg "$TEST_TMP/p13.conf" --once
wait_for 10 waiting
ok $? "13: u-t's page waits for the writer on a lock held for 8 s"
t0=$(now_us)
kill -TERM "$BG_PID"
wait_bg 6
t1=$(now_us)
snap
is "$BG_RC" 0 "13: SIGTERM exits 0"
((t1 - t0 <= 3000000))
ok $? "13: within 3 s, the stuck commit cancelled after its 1 s of grace ($(((t1 - t0) / 1000)) ms)"
grep_ok 'cancelling a commit still running' "$LOG" "13: it logs the cancel"
is "$(rows u-t)|$(cursor u-t | cut -d' ' -f1)" "0|running" \
	"13: nothing of the page is committed, and the user is not recorded failed (its cursor, made when it was claimed, is running)"
release_lock
sweep "$TEST_TMP/p13.conf"
is "$RC|$(cursor u-t | cut -d' ' -f1)" "0|complete" "13: the next run fetches the page again and completes"

diag "run time $((SECONDS - T_START)) s"
done_testing

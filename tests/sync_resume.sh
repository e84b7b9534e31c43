#!/bin/bash
# tests/sync_resume.sh - a sweep killed at any moment resumes without losing,
# duplicating or re-fetching anything.
#
# One fake Twilio API (fixed data, 20 ms per response) serves everything:
#
#   ref        one undisturbed --once sweep: the reference tables and the
#              undisturbed request count.
#   chatsync   chatsyncd --once is killed with SIGKILL at $KILLS random moments
#              of one sweep (each process starting from what the previous one
#              left), then one last process finishes the sweep.  The committed
#              cursors are recorded at every kill and checked against the
#              requests the next process makes (fake request log); the final
#              tables must equal ref's and the fake's data.
#   pgrestart  PostgreSQL itself stops (immediate) and restarts while
#              chatsyncd --once sweeps; chatsyncd reconnects, fetches the
#              uncommitted page again and finishes; the tables must equal ref's.
#
# Kill moments are random (the seed is printed); every assertion holds for
# every moment.  Concurrency is 1, so at most one page is in flight at a kill.

. "$(dirname "$0")/lib.sh"

need_tools
export LC_ALL=C

TEST_SEED=${TEST_SEED:-$$$RANDOM}
RANDOM=$TEST_SEED
diag "random seed $TEST_SEED (set TEST_SEED to repeat the kill moments)"

PAGE=7
KILLS=4
FAKE_ARGS=(--seed 11 --channels 60 --variant 0)
USERS=(
	US0123456789abcdef0123456789abcdef
	"ann lee"
	"ops/team@example.com"
	"b/c@x+y%z?#é"
	"Zoë Ωmega straße"
	"carol.o'neil@example.org"
)

pg_start || { echo "Bail out! could not start PostgreSQL"; exit 1; }
fake_start fake "${FAKE_ARGS[@]}" --latency-ms 20 || { echo "Bail out! could not start fake_twilio"; exit 1; }
load_expected "${FAKE_ARGS[@]}" -- "${USERS[@]}"
# The fake serves one data set throughout: no version of a membership ends.
expect_no_past

# ------------------------------------------------------------ helpers

# Sleeps a random 0..29 ms; the delay in DELAY_MS.
random_delay() {
	DELAY_MS=$((RANDOM % 30))
	((DELAY_MS == 0)) || nap "$(printf '0.%03d' "$DELAY_MS")"
}

# snapshot SCHEMA FILE: the cursors of the sweep a new process would resume
# (the newest unfinished run): user, state, pages_done, next_page_url.
snapshot() {
	: >"$2"
	table_exists "$1.sync_cursors" || return 0
	sqlt "SELECT user_sid, state, pages_done, coalesce(next_page_url, '')
	        FROM $1.sync_cursors
	       WHERE run_id = (SELECT max(run_id) FROM $1.sync_runs WHERE finished_at IS NULL)
	       ORDER BY user_sid" >"$2"
}

# first_requests FROM TO: per user with requests in log lines FROM+1..TO:
# user, number of requests, page and target of the first.
first_requests() {
	awk -F'\t' -v a="$1" -v b="$2" '
		NR > a && NR <= b { if (!($2 in n)) { order[++k] = $2; page[$2] = $3; target[$2] = $4 }; n[$2]++ }
		END { for (i = 1; i <= k; i++) { u = order[i]; print u "\t" n[u] "\t" page[u] "\t" target[u] } }
	' "$FAKE_LOG"
}

# check_resume LABEL SNAPSHOT FROM TO FINAL: for every user, the first request
# the next process made (log lines FROM+1..TO) is where the snapshot says its
# listing stood: the next uncommitted page of a running listing, page 0 of a
# listing not started in this sweep, nothing for a complete one.  FINAL=1
# when that process ran to the end (so it must have asked for every listing
# that was not complete).
check_resume() {
	local label=$1 snap=$2 from=$3 to=$4 final=$5 u a b c state pages next n first target want got
	local -A s_state=() s_pages=() s_next=() r_n=() r_page=() r_target=()
	while IFS=$'\t' read -r u a b c; do
		s_state[$u]=$a s_pages[$u]=$b s_next[$u]=$c
	done <"$snap"
	while IFS=$'\t' read -r u a b c; do
		r_n[$u]=$a r_page[$u]=$b r_target[$u]=$c
	done < <(first_requests "$from" "$to")
	for u in "${USERS[@]}"; do
		state=${s_state[$u]:-new} pages=${s_pages[$u]:-0} next=${s_next[$u]:-}
		n=${r_n[$u]:-0} first=${r_page[$u]:-} target=${r_target[$u]:-}
		# Claimed and not started: a cursor without a page yet, listed from its first.
		[ "$state" = running ] && [ -z "$next" ] && [ "$pages" = 0 ] && state=claimed
		case $state in
		complete | failed)
			want="no request"
			if [ "$n" -eq 0 ]; then got="no request"; else got="$n requests, first page $first"; fi
			;;
		running)
			want="first page $pages at ${next#"$FAKE_URL"}"
			if [ "$n" -gt 0 ]; then
				got="first page $first at $target"
			elif [ "$final" -eq 0 ]; then
				got=$want # that process was killed before it got there
			else
				got="no request"
			fi
			;;
		*)
			want="first page 0"
			if [ "$n" -gt 0 ]; then
				got="first page $first"
			elif [ "$final" -eq 0 ]; then
				got=$want
			else
				got="no request"
			fi
			;;
		esac
		is "$got" "$want" "$label: user \"$u\" ($state, $pages pages done): next process resumes it right"
	done
}

# check_final SCHEMA LABEL: SCHEMA's tables after a finished sweep equal ref's.
check_final() {
	local s=$1 label=$2
	is "$(rows_differ "$s" ref "$VALUE_COLS, deleted_at IS NULL" user_channels)" 0 \
		"$label: user_channels equals ref's (EXCEPT ALL both ways)"
	is "$(SCHEMA=$s diff_expected)" 0 "$label: live user_channels equal the fake's data"
	is "$(sql "SELECT count(*) FROM $s.user_channels")" "$(sql "SELECT count(*) FROM ref.user_channels")" \
		"$label: as many user_channels rows as ref"
	is "$(past_differ "$s")" 0 \
		"$label: no past version: the fake's data never changed, so no page, resumed or fetched again, ended one"
	is "$(sql "SELECT count(*) FROM $s.user_channel_history")" \
		"$(sql "SELECT count(*) FROM ref.user_channel_history")" \
		"$label: as many history rows as ref (no version written twice)"
	is "$(rows_differ "$s" ref "$VALUE_COLS, valid_to IS NULL" user_channel_history)" 0 \
		"$label: history versions equal ref's (EXCEPT ALL both ways)"
	is "$(sqlt "SELECT count(*), count(finished_at), sum(users_ok), sum(users_failed), sum(pages),
	                   sum(rows_received), sum(rows_inserted), sum(rows_updated), sum(rows_deleted),
	                   sum(rows_rejected)
	              FROM $s.sync_runs")" \
		"$(sqlt "SELECT 1, 1, ${#USERS[@]}, 0, $REF_PAGES, rows_received, rows_inserted,
	                   rows_updated, rows_deleted, rows_rejected FROM ref.sync_runs")" \
		"$label: one sync_runs row, finished, users_ok = ${#USERS[@]}, every page committed once"
	is "$(sqlt "SELECT string_agg(user_sid || ':' || state || ':' || pages_done || ':' ||
	                              (next_page_url IS NULL) || ':' ||
	                              (run_id = (SELECT max(run_id) FROM $s.sync_runs)),
	                              ' ' ORDER BY user_sid) FROM $s.sync_cursors")" \
		"$(sqlt "SELECT string_agg(user_sid || ':complete:' || pages_done || ':true:true',
	                              ' ' ORDER BY user_sid) FROM ref.sync_cursors")" \
		"$label: every cursor complete in that run, pages_done = the listing's page count"
	is "$(rows_differ "$s" ref "service_sid, user_sid, page_no, digest, entries, listed" sync_listing_pages)" 0 \
		"$label: sync_listing_pages equals ref's: every page's digest and SIDs, none left over"
}

# ------------------------------------------------------------ 1. reference

REF_CONF="$TEST_TMP/ref.conf"
PAGE_SIZE=$PAGE SCHEMA=ref write_config "$REF_CONF" "${USERS[@]}"
t0=$SECONDS
run_to_end "$REF_CONF" 30
REF_LINES=$(log_lines)
is "$BG_RC" 0 "ref: undisturbed sweep exits 0"
REF_PAGES=$(sql "SELECT pages FROM ref.sync_runs")
is "$REF_LINES" "$REF_PAGES" "ref: one request per page ($REF_PAGES pages)"
is "$(SCHEMA=ref diff_expected)" 0 "ref: user_channels equal the fake's data"
is "$(sqlt "SELECT count(*), count(*) FILTER (WHERE state = 'complete' AND pages_done = 9) FROM ref.sync_cursors")" \
	"${#USERS[@]}	${#USERS[@]}" "ref: every cursor complete after 9 pages (60 channels, $PAGE a page)"
is "$(sqlt "SELECT count(*), count(digest), sum(entries) FROM ref.sync_listing_pages")" \
	"$REF_PAGES	$REF_PAGES	$(sql "SELECT rows_received FROM ref.sync_runs")" \
	"ref: each page stored with its digest and entries"
diag "ref sweep: $REF_PAGES pages"

# The (user, page) pairs the undisturbed sweep asked for.
REF_PAIRS=$(pairs 0 "$REF_LINES")

# ------------------------------------------------------------ 2. kill -9 rounds

CONF="$TEST_TMP/chatsync.conf"
PAGE_SIZE=$PAGE SCHEMA=chatsync write_config "$CONF" "${USERS[@]}"
MARK=("$REF_LINES") # MARK[k]: log lines after process k (k = 0: before the first)
for ((k = 1; k <= KILLS; k++)); do
	done_pages=$(committed_pages chatsync)
	room=$((REF_PAGES - done_pages - 6)) # leave >= 6 pages (120 ms) so the kill lands inside the sweep
	((room > 12)) && room=12
	((room < 0)) && room=0
	r=$((RANDOM % (room + 1)))
	bg_once "$CONF"
	wait_log $((MARK[k - 1] + r))
	random_delay
	kill -0 "$BG_PID" 2>/dev/null
	ok $? "kill $k: chatsyncd still sweeping when killed ($r requests + $DELAY_MS ms in)"
	kill -9 "$BG_PID" 2>/dev/null
	wait "$BG_PID" 2>/dev/null
	rc=$?
	settle
	snapshot chatsync "$TEST_TMP/snap.$k"
	MARK[k]=$(log_lines)
	diag "kill $k (rc $rc) after $r requests + $DELAY_MS ms: $(committed_pages chatsync) pages committed;" \
		"cursors: $(tr '\t\n' ' ;' <"$TEST_TMP/snap.$k" | sed "s|$FAKE_URL||g")"
done
t1=$SECONDS
run_to_end "$CONF" 30
is "$BG_RC" 0 "final run after $KILLS kills exits 0"
END=$(log_lines)
MARK[KILLS + 1]=$END

for ((k = 1; k <= KILLS; k++)); do
	check_resume "after kill $k" "$TEST_TMP/snap.$k" "${MARK[k]}" "${MARK[k + 1]}" $((k == KILLS))
done

total=$((END - REF_LINES))
extra=$((total - REF_PAGES))
((extra >= 0 && extra <= KILLS))
ok $? "requests over the $KILLS kills and the final run: $total = $REF_PAGES pages + $extra (at most one in flight per kill)"
is "$(pairs "$REF_LINES" "$END")" "$REF_PAIRS" "every page of every listing fetched, none other"
is "$(awk -F'\t' 'NR > 0 && $1 != 200' "$FAKE_LOG" | wc -l)" 0 "the fake answered every request with 200"
check_final chatsync "chatsync"
diag "kill rounds + final run: $((SECONDS - t1)) s after the kills, $((SECONDS - t0)) s since ref"

# ------------------------------------------------------------ 3. PostgreSQL restart

PG_CONF="$TEST_TMP/pgrestart.conf"
PAGE_SIZE=$PAGE SCHEMA=pgrestart write_config "$PG_CONF" "${USERS[@]}"
P0=$(log_lines)
r=$((3 + RANDOM % (REF_PAGES - 12)))
bg_once "$PG_CONF"
wait_log $((P0 + r))
random_delay
kill -0 "$BG_PID" 2>/dev/null
ok $? "pgrestart: chatsyncd still sweeping when PostgreSQL stops ($r requests + $DELAY_MS ms in)"
pg_stop immediate
ok $? "pgrestart: PostgreSQL stopped (immediate)"
pg_restart
ok $? "pgrestart: PostgreSQL restarted"
wait_bg 60
is "$BG_RC" 0 "pgrestart: chatsyncd reconnects and finishes the sweep itself (exit 0)"
settle
grep -q "reconnected to the database" "$CHATSYNCD_LOG"
ok $? "pgrestart: it logged the reconnect"
P2=$(log_lines)
extra=$((P2 - P0 - REF_PAGES))
# chatsyncd commits with synchronous_commit off: an immediate stop of the
# server may lose the commits of its last wal_writer_delay (200 ms, so about
# ten 20 ms pages) together with their cursors; those pages are fetched
# again.  Nothing is lost or duplicated: the tables are checked below.
((extra >= 0 && extra <= 12))
ok $? "pgrestart: $((P2 - P0)) requests = $REF_PAGES pages + $extra (the page in flight, and those whose asynchronous commit the crash lost)"
is "$(pairs "$P0" "$P2")" "$REF_PAIRS" "pgrestart: every page of every listing fetched, none other"
check_final pgrestart "pgrestart"
diag "total $((SECONDS - t0)) s"

if [ "$tap_failed" -ne 0 ]; then
	diag "chatsyncd log:"
	sed 's/^/#   /' "$CHATSYNCD_LOG"
fi
done_testing

#!/bin/bash
# tests/sync_soak.sh - crash-safety soak: many kill -9s at random moments of
# one concurrent, multi-page sweep against an API that fails at random.
#
# Four fake Twilio APIs, all with the same --seed and --channels:
#
#   ref0   variant 0, no faults      the reference sweep (schema ref)
#   soak0  variant 0, random faults  chatsyncd --once (schema soak) is killed
#                                    with SIGKILL $SOAK_KILLS times at random
#                                    moments of one sweep, each process
#                                    starting from what the previous left,
#                                    then runs to the end
#   ref1   variant 1, no faults      ref sweeps the changed data set
#   soak1  variant 1, random faults  soak sweeps it, killed $VARIANT_KILLS
#                                    times: changes and deletions land exactly
#
# Faults: --fault-rate 429/500/503 (random, seeded), CONCURRENCY users at
# once, PAGE_SIZE $PAGE, short backoffs.  A user whose retries run out is
# parked (its cursor 'failed', the run ends with exit 3): the final run is
# then repeated, at most $MAX_RERUNS times, until it exits 0 (reported).
#
# Before every process the cursors say where each listing stands, hence what
# that process must do (the model of cursor.c's read_position):
#   skip    complete or failed in the unfinished run: no request at all
#   resume  a next_page_url: first request = that page (pages_done, 0-based)
#   new     anything else: first request = page 0
# and which pages are committed (resume: pages < pages_done; skip: all).
# Checked against the fake's request log (status, user, page, target):
#   - each process's first request per user is where its cursor stood;
#   - no 200 for a page that was committed before that process started, and
#     no page answered 200 twice within one process; so every repeated 200
#     of a (user, page) happened while the page was not yet committed;
#   - 200s beyond the pages committed <= kills x CONCURRENCY (pages in flight).
# And the final tables: user_channels (values + deleted or not) equal ref's
# and the fake's --dump, the past versions exactly those that the fake's
# change from variant 0 to 1 ended (none before it), as many history rows as
# ref, every cursor complete, sync_seen empty.
#
# Knobs: TEST_SEED (kill moments and fault seed), SOAK_KILLS (30),
# VARIANT_KILLS (6), SOAK_FAULTS (the --fault-rate; a higher rate, e.g.
# 429=0.45, parks users and so exercises the reruns).  Runs in ~45-60 s.

. "$(dirname "$0")/lib.sh"

need_tools
export LC_ALL=C
# Private copies of the binaries: the tree may be rebuilt while this runs.
cp "$CHATSYNCD" "$TEST_TMP/chatsyncd" && CHATSYNCD="$TEST_TMP/chatsyncd"
cp "$FAKE_TWILIO" "$TEST_TMP/fake_twilio" && FAKE_TWILIO="$TEST_TMP/fake_twilio"
# psql straight from PG_BINDIR: the pg_wrapper script costs a perl start per call.
PATH="$PG_BINDIR:$PATH"

TEST_SEED=${TEST_SEED:-$$$RANDOM}
RANDOM=$TEST_SEED
diag "random seed $TEST_SEED (set TEST_SEED to repeat the kill moments and faults)"

PAGE=5
CHANNELS=58 # 12 pages a user in variant 0 (58 entries), 11 in variant 1 (52)
SOAK_KILLS=${SOAK_KILLS:-30}
VARIANT_KILLS=${VARIANT_KILLS:-6}
MAX_RERUNS=3
RESERVE=16 # pages left to a kill round at least, so that the kill lands inside the sweep
FAULTS=${SOAK_FAULTS:-429=0.15,500=0.05,503=0.05}
FAULT_SEED=$RANDOM
LATENCY=15
export CONCURRENCY=4 MAX_RETRIES=6 BACKOFF_BASE_MS=5 MAX_BACKOFF=1 PAGE_SIZE=$PAGE
DATA=(--seed 23 --channels "$CHANNELS")
USERS=(
	US0123456789abcdef0123456789abcdef
	"ann lee"
	"ops/team@example.com"
	"b/c@x+y%z?#é"
	"Zoë Ωmega straße"
	"carol.o'neil@example.org"
	"dave+tag@example.com"
	"100% sure"
	"semi;colon,comma&amp=1"
	"日本語ユーザー"
	"tilde~under_score.dot-dash"
	"UScafe0000000000000000000000000000"
)
N_USERS=${#USERS[@]}
diag "fault seed $FAULT_SEED; $N_USERS users, $CHANNELS channels, page size $PAGE, concurrency $CONCURRENCY"

pg_start || { echo "Bail out! could not start PostgreSQL"; exit 1; }

# start_fake NAME VARIANT [ARGS]: sets URL_<NAME>, LOG_<NAME>.
start_fake() {
	local name=$1 variant=$2
	shift 2
	fake_start "$name" "${DATA[@]}" --variant "$variant" "$@" ||
		{ echo "Bail out! could not start fake_twilio $name"; exit 1; }
	printf -v "URL_$name" '%s' "$FAKE_URL"
	printf -v "LOG_$name" '%s' "$FAKE_LOG"
}
start_fake ref0 0
start_fake soak0 0 --latency-ms "$LATENCY" --fault-rate "$FAULTS" --fault-seed "$FAULT_SEED"
start_fake ref1 1
start_fake soak1 1 --latency-ms "$LATENCY" --fault-rate "$FAULTS" --fault-seed "$((FAULT_SEED + 1))"

# use_fake NAME: the fake the helpers below look at.
use_fake() {
	local u=URL_$1 l=LOG_$1
	FAKE_URL=${!u} FAKE_LOG=${!l}
}

USERS_FILE="$TEST_TMP/users"
printf '%s\n' "${USERS[@]}" >"$USERS_FILE"

# ------------------------------------------------------------ helpers

# snapshot SCHEMA FILE: what the next process will do with each listing
# (user, mode skip/resume/new, pages_done, next_page_url, state); users
# without a cursor are new.  One psql (forks are slow here); also sets
# SNAP_PAGES (pages committed in SCHEMA over all its runs) and SNAP_RUNNING
# (listings in state running).
SCHEMA_EXISTS=
snapshot() {
	local out
	: >"$2"
	SNAP_PAGES=0 SNAP_RUNNING=0
	if [ -z "$SCHEMA_EXISTS" ]; then
		table_exists "$1.sync_cursors" || return 0
		SCHEMA_EXISTS=1
	fi
	out=$(psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 \
		-c "SELECT 'pages', coalesce(sum(pages), 0) FROM $1.sync_runs" \
		-c "WITH r AS (SELECT max(run_id) AS id FROM $1.sync_runs WHERE finished_at IS NULL)
	      SELECT c.user_sid,
	             CASE WHEN c.run_id = r.id AND c.state <> 'running' THEN 'skip'
	                  WHEN c.next_page_url IS NOT NULL THEN 'resume'
	                  ELSE 'new' END,
	             c.pages_done, coalesce(c.next_page_url, ''), c.state
	        FROM $1.sync_cursors c, r
	       WHERE c.service_sid = '$SERVICE_SID'
	       ORDER BY c.user_sid")
	SNAP_PAGES=${out%%$'\n'*}
	SNAP_PAGES=${SNAP_PAGES#pages$'\t'}
	[[ $out == *$'\n'* ]] || return 0
	printf '%s\n' "${out#*$'\n'}" >"$2"
	SNAP_RUNNING=$(grep -c $'\trunning$' "$2")
}

# remaining SNAPSHOT: pages the unfinished sweep still has to commit
# (REF_USER_PAGES: per-user page counts from ref, which swept the same data).
declare -A REF_USER_PAGES=()
remaining() {
	local u mode pages next state total=0
	local -A left=()
	for u in "${USERS[@]}"; do left[$u]=${REF_USER_PAGES[$u]:-0}; done
	while IFS=$'\t' read -r u mode pages next state; do
		case $mode in
		skip) left[$u]=0 ;;
		resume) left[$u]=$((${left[$u]:-0} - pages)) ;;
		esac
	done <"$1"
	for u in "${USERS[@]}"; do total=$((total + ${left[$u]:-0})); done
	REMAINING=$total
}

# check_segment SNAPSHOT FROM TO FINAL: the requests of one process (log
# lines FROM+1..TO) against the snapshot taken before it started.  Prints
# "resume<TAB>..." for a user whose first request is not where its cursor
# stood, "refetch<TAB>..." for a 200 of a page committed before the process
# started or answered 200 twice in it.  FINAL=1: the process ran to the end,
# so every listing not skipped must have been asked for.
check_segment() {
	awk -F'\t' -v snap="$1" -v users="$USERS_FILE" -v from="$2" -v to="$3" -v final="$4" \
		-v pfx="$FAKE_URL" '
	BEGIN {
		while ((getline line < users) > 0) { nu++; user[nu] = line; mode[line] = "new"; done[line] = 0 }
		while ((getline line < snap) > 0) {
			split(line, a, "\t")
			mode[a[1]] = a[2]; done[a[1]] = a[3]; nxt[a[1]] = a[4]; state[a[1]] = a[5]
			if (index(nxt[a[1]], pfx) == 1) nxt[a[1]] = substr(nxt[a[1]], length(pfx) + 1)
		}
	}
	NR > from && NR <= to {
		u = $2; p = $3
		if (!(u in n)) { fpage[u] = p; ftarget[u] = $4 }
		n[u]++
		if ($1 != 200) next
		if (mode[u] == "skip")
			print "refetch\t\"" u "\" page " p ": 200 although the listing was " state[u] " in this sweep"
		else if (mode[u] == "resume" && p + 0 < done[u] + 0)
			print "refetch\t\"" u "\" page " p ": 200 although " done[u] " pages were committed"
		if ((u, p) in ok200)
			print "refetch\t\"" u "\" page " p ": answered 200 twice by the same process"
		ok200[u, p] = 1
	}
	END {
		for (i = 1; i <= nu; i++) {
			u = user[i]
			if (mode[u] == "skip") {
				if (u in n) print "resume\t\"" u "\" (" state[u] "): " n[u] " requests, first page " fpage[u]
			} else if (!(u in n)) {
				if (final) print "resume\t\"" u "\" (" mode[u] ", " done[u] " pages done): no request"
			} else if (mode[u] == "resume") {
				if (fpage[u] != done[u] || ftarget[u] != nxt[u])
					print "resume\t\"" u "\" (" done[u] " pages done): first page " fpage[u] " at " ftarget[u] ", want page " done[u] " at " nxt[u]
			} else if (fpage[u] != "0") {
				print "resume\t\"" u "\" (new listing): first page " fpage[u] ", want page 0"
			}
		}
	}' "$FAKE_LOG"
}

# 200s in log lines FROM+1..TO.
count_200() { awk -F'\t' -v a="$1" -v b="$2" 'NR > a && NR <= b && $1 == 200' "$FAKE_LOG" | wc -l; }
count_faults() { awk -F'\t' -v a="$1" -v b="$2" 'NR > a && NR <= b && $1 != 200' "$FAKE_LOG" | wc -l; }
# Most distinct users among 8 consecutive requests in log lines FROM+1..TO.
max_interleave() {
	awk -F'\t' -v a="$1" -v b="$2" '
		NR > a && NR <= b { w[++k] = $2
			if (k >= 8) { split("", s); d = 0
				for (i = k - 7; i <= k; i++) if (!(w[i] in s)) { s[w[i]] = 1; d++ }
				if (d > m) m = d } }
		END { print m + 0 }' "$FAKE_LOG"
}

# ref_sweep FAKE VARIANT PAGES-PER-USER: one undisturbed sweep of schema ref.
ref_sweep() {
	local conf="$TEST_TMP/ref.$1.conf" from
	use_fake "$1"
	SCHEMA=ref write_config "$conf" "${USERS[@]}"
	from=$(log_lines)
	run_to_end "$conf" 60
	is "$BG_RC" 0 "ref v$2: undisturbed sweep exits 0"
	REF_PAGES=$(sql "SELECT pages FROM ref.sync_runs ORDER BY run_id DESC LIMIT 1")
	is "$(log_lines)|$(count_200 "$from" "$(log_lines)")" "$((from + REF_PAGES))|$REF_PAGES" \
		"ref v$2: one request per page, all answered 200 ($REF_PAGES pages)"
	is "$(sqlt "SELECT count(*), count(*) FILTER (WHERE state = 'complete' AND pages_done = $3) FROM ref.sync_cursors")" \
		"$N_USERS	$N_USERS" "ref v$2: every cursor complete after $3 pages"
	load_expected "${DATA[@]}" --variant "$2" -- "${USERS[@]}"
	is "$(SCHEMA=ref diff_expected)" 0 "ref v$2: live user_channels equal the fake's data"
	REF_PAIRS=$(pairs "$from" "$(log_lines)" 200)
}

# soak PHASE FAKE KILLS: KILLS kill -9 rounds of one sweep of schema soak,
# then the final run (repeated while it exits 3), then the request checks.
soak() {
	local phase=$1 fake=$2 kills=$3 conf="$TEST_TMP/soak.$2.conf"
	local k r cap room rc=0 rerun start_pages end_pages n200 extra maxrun=0 out u pages
	local -a mark=() snaps=() finals=() info=()
	use_fake "$fake"
	SCHEMA=soak write_config "$conf" "${USERS[@]}"
	REF_USER_PAGES=()
	while IFS=$'\t' read -r u pages; do REF_USER_PAGES[$u]=$pages; done < <(sqlt "SELECT user_sid, pages_done FROM ref.sync_cursors")
	local t0=$SECONDS
	for ((k = 1; k <= kills; k++)); do
		snapshot soak "$TEST_TMP/snap.$phase.$k"
		snaps+=("$TEST_TMP/snap.$phase.$k")
		if ((k == 1)); then
			start_pages=$SNAP_PAGES
		else
			((SNAP_RUNNING > maxrun)) && maxrun=$SNAP_RUNNING
			diag "$phase kill $((k - 1)) (rc $rc) ${info[k - 1]}: $((SNAP_PAGES - start_pages)) pages committed, $SNAP_RUNNING listings running"
		fi
		remaining "$TEST_TMP/snap.$phase.$k"
		room=$((REMAINING - RESERVE))
		if ((room <= 0)); then
			r=0 DELAY_MS=$((RANDOM % 6))
		else
			cap=$((2 * room / (kills - k + 1)))
			((cap < 1)) && cap=1
			((cap > 12)) && cap=12
			r=$((RANDOM % (cap + 1))) DELAY_MS=$((RANDOM % 20))
		fi
		count_lines
		mark+=("$LINES_N")
		bg_once "$conf"
		wait_log $((mark[k - 1] + r))
		((DELAY_MS == 0)) || nap "0.$(printf '%03d' "$DELAY_MS")"
		kill -0 "$BG_PID" 2>/dev/null
		ok $? "$phase kill $k: chatsyncd still sweeping when killed ($r requests + $DELAY_MS ms in, $REMAINING pages left)"
		kill -9 "$BG_PID" 2>/dev/null
		wait "$BG_PID" 2>/dev/null
		rc=$?
		info[k]="after $r requests + $DELAY_MS ms"
		finals+=(0)
		settle
	done
	KILL_SECONDS=$((SECONDS - t0))
	RERUNS=0
	for ((rerun = 0; rerun <= MAX_RERUNS; rerun++)); do
		snapshot soak "$TEST_TMP/snap.$phase.final$rerun"
		snaps+=("$TEST_TMP/snap.$phase.final$rerun")
		if ((rerun == 0)); then
			((SNAP_RUNNING > maxrun)) && maxrun=$SNAP_RUNNING
			diag "$phase kill $kills (rc $rc) ${info[kills]}: $((SNAP_PAGES - start_pages)) pages committed, $SNAP_RUNNING listings running"
		fi
		count_lines
		mark+=("$LINES_N")
		run_to_end "$conf" 60
		finals+=(1)
		settle
		[ "$BG_RC" = 3 ] || break
		RERUNS=$((RERUNS + 1))
		diag "$phase: final run $((rerun + 1)) exited 3 (a user parked after its retries ran out):" \
			"$(sqlt "SELECT user_sid || ': ' || last_error FROM soak.sync_cursors WHERE state = 'failed'")"
		((rerun < MAX_RERUNS)) && diag "$phase: running it again"
	done
	is "$BG_RC" 0 "$phase: final run after $kills kills exits 0 ($RERUNS reruns after exit 3)"
	((RERUNS == 0)) || diag "NOTE: $phase needed $RERUNS rerun(s) of the final run (parked users)"
	mark+=("$(log_lines)")
	end_pages=$(committed_pages soak)

	# Per process: resume points and refetches.
	local n_seg=${#snaps[@]} s resume_bad refetch_bad label
	for ((s = 0; s < n_seg; s++)); do
		out=$(check_segment "${snaps[s]}" "${mark[s]}" "${mark[s + 1]}" "${finals[s]}")
		resume_bad=$(printf '%s\n' "$out" | awk -F'\t' '$1 == "resume" { print $2 }' | paste -sd';' -)
		refetch_bad=$(printf '%s\n' "$out" | awk -F'\t' '$1 == "refetch" { print $2 }' | paste -sd';' -)
		if ((s < kills)); then label="$phase process $((s + 1)) (killed)"; else label="$phase final process $((s - kills + 1))"; fi
		is "$resume_bad" "" "$label: first request per user at its committed cursor (skip/resume/new)"
		is "$refetch_bad" "" "$label: no 200 for a page committed before it started, none twice"
	done

	# Totals over the whole phase.
	n200=$(count_200 "${mark[0]}" "${mark[n_seg]}")
	extra=$((n200 - (end_pages - start_pages)))
	((extra >= 0 && extra <= kills * CONCURRENCY))
	ok $? "$phase: $n200 pages answered 200 = $((end_pages - start_pages)) committed + $extra refetched (0 <= $extra <= $kills kills x $CONCURRENCY)"
	if ((RERUNS == 0)); then
		is "$((end_pages - start_pages))" "$REF_PAGES" "$phase: pages committed in the sweep = ref's $REF_PAGES (each exactly once)"
	else
		diag "$phase: $((end_pages - start_pages)) pages committed, including the rerun's new listings"
	fi
	is "$(pairs "${mark[0]}" "${mark[n_seg]}" 200)" "$REF_PAIRS" "$phase: every page of every listing answered 200, none other"
	PHASE_FAULTS=$(count_faults "${mark[0]}" "${mark[n_seg]}")
	((PHASE_FAULTS > 0))
	ok $? "$phase: the fake answered $PHASE_FAULTS requests with 429/500/503 (of $((mark[n_seg] - mark[0])))"
	local inter
	inter=$(max_interleave "${mark[0]}" "${mark[n_seg]}")
	((inter >= 3))
	ok $? "$phase: several users in flight at once (up to $inter users among 8 consecutive requests; max $maxrun listings running at a kill)"
	diag "$phase: $((mark[n_seg] - mark[0])) requests, $n200 answered 200, $PHASE_FAULTS faults; kills took $KILL_SECONDS s"
}

# check_final PHASE VARIANT: schema soak equals ref after the phase's sweep.
check_final() {
	local p=$1 v=$2
	is "$(rows_differ soak ref "$VALUE_COLS, deleted_at IS NULL" user_channels)" 0 \
		"$p: user_channels (values, deleted or not) equal ref's (EXCEPT ALL both ways)"
	is "$(sql "SELECT count(*) FROM soak.user_channels")|$(sql "SELECT count(*) FROM soak.user_channels WHERE deleted_at IS NOT NULL")" \
		"$(sql "SELECT count(*) FROM ref.user_channels")|$(sql "SELECT count(*) FROM ref.user_channels WHERE deleted_at IS NOT NULL")" \
		"$p: as many rows and deleted rows as ref"
	load_expected "${DATA[@]}" --variant "$v" -- "${USERS[@]}"
	is "$(SCHEMA=soak diff_expected)" 0 "$p: live user_channels equal the fake's --dump"
	is "$(past_differ soak)" 0 \
		"$p: past versions: exactly those the fake's changes of data set ended, $(sql "SELECT count(*) FROM public.expected_past") (EXCEPT ALL both ways)"
	is "$(sql "SELECT count(*) FROM soak.user_channel_history")" \
		"$(sql "SELECT count(*) FROM ref.user_channel_history")" \
		"$p: as many history rows as ref (no version written twice)"
	is "$(rows_differ soak ref "$VALUE_COLS, valid_to IS NULL" user_channel_history)" 0 \
		"$p: history versions equal ref's (EXCEPT ALL both ways)"
	is "$(sqlt "SELECT string_agg(user_sid || ':' || state || ':' || pages_done || ':' ||
	                              (next_page_url IS NULL) || ':' ||
	                              (run_id = (SELECT max(run_id) FROM soak.sync_runs)),
	                              ' ' ORDER BY user_sid) FROM soak.sync_cursors")" \
		"$(sqlt "SELECT string_agg(user_sid || ':complete:' || pages_done || ':true:true',
	                              ' ' ORDER BY user_sid) FROM ref.sync_cursors")" \
		"$p: every cursor complete in the last run, pages_done = the listing's page count"
	is "$(sql "SELECT count(*) FROM soak.sync_seen")" 0 "$p: sync_seen empty"
	is "$(sqlt "SELECT count(*) FILTER (WHERE finished_at IS NULL), bool_and(users_failed = 0)
	              FROM soak.sync_runs WHERE run_id = (SELECT max(run_id) FROM soak.sync_runs)")" \
		"0	t" "$p: the last run finished with no user failed"
	if ((RERUNS == 0)); then
		is "$(sqlt "SELECT users_ok, users_failed, pages, rows_received, rows_inserted, rows_updated,
		                   rows_unchanged, rows_deleted, rows_rejected
		              FROM soak.sync_runs ORDER BY run_id DESC LIMIT 1")" \
			"$(sqlt "SELECT users_ok, users_failed, pages, rows_received, rows_inserted, rows_updated,
		                   rows_unchanged, rows_deleted, rows_rejected
		              FROM ref.sync_runs ORDER BY run_id DESC LIMIT 1")" \
			"$p: the sweep's sync_runs counts equal ref's (every page counted once)"
	fi
}

T0=$SECONDS
# Variant 0 on an empty schema ends no version.
expect_no_past

# ------------------------------------------------------------ 1. reference, variant 0

ref_sweep ref0 0 12

# ------------------------------------------------------------ 2. soak, variant 0

soak soak0 soak0 "$SOAK_KILLS"
check_final soak0 0
grep -q "retry 1 of $MAX_RETRIES" "$CHATSYNCD_LOG"
ok $? "soak0: chatsyncd retried faulted requests"
diag "soak0 done at $((SECONDS - T0)) s"

# ------------------------------------------------------------ 3. variant 1

ref_sweep ref1 1 11
# Going to variant 1 (public.expected, from ref_sweep) ends the versions of
# the memberships it changes or drops.
load_dump public.variant0 "${DATA[@]}" --variant 0 -- "${USERS[@]}"
expect_past_ended public.variant0 public.expected
REMOVED=$(((CHANNELS - 2) / 10 + 1))
is "$(sql "SELECT count(*) FROM ref.user_channels WHERE deleted_at IS NOT NULL")" $((REMOVED * N_USERS)) \
	"ref v1: $REMOVED memberships a user marked deleted"
soak soak1 soak1 "$VARIANT_KILLS"
check_final soak1 1
is "$(sql "SELECT count(*) FROM soak.user_channels WHERE deleted_at IS NOT NULL
             AND (service_sid, user_sid, channel_sid) NOT IN (SELECT service_sid, user_sid, channel_sid FROM public.expected)")" \
	$((REMOVED * N_USERS)) "soak1: exactly the $((REMOVED * N_USERS)) memberships the fake dropped are marked deleted"
diag "total $((SECONDS - T0)) s"

if [ "$tap_failed" -ne 0 ]; then
	diag "chatsyncd log (last 300 lines; KEEP_TEST_TMP=1 keeps everything):"
	tail -n 300 "$CHATSYNCD_LOG" | sed 's/^/#   /'
fi
done_testing

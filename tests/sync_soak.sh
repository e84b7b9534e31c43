#!/bin/bash
# tests/sync_soak.sh - crash-safety soak: many kill -9s at random moments of
# one concurrent, multi-page sweep by several chatsyncd at once, against an
# API that fails at random.
#
# Four fake Twilio APIs, all with the same --seed and --channels:
#
#   ref0   variant 0, no faults      the reference sweep (schema ref)
#   soak0  variant 0, random faults  $SOAK_KILLS rounds of one sweep of schema
#                                    soak: each round starts $SOAK_INSTANCES
#                                    chatsyncd --once on it, from what the
#                                    previous round left, and kills them with
#                                    SIGKILL at a random moment; then a final
#                                    round runs to the end
#   ref1   variant 1, no faults      ref sweeps the changed data set
#   soak1  variant 1, random faults  soak sweeps it in $VARIANT_KILLS rounds:
#                                    changes and deletions land exactly
#
# Faults: --fault-rate 429/500/503 (random, seeded), CONCURRENCY users at
# once per process, PAGE_SIZE $PAGE, short backoffs.  A user whose retries
# run out is parked (its cursor 'failed', the run ends with exit 3): the
# final round is then repeated, at most $MAX_RERUNS times, until every
# process of it exits 0 (reported).
#
# Several instances (SOAK_INSTANCES > 1).  The processes of a round share
# the schema, the fake and the sweep; each claims users with leases
# (lease_seconds 30, far longer than a round, so that no lease expires
# within one).  They are started one after the other, each once the one
# before has registered in sync_instances (so that none waits a second for
# the migrations' lock), and held with SIGSTOP until the last has
# registered: the random moment falls while all of them sweep.  Before the
# first round, chatsyncd --migrate creates the schema, and a row of
# sync_instances for an instance of another host (live for the whole test,
# holding no lease) makes every process see others live, so that it claims
# only as many users as it has listings free: alone, the first to register
# would claim all the users and the others would find nothing to do.  In
# about one round in $SOAK_PARTIAL (SOAK_PARTIAL=0: never) the random moment
# kills one process only: the others are held (SIGSTOP) until what it sent
# has landed, its live leases are read, then they go on for a few more
# requests (up to $SURVIVE_MS ms, enough for a look at the users others
# hold) and are killed in turn.  Its users must stay untouched meanwhile:
# no request for them, their cursors (position and lease) unchanged.
#
# Before every round the cursors say where each listing stands, hence what
# that round must do (the model of cursor.c's cursor_position_from_row):
#   skip    complete or failed in the unfinished run: no request at all
#   resume  a next_page_url: first request = that page (pages_done, 0-based)
#   new     anything else, including a cursor that a claim created (state
#           'running', pages_done 0, no next_page_url): first request = page 0
# and which pages are committed (resume: pages < pages_done; skip: all).  A
# user is listed by one process at a time: the one holding its lease.
# Checked against the fake's request log (status, user, page, target):
#   - each round's first request per user (by whichever process) is where
#     its cursor stood;
#   - no 200 for a page that was committed before the round started, and no
#     page answered 200 twice within one round, by one process or two (two
#     processes never list one user in one round: the leases); so every
#     repeated 200 of a (user, page) happened while the page was not yet
#     committed;
#   - 200s beyond the pages committed <= processes killed x CONCURRENCY
#     (pages in flight).
# And the final tables: user_channels (values + deleted or not) equal ref's
# and the fake's --dump, the past versions exactly those that the fake's
# change from variant 0 to 1 ended (none before it), as many history rows as
# ref, every cursor complete, the pages stored of each listing those of its
# last one (1..pages_done, with digests, none beyond; none for a listing on
# one page) and equal to ref's, no live lease left on any
# cursor, a row of sync_instances per process started (each killed one
# reaped by a later start, each of the final rounds stopped cleanly), none
# live.
#
# Knobs: TEST_SEED (kill moments and fault seed), SOAK_KILLS (30),
# VARIANT_KILLS (6), SOAK_INSTANCES (2; 1 is the soak of one process at a
# time, as before several instances: no --migrate first, no other host's
# row, kills also during a start), SOAK_PARTIAL (4), SOAK_FAULTS (the
# --fault-rate; a higher rate, e.g. 429=0.45, parks users and so exercises
# the reruns).  Runs in ~45-60 s.

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
INSTANCES=${SOAK_INSTANCES:-2}
PARTIAL=${SOAK_PARTIAL:-4}
SURVIVE_MS=1200         # the longest the others go on after a round's first kill
PHANTOM_HOST=soak-phantom.invalid # the other host's instance (see above)
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
case $INSTANCES in
[1-9]) ;;
*) echo "Bail out! SOAK_INSTANCES=$INSTANCES: 1 to 9"; exit 1 ;;
esac
case $PARTIAL in
[0-9] | [1-9][0-9]) ;;
*) echo "Bail out! SOAK_PARTIAL=$PARTIAL: 0 to 99"; exit 1 ;;
esac
((INSTANCES > 1)) || PARTIAL=0
diag "fault seed $FAULT_SEED; $N_USERS users, $CHANNELS channels, page size $PAGE, concurrency $CONCURRENCY;" \
	"$INSTANCES chatsyncd per round$( ((PARTIAL == 0)) || echo ", one killed alone in about one round in $PARTIAL")"

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

# ------------------------------------------------------------ the processes of a round

# PIDS: the chatsyncd of the current round; ALL_PIDS: every one started on
# schema soak, STARTED of them; FINAL_STARTED: those of final rounds.
PIDS=() ALL_PIDS=()
STARTED=0 FINAL_STARTED=0
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; cleanup' EXIT

# What each process said when it registered ("instance NAME (ID), one of N
# live"), read from CHATSYNCD_LOG as it grows, without a fork: REG_ID[pid]
# (its instance_id) and REG_LIVE[pid].
declare -A REG_ID=() REG_LIVE=()
: >>"$CHATSYNCD_LOG"
exec {LOG_FD}<"$CHATSYNCD_LOG"
LOG_PART=
read_registrations() {
	local line re='instance [^ ]*:([0-9]+):[0-9]+ \(([0-9]+)\), one of ([0-9]+) live'
	while IFS= read -r -u "$LOG_FD" line; do
		line=$LOG_PART$line LOG_PART=
		[[ $line =~ $re ]] || continue
		REG_ID[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
		REG_LIVE[${BASH_REMATCH[1]}]=${BASH_REMATCH[3]}
	done
	LOG_PART+=$line # a line still being written
}

# now_ms: milliseconds, in NOW_MS (no fork).
now_ms() { NOW_MS=$((${EPOCHREALTIME/./} / 1000)); }

# await_registered PID: until PID has registered (0), or has exited or
# 30 s have passed (1).
await_registered() {
	local deadline
	now_ms
	deadline=$((NOW_MS + 30000))
	while read_registrations && [ -z "${REG_ID[$1]:-}" ]; do
		now_ms
		((NOW_MS < deadline)) && kill -0 "$1" 2>/dev/null || return 1
		nap 0.003
	done
}

# start_round CONF: the round's INSTANCES chatsyncd --once, in PIDS (and
# ROUND_PIDS, kept once they are gone).  One
# alone starts and is left to itself.  Several start one after the other,
# each once the one before has registered (so none waits for the
# migrations' lock), and are held (SIGSTOP) until the last has registered.
start_round() {
	local i pid
	PIDS=() ROUND_PIDS=()
	for ((i = 0; i < INSTANCES; i++)); do
		bg_once "$1"
		PIDS+=("$BG_PID")
		ROUND_PIDS+=("$BG_PID")
		ALL_PIDS+=("$BG_PID")
		STARTED=$((STARTED + 1))
		((INSTANCES > 1)) || return 0
		await_registered "$BG_PID" || diag "chatsyncd $BG_PID did not register (gone, or 30 s)"
		((i == INSTANCES - 1)) || kill -STOP "$BG_PID" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null; done
}

# alive PID...: how many of them still run, in ALIVE.
alive() {
	local pid
	ALIVE=0
	for pid; do kill -0 "$pid" 2>/dev/null && ALIVE=$((ALIVE + 1)); done
	return 0
}

# await_log TARGET MS PID...: until the request log has TARGET lines, or
# none of PIDs runs, or MS milliseconds have passed.
await_log() {
	local target=$1 deadline
	shift
	now_ms
	deadline=$((NOW_MS + $1))
	shift
	while count_lines && ((LINES_N < target)); do
		alive "$@"
		now_ms
		((ALIVE > 0 && NOW_MS < deadline)) || return 0
		nap 0.003
	done
}

# exited_3: some process of the final round exited 3 (users parked), the
# others 0 or 3.
exited_3() {
	local rc three=1
	for rc in "${RCS[@]}"; do
		case $rc in
		0) ;;
		3) three=0 ;;
		*) return 1 ;;
		esac
	done
	return $three
}
ALL_0=0
for ((i = 1; i < INSTANCES; i++)); do ALL_0+=" 0"; done

# kill_all PID...: SIGKILL, and reaped.
kill_all() {
	local pid
	for pid; do kill -9 "$pid" 2>/dev/null; done
	for pid; do wait "$pid" 2>/dev/null; done
}

# wait_all SECONDS: waits for every process of PIDS; their exit statuses
# in RCS (124: still running after SECONDS, killed).
wait_all() {
	local i pid deadline
	RCS=()
	now_ms
	deadline=$((NOW_MS + $1 * 1000))
	while alive "${PIDS[@]}"; ((ALIVE > 0)); do
		now_ms
		((NOW_MS < deadline)) || break
		nap 0.02
	done
	for ((i = 0; i < ${#PIDS[@]}; i++)); do
		pid=${PIDS[i]}
		if kill -0 "$pid" 2>/dev/null; then
			kill -9 "$pid"
			wait "$pid" 2>/dev/null
			RCS[i]=124
			diag "chatsyncd $pid still running after $1 s: killed"
		else
			wait "$pid"
			RCS[i]=$?
		fi
	done
	PIDS=() BG_PID=
}

# settle_one PID: until what the killed PID sent has landed, while the
# others are held: none of its sessions left, the request log still.
settle_one() {
	local i n
	for ((i = 0; i < 100; i++)); do
		count_lines
		n=$LINES_N
		nap 0.1
		[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'chatsyncd/%:$1:%'")" = 0 ] &&
			count_lines && [ "$LINES_N" = "$n" ] && return 0
	done
	diag "settle_one $1: still busy after 10 s"
}

# held_by ID: the cursors on which instance ID holds a live lease (user,
# state, pages_done, next_page_url, lease_token).
held_by() {
	sqlt "SELECT user_sid, state, pages_done, coalesce(next_page_url, ''), lease_token
	        FROM soak.sync_cursors
	       WHERE lease_instance = $1 AND lease_expires_at > now() ORDER BY user_sid"
}

# requests_for USERS-FILE FROM TO: log lines FROM+1..TO for the users of
# the file (the first field of each line).
requests_for() {
	awk -F'\t' -v a="$2" -v b="$3" -v held="$1" '
		BEGIN { while ((getline line < held) > 0) { split(line, f, "\t"); h[f[1]] = 1 } }
		NR > a && NR <= b && ($2 in h) { print $1 " " $2 " page " $3 }' "$FAKE_LOG"
}

# ------------------------------------------------------------ helpers

# snapshot SCHEMA FILE [IDS]: what the next round will do with each listing
# (user, mode skip/resume/new, pages_done, next_page_url, state); users
# without a cursor are new, and so are those whose cursor a claim created
# (running, pages_done 0, no next_page_url).  One psql (forks are slow here); also sets
# SNAP_PAGES (pages committed in SCHEMA over all its runs), SNAP_RUNNING
# (listings in state running) and, given IDS (instance_ids, a comma
# between them), SNAP_STALE: the other instances that hold a live lease.
SCHEMA_EXISTS=
snapshot() {
	local out head stale="''"
	: >"$2"
	SNAP_PAGES=0 SNAP_RUNNING=0 SNAP_STALE=
	if [ -z "$SCHEMA_EXISTS" ]; then
		table_exists "$1.sync_cursors" || return 0
		SCHEMA_EXISTS=1
	fi
	[ -z "${3:-}" ] || stale="SELECT coalesce(string_agg(DISTINCT lease_instance::text, ','), '')
	                              FROM $1.sync_cursors WHERE lease_expires_at > now()
	                               AND lease_instance NOT IN ($3)"
	out=$(psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 \
		-c "SELECT 'pages', coalesce(sum(pages), 0), ($stale) FROM $1.sync_runs" \
		-c "WITH r AS (SELECT max(run_id) AS id FROM $1.sync_runs WHERE finished_at IS NULL)
	      SELECT c.user_sid,
	             CASE WHEN c.run_id = r.id AND c.state <> 'running' THEN 'skip'
	                  WHEN c.next_page_url IS NOT NULL THEN 'resume'
	                  ELSE 'new' END,
	             c.pages_done, coalesce(c.next_page_url, ''), c.state
	        FROM $1.sync_cursors c, r
	       WHERE c.service_sid = '$SERVICE_SID'
	       ORDER BY c.user_sid")
	head=${out%%$'\n'*}
	IFS=$'\t' read -r _ SNAP_PAGES SNAP_STALE <<<"$head"
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

# check_segment SNAPSHOT FROM TO FINAL: the requests of one round, by
# whichever of its processes (log lines FROM+1..TO), against the snapshot
# taken before it started.  Prints "resume<TAB>..." for a user whose first
# request is not where its cursor stood, "refetch<TAB>..." for a 200 of a
# page committed before the round started or answered 200 twice in it.
# FINAL=1: the round ran to the end, so every listing not skipped must have
# been asked for.
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
			print "refetch\t\"" u "\" page " p ": answered 200 twice in one round"
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
# then the final round (repeated while it exits 3), then the request checks.
soak() {
	local phase=$1 fake=$2 kills=$3 conf="$TEST_TMP/soak.$2.conf"
	local k r r2 cap room rerun start_pages end_pages n200 extra maxrun=0 out u pages
	local victim vpid vid held after bad m2 killed=0 partials=0 lives ids=0 stale_bad='' pid
	local -a mark=() snaps=() finals=() info=() others=()
	local first=${#ALL_PIDS[@]}
	((INSTANCES > 1)) || ids= # alone, a kill may come before the reaping
	use_fake "$fake"
	SCHEMA=soak write_config "$conf" "${USERS[@]}"
	REF_USER_PAGES=()
	while IFS=$'\t' read -r u pages; do REF_USER_PAGES[$u]=$pages; done < <(sqlt "SELECT user_sid, pages_done FROM ref.sync_cursors")
	if ((INSTANCES > 1)) && [ -z "$SCHEMA_EXISTS" ]; then
		TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$conf" --migrate 2>>"$CHATSYNCD_LOG"
		is "$?" 0 "$phase: chatsyncd --migrate creates schema soak"
		sql "INSERT INTO soak.sync_instances (name, hostname, pid, started_at, expires_at)
		     VALUES ('$PHANTOM_HOST:1:0', '$PHANTOM_HOST', 1, now(), 'infinity')" >/dev/null
	fi
	local t0=$SECONDS
	for ((k = 1; k <= kills; k++)); do
		snapshot soak "$TEST_TMP/snap.$phase.$k" "$ids"
		snaps+=("$TEST_TMP/snap.$phase.$k")
		[ -z "$SNAP_STALE" ] || stale_bad+="${stale_bad:+; }before round $k: $SNAP_STALE"
		if ((k == 1)); then
			start_pages=$SNAP_PAGES
		else
			((SNAP_RUNNING > maxrun)) && maxrun=$SNAP_RUNNING
			diag "$phase round $((k - 1)) ${info[k - 1]}: $((SNAP_PAGES - start_pages)) pages committed, $SNAP_RUNNING listings running"
		fi
		remaining "$TEST_TMP/snap.$phase.$k"
		room=$((REMAINING - RESERVE))
		r2=-1 # no second kill
		if ((room <= 0)); then
			r=0 DELAY_MS=$((RANDOM % 6))
		else
			cap=$((2 * room / (kills - k + 1)))
			((cap < 1)) && cap=1
			((cap > 12)) && cap=12
			r=$((RANDOM % (cap + 1))) DELAY_MS=$((RANDOM % 20))
			# One process killed alone: the round's requests stay within cap.
			((PARTIAL > 0 && RANDOM % PARTIAL == 0)) && r2=$((RANDOM % (cap - r + 1)))
		fi
		count_lines
		mark+=("$LINES_N")
		start_round "$conf"
		await_log $((mark[k - 1] + r)) 60000 "${PIDS[@]}"
		((DELAY_MS == 0)) || nap "0.$(printf '%03d' "$DELAY_MS")"
		alive "${PIDS[@]}"
		if ((r2 < 0)); then
			is "$ALIVE" "$INSTANCES" "$phase round $k: all $INSTANCES chatsyncd still sweeping when killed ($r requests + $DELAY_MS ms in, $REMAINING pages left)"
			kill_all "${PIDS[@]}"
			PIDS=() BG_PID=
			killed=$((killed + INSTANCES))
			info[k]="(all killed after $r requests + $DELAY_MS ms)"
		else
			# One killed, the others held until what it sent has landed.
			victim=$((RANDOM % INSTANCES))
			vpid=${PIDS[victim]}
			others=("${PIDS[@]:0:victim}" "${PIDS[@]:victim+1}")
			is "$ALIVE" "$INSTANCES" "$phase round $k: all $INSTANCES chatsyncd still sweeping when one is killed ($r requests + $DELAY_MS ms in, $REMAINING pages left)"
			kill -STOP "${others[@]}" 2>/dev/null
			kill_all "$vpid"
			settle_one "$vpid"
			vid=${REG_ID[$vpid]:-0}
			held=$(held_by "$vid")
			printf '%s\n' "$held" >"$TEST_TMP/held.$phase.$k"
			count_lines
			m2=$LINES_N
			# Held nothing: the others could end the sweep; they are killed at once.
			[ -n "$held" ] || r2=0
			kill -CONT "${others[@]}" 2>/dev/null
			await_log $((m2 + r2)) "$SURVIVE_MS" "${others[@]}"
			alive "${others[@]}"
			is "$ALIVE" "${#others[@]}" "$phase round $k: the others still sweeping $r2 requests after (at most $SURVIVE_MS ms)"
			kill_all "${others[@]}"
			PIDS=() BG_PID=
			killed=$((killed + INSTANCES))
			partials=$((partials + 1))
			info[k]="(one killed after $r requests + $DELAY_MS ms, holding $(printf '%s' "$held" | grep -c .) users, the others $((LINES_N - m2)) requests later)"
		fi
		finals+=(0)
		settle
		# The instances that may hold a live lease now: this round's.
		if ((INSTANCES > 1)); then
			read_registrations
			ids=0
			for pid in "${ROUND_PIDS[@]}"; do ids+=",${REG_ID[$pid]:-0}"; done
		fi
		if ((r2 >= 0)) && [ -n "$held" ]; then
			count_lines
			bad=$(requests_for "$TEST_TMP/held.$phase.$k" "$m2" "$LINES_N" | paste -sd';' -)
			is "$bad" "" "$phase round $k: no request for a user whose live lease the killed process held, once it was dead"
			after=$(held_by "$vid")
			is "$after" "$held" "$phase round $k: those users' cursors unchanged, their leases still its own"
		fi
	done
	KILL_SECONDS=$((SECONDS - t0))
	RERUNS=0
	for ((rerun = 0; rerun <= MAX_RERUNS; rerun++)); do
		snapshot soak "$TEST_TMP/snap.$phase.final$rerun" "$ids"
		snaps+=("$TEST_TMP/snap.$phase.final$rerun")
		[ -z "$SNAP_STALE" ] || stale_bad+="${stale_bad:+; }before final round $((rerun + 1)): $SNAP_STALE"
		((INSTANCES == 1)) || ids=0 # those of the final round release theirs
		if ((rerun == 0)); then
			((SNAP_RUNNING > maxrun)) && maxrun=$SNAP_RUNNING
			diag "$phase round $kills ${info[kills]}: $((SNAP_PAGES - start_pages)) pages committed, $SNAP_RUNNING listings running"
		fi
		count_lines
		mark+=("$LINES_N")
		start_round "$conf"
		FINAL_STARTED=$((FINAL_STARTED + INSTANCES))
		wait_all 60
		finals+=(1)
		settle
		exited_3 || break
		RERUNS=$((RERUNS + 1))
		diag "$phase: final round $((rerun + 1)) exited ${RCS[*]} (a user parked after its retries ran out):" \
			"$(sqlt "SELECT user_sid || ': ' || last_error FROM soak.sync_cursors WHERE state = 'failed'")"
		((rerun < MAX_RERUNS)) && diag "$phase: running it again"
	done
	if ((INSTANCES > 1)); then
		is "$stale_bad" "" "$phase: at each round's end, only its own processes hold live leases" \
			"(each start reaped those killed before, freeing theirs)"
	fi
	is "${RCS[*]}" "$ALL_0" \
		"$phase: every process of the final round after $kills kill rounds exits 0 ($RERUNS reruns after exit 3)"
	((RERUNS == 0)) || diag "NOTE: $phase needed $RERUNS rerun(s) of the final round (parked users)"
	mark+=("$(log_lines)")
	end_pages=$(committed_pages soak)

	# Per round: resume points and refetches.
	local n_seg=${#snaps[@]} s resume_bad refetch_bad label
	for ((s = 0; s < n_seg; s++)); do
		out=$(check_segment "${snaps[s]}" "${mark[s]}" "${mark[s + 1]}" "${finals[s]}")
		resume_bad=$(printf '%s\n' "$out" | awk -F'\t' '$1 == "resume" { print $2 }' | paste -sd';' -)
		refetch_bad=$(printf '%s\n' "$out" | awk -F'\t' '$1 == "refetch" { print $2 }' | paste -sd';' -)
		if ((s < kills)); then label="$phase round $((s + 1)) (killed)"; else label="$phase final round $((s - kills + 1))"; fi
		is "$resume_bad" "" "$label: first request per user at its committed cursor (skip/resume/new)"
		is "$refetch_bad" "" "$label: no 200 for a page committed before it started, none twice"
	done

	# Totals over the whole phase.
	n200=$(count_200 "${mark[0]}" "${mark[n_seg]}")
	extra=$((n200 - (end_pages - start_pages)))
	((extra >= 0 && extra <= killed * CONCURRENCY))
	ok $? "$phase: $n200 pages answered 200 = $((end_pages - start_pages)) committed + $extra refetched (0 <= $extra <= $killed processes killed x $CONCURRENCY)"
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
	ok $? "$phase: several users in flight at once (up to $inter users among 8 consecutive requests; max $maxrun listings running at a round's start)"
	if ((INSTANCES > 1)); then
		read_registrations
		lives=$(for u in "${ALL_PIDS[@]:first}"; do echo "${REG_LIVE[$u]:-?}"; done | sort | uniq -c |
			awk '{ printf("%s%s live: %d", (NR > 1 ? ", " : ""), $2, $1) }')
		diag "$phase: $partials rounds with one process killed alone; at registration the processes counted $lives (the other host's row included)"
	fi
	diag "$phase: $((mark[n_seg] - mark[0])) requests, $n200 answered 200, $PHASE_FAULTS faults; kills took $KILL_SECONDS s"
}

# instances_check PHASE: sync_instances (but the other host's row) holds a
# row per process started, none live: each killed one reaped by a later
# start, each of the final rounds stopped cleanly (stopped_at).  Alone
# (SOAK_INSTANCES=1) a kill may come before the process registered: then as
# many rows as processes that said they registered, up to those started.
instances_check() {
	local got want u logged=0
	got=$(sqlt "SELECT count(*), count(*) FILTER (WHERE stopped_at IS NOT NULL),
	                   count(*) FILTER (WHERE stopped_at IS NULL AND expires_at > now())
	              FROM soak.sync_instances WHERE hostname <> '$PHANTOM_HOST'")
	if ((INSTANCES > 1)); then
		want="$STARTED	$FINAL_STARTED	0"
	else
		read_registrations
		for u in "${ALL_PIDS[@]}"; do [ -z "${REG_ID[$u]:-}" ] || logged=$((logged + 1)); done
		want="${got%%	*}	$FINAL_STARTED	0"
		((logged <= ${got%%	*} && ${got%%	*} <= STARTED)) || want="$logged..$STARTED	$FINAL_STARTED	0"
	fi
	is "$got" "$want" "$1: sync_instances: a row per process started ($STARTED; $FINAL_STARTED of final rounds, stopped), none live"
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
	is "$(sqlt "SELECT count(*) FILTER (WHERE c.pages_done > 1), count(*) FILTER (WHERE
	                   CASE WHEN c.pages_done = 1 THEN p.n = 0
	                        ELSE p.n = c.pages_done AND p.numbered = c.pages_done AND p.with_digest = p.n
	                             AND p.entries = c.listing_rows END)
	              FROM soak.sync_cursors c
	              CROSS JOIN LATERAL (
	                  SELECT count(*) AS n, count(DISTINCT page_no) FILTER (WHERE page_no <= c.pages_done)
	                         AS numbered, count(digest) AS with_digest, sum(entries) AS entries
	                    FROM soak.sync_listing_pages l
	                   WHERE l.service_sid = c.service_sid AND l.user_sid = c.user_sid) p
	             WHERE c.state = 'complete'")" \
		"$N_USERS	$N_USERS" \
		"$p: each complete listing (all of several pages) has exactly its pages stored, 1..pages_done, with digests and entries adding up to listing_rows"
	# (a digest's body part is that of the bytes received: ref's came from another fake)
	is "$(rows_differ soak ref "user_sid, page_no, left(digest, 32), entries, listed" sync_listing_pages)" 0 \
		"$p: the stored pages equal ref's: digests of their entries and SIDs listed (EXCEPT ALL both ways)"
	is "$(sqlt "SELECT (SELECT count(*) FROM soak.sync_cursors
	                     WHERE lease_instance IS NOT NULL AND lease_expires_at > now()),
	                   (SELECT count(*) FROM soak.sync_dimension_cursors
	                     WHERE lease_instance IS NOT NULL AND lease_expires_at > now())")" \
		"0	0" "$p: no live lease left on any cursor (lease_instance NULL or expired)"
	instances_check "$p"
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

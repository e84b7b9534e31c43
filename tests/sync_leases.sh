#!/usr/bin/env bash
# Several chatsyncd on one schema: each registers in sync_instances, all
# join one sweep, and each lists the users it has claimed with a lease on
# their cursors.  They share the work (every page fetched once, each
# instance doing its part, together well under the time of one); the users
# of one killed with SIGKILL are taken over once its leases expire, resumed
# at the committed cursor; the loss of an instance's connections costs
# nothing but a few pages; the late pages of one frozen past its lease are
# refused; and every user of one that vanished is still listed in the sweep,
# however few listings the others have free.  Whatever happens, the tables
# end as one clean sweep leaves them.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=600 CHANNELS=30 PAGE=10 PAGES=3 # 3 pages a user
fake_start api --channels $CHANNELS --latency-ms 50
users=()
for i in $(seq 1 $USERS); do users+=("u-$i"); done

# The API's data for the users, in public.expected (one run of the fake for all).
dumps=()
for u in "${users[@]}"; do dumps+=(--dump "$u"); done
new_dump_table public.expected
"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" --channels $CHANNELS "${dumps[@]}" |
	psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.expected FROM STDIN"

# Every chatsyncd started here, by instance name: pid, exit status; the
# cursors' sampler.
declare -A PID RC
WATCHER=
trap 'for p in "${PID[@]}" $WATCHER; do kill -9 "$p" 2>/dev/null; done; cleanup' EXIT

# conf NAME SCHEMA CONCURRENCY [SYNC-KEYS]: $TEST_TMP/NAME.conf, for instance
# NAME, with the first $N users (all of them unless N is set).
conf() {
	SCHEMA=$2 PAGE_SIZE=$PAGE CONCURRENCY=$3 SYNC_EXTRA="instance_name = \"$1\"; ${4:-}" \
		write_config "$TEST_TMP/$1.conf" "${users[@]:0:${N:-$USERS}}"
}

# start NAME...: chatsyncd --once with debug logging (a line per committed
# page) for each instance, its stderr in $TEST_TMP/NAME.log.
start() {
	local n
	for n in "$@"; do
		TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/$n.conf" --once -vv \
			2>"$TEST_TMP/$n.log" &
		PID[$n]=$!
	done
}

# finish NAME...: waits for each (killed after 60 s); exit status in RC[NAME].
finish() {
	local n i
	for n in "$@"; do
		for ((i = 0; i < 600; i++)); do
			kill -0 "${PID[$n]}" 2>/dev/null || break
			nap 0.1
		done
		if kill -0 "${PID[$n]}" 2>/dev/null; then
			kill -9 "${PID[$n]}"
			diag "instance $n still running after 60 s: killed"
		fi
		wait "${PID[$n]}" 2>/dev/null
		RC[$n]=$?
		unset "PID[$n]"
	done
}

running() { kill -0 "${PID[$1]}" 2>/dev/null; }

now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }

# The debug line of a committed page of a user's listing (USER: its name).
page_line() { echo "debug: service $SERVICE_SID user \"$1\" page [0-9]*: [0-9]* rows,"; }

# pages_of NAME: pages that instance NAME committed (its per-page debug lines).
pages_of() { grep -c "$(page_line 'u-[0-9]*')" "$TEST_TMP/$1.log"; }

# committed SCHEMA: pages committed in SCHEMA's sweeps so far.
committed() { sql "SELECT coalesce(sum(pages), 0) FROM $1.sync_runs" 2>/dev/null || echo 0; }

# wait_for COND SECONDS: until the command COND succeeds (false after SECONDS).
wait_for() {
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		eval "$1" && return 0
		nap 0.05
	done
	return 1
}

# sweeping NAME...: each has joined the sweep.
sweeping() {
	local n
	for n in "$@"; do grep -q "sweep 1 over" "$TEST_TMP/$n.log" 2>/dev/null || return 1; done
}

# sessions NAME: the instance's connections (its control connection and writers).
sessions() { sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chatsyncd/$1'"; }

# instance_id SCHEMA NAME
instance_id() { sql "SELECT instance_id FROM $1.sync_instances WHERE name = '$2'"; }

# watch_cursors SCHEMA FILE: samples the cursors (user, state, pages_done, run) every 0.1 s.
watch_cursors() {
	while :; do
		psql -X -q -A -t -F ' ' -c "SELECT user_sid, state, pages_done, run_id FROM $1.sync_cursors" \
			>>"$2" 2>/dev/null
		echo "--" >>"$2"
		sleep 0.1
	done
}

# backwards FILE: within a sweep, a user's cursor only moves on: a complete
# listing stays complete, and pages_done never goes down while it runs.
backwards() {
	awk '$1 != "--" {
		key = $1 "/" $4; st = $2; p = $3
		if (key in last_st) {
			if (last_st[key] == "complete" && st != "complete") bad++
			else if (st == "running" && last_st[key] == "running" && p < last_p[key]) bad++
		}
		last_st[key] = st; last_p[key] = p
	} END { print bad + 0 }' "$1"
}

watch_start() {
	watch_cursors "$1" "$TEST_TMP/$1.samples" &
	WATCHER=$!
}
watch_stop() {
	kill "$WATCHER" 2>/dev/null
	wait "$WATCHER" 2>/dev/null
	WATCHER=
}

# fetches FROM: the fake's log from line FROM+1 on, as "count user page" for
# each (user, page) fetched with success, in $TEST_TMP/fetches.
fetches() {
	awk -F'\t' -v a="$1" 'NR > a && $1 == 200 { print $2 "\t" $3 }' "$FAKE_LOG" | sort | uniq -c |
		awk '{ print $1, $2, $3 }' >"$TEST_TMP/fetches"
}
# dup_fetches: (user, page) pairs of $TEST_TMP/fetches fetched more than once.
dup_fetches() { awk '$1 > 1 { n++ } END { print n + 0 }' "$TEST_TMP/fetches"; }

# differ SCHEMA N: rows of SCHEMA's live memberships that differ from the
# API's data of users u-1 .. u-N, both ways.
differ() {
	sql "SELECT count(*) FROM (
	       (SELECT $VALUE_COLS FROM $1.user_channels WHERE deleted_at IS NULL
	        EXCEPT ALL SELECT * FROM public.expected WHERE split_part(user_sid, '-', 2)::int <= $2)
	       UNION ALL
	       (SELECT * FROM public.expected WHERE split_part(user_sid, '-', 2)::int <= $2
	        EXCEPT ALL SELECT $VALUE_COLS FROM $1.user_channels WHERE deleted_at IS NULL)) d"
}

# result SCHEMA WHAT [N]: the checks that the tables are those of one clean
# sweep of the first N users (default all).
result() {
	local n=${3:-$USERS}
	is "$(differ "$1" "$n")" 0 "$2: the tables equal the API's data"
	is "$(sql "SELECT count(*) FROM $1.user_channels WHERE deleted_at IS NOT NULL")" 0 \
		"$2: no membership is falsely marked deleted"
	is "$(sql "SELECT count(*) FROM $1.user_channel_past_versions")" 0 \
		"$2: no history version that a clean sweep would not make"
	is "$(sql "SELECT count(*) FILTER (WHERE state = 'complete' AND pages_done = $PAGES AND next_page_url IS NULL) || '/' || count(*) FROM $1.sync_cursors")" \
		"$n/$n" "$2: every listing is complete, at its last page ($PAGES)"
	is "$(sql "SELECT count(*) || ':' || bool_and(finished_at IS NOT NULL) || ':' || sum(users_ok) || ':' || sum(users_failed) || ':' || sum(pages) FROM $1.sync_runs")" \
		"1:true:$n:0:$((n * PAGES))" \
		"$2: one sweep (sync_runs), finished, every user ok once, every page counted once"
	if [ -f "$TEST_TMP/$1.samples" ]; then
		is "$(backwards "$TEST_TMP/$1.samples")" 0 \
			"$2: no cursor moves backwards ($(grep -c -- '--' "$TEST_TMP/$1.samples") samples)"
	fi
}

# --- 1. three instances share a sweep -----------------------------------------
# One instance alone first, on its own schema, for the time to beat; then
# three, started together on one fresh schema, at the same concurrency.
# Concurrency 3 keeps the sweep long enough for the instances' start-up
# (each migrates in turn) to be a small part of it.
C1=3
conf solo solo $C1
for n in a b c; do conf $n shared $C1; done
t0=$(now_ms)
start solo
finish solo
solo_ms=$(($(now_ms) - t0))
is "${RC[solo]}" 0 "1: one instance alone sweeps the $USERS users"
: >"$FAKE_LOG"
t0=$(now_ms)
start a b c
finish a b c
trio_ms=$(($(now_ms) - t0))
is "${RC[a]}:${RC[b]}:${RC[c]}" 0:0:0 "1: three instances on one schema, started together, each exit 0"
diag "one instance alone: $solo_ms ms; three together: $trio_ms ms (concurrency $C1 each)"
fetches 0
is "$(wc -l <"$TEST_TMP/fetches"):$(dup_fetches):$(awk -F'\t' '$1 != 200' "$FAKE_LOG" | wc -l)" \
	"$((USERS * PAGES)):0:0" "1a: every (user, page) fetched exactly once across the three"
for n in a b c; do
	p=$(pages_of $n)
	ok $([ $((p * 5)) -ge $((USERS * PAGES)) ] && echo 0 || echo 1) \
		"1b: instance $n committed at least 20% of the pages ($p of $((USERS * PAGES)))"
done
# A third would be perfect; the claims of three instances on one schema,
# and the last users' tail, take their share (0.41 to 0.44 measured).
ok $([ $((trio_ms * 100)) -le $((solo_ms * 50)) ] && echo 0 || echo 1) \
	"1c: three instances take at most half the time of one ($trio_ms ms vs $solo_ms ms: $((trio_ms * 100 / solo_ms))%)"
result shared 1d

# --- 2. one of three killed mid-sweep -----------------------------------------
# SIGKILL: nothing is given up; the two others wait for its leases to
# expire (lease_seconds = 3), then take its users over, each resumed at its
# committed cursor.  Only the pages it had in flight are fetched again.
C2=8
for n in k1 k2 k3; do conf $n killed $C2 "lease_seconds = 3;"; done
: >"$FAKE_LOG"
start k1 k2 k3
watch_start killed
wait_for "sweeping k1 k2 k3" 20 && wait_for '[ "$(committed killed)" -ge 300 ] && [ "$(pages_of k2)" -gt 0 ]' 20
ok $? "2: the three are sweeping, and some pages are committed"
kill -9 "${PID[k2]}"
finish k2
# Once its sessions are gone, nothing of it can still commit: what is committed now stays so.
wait_for '[ "$(sessions k2)" = 0 ]' 10
k2_id=$(instance_id killed k2)
sqlt "SELECT user_sid, g - 1 FROM killed.sync_cursors,
             generate_series(1, CASE WHEN state = 'complete' THEN $PAGES ELSE pages_done END) g
       WHERE run_id = 1" | sort >"$TEST_TMP/killed.committed"
sqlt "SELECT user_sid, lease_expires_at FROM killed.sync_cursors
       WHERE lease_instance = $k2_id AND lease_expires_at > now() AND state = 'running'" \
	>"$TEST_TMP/killed.held"
diag "killed k2 after $(wc -l <"$TEST_TMP/killed.committed") pages committed; it held $(wc -l <"$TEST_TMP/killed.held") users"
ok $([ -s "$TEST_TMP/killed.held" ] && echo 0 || echo 1) "2: the killed instance held users with live leases"
finish k1 k3
watch_stop
is "${RC[k1]}:${RC[k3]}" 0:0 "2: the two others finish the sweep, exit 0"
# The others touch none of its users before their leases have expired.
early=0
while IFS=$'\t' read -r u expires; do
	first=$(grep -h "$(page_line "$u")" "$TEST_TMP/k1.log" "$TEST_TMP/k3.log" | cut -d' ' -f1 | sort | head -n 1)
	[ -z "$first" ] && continue
	[ "$(sql "SELECT '$first'::timestamptz < '$expires'::timestamptz")" = t ] && early=$((early + 1))
done <"$TEST_TMP/killed.held"
is "$early" 0 "2: the others commit nothing of its users before their leases expire"
taken=$(cut -f1 "$TEST_TMP/killed.held" | while read -r u; do
	grep -qh "$(page_line "$u")" "$TEST_TMP/k1.log" "$TEST_TMP/k3.log" && echo "$u"
done | wc -l)
is "$taken" "$(wc -l <"$TEST_TMP/killed.held")" "2: the others took over every user it held"
fetches 0
is "$(awk '$1 > 1 { print $2 "\t" $3 }' "$TEST_TMP/fetches" | sort | comm -12 - "$TEST_TMP/killed.committed" | wc -l)" 0 \
	"2: no page committed by the time of the kill is fetched again ($(wc -l <"$TEST_TMP/killed.committed") of them)"
d=$(dup_fetches)
# In flight: its concurrency's transfers, and the pages of the listings that
# gave up their slot to the commit queue (a quarter more, plus one).
inflight=$((C2 + C2 / 4 + 1))
ok $([ "$d" -le $inflight ] && echo 0 || echo 1) \
	"2: pages fetched twice: only those in flight at the kill, at most its concurrency and commit queue ($d <= $inflight)"
result killed 2

# --- 3. an instance's connections terminated, ten times -----------------------
# pg_terminate_backend of every session of one instance (found by its
# application_name, chatsyncd/NAME), at random moments while two or three
# run.  It reconnects and claims its own users again; the pages it had in
# flight are fetched again, and nothing else changes.  Concurrency 2 makes
# the sweep (1800 pages at 50 ms, six at a time: about 15 s) outlast the ten
# cuts, each a pause and a wait for the sessions to come back.
C3=2
for n in t1 t2 t3; do conf $n cut $C3; done
start t1 t2 t3
watch_start cut
wait_for "sweeping t1 t2 t3" 20
ok $? "3: the three are sweeping"
cuts=0 cut_all=0 cut_live=0
for i in $(seq 1 10); do
	nap "0.$((RANDOM % 3 + 1))$((RANDOM % 10))"
	live=()
	for n in t1 t2 t3; do running $n && live+=($n); done
	[ ${#live[@]} -ge 2 ] || break # the sweep ended first: the count below says so
	cut_live=$((cut_live + 1))
	v=${live[RANDOM % ${#live[@]}]}
	# Its sessions all back (a control connection and 2 writers) after the last cut.
	wait_for '[ "$(sessions '$v')" = 3 ] || ! running '$v 10
	k=$(sql "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
	          WHERE application_name = 'chatsyncd/$v'")
	cuts=$((cuts + 1))
	[ "$k" = 3 ] && cut_all=$((cut_all + 1))
	diag "cut $i: $k sessions of $v terminated after $(committed cut) pages"
done
is "$cuts:$cut_all:$cut_live" 10:10:10 \
	"3: ten times, all three sessions of one instance are terminated, with two or three running"
finish t1 t2 t3
watch_stop
is "${RC[t1]}:${RC[t2]}:${RC[t3]}" 0:0:0 "3: every instance ends, exit 0"
lost=$(grep -c "lost the database connection" "$TEST_TMP"/t[123].log | awk -F: '{ s += $2 } END { print s }')
ok $([ "$lost" -ge 10 ] && echo 0 || echo 1) "3: the instances noticed each loss ($lost)"
result cut 3

# --- 4. an instance frozen past its lease ---------------------------------------
# SIGSTOP for twice lease_seconds, near the end of the users to claim: the
# other soon has none left, looks every second at those f2 holds, and takes
# them over once their leases expire.  Woken up (SIGCONT), f2's pages in
# flight carry a token that is no longer the cursor's: they are refused,
# and it goes on.
C4=12
for n in f1 f2; do conf $n frozen $C4 "lease_seconds = 3;"; done
start f1 f2
watch_start frozen
wait_for "sweeping f1 f2" 20
f2_id=$(instance_id frozen f2)
# unclaimed_f2held: users of the sweep that no instance has claimed yet, and those f2 holds.
unclaimed_f2held() {
	sql "SELECT $USERS - count(*) FILTER (WHERE lease_instance IS NOT NULL OR state <> 'running')
	            || ' ' || count(*) FILTER (WHERE lease_instance = $f2_id AND state = 'running')
	       FROM frozen.sync_cursors"
}
near_end() {
	read -r UNCLAIMED F2_HELD <<<"$(unclaimed_f2held)"
	[ "$UNCLAIMED" -le 100 ] && [ "$F2_HELD" -gt 0 ]
}
wait_for near_end 30
ok $? "4: near the end of the users to claim ($UNCLAIMED left), f2 holding $F2_HELD"
kill -STOP "${PID[f2]}"
nap 0.3
sqlt "SELECT user_sid FROM frozen.sync_cursors WHERE lease_instance = $f2_id AND state = 'running'" \
	>"$TEST_TMP/frozen.held"
nap 6
f1_id=$(instance_id frozen f1)
held=$(sed "s/.*/'&'/" "$TEST_TMP/frozen.held" | paste -sd,)
moved=$(sql "SELECT count(*) FROM frozen.sync_cursors
              WHERE user_sid IN (${held:-''}) AND (lease_instance = $f1_id OR state = 'complete')")
ok $([ -s "$TEST_TMP/frozen.held" ] && [ "$moved" = "$(wc -l <"$TEST_TMP/frozen.held")" ] && echo 0 || echo 1) \
	"4: while f2 is frozen, f1 takes over its users ($moved of $(wc -l <"$TEST_TMP/frozen.held"))"
kill -CONT "${PID[f2]}"
wait_for 'grep -q "taken over by another instance" "$TEST_TMP/f2.log"' 10
ok $? "4: woken up, f2 finds its users taken over (its late pages are refused), and drops them"
finish f1 f2
watch_stop
is "${RC[f1]}:${RC[f2]}" 0:0 "4: both end, exit 0"
result frozen 4

# --- 5. the users of one that vanished, however few listings the others have free
# v1 alone claims all of 32 users at once and lists them one at a time;
# v2 and v3 join and find them all held.  v1 is killed; once its leases
# expire, the others claim them as listings free up (two at a time each,
# at concurrency 1): every one of them must still be listed in this sweep.
N=32
for n in v1 v2 v3; do N=$N conf $n vanished 1 "lease_seconds = 3;"; done
start v1
wait_for "sweeping v1" 20 && wait_for '[ "$(committed vanished)" -gt 0 ]' 20
start v2 v3
wait_for "sweeping v2 v3" 20
nap 0.5
v1_id=$(instance_id vanished v1)
held=$(sql "SELECT count(*) FROM vanished.sync_cursors WHERE lease_instance = $v1_id AND state = 'running'")
kill -9 "${PID[v1]}"
finish v1
ok $([ "$held" -gt 8 ] && echo 0 || echo 1) "5: v2 and v3 have joined; killed, v1 held $held users"
finish v2 v3
is "${RC[v2]}:${RC[v3]}" 0:0 "5: the two others end, exit 0"
result vanished 5 $N

done_testing

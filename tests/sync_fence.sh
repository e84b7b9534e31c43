#!/usr/bin/env bash
# Fencing: a chatsyncd that loses the connection holding the schema lock
# (here its backend is terminated) while a second one waits must not commit
# anything once the second has taken the schema.  It notices within seconds,
# drops what it had in flight, and waits to take the schema back.  The
# result is that of one clean sweep: nothing falsely deleted, no cursor
# moving backwards.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=40 CHANNELS=50 PAGE=10 # 5 pages a user
fake_start api --channels $CHANNELS --latency-ms 100
users=()
for i in $(seq 1 $USERS); do users+=("u-$i"); done
PAGE_SIZE=$PAGE CONCURRENCY=8 write_config "$TEST_TMP/c.conf" "${users[@]}"
load_expected --channels $CHANNELS -- "${users[@]}"

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

# wait_pages SCHEMA N: until N pages are committed.
wait_pages() {
	local i
	for i in $(seq 1 100); do
		[ "$(sql "SELECT coalesce(sum(pages), 0) FROM $1.sync_runs" 2>/dev/null)" -ge "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

# wait_log FILE PATTERN: up to 5 s; sets WAITED to the tenths of a second.
wait_line() {
	for WAITED in $(seq 1 50); do
		grep -q "$2" "$1" && return 0
		sleep 0.1
	done
	return 1
}

# The session holding a schema's advisory lock: a chatsyncd's control connection.
control_pid() { sql "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"; }

# result SCHEMA WHAT: the checks that the tables are those of clean sweeps.
result() {
	is "$(SCHEMA=$1 diff_expected)" 0 "$2: the tables equal the API's data"
	is "$(sql "SELECT count(*) FROM $1.user_channels WHERE deleted_at IS NOT NULL")" 0 \
		"$2: no membership is falsely marked deleted"
	is "$(sql "SELECT count(*) FROM $1.user_channel_past_versions")" 0 \
		"$2: no history version that a clean sweep would not make"
	is "$(sql "SELECT count(*) FILTER (WHERE state = 'complete' AND pages_done = 5 AND next_page_url IS NULL) || '/' || count(*) FROM $1.sync_cursors")" \
		"$USERS/$USERS" "$2: every listing is complete, at its 5th page"
	is "$(backwards "$TEST_TMP/$1.samples")" 0 \
		"$2: no cursor moves backwards ($(grep -c -- '--' "$TEST_TMP/$1.samples") samples)"
}


# --- 1. the control connection is terminated while a second one waits ------
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/c.conf" --once 2>"$TEST_TMP/a.log" &
first=$!
wait_pages chatsync 30
watch_cursors chatsync "$TEST_TMP/chatsync.samples" &
watcher=$!
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/c.conf" --once 2>"$TEST_TMP/b.log" &
second=$!
wait_line "$TEST_TMP/b.log" "another chatsyncd is writing"
ok $? "1: the second chatsyncd waits for the schema"
is "$(sql "SELECT pg_terminate_backend($(control_pid))")" t "1: the first's control connection is terminated mid-sweep"
wait_line "$TEST_TMP/a.log" "lost the database connection\|another chatsyncd has taken the schema"
ok $? "1: the first notices within seconds ($((WAITED / 10)).$((WAITED % 10)) s), not at its next cursor read"
wait $first
is "$?" 0 "1: the first ends"
wait $second
is "$?" 0 "1: so does the second"
kill $watcher 2>/dev/null
wait $watcher 2>/dev/null
result chatsync 1

# --- 2. a frozen instance: its lock is gone when it wakes up -----------------
# Frozen (SIGSTOP) with pages in flight, its control connection lost while it
# sleeps; a second takes the schema.  Woken up, the first's writer
# connections still work: the fence must refuse whatever it sends.
SCHEMA=frozen PAGE_SIZE=$PAGE CONCURRENCY=8 write_config "$TEST_TMP/f.conf" "${users[@]}"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/f.conf" --once 2>"$TEST_TMP/fa.log" &
first=$!
wait_pages frozen 30
watch_cursors frozen "$TEST_TMP/frozen.samples" &
watcher=$!
kill -STOP $first
is "$(sql "SELECT pg_terminate_backend($(control_pid))")" t "2: the frozen first's control connection is lost"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/f.conf" --once 2>"$TEST_TMP/fb.log" &
second=$!
wait_line "$TEST_TMP/fb.log" "resuming sweep"
ok $? "2: a second takes the schema and resumes the sweep"
wait_pages frozen 100
sleep 0.5
kill -CONT $first
wait_line "$TEST_TMP/fa.log" "another chatsyncd has taken the schema\|lost the database connection"
ok $? "2: woken up, the first finds it no longer holds the schema"
wait $second
is "$?" 0 "2: the second finishes the sweep"
wait $first
is "$?" 0 "2: the first takes the schema back and ends"
grep -q "sweep 1 was finished by another chatsyncd meanwhile" "$TEST_TMP/fa.log"
ok $? "2: it sees that the second finished the sweep, and does not go over it again"
is "$(sql "SELECT users_ok || ':' || count(*) OVER () FROM frozen.sync_runs WHERE run_id = 1")" "$USERS:1" \
	"2: the sweep counts each user once, and no other sweep was started"
kill $watcher 2>/dev/null
wait $watcher 2>/dev/null
result frozen 2

done_testing

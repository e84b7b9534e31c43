#!/usr/bin/env bash
# A start under systemd beside another chatsyncd: it is ready as soon as its
# migrations are done, whoever else sweeps the schema.  Migrations run under
# a lock: while another session migrates, a start waits, keeps systemd's
# start timeout and watchdog satisfied, says why in STATUS=, and serves
# /metrics.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1
fake_start api --channels 5
LISTENER="$top_builddir/tests/notify_listener"
[ -x "$LISTENER" ] || skip_all "tests/notify_listener not built"
command -v curl >/dev/null || skip_all "curl not installed"

# wait_for CONDITION-COMMAND [SECONDS]: polls every 0.1 s.
wait_for() {
	local i limit=$(( ${2:-10} * 10 ))
	for ((i = 0; i < limit; i++)); do
		eval "$1" && return 0
		sleep 0.1
	done
	return 1
}

write_config "$TEST_TMP/a.conf" u-a u-b
sed -i 's/interval = 1;/interval = 3600;/' "$TEST_TMP/a.conf"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/a.conf" 2>"$TEST_TMP/a.log" &
first=$!
wait_for '[ "$(sql "SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL" 2>/dev/null)" = 1 ]' 15
ok $? "a first chatsyncd has the schema and has swept it"

# Another session holds the migrations' lock of the schema for 4 s.
psql -X -q -c 'SET search_path TO "chatsync"' -c "BEGIN" \
	-c "SELECT pg_advisory_xact_lock(hashtext('chatsync.migrate.' || current_setting('search_path')))" \
	-c "SELECT pg_sleep(4)" -c "COMMIT" >/dev/null &
locker=$!
wait_for '[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query = '"'"'SELECT pg_sleep(4)'"'"'")" = 1 ]' 5

SOCK="$TEST_TMP/notify.sock"
"$LISTENER" "$SOCK" >"$TEST_TMP/notify.out" &
listener=$!
wait_for '[ -S "$SOCK" ]'
port=$((20000 + RANDOM % 20000))
EXTRA="metrics: { listen = \"127.0.0.1:$port\"; };" write_config "$TEST_TMP/b.conf" u-a u-b
sed -i 's/interval = 1;/interval = 3600;/' "$TEST_TMP/b.conf"
env TWILIO_AUTH_TOKEN="$AUTH_TOKEN" NOTIFY_SOCKET="$SOCK" WATCHDOG_USEC=400000 \
	"$CHATSYNCD" -c "$TEST_TMP/b.conf" 2>"$TEST_TMP/b.log" &
second=$!
wait_for 'grep -q "another chatsyncd is migrating schema" "$TEST_TMP/b.log"' 10
ok $? "a second chatsyncd waits for the migrations' lock, saying why"
sleep 2
kill -0 $second
ok $? "it is still waiting"
grep -q '^STATUS=applying schema migrations' "$TEST_TMP/notify.out"
ok $((!$?)) "it applies nothing while another session holds the lock"
grep -q '^STATUS=waiting for another chatsyncd to migrate schema' "$TEST_TMP/notify.out"
ok $? "STATUS= says what it waits for"
extends=$(grep -c '^EXTEND_TIMEOUT_USEC=[0-9]*$' "$TEST_TMP/notify.out")
ok $([ "$extends" -ge 2 ] && echo 0 || echo 1) "it asks systemd for more start time while it waits ($extends EXTEND_TIMEOUT_USEC=)"
pings=$(grep -c '^WATCHDOG=1$' "$TEST_TMP/notify.out")
ok $([ "$pings" -ge 2 ] && echo 0 || echo 1) "and keeps the watchdog fed ($pings WATCHDOG=1)"
grep -q '^READY=1' "$TEST_TMP/notify.out"
ok $((!$?)) "READY=1 is not sent while waiting"
curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^chatsync_sweeps_total'
ok $? "/metrics is served while it waits"

wait $locker
wait_for 'grep -q "^READY=1" "$TEST_TMP/notify.out"' 5
ok $? "once the lock is free it migrates and is ready, while the first still runs"
kill -0 $first
ok $? "(the first is running)"
is "$(awk '/^STATUS=/ { last = $0 } /^READY=1/ { print last; exit }' "$TEST_TMP/notify.out")" \
	"STATUS=applying schema migrations" "saying it applies migrations before it is ready"
curl -sf "http://127.0.0.1:$port/metrics" >"$TEST_TMP/metrics.out"
grep -Eq '^chatsync_instances_live 2$' "$TEST_TMP/metrics.out"
ok $? "its metrics count two live instances"
grep -Eq "^chatsync_instance_info\{instance=\"$(hostname):$second:[0-9]+\"\} 1$" "$TEST_TMP/metrics.out"
ok $? "and name it: host, pid and start time"
kill -TERM $second $first
wait $second
is "$?" 0 "the second stops cleanly"
wait $first
is "$?" 0 "so does the first"
kill $listener

# A database whose sessions end after 1 s idle (idle_session_timeout): the
# daemon's connections are idle between sweeps, and must neither die nor
# lose the schema lock.
db=$(sql 'SELECT current_database()')
sql "ALTER DATABASE $db SET idle_session_timeout = '1s'"
sql "ALTER DATABASE $db SET default_transaction_isolation = 'repeatable read'"
sed -i 's/interval = 3600;/interval = 3;/' "$TEST_TMP/a.conf"
runs=$(sql "SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL")
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/a.conf" 2>"$TEST_TMP/idle.log" &
idle=$!
wait_for "[ \$(sql 'SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL') -ge $((runs + 3)) ]" 20
ok $? "with idle_session_timeout = 1s and repeatable read by default, sweep after sweep completes"
grep -q "could not\|lost the database" "$TEST_TMP/idle.log"
ok $((!$?)) "without a lost connection or a failed statement ($(grep -m1 'could not\|lost the' "$TEST_TMP/idle.log"))"
kill -TERM $idle
wait $idle
is "$?" 0 "and stops cleanly"

done_testing

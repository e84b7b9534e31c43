#!/usr/bin/env bash
# Pacing: twilio.max_rps caps the request rate; 429s cut the number of users
# in flight, which grows back after successes.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

users=()
for i in $(seq -w 1 30); do users+=("rate-user-$i"); done

fake_start api --channels 3
timed_run() { # timed_run CONF: one sweep; sets RC and MS (wall time)
	local t0
	t0=$(date +%s%N)
	run_once "$1"
	RC=$?
	MS=$((($(date +%s%N) - t0) / 1000000))
}

CONCURRENCY=8 PAGE_SIZE=1000 write_config "$TEST_TMP/free.conf" "${users[@]}"
timed_run "$TEST_TMP/free.conf"
free_ms=$MS
is "$RC" 0 "30 users without a rate cap"
CONCURRENCY=8 PAGE_SIZE=1000 SCHEMA=capped write_config "$TEST_TMP/capped.conf" "${users[@]}"
sed -i 's/  concurrency = 8;/  concurrency = 8;\n  max_rps = 10;/' "$TEST_TMP/capped.conf"
timed_run "$TEST_TMP/capped.conf"
capped_ms=$MS
is "$RC" 0 "30 users with max_rps = 10"
# A full bucket lets 10 go at once; the other 20 need 2 s at 10/s.
ok $([ "$capped_ms" -ge 1900 ] && echo 0 || echo 1) "max_rps = 10 spreads 30 requests over >= 1.9 s (${capped_ms} ms; ${free_ms} ms without)"
ok $([ "$capped_ms" -lt 5000 ] && echo 0 || echo 1) "and not much longer (< 5 s)"
is "$(sql 'SELECT count(*) FROM capped.user_channels')" 90 "every row landed"

# Every user's first request is throttled once.
fake_stop
fake_start throttled --channels 3 --fault '429:*:1'
CONCURRENCY=8 PAGE_SIZE=1000 SCHEMA=throttled write_config "$TEST_TMP/t.conf" "${users[@]}"
: >"$TEST_TMP/chatsyncd.log"
run_once "$TEST_TMP/t.conf"
is "$?" 0 "a sweep through a burst of 429s completes"
grep -q 'the API is throttling: at most 4 users in flight' "$TEST_TMP/chatsyncd.log"
ok $? "the first 429s halve the users in flight (8 -> 4)"
is "$(sql 'SELECT count(*) FROM throttled.user_channels')" 90 "every row landed"
is "$(sql 'SELECT http_retries FROM throttled.sync_runs')" 30 "each user retried once"

# A user whose last page waits for a writer gives up its slot: with
# concurrency 1 the next user is fetched meanwhile, and one more page (a
# quarter of 1, plus 1) is all that may wait.  The writers are held up by a
# lock on user_channels; each of database.writers commits one page at a time.
slots_check() { # slots_check WRITERS
	local w=$1 schema=slots$1 locker daemon
	: >"$FAKE_LOG"
	CONCURRENCY=1 PAGE_SIZE=1000 SCHEMA=$schema write_config "$TEST_TMP/s.conf" slot-1 slot-2 slot-3
	sed -i "s/schema = \"$schema\"; };/schema = \"$schema\"; writers = $w; };/" "$TEST_TMP/s.conf"
	TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/s.conf" --migrate 2>/dev/null
	psql -X -q -c "BEGIN" -c "LOCK TABLE $schema.user_channels IN SHARE MODE" -c "SELECT pg_sleep(3)" \
		-c "COMMIT" >/dev/null &
	locker=$!
	for _ in $(seq 100); do
		[ "$(sql "SELECT count(*) FROM pg_locks WHERE relation = '$schema.user_channels'::regclass AND mode = 'ShareLock' AND granted")" = 1 ] && break
		sleep 0.05
	done
	TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/s.conf" --once 2>"$TEST_TMP/s.log" &
	daemon=$!
	sleep 1.5
	is "$(wc -l <"$FAKE_LOG")" 2 "[writers $w] while user 1's page waits for a writer, user 2 is fetched, and no more"
	is "$(sql "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%sync_page%'")" "$w" \
		"[writers $w] $w page(s) being committed at once"
	wait "$locker"
	wait "$daemon"
	is "$?" 0 "[writers $w] the sweep completes once the writers can go on"
	is "$(wc -l <"$FAKE_LOG")|$(sql "SELECT count(*) FROM $schema.user_channels")" "3|9" \
		"[writers $w] every user fetched once, every row landed"
}
fake_stop
fake_start slots --channels 3
slots_check 1
slots_check 2

# twilio.account_max_rps: the account's rate, split between the live instances.
fake_stop
fake_start shared --channels 3
CONCURRENCY=8 PAGE_SIZE=1000 SCHEMA=shared SYNC_EXTRA='lease_seconds = 3;' \
	write_config "$TEST_TMP/shared.conf" "${users[@]}"
sed -i 's/  concurrency = 8;/  concurrency = 8;\n  account_max_rps = 10;/' "$TEST_TMP/shared.conf"
sed -i 's/interval = 1;/interval = 3600;/' "$TEST_TMP/shared.conf"
TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/shared.conf" 2>"$TEST_TMP/shared-daemon.log" &
daemon=$!
for _ in $(seq 100); do
	[ "$(sql "SELECT count(*) FROM shared.sync_runs WHERE finished_at IS NOT NULL" 2>/dev/null)" = 1 ] && break
	sleep 0.1
done
is "$(sql "SELECT count(*) FROM shared.sync_instances WHERE stopped_at IS NULL AND expires_at > now()")" 1 \
	"a daemon on the schema has swept it and waits for its next interval"
timed_run "$TEST_TMP/shared.conf"
shared_ms=$MS
is "$RC" 0 "a second instance sweeps the 30 users while the daemon is live"
grep -q "one of 2 live" "$TEST_TMP/chatsyncd.log"
ok $? "it counts two live instances"
# Half of 10/s each: a bucket of 5 at once, the other 25 at 5/s.
ok $([ "$shared_ms" -ge 4500 ] && echo 0 || echo 1) "account_max_rps = 10 with two live instances: 30 requests take >= 4.5 s (${shared_ms} ms)"
kill -TERM $daemon
wait $daemon
timed_run "$TEST_TMP/shared.conf"
alone_ms=$MS
is "$RC" 0 "alone on the schema, the same sweep"
ok $([ "$alone_ms" -lt 4000 ] && echo 0 || echo 1) "takes the whole account's rate: < 4 s (${alone_ms} ms)"

done_testing

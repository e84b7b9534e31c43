#!/usr/bin/env bash
# Running as a service: the systemd notify protocol, reload, the writer lock,
# --status, the interval, and journald-style logging.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1
fake_start api --channels 5
LISTENER="$top_builddir/tests/notify_listener"
[ -x "$LISTENER" ] || skip_all "tests/notify_listener not built"

U1=US00000000000000000000000000000001
U2="dora@example.com"
U3="eve new"

# wait_for CONDITION-COMMAND [SECONDS]: polls every 0.1 s.
wait_for() {
	local i limit=$(( ${2:-10} * 10 ))
	for ((i = 0; i < limit; i++)); do
		eval "$1" && return 0
		sleep 0.1
	done
	return 1
}

start_daemon() { # start_daemon CONF LOG [ENV...]: sets DAEMON_PID
	local conf=$1 log=$2
	shift 2
	env TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$@" "$CHATSYNCD" -c "$conf" 2>"$log" &
	DAEMON_PID=$!
}

stop_daemon() {
	kill -TERM "$DAEMON_PID" 2>/dev/null
	wait "$DAEMON_PID"
}

# --- systemd notify protocol ------------------------------------------------
SOCK="$TEST_TMP/notify.sock"
"$LISTENER" "$SOCK" >"$TEST_TMP/notify.out" &
LISTENER_PID=$!
wait_for '[ -S "$SOCK" ]'
INTERVAL=2 write_config "$TEST_TMP/d.conf" "$U1" "$U2"
sed -i 's/interval = 1;/interval = 2;/' "$TEST_TMP/d.conf"
start_daemon "$TEST_TMP/d.conf" "$TEST_TMP/d.log" NOTIFY_SOCKET="$SOCK" WATCHDOG_USEC=400000
wait_for 'grep -q "^READY=1" "$TEST_TMP/notify.out"'
ok $? "READY=1 is sent"
is "$(sql "SELECT count(*) FROM chatsync.schema_migrations")" "$(ls "$top_srcdir"/sql/[0-9][0-9][0-9]_*.sql | wc -l)" \
	"only after the migrations are in place"
wait_for '[ "$(sql "SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL")" -ge 2 ]' 15
ok $? "the daemon sweeps again"
grep -q '^STATUS=' "$TEST_TMP/notify.out"
ok $? "STATUS= lines report progress ($(grep -m1 '^STATUS=' "$TEST_TMP/notify.out"))"
pings=$(grep -c '^WATCHDOG=1$' "$TEST_TMP/notify.out")
ok $([ "$pings" -ge 4 ] && echo 0 || echo 1) "WATCHDOG=1 pings at half of WATCHDOG_USEC ($pings in the test so far)"
starts=$(sql "SELECT string_agg(extract(epoch FROM started_at)::numeric(20,3)::text, ' ' ORDER BY run_id) FROM chatsync.sync_runs")
gap=$(echo "$starts" | awk '{ printf "%.3f", $2 - $1 }')
ok $(awk -v g="$gap" 'BEGIN { exit !(g >= 2.0 && g < 2.6) }'; echo $?) \
	"sweeps start sync.interval (2 s) apart, plus a little jitter (${gap} s)"

# --- reload -----------------------------------------------------------------
INTERVAL=2 write_config "$TEST_TMP/d.conf" "$U1" "$U2" "$U3"
sed -i 's/interval = 1;/interval = 2;/' "$TEST_TMP/d.conf"
kill -HUP "$DAEMON_PID"
wait_for 'grep -q "^RELOADING=1" "$TEST_TMP/notify.out"'
ok $? "SIGHUP sends RELOADING=1"
wait_for "grep -A1 '^RELOADING=1' \"\$TEST_TMP/notify.out\" | grep -q '^READY=1'" 5
ok $? "then READY=1 once reloaded"
wait_for "[ \"\$(sql \"SELECT count(*) FROM chatsync.user_channels WHERE user_sid = '$U3'\")\" -eq 5 ]" 10
ok $? "a user added to the file is synced after the reload"
grep -q 'configuration reloaded: 3 users' "$TEST_TMP/d.log"
ok $? "the reload is logged"

echo 'twilio: { page_size = "lots"; };' >>"$TEST_TMP/d.conf"
runs=$(sql "SELECT count(*) FROM chatsync.sync_runs")
kill -HUP "$DAEMON_PID"
wait_for 'grep -q "keeping the running configuration" "$TEST_TMP/d.log"'
ok $? "a bad file on reload is refused with one clear line"
grep -q 'd.conf:[0-9]*: .*page_size\|d.conf:[0-9]*: syntax error\|d.conf:[0-9]*: twilio' "$TEST_TMP/d.log"
ok $? "naming the file and line"
wait_for "[ \"\$(sql 'SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL')\" -gt $runs ]" 10
ok $? "and the daemon goes on sweeping with the old configuration"
kill -0 "$DAEMON_PID"
ok $? "still running"

# --- several instances per schema -------------------------------------------
write_config "$TEST_TMP/d2.conf" "$U1" "$U2" "$U3"
is "$(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chatsyncd/' || (SELECT name FROM chatsync.sync_instances WHERE stopped_at IS NULL AND expires_at > now())")" 3 \
	"the daemon's sessions name it: chatsyncd/ and its instance name (control and two writers)"
run_once "$TEST_TMP/d2.conf"
is "$?" 0 "a second chatsyncd on the same schema does not wait: it sweeps while the first runs"
kill -0 "$DAEMON_PID"
ok $? "the first goes on"
is "$(sql "SELECT count(*) FILTER (WHERE stopped_at IS NULL AND expires_at > now()) || '/' || count(*) FILTER (WHERE stopped_at IS NOT NULL) FROM chatsync.sync_instances")" "1/1" \
	"the second's clean stop is recorded; the first is the one live instance"
status_out=$(TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/d2.conf" --status 2>&1)
echo "$status_out" | grep -Eq "^ +[0-9]+  $(hostname):$DAEMON_PID:[0-9]+ .* live "
ok $? "--status shows the daemon among the instances, live"
echo "$status_out" | grep -Eq " stopped "
ok $? "and the second, stopped"
stop_daemon
is "$?" 0 "the first stops with exit 0 on SIGTERM"
wait_for 'grep -q "^STOPPING=1" "$TEST_TMP/notify.out"'
ok $? "STOPPING=1 is sent"
is "$(sql "SELECT count(*) FROM chatsync.sync_instances WHERE stopped_at IS NULL")" 0 \
	"after its clean stop no instance counts as live"
kill "$LISTENER_PID"

# --- --status ---------------------------------------------------------------
status_out=$(TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/d2.conf" --status 2>&1)
is "$?" 0 "--status exits 0 when every user is fresh"
echo "$status_out" | grep -q "^$SERVICE_SID  $U1 .* complete"
ok $? "one line per user, with its state"
echo "$status_out" | grep -q "Recent sweeps"
ok $? "and the recent sweeps"
write_config "$TEST_TMP/s.conf" "$U1" "never synced"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/s.conf" --status >"$TEST_TMP/status.out" 2>&1
is "$?" 1 "--status exits 1 when a configured user has never completed"
grep -q 'never synced .* never' "$TEST_TMP/status.out"
ok $? "and shows that user as never synced"
sql "UPDATE chatsync.sync_cursors SET last_complete_at = now() - interval '10 seconds', last_error = 'HTTP 500 (Twilio error 20500: oops)'"
write_config "$TEST_TMP/s.conf" "$U1"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/s.conf" --status >"$TEST_TMP/status.out" 2>&1
is "$?" 1 "--status exits 1 when a user's last complete listing is older than 2 x interval"
grep -q 'HTTP 500 (Twilio error 20500: oops)' "$TEST_TMP/status.out"
ok $? "the last error is shown"
sed "s|conninfo = \"\"|conninfo = \"host=$TEST_TMP/nowhere\"|" "$TEST_TMP/s.conf" >"$TEST_TMP/nodb.conf"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/nodb.conf" --status >/dev/null 2>&1
is "$?" 2 "--status exits 2 when the database is unreachable"

# --- a sweep longer than the interval ---------------------------------------
stop_daemon_quietly() { kill -TERM "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; }
api=("$FAKE_URL" "$FAKE_LOG" "$FAKE_PID")
fake_start slow --channels 2 --latency-ms 1500
SCHEMA=slow write_config "$TEST_TMP/slow.conf" "$U1"
start_daemon "$TEST_TMP/slow.conf" "$TEST_TMP/slow.log"
wait_for '[ "$(sql "SELECT count(*) FROM slow.sync_runs WHERE finished_at IS NOT NULL")" -ge 2 ]' 15
ok $? "sweeps that take 1.5 s with sync.interval = 1 keep going"
stop_daemon_quietly
gaps=$(sql "SELECT string_agg(round(extract(epoch FROM started_at - lag)::numeric, 2)::text, ' ')
              FROM (SELECT started_at, lag(started_at) OVER (ORDER BY run_id) FROM slow.sync_runs) r
             WHERE lag IS NOT NULL")
ok $(echo "$gaps" | awk '{ for (i = 1; i <= NF; i++) if ($i < 1.4 || $i > 1.9) exit 1 }'; echo $?) \
	"an overrunning sweep is followed at once by the next, never overlapping (gaps: $gaps s)"
grep -q 'the sweep took longer than sync.interval (1 s); starting the next now' "$TEST_TMP/slow.log"
ok $? "and the overrun is logged"
fake_stop
FAKE_URL=${api[0]} FAKE_LOG=${api[1]} FAKE_PID=${api[2]}

# --- metrics ----------------------------------------------------------------
fake_start metered --channels 10 --latency-ms 40 --fault "429:$U2:2"
port=$((20000 + RANDOM % 20000))
PAGE_SIZE=2 SCHEMA=metered EXTRA="metrics: { listen = \"127.0.0.1:$port\"; };" \
	write_config "$TEST_TMP/m.conf" "$U1" "$U2" "$U3"
sed -i 's/interval = 1;/interval = 3600;/' "$TEST_TMP/m.conf"
start_daemon "$TEST_TMP/m.conf" "$TEST_TMP/m.log"
scrape() { curl -s "http://127.0.0.1:$port/metrics"; }
metric() { scrape | awk -v m="$1" '$1 == m { print $2 }'; }
value_in() { awk -v m="$2" '$1 == m { print $2 }' "$1"; } # value_in FILE METRIC
# promtool_check FILE DESCRIPTION: promtool check metrics finds nothing to say about FILE.
promtool_check() {
	local out
	if ! command -v promtool >/dev/null; then
		ok 0 "$2 # SKIP promtool is not installed (Debian package prometheus)"
		return
	fi
	out=$(promtool check metrics <"$1" 2>&1)
	is "$?|$out" "0|" "$2"
}
wait_for '[ "$(metric chatsync_sweep_in_progress)" = 1 ]' 10
ok $? "during a sweep, chatsync_sweep_in_progress is 1"
scrape >"$TEST_TMP/during.prom"
mid=$(value_in "$TEST_TMP/during.prom" 'chatsync_http_requests_total{class="2xx"}')
is "$(value_in "$TEST_TMP/during.prom" chatsync_sweep_in_progress)|$(value_in "$TEST_TMP/during.prom" chatsync_sweep_users_total)" \
	"1|3" "a scrape during the sweep counts its 3 users in chatsync_sweep_users_total"
done_mid=$(value_in "$TEST_TMP/during.prom" chatsync_sweep_users_done)
ok $([ "${done_mid:-9}" -lt 3 ] && echo 0 || echo 1) "and fewer than 3 in chatsync_sweep_users_done (${done_mid:-none})"
promtool_check "$TEST_TMP/during.prom" "promtool check metrics finds nothing wrong during a sweep"
wait_for '[ "$(metric chatsync_sweeps_total)" = 1 ]' 20
ok $? "after it, chatsync_sweeps_total is 1"
scrape >"$TEST_TMP/after.prom"
promtool_check "$TEST_TMP/after.prom" "promtool check metrics finds nothing wrong after it"
is "$(value_in "$TEST_TMP/after.prom" chatsync_sweep_users_total)|$(value_in "$TEST_TMP/after.prom" chatsync_sweep_users_done)" \
	"3|3" "after it, all 3 users are done"
is "$(value_in "$TEST_TMP/after.prom" "chatsync_build_info{version=\"$("$CHATSYNCD" --version | awk '{ print $2 }')\"}")" \
	1 "chatsync_build_info has chatsyncd's version"
is "$(value_in "$TEST_TMP/after.prom" process_max_fds)" "$(awk '$2 == "open" && $3 == "files" { print $4 }' /proc/"$DAEMON_PID"/limits)" \
	"process_max_fds is the daemon's soft limit on open files"
ok $(awk '$1 == "process_resident_memory_bytes" && $2 > 0 { found = 1 } END { exit !found }' "$TEST_TMP/after.prom"; echo $?) \
	"process_resident_memory_bytes is there"
ok $([ "${mid:-0}" -lt "$(metric 'chatsync_http_requests_total{class="2xx"}')" ] && echo 0 || echo 1) \
	"counters grow while the sweep runs (${mid:-0} requests mid-sweep)"
is "$(metric chatsync_sweep_in_progress)" 0 "and chatsync_sweep_in_progress is back to 0"
is "$(metric 'chatsync_http_requests_total{class="2xx"}')" "$(awk -F'\t' '$1 == 200' "$FAKE_LOG" | wc -l)" \
	"2xx responses equal the fake's log"
is "$(metric 'chatsync_http_requests_total{class="4xx"}')" "$(awk -F'\t' '$1 == 429' "$FAKE_LOG" | wc -l)" \
	"4xx responses equal the fake's 429s"
is "$(metric chatsync_http_retries_total)|$(metric chatsync_http_429_total)" "2|2" "two retries, both after a 429"
is "$(metric "chatsync_pages_total{service=\"$SERVICE_SID\"}")" 15 "15 pages (3 users x 5)"
is "$(metric "chatsync_rows_total{service=\"$SERVICE_SID\",outcome=\"inserted\"}")" 30 "30 rows inserted"
is "$(metric "chatsync_rows_total{service=\"$SERVICE_SID\",outcome=\"received\"}")" 30 "30 rows received"
ts=$(metric "chatsync_service_last_success_timestamp_seconds{service=\"$SERVICE_SID\"}")
ok $(awk -v t="${ts:-0}" -v now="$(date +%s)" 'BEGIN { exit !(t > now - 60 && t <= now + 1) }'; echo $?) \
	"the service's last success is now ($ts)"
is "$(metric chatsync_users_failing)" 0 "no user failing"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/other")" 404 "other paths are 404"
is "$(metric chatsync_config_last_reload_successful)" 1 "the configuration loaded: chatsync_config_last_reload_successful is 1"
cp "$TEST_TMP/m.conf" "$TEST_TMP/m.good"
echo 'twilio: { page_size = "lots"; };' >>"$TEST_TMP/m.conf"
kill -HUP "$DAEMON_PID"
wait_for '[ "$(metric chatsync_config_last_reload_successful)" = 0 ]' 10
ok $? "a refused reload sets it to 0"
cp "$TEST_TMP/m.good" "$TEST_TMP/m.conf"
kill -HUP "$DAEMON_PID"
wait_for '[ "$(metric chatsync_config_last_reload_successful)" = 1 ]' 10
ok $? "and the next good one back to 1"
stop_daemon
is "$?" 0 "the daemon with metrics stops cleanly"
curl -s "http://127.0.0.1:$port/metrics" >/dev/null
ok $((!$?)) "and the metrics listener is gone"

# --- logging ----------------------------------------------------------------
exec 7>"$TEST_TMP/journal.log"
stream=$(stat -c '%d:%i' "$TEST_TMP/journal.log")
JOURNAL_STREAM=$stream TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/s.conf" --once 2>&7
exec 7>&-
head -n 1 "$TEST_TMP/journal.log" | grep -q '^<6>info: '
ok $? "under journald (JOURNAL_STREAM) lines carry <N> priorities and no timestamp"
grep -q '^<6>info: sweep finished in [0-9.]* s: 1 users ok, 0 failed, 1 pages, 5 rows received, 0 inserted, 0 updated, 5 unchanged, 0 deleted' "$TEST_TMP/journal.log"
ok $? "one summary line per sweep"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/s.conf" --once 2>"$TEST_TMP/plain.log"
grep -q '^20[0-9-]*T[0-9:.]*Z info: ' "$TEST_TMP/plain.log"
ok $? "otherwise lines start with a UTC timestamp"
sed -i 's/log: { level = "info"; };/log: { level = "info"; syslog = true; };/' "$TEST_TMP/s.conf"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/s.conf" --once 2>"$TEST_TMP/syslog.log"
is "$?" 0 "log.syslog = true runs"
is "$(wc -l <"$TEST_TMP/syslog.log")" 0 "and writes nothing to stderr"

done_testing

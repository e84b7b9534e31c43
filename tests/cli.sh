#!/usr/bin/env bash
# The command line: options, exit codes, --check-config, --migrate, daemon mode and signals.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1
fake_start api --channels 5

out=$("$CHATSYNCD" --help)
is "$?" 0 "--help exits 0"
[[ $out == *--once* && $out == *--check-config* && $out == *--migrate* ]]
ok $? "--help lists the options"
is "$("$CHATSYNCD" --version)" "chatsyncd 0.1.0" "--version"
"$CHATSYNCD" --no-such-option 2>/dev/null
is "$?" 1 "an unknown option exits 1"
"$CHATSYNCD" -c /nonexistent/chatsyncd.conf --check-config 2>"$TEST_TMP/err"
is "$?" 1 "a missing config file exits 1"
grep -q '/nonexistent/chatsyncd.conf' "$TEST_TMP/err"
ok $? "and names the file"

write_config "$TEST_TMP/good.conf" US00000000000000000000000000000001 "carol@example.com"
is "$(TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/good.conf" --check-config)" "configuration OK" \
	"--check-config prints configuration OK"
is "$(sql "SELECT count(*) FROM pg_namespace WHERE nspname = 'chatsync'")" 0 "--check-config touches no database"

sed 's/page_size = 50;/page_size = 5000;/' "$TEST_TMP/good.conf" >"$TEST_TMP/bad.conf"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/bad.conf" --check-config 2>"$TEST_TMP/err"
is "$?" 1 "an out-of-range page_size exits 1"
line=$(grep -n 'page_size' "$TEST_TMP/bad.conf" | cut -d: -f1)
grep -q "bad.conf:$line: twilio.page_size: 5000 is out of range (1..1000)" "$TEST_TMP/err"
ok $? "the error names file, line and key"
sed 's/conninfo = ""/conninfo = ""; colour = "blue"/' "$TEST_TMP/good.conf" >"$TEST_TMP/bad.conf"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/bad.conf" --check-config 2>"$TEST_TMP/err"
is "$?" 1 "an unknown key exits 1"
grep -q "database.colour: unknown key" "$TEST_TMP/err"
ok $? "and names it"
"$CHATSYNCD" -c "$TEST_TMP/good.conf" --check-config 2>"$TEST_TMP/err"
is "$?" 1 "no auth token anywhere exits 1"

# --migrate
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/good.conf" --migrate 2>"$TEST_TMP/err"
is "$?" 0 "--migrate exits 0"
is "$(sql "SELECT string_agg(version || ':' || name, ',' ORDER BY version) FROM chatsync.schema_migrations")" \
	"$(cd "$top_srcdir/sql" && for f in [0-9][0-9][0-9]_*.sql; do printf '%d:%s\n' "$((10#${f:0:3}))" "${f%.sql}"; done | paste -sd,)" \
	"--migrate records the applied migrations, each file of sql/, in order"
is "$(sql "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'chatsync' AND table_name IN ('user_channels', 'user_channel_history', 'sync_cursors', 'sync_runs')")" 4 \
	"--migrate creates the tables in the configured schema"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/good.conf" --migrate 2>"$TEST_TMP/err"
is "$?" 0 "--migrate again is a no-op"
is "$(sql 'SELECT count(*) FROM chatsync.schema_migrations')" "$(ls "$top_srcdir"/sql/[0-9][0-9][0-9]_*.sql | wc -l)" \
	"nothing applied twice"
is "$(wc -l <"$FAKE_LOG")" 0 "--migrate makes no API request"
sql "INSERT INTO chatsync.schema_migrations VALUES (999, '999_future')"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/good.conf" --once 2>"$TEST_TMP/err"
is "$?" 2 "a schema newer than the binary exits 2"
grep -q "newer than this chatsyncd" "$TEST_TMP/err"
ok $? "and says so"
sql "DELETE FROM chatsync.schema_migrations WHERE version = 999"

# Commands that never call Twilio do not read the token: an operator runs them
# by hand where the token is a root-only systemd credential.
sed 's|^  account_sid = |  auth_token_file = "/nonexistent/twilio-auth-token";\n  account_sid = |' \
	"$TEST_TMP/good.conf" >"$TEST_TMP/tokfile.conf"
is "$("$CHATSYNCD" -c "$TEST_TMP/tokfile.conf" --check-config 2>"$TEST_TMP/err")" "configuration OK" \
	"--check-config does not read an unreadable auth_token_file"
"$CHATSYNCD" -c "$TEST_TMP/tokfile.conf" --migrate 2>"$TEST_TMP/err"
is "$?|$(cat "$TEST_TMP/err")" "0|" "--migrate runs without the token, and says nothing of it"
"$CHATSYNCD" -c "$TEST_TMP/tokfile.conf" --status >"$TEST_TMP/out" 2>"$TEST_TMP/err"
is "$?|$(head -c 7 "$TEST_TMP/out")|$(cat "$TEST_TMP/err")" "1|SERVICE|" \
	"--status runs without the token (exit 1: no user has synced yet)"
"$CHATSYNCD" -c "$TEST_TMP/tokfile.conf" --once 2>"$TEST_TMP/err"
is "$?" 1 "--once, which calls Twilio, still needs it"
grep -q 'twilio.auth_token_file: could not open "/nonexistent/twilio-auth-token"' "$TEST_TMP/err"
ok $? "and names the file it could not read"

# Database unreachable
sed "s|conninfo = \"\"|conninfo = \"host=$TEST_TMP/nowhere\"|" "$TEST_TMP/good.conf" >"$TEST_TMP/nodb.conf"
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/nodb.conf" --once 2>"$TEST_TMP/err"
is "$?" 2 "an unreachable database exits 2"
grep -q "could not connect to the database" "$TEST_TMP/err"
ok $? "and says so"

# Daemon mode: sweeps every interval until SIGTERM, then exits 0.
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/good.conf" 2>"$TEST_TMP/daemon.log" &
pid=$!
for i in $(seq 100); do
	[ "$(sql "SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL")" -ge 2 ] && break
	sleep 0.1
done
is "$(sql "SELECT count(*) >= 2 FROM chatsync.sync_runs WHERE finished_at IS NOT NULL")" t \
	"without --once it sweeps again after sync.interval"
kill -TERM $pid
start=$(date +%s%N)
wait $pid
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
is "$rc" 0 "SIGTERM stops the daemon with exit 0"
ok $([ $ms -lt 2000 ] && echo 0 || echo 1) "within 2 s (${ms} ms)"

TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/good.conf" 2>>"$TEST_TMP/daemon.log" &
pid=$!
sleep 0.3
kill -INT $pid
wait $pid
is "$?" 0 "SIGINT stops it too"

done_testing

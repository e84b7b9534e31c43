#!/usr/bin/env bash
# chatsyncd --once at a terminal shows its progress on one updating line;
# with stderr going anywhere else (a file, the journal) it shows nothing.
. "$(dirname "$0")/lib.sh"
need_tools
command -v script >/dev/null || skip_all "script (util-linux) not installed: no terminal to test with"
pg_start || exit 1
fake_start api --channels 20 --latency-ms 60

users=()
for i in $(seq 1 40); do users+=("u-$i"); done
PAGE_SIZE=10 CONCURRENCY=2 write_config "$TEST_TMP/c.conf" "${users[@]}"

# script gives chatsyncd a pseudo-terminal; what it wrote lands in tty.out.
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" script -qefc "$(printf '%q ' "$CHATSYNCD" -c "$TEST_TMP/c.conf" --once)" \
	"$TEST_TMP/tty.out" >/dev/null
is "$?" 0 "the sweep at a terminal completes"
tr '\r' '\n' <"$TEST_TMP/tty.out" >"$TEST_TMP/tty.lines"
grep -qE '^sweep [0-9]+: [0-9]+ of 40 users, [0-9]+ pages, [0-9]+ rows, [0-9]+ rows/s, ETA [0-9a-z-]+' "$TEST_TMP/tty.lines"
ok $? "a progress line: users done of total, pages, rows, rate, ETA"
n=$(grep -cE '^sweep [0-9]+: [0-9]+ of 40 users' "$TEST_TMP/tty.lines")
ok $([ "$n" -ge 3 ] && echo 0 || echo 1) "it is redrawn as the sweep goes on ($n times)"
grep -q '^sweep [0-9]*: 40 of 40 users\|sweep finished' "$TEST_TMP/tty.lines"
ok $? "it reaches the end of the sweep"
grep -q $'\r\033\\[K' "$TEST_TMP/tty.out"
ok $? "and the line is erased in place, not scrolled"
grep -q 'info: sweep finished' "$TEST_TMP/tty.out"
ok $? "log lines still appear, each on a line of its own"

run_once "$TEST_TMP/c.conf"
is "$?" 0 "the same sweep with stderr in a file"
grep -q 'of 40 users' "$TEST_TMP/chatsyncd.log"
ok $((!$?)) "writes no progress line there"
grep -q $'\r' "$TEST_TMP/chatsyncd.log"
ok $((!$?)) "and no carriage return"

done_testing

# tests/lib.sh - shared harness for the integration tests (sourced by bash).
#
# Gives each test a throwaway PostgreSQL cluster on a private unix socket, the
# fake Twilio API on loopback, a config writer, and TAP output.

set -u
. "$(dirname "${BASH_SOURCE[0]}")/services.sh"

: "${top_srcdir:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
CHATSYNCD="$top_builddir/src/chatsyncd"
FAKE_TWILIO="$top_builddir/tests/fake_twilio"
ACCOUNT_SID=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
AUTH_TOKEN=test-token-$RANDOM$RANDOM
SERVICE_SID=IS0123456789abcdef0123456789ABCDEF

tap_n=0
tap_failed=0

ok() { # ok COND-EXIT-STATUS DESCRIPTION
	local status=$1
	shift
	tap_n=$((tap_n + 1))
	if [ "$status" -eq 0 ]; then
		echo "ok $tap_n - $*"
	else
		echo "not ok $tap_n - $*"
		tap_failed=$((tap_failed + 1))
	fi
}

is() { # is GOT WANT DESCRIPTION
	local got=$1 want=$2
	shift 2
	if [ "$got" = "$want" ]; then
		ok 0 "$*"
	else
		ok 1 "$*"
		printf '#   got:  %s\n#   want: %s\n' "$got" "$want"
	fi
}

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

done_testing() {
	echo "1..$tap_n"
	[ "$tap_failed" -eq 0 ]
}

diag() { printf '# %s\n' "$@"; }

# ------------------------------------------------------------ scratch space

TEST_TMP=$(mktemp -d /tmp/chatsync-test.XXXXXX)
chmod 755 "$TEST_TMP"

# CHATSYNCD_WRAPPER (e.g. a valgrind command line) runs every chatsyncd through it.
if [ -n "${CHATSYNCD_WRAPPER:-}" ]; then
	printf '#!/bin/sh\nexec %s %q "$@"\n' "$CHATSYNCD_WRAPPER" "$CHATSYNCD" >"$TEST_TMP/chatsyncd"
	chmod 755 "$TEST_TMP/chatsyncd"
	CHATSYNCD=$TEST_TMP/chatsyncd
fi
FAKE_PIDS=()
PG_DIR=

cleanup() {
	local pid
	[ -n "${BG_PID:-}" ] && kill -9 "$BG_PID" 2>/dev/null # no chatsyncd outlives the test
	for pid in "${FAKE_PIDS[@]}"; do
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ -n "$PG_DIR" ]; then
		cluster_stop "$PG_DIR" immediate 2>/dev/null
	fi
	if [ -n "${KEEP_TEST_TMP:-}" ]; then
		echo "# kept $TEST_TMP" >&2
	else
		rm -rf "$TEST_TMP"
	fi
}
trap cleanup EXIT

# ------------------------------------------------------------ PostgreSQL

need_tools() {
	[ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ] ||
		skip_all "PostgreSQL server binaries not found (install postgresql-15; PG_BINDIR='${PG_BINDIR:-}')"
	[ -x "$FAKE_TWILIO" ] || skip_all "tests/fake_twilio not built (needs libmicrohttpd-dev)"
	[ -x "$CHATSYNCD" ] || skip_all "src/chatsyncd not built"
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		skip_all "running as root and there is no postgres user to run the server"
	fi
}

pg_start() {
	PG_DIR="$TEST_TMP/pg"
	cluster_start "$PG_DIR"
}

pg_stop() {
	cluster_stop "$PG_DIR" "${1:-fast}"
}

pg_restart() {
	cluster_restart "$PG_DIR"
}

# sql QUERY: prints the result unaligned, tuples only, '|' between fields.
sql() {
	psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"
}

# ------------------------------------------------------------ chatsyncd in the background
# For tests that start chatsyncd, kill it part-way and wait for what it
# leaves behind.  Fork-free where they poll (forks are slow on a busy machine).

BG_PID=
mkfifo "$TEST_TMP/nap"
exec {NAP_FD}<>"$TEST_TMP/nap"
nap() { read -r -t "$1" -u "$NAP_FD" _ || :; } # sleep without a fork

# count_lines: the number of requests in the fake's log, in LINES_N.
count_lines() { mapfile -t _lines <"$FAKE_LOG"; LINES_N=${#_lines[@]}; }
log_lines() { count_lines; echo "$LINES_N"; }

# sqlt QUERY: like sql, with a tab between fields.
sqlt() { psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -c "$1"; }

table_exists() { [ "$(sql "SELECT to_regclass('$1') IS NOT NULL")" = t ]; }

# bg_start LOG CONF [ARGS]: chatsyncd in the background, its stderr appended
# to LOG after a header line, its pid in BG_PID; TOKEN overrides the token.
bg_start() {
	local log=$1 conf=$2
	shift 2
	printf -- '----- %(%T)T %s %s\n' -1 "$conf" "$*" >>"$log"
	TWILIO_AUTH_TOKEN="${TOKEN:-$AUTH_TOKEN}" "$CHATSYNCD" -c "$conf" "$@" 2>>"$log" &
	BG_PID=$!
}

# wait_bg SECONDS: waits for BG_PID; its exit status in BG_RC (124: still
# running, killed); BG_PID is cleared once the process is reaped.
wait_bg() {
	local i
	for ((i = 0; i < $1 * 50; i++)); do
		kill -0 "$BG_PID" 2>/dev/null || break
		nap 0.02
	done
	if kill -0 "$BG_PID" 2>/dev/null; then
		kill -9 "$BG_PID"
		wait "$BG_PID" 2>/dev/null
		BG_RC=124
		diag "chatsyncd $BG_PID still running after $1 s: killed"
	else
		wait "$BG_PID"
		BG_RC=$?
	fi
	BG_PID=
}

# chatsyncd_sessions: how many sessions of chatsyncd the server has (fails
# without a server).
chatsyncd_sessions() {
	sql "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'chatsyncd%'"
}

# settle: until nothing of a killed chatsyncd can still land: its backends
# may still be running the statements they were sent, and the fake logs a
# request only once its latency has passed.
settle() {
	local i n
	for ((i = 0; i < 100; i++)); do
		count_lines
		n=$LINES_N
		nap 0.1
		[ "$(chatsyncd_sessions)" = 0 ] && count_lines && [ "$LINES_N" = "$n" ] && return 0
	done
	diag "settle: still busy after 10 s"
}

# wait_log TARGET: until the request log has TARGET lines or BG_PID is gone.
wait_log() {
	while count_lines && [ "$LINES_N" -lt "$1" ] && kill -0 "$BG_PID" 2>/dev/null; do
		nap 0.003
	done
}

# For tests that sweep with chatsyncd --once in the background (sync_resume,
# sync_soak): its stderr goes to CHATSYNCD_LOG.
CHATSYNCD_LOG="$TEST_TMP/chatsyncd.log"

# bg_once CONF: chatsyncd --once in the background (bg_start).
bg_once() { bg_start "$CHATSYNCD_LOG" "$1" --once; }

# run_to_end CONF SECONDS: one chatsyncd --once, for at most SECONDS; its
# exit status in BG_RC.
run_to_end() {
	bg_once "$1"
	wait_bg "$2"
}

# committed_pages SCHEMA: pages committed in SCHEMA over all its runs (0
# before the daemon created it).
committed_pages() {
	if table_exists "$1.sync_runs"; then
		sql "SELECT coalesce(sum(pages), 0) FROM $1.sync_runs"
	else
		echo 0
	fi
}

# pairs FROM TO [STATUS]: the (user, page) pairs of the fake's request log
# lines FROM+1..TO (only those answered STATUS if given), sorted, once each.
pairs() {
	awk -F'\t' -v a="$1" -v b="$2" -v st="${3:-}" \
		'NR > a && NR <= b && (st == "" || $1 == st) { print $2 "\t" $3 }' "$FAKE_LOG" | sort -u
}

# ------------------------------------------------------------ fake Twilio API

# fake_start NAME ARGS...: starts the fake API; sets FAKE_URL, FAKE_PID and FAKE_LOG.
fake_start() {
	local name=$1
	shift
	FAKE_LOG="$TEST_TMP/$name.requests"
	: >"$FAKE_LOG"
	fake_api_start "$FAKE_TWILIO" "$TEST_TMP" "$name" --account-sid "$ACCOUNT_SID" \
		--auth-token "$AUTH_TOKEN" --log "$FAKE_LOG" "$@" || return 1
	FAKE_PIDS+=("$FAKE_PID")
}

fake_stop() {
	kill "$FAKE_PID" 2>/dev/null
	wait "$FAKE_PID" 2>/dev/null
}

# serve NAME FAKE-ARGS: the fake, started again with FAKE-ARGS, and the
# config $TEST_TMP/c.conf (page_size 1000) of the users in array USERS at
# its address.
serve() {
	local name=$1
	shift
	[ -z "${FAKE_PID:-}" ] || fake_stop
	fake_start "$name" "$@" || exit 1
	PAGE_SIZE=1000 write_config "$TEST_TMP/c.conf" "${USERS[@]}"
}

# kill_at_page CONFIG USER N: a sweep of CONFIG, killed with SIGKILL once
# USER's listing has committed N pages and runs on (or after 6 s).
kill_at_page() {
	local pid
	TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$1" --once 2>>"$TEST_TMP/chatsyncd.log" &
	pid=$!
	for _ in $(seq 300); do
		[ "$(sql "SELECT pages_done FROM chatsync.sync_cursors
		           WHERE user_sid = '$2' AND state = 'running'")" = "$3" ] && break
		nap 0.02
	done
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
}

# requests USER: the fake's log lines for USER's listing (status, user, page
# counted from 0, target).
requests() { awk -F'\t' -v u="$1" '$2 == u' "$FAKE_LOG"; }

# ------------------------------------------------------------ the fake's answers
# For the tests of the fake itself (tests/fake_*.sh), with curl and python3.

# fake_api COMMAND ARGS: runs cmd_COMMAND of tests/fake_api.py.
fake_api() {
	PYTHONPATH="$top_srcdir/tests" python3 -c \
		'import sys, fake_api; getattr(fake_api, "cmd_" + sys.argv[1])(*sys.argv[2:])' "$@"
}

# fetch TARGET FILE: GETs TARGET from the fake into FILE; the HTTP status in CODE.
fetch() {
	CODE=$(curl -s -u "$ACCOUNT_SID:$AUTH_TOKEN" -o "$2" -w '%{http_code}' "$FAKE_URL$1")
}

# walk NAME TARGET: GETs TARGET and every next_page_url after it (at most
# 1000 pages), into $TEST_TMP/NAME.0.json, NAME.1.json...; their names in
# PAGES (empty on error).
walk() {
	local name=$1 url=$FAKE_URL$2 n=0 code file
	PAGES=()
	while [ -n "$url" ] && [ $n -lt 1000 ]; do
		file=$TEST_TMP/$name.$n.json
		code=$(curl -s -u "$ACCOUNT_SID:$AUTH_TOKEN" -o "$file" -w '%{http_code}' "$url")
		if [ "$code" != 200 ]; then
			diag "$url: HTTP $code"
			PAGES=()
			return 1
		fi
		PAGES+=("$file")
		url=$(fake_api next "$file")
		n=$((n + 1))
	done
}

# same WANT-FILE GOT-FILE DESCRIPTION: the two files are equal and not empty.
same() {
	if [ -s "$1" ] && cmp -s "$1" "$2"; then
		ok 0 "$3"
	else
		ok 1 "$3"
		diff "$1" "$2" | head -n 5 | sed 's/^/#   /'
	fi
}

# http_statuses TARGET...: the HTTP status of each GET, in order.
http_statuses() {
	local t
	for t in "$@"; do
		curl -s -u "$ACCOUNT_SID:$AUTH_TOKEN" -o /dev/null -w '%{http_code} ' "$FAKE_URL$t"
	done
}

# ------------------------------------------------------------ chatsyncd

# write_config FILE USER...: a config for SERVICE_SID with those users.
# Extra settings come from the environment: PAGE_SIZE, CONCURRENCY, SCHEMA,
# MAX_RETRIES, BACKOFF_BASE_MS, MAX_BACKOFF, DIMENSIONS (sync.dimensions:
# false unless set, so that a test counts the requests of the users'
# listings alone), SYNC_EXTRA (more keys of the sync group, verbatim),
# SERVICE_EXTRA (more keys of the service's group: api = "chat_v2";), EXTRA
# (more groups, verbatim).  The one user "all"
# writes users = "all".
write_config() {
	local file=$1 u users=""
	shift
	for u in "$@"; do
		users+="${users:+, }\"$u\""
	done
	[ "$*" = all ] && users='"all"' || users="[ $users ]"
	cat >"$file" <<CONF
twilio: {
  base_url = "$FAKE_URL";
  account_sid = "$ACCOUNT_SID";
  page_size = ${PAGE_SIZE:-50};
  timeout = 10;
  concurrency = ${CONCURRENCY:-1};
  max_retries = ${MAX_RETRIES:-2};
  backoff_base_ms = ${BACKOFF_BASE_MS:-10};
  max_backoff = ${MAX_BACKOFF:-1};
};
database: { conninfo = ""; schema = "${SCHEMA:-chatsync}"; };
sync: {
  interval = 1;
  services = ( { sid = "$SERVICE_SID"; users = $users; ${SERVICE_EXTRA:-} } );
  dimensions = ${DIMENSIONS:-false};
  ${SYNC_EXTRA:-}
};
log: { level = "info"; };
${EXTRA:-}
CONF
}

# run_once CONFIG [ARGS]: runs one sweep; stderr goes to $TEST_TMP/chatsyncd.log.
run_once() {
	local conf=$1
	shift
	TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$conf" --once "$@" \
		2>>"$TEST_TMP/chatsyncd.log"
}

# backends_gone: until chatsyncd's sessions have left the server (at most
# 5 s), before its statistics (pg_stat_user_tables, pg_stat_user_functions)
# are read: a backend sends them as it exits, after the client has gone.
backends_gone() {
	local i n
	for ((i = 0; i < 50; i++)); do
		# No server (a test that stopped it): nothing to wait for.
		n=$(chatsyncd_sessions 2>/dev/null) || return 0
		[ "$n" = 0 ] && return 0
		nap 0.1
	done
	diag "chatsyncd's sessions still on the server after 5 s" >&2 # callers capture stdout
}

# The columns that hold a membership's values, key included: those of the
# fake's --dump, in its order.
VALUE_COLS="service_sid, user_sid, channel_sid, account_sid, member_sid, status,
            last_consumed_message_index, unread_messages_count, channel_url, member_url"

# new_dump_table TABLE: an empty TABLE for rows in --dump's format.
new_dump_table() {
	sql "DROP TABLE IF EXISTS $1;
	     CREATE TABLE $1 (service_sid text, user_sid text, channel_sid text,
	       account_sid text, member_sid text, status text, last_consumed_message_index bigint,
	       unread_messages_count bigint, channel_url text, member_url text)"
}

# load_dump TABLE FAKE-ARGS -- USER...: loads the fake's data set into TABLE.
load_dump() {
	local table=$1 args=() u
	shift
	while [ "$1" != "--" ]; do
		args+=("$1")
		shift
	done
	shift
	new_dump_table "$table"
	for u in "$@"; do
		"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" "${args[@]}" --dump "$u" |
			psql -X -q -v ON_ERROR_STOP=1 -c "\\copy $table FROM STDIN"
	done
}

# load_expected FAKE-ARGS -- USER...: loads the fake's data set into table expected.
load_expected() { load_dump public.expected "$@"; }

# Rows of the live (not deleted) table that differ from public.expected, both ways.
diff_expected() {
	sql "SELECT count(*) FROM (
	       (SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status,
	               last_consumed_message_index, unread_messages_count, channel_url, member_url
	          FROM ${SCHEMA:-chatsync}.user_channels WHERE deleted_at IS NULL
	        EXCEPT ALL SELECT * FROM public.expected)
	       UNION ALL
	       (SELECT * FROM public.expected
	        EXCEPT ALL
	        SELECT service_sid, user_sid, channel_sid, account_sid, member_sid, status,
	               last_consumed_message_index, unread_messages_count, channel_url, member_url
	          FROM ${SCHEMA:-chatsync}.user_channels WHERE deleted_at IS NULL)) d"
}

# rows_differ A B COLUMNS TABLE: rows of A.TABLE and B.TABLE that differ, both
# ways (EXCEPT ALL).
rows_differ() {
	sql "SELECT count(*) FROM (
	       (SELECT $3 FROM $1.$4 EXCEPT ALL SELECT $3 FROM $2.$4)
	       UNION ALL
	       (SELECT $3 FROM $2.$4 EXCEPT ALL SELECT $3 FROM $1.$4)) d"
}

# ------------------------------------------------------------ past versions
# Which past versions a schema must hold follows from the fake's data sets
# alone: a sweep that takes a user's memberships from one data set to another
# ends the version of each membership the new one changes or drops, and no
# other.  public.expected_past collects those versions (their values).

# expect_no_past: no version has ended yet (public.expected_past empty).
expect_no_past() { new_dump_table public.expected_past; }

# expect_past_ended BEFORE AFTER: adds the versions that a sweep from the data
# set in table BEFORE to the one in table AFTER ends: the rows of BEFORE whose
# membership AFTER holds with other values or not at all.  BEFORE is what was
# live: a membership already deleted has no version left to end.
expect_past_ended() {
	sql "INSERT INTO public.expected_past SELECT * FROM $1 EXCEPT ALL SELECT * FROM $2"
}

# past_differ [SCHEMA]: past versions (not the removal periods) of SCHEMA (default $SCHEMA) whose values
# differ from public.expected_past, both ways (EXCEPT ALL): 0 when exactly the
# expected versions ended, each once.
past_differ() {
	local s=${1:-${SCHEMA:-chatsync}}
	sql "SELECT count(*) FROM (
	       (SELECT $VALUE_COLS FROM $s.user_channel_past_versions WHERE NOT is_deleted
	        EXCEPT ALL SELECT * FROM public.expected_past)
	       UNION ALL
	       (SELECT * FROM public.expected_past
	        EXCEPT ALL SELECT $VALUE_COLS FROM $s.user_channel_past_versions
	         WHERE NOT is_deleted)) d"
}

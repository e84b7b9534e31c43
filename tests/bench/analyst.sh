#!/bin/bash
# tests/bench/analyst.sh - the analyst queries over a large generated schema.
#
# Creates a fresh schema with chatsyncd --migrate, fills it with set-based SQL
# (analyst_data.sql: 10,000 users, over a million memberships, over ten
# million past versions over 90 days, their events, errors and sweeps),
# then runs each question of doc/questions.sql and the lookups of one user
# or one channel several times as a member of chatsync_reader, and appends a
# markdown table of median wall times against the targets to the report.
# run.sh runs it as its scenario "analyst"; see tests/bench/README.md.
set -eu -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
: "${top_builddir:=$top}"
CHATSYNCD=${CHATSYNCD:-$top_builddir/src/chatsyncd}
QUESTIONS=${QUESTIONS:-$top/doc/questions.sql}

usage() {
	cat <<'EOF'
usage: tests/bench/analyst.sh [OPTION]...
Runs the analyst queries over a generated schema in a running PostgreSQL
(PGHOST, PGUSER: run.sh --scenario analyst starts one) and appends the
results to a markdown report.

  --quick            500 users and 200 channels per service (about 57,000
                     memberships, 550,000 past versions)
  --users N          configured users (default 10000)
  --channels M       channels per service, two services (default 2500)
  --per-user P       memberships per user, on average (default 115)
  --runs N           runs of each query; the median counts (default 5)
  --timeout S        statement_timeout of each run, seconds (default 120)
  --db NAME          the database, dropped and created again (default bench_analyst)
  --skip-generate    measure the schema already in the database
  --plans DIR        also write EXPLAIN (ANALYZE, BUFFERS) of each query to DIR
  --out FILE         append the report to FILE (default tests/bench/results.md)
  -h, --help         this help
EOF
}

users=10000 channels=2500 per_user=115 days=90
runs=5 timeout=120 db=bench_analyst generate=1 plans= out=$here/results.md
o_users= o_channels=
need_arg() { [ $# -ge 2 ] || { echo "analyst.sh: $1 needs a value" >&2; exit 1; }; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "analyst.sh: $2 must be a positive number" >&2; exit 1; }; }
while [ $# -gt 0 ]; do
	case $1 in
	--quick) users=500 channels=200 ;;
	--users) need_arg "$@"; is_count "$2" "$1"; o_users=$2; shift ;;
	--channels) need_arg "$@"; is_count "$2" "$1"; o_channels=$2; shift ;;
	--per-user) need_arg "$@"; is_count "$2" "$1"; per_user=$2; shift ;;
	--runs) need_arg "$@"; is_count "$2" "$1"; runs=$2; shift ;;
	--timeout) need_arg "$@"; is_count "$2" "$1"; timeout=$2; shift ;;
	--db) need_arg "$@"; db=$2; shift ;;
	--skip-generate) generate=0 ;;
	--plans) need_arg "$@"; plans=$2; shift ;;
	--out) need_arg "$@"; out=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "analyst.sh: unknown option \"$1\"" >&2; usage >&2; exit 1 ;;
	esac
	shift
done
users=${o_users:-$users}
channels=${o_channels:-$channels}
[[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "analyst.sh: --db must be a plain lowercase name" >&2; exit 1; }
[ "$per_user" -ge 56 ] || { echo "analyst.sh: --per-user must be at least 56" >&2; exit 1; }
[ "$channels" -gt $((per_user + 55)) ] ||
	{ echo "analyst.sh: --channels must exceed the most memberships of a user ($((per_user + 55)))" >&2; exit 1; }
[ "$users" -ge 2 ] || { echo "analyst.sh: --users must be at least 2" >&2; exit 1; }
case $out in /*) ;; *) out=$PWD/$out ;; esac

die() {
	echo "analyst.sh: $*" >&2
	exit 1
}
[ -n "${PGHOST:-}" ] || die "PGHOST is not set: run it through tests/bench/run.sh --scenario analyst"
[ -x "$CHATSYNCD" ] || die "$CHATSYNCD not built: cd $top && make -j2"
[ -r "$QUESTIONS" ] || die "$QUESTIONS is missing"
WORK=$(mktemp -d /tmp/chatsync-analyst.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
now_ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

# ------------------------------------------------------------ the schema and its data

if [ "$generate" = 1 ]; then
	q postgres "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
	q postgres "CREATE DATABASE \"$db\"" >/dev/null
	cat >"$WORK/chatsyncd.conf" <<CONF
# written by tests/bench/analyst.sh: only for --migrate
twilio: { base_url = "http://127.0.0.1:9"; account_sid = "AC$(printf 'a%.0s' {1..32})"; };
database: { conninfo = "host=$PGHOST user=${PGUSER:-postgres} dbname=$db"; schema = "chatsync"; };
sync: { interval = 3600; services = ( { sid = "IS$(printf '0%.0s' {1..31})1"; users = [ "x" ]; } ); };
CONF
	echo "# analyst: chatsyncd --migrate into database $db"
	"$CHATSYNCD" -c "$WORK/chatsyncd.conf" --migrate 2>"$WORK/migrate.log" ||
		{ cat "$WORK/migrate.log" >&2; die "chatsyncd --migrate failed"; }
	echo "# analyst: generating $users users x $per_user memberships, $channels channels x 2 services, $days days"
	t0=$(now_ms)
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" -v users="$users" -v channels="$channels" \
		-v per_user="$per_user" -v days="$days" -f "$here/analyst_data.sql" >"$WORK/generate.log" 2>&1 ||
		{ cat "$WORK/generate.log" >&2; die "generating the data failed"; }
	t1=$(now_ms)
	q "$db" "VACUUM (ANALYZE)" >/dev/null
	q postgres "CHECKPOINT" >/dev/null
	t2=$(now_ms)
	GEN_NOTE="generated in $(secs "$t0" "$t1") s, then VACUUM (ANALYZE) and CHECKPOINT in $(secs "$t1" "$t2") s"
else
	GEN_NOTE="measured on the data already in database $db (--skip-generate)"
fi
q "$db" "SELECT 1 FROM chatsync.user_channels LIMIT 1" >/dev/null || die "no chatsync schema in database $db"

# The analysts' role: a member of chatsync_reader, as doc/questions.sql asks.
q postgres "DO \$\$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_analyst') THEN
		CREATE ROLE bench_analyst LOGIN;
	END IF;
	GRANT chatsync_reader TO bench_analyst;
END \$\$" >/dev/null

# The user and the channel the single lookups ask for: the middle ones of
# those configured by User SID, and of the channels; and a user configured
# by identity, by its User SID.
read -r ONE_USER ONE_IDENTITY_USER ONE_CHANNEL < <(q "$db" "SET search_path TO chatsync;
	SELECT (SELECT user_sid FROM sync_cursors WHERE user_sid LIKE 'US%' ORDER BY user_sid
	         OFFSET (SELECT count(*) / 2 FROM sync_cursors WHERE user_sid LIKE 'US%') LIMIT 1),
	       (SELECT k.user_sid FROM user_keys k WHERE k.configured NOT LIKE 'US%' AND k.user_sid LIKE 'US%'
	         ORDER BY k.configured LIMIT 1),
	       (SELECT channel_sid FROM channels ORDER BY channel_sid
	         OFFSET (SELECT count(*) / 2 FROM channels) LIMIT 1)" | tr '|' ' ')
[ -n "${ONE_CHANNEL:-}" ] || die "no user or channel to look up"

# ------------------------------------------------------------ the queries

# Each query: a file $WORK/NAME.sql, its description and its target in ms.
declare -a NAMES=()
declare -A WHAT=() TARGET=()
add_query() { # add_query NAME TARGET_MS WHAT < SQL
	NAMES+=("$1")
	TARGET[$1]=$2
	WHAT[$1]=$3
	cat >"$WORK/$1.sql"
}

# The ten questions, as doc/questions.sql has them (split as tests/analyst.sh does).
for n in $(seq 10); do
	# its description: the comment's first sentence
	what=$(awk -v q="-- Q$n:" 'index($0, q) == 1 { on = 1; sub(/^-- Q[0-9]+: */, ""); printf "%s", $0; next }
		on && /^-- / { sub(/^-- */, " "); printf "%s", $0; next } on { exit }' "$QUESTIONS" |
		sed 's/\. .*/./')
	add_query "Q$n" 1000 "$what" < <(awk -v q="-- Q$n:" \
		'index($0, q) == 1 { on = 1; next } on && /^-- Q[0-9]+:/ { exit } on' "$QUESTIONS")
	[ -s "$WORK/Q$n.sql" ] || die "no -- Q$n: in $QUESTIONS"
done

# One user or one channel: a question restricted to it (the analyst's
# WHERE, on the outside, so that it follows doc/questions.sql), and the
# lookups of a dashboard.  psql variables user, identity_user and channel.
only() { # only QN COLUMN VARIABLE: the question QN, restricted
	sed -e '/^--/d' -e 's/; *$//' "$WORK/$1.sql"
	echo ") q WHERE $2 = :'$3';"
}
for qv in Q1:user_sid:user Q3:channel_sid:channel Q9:user_sid:user; do
	IFS=: read -r qn col var <<<"$qv"
	add_query "$qn-$var" 50 "$qn for one ${col%_sid}" < <(echo "SELECT * FROM (" && only "$qn" "$col" "$var")
done
# Q6 picks its ten channels: for one channel, the view it reads.
add_query trend-channel 50 "Q6 for one channel: its unread trend over the last week" <<'SQL'
SELECT channel_sid, hour, unread_messages_count AS unread
  FROM channel_unread_hourly
 WHERE channel_sid = :'channel' AND hour >= date_trunc('hour', now() - interval '7 days')
 ORDER BY hour;
SQL
add_query memberships-user 50 "memberships of one user" <<'SQL'
SELECT * FROM memberships WHERE user_sid = :'user' ORDER BY channel_sid;
SQL
add_query memberships-identity 50 "memberships of one user configured by identity" <<'SQL'
SELECT * FROM memberships WHERE user_sid = :'identity_user' ORDER BY channel_sid;
SQL
add_query memberships-channel 50 "memberships of one channel" <<'SQL'
SELECT * FROM memberships WHERE channel_sid = :'channel' ORDER BY user_sid;
SQL
add_query history-user 50 "history of one user" <<'SQL'
SELECT * FROM membership_history WHERE user_sid = :'user' ORDER BY channel_sid, valid_from;
SQL
add_query history-channel 50 "history of one channel" <<'SQL'
SELECT * FROM membership_history WHERE channel_sid = :'channel' ORDER BY user_sid, valid_from;
SQL
add_query events-user 50 "events of one user" <<'SQL'
SELECT * FROM membership_events WHERE user_sid = :'user' ORDER BY at;
SQL
add_query events-channel 50 "events of one channel" <<'SQL'
SELECT * FROM membership_events WHERE channel_sid = :'channel' ORDER BY at;
SQL

# run_query NAME: runs it $runs times in one session as bench_analyst, the
# first run's rows to a file (to count them), the others to /dev/null;
# prints "rows first_ms median_ms status runs" (status ok or timeout; runs:
# those that ended in time).  A run that hits the timeout ends the series.
run_query() {
	local name=$1 i times status=ok rows=-
	{
		echo "\\set ON_ERROR_STOP on"
		echo "\\pset format unaligned"
		echo "\\pset tuples_only on"
		echo "SET search_path TO chatsync;"
		echo "SET statement_timeout = '${timeout}s';"
		echo "\\timing on"
		for ((i = 1; i <= runs; i++)); do
			if [ "$i" = 1 ]; then echo "\\o $WORK/$name.rows"; else echo "\\o /dev/null"; fi
			cat "$WORK/$name.sql"
		done
	} >"$WORK/$name.run"
	if ! psql -X -q -U bench_analyst -d "$db" -v user="$ONE_USER" -v identity_user="$ONE_IDENTITY_USER" \
		-v channel="$ONE_CHANNEL" -f "$WORK/$name.run" >"$WORK/$name.times" 2>"$WORK/$name.err"; then
		grep -q 'statement timeout' "$WORK/$name.err" || { cat "$WORK/$name.err" >&2; die "$name failed"; }
		status=timeout
	fi
	times=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$WORK/$name.times")
	# psql times the statement that failed too: it is not a run
	[ "$status" = timeout ] && times=$(echo "$times" | sed '$d')
	[ -n "$times" ] && rows=$(wc -l <"$WORK/$name.rows")
	echo "$times" | sort -g | awk -v rows="$rows" -v first="$(echo "$times" | head -n 1)" -v st="$status" '
		$1 != "" { t[++n] = $1 }
		END {
			if (n == 0) { printf "%s - - %s 0\n", rows, st; exit }
			m = n % 2 ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
			printf "%s %.1f %.1f %s %d\n", rows, first, m, st, n
		}'
	if [ -n "$plans" ]; then
		mkdir -p "$plans"
		{ echo "SET search_path TO chatsync; SET statement_timeout = '${timeout}s';"
		  echo "EXPLAIN (ANALYZE, BUFFERS)"; cat "$WORK/$name.sql"; } |
			psql -X -q -U bench_analyst -d "$db" -v user="$ONE_USER" -v identity_user="$ONE_IDENTITY_USER" \
				-v channel="$ONE_CHANNEL" >"$plans/$name.txt" 2>&1 || true
	fi
}

# ------------------------------------------------------------ measure and report

within() { awk -v m="$1" -v t="$2" 'BEGIN { exit !(m <= t) }'; }
fmt_ms() { # a time in ms: 1 decimal under 100; other text as it is
	awk -v x="$1" 'BEGIN { if (x !~ /^[0-9.]+$/) print x; else if (x >= 100) printf "%.0f", x; else printf "%.1f", x }'
}

declare -A RES=()
pass=0 total=0
for name in "${NAMES[@]}"; do
	printf '# analyst: %-22s ... ' "$name"
	RES[$name]=$(run_query "$name") || exit 1
	read -r rows first median status n <<<"${RES[$name]}"
	total=$((total + 1))
	if [ "$status" = ok ] && within "$median" "${TARGET[$name]}"; then
		pass=$((pass + 1))
	fi
	echo "$rows rows, median $median ms of $n runs ($status)"
done

report() {
	local name rows first median status n verdict size
	echo
	echo "## Analyst queries over $(q "$db" "SELECT count(*) FROM chatsync.sync_cursors") users," \
		"$(q "$db" "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NULL") memberships," \
		"$(q "$db" "SELECT count(*) FROM chatsync.user_channel_past_versions") past versions"
	echo
	echo "- data: $GEN_NOTE; PostgreSQL $(q "$db" 'SHOW server_version'), $(q "$db" "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
		WHERE name IN ('shared_buffers', 'work_mem', 'effective_cache_size', 'max_parallel_workers_per_gather', 'jit', 'random_page_cost')") (defaults)"
	echo "- one user: $ONE_USER; one user configured by identity: $ONE_IDENTITY_USER; one channel: $ONE_CHANNEL"
	echo "- each query $runs times in one session as a member of chatsync_reader, results to /dev/null"
	echo "  (the first run's to a file, to count them); wall time as psql's \\timing shows it"
	echo
	echo "| table | rows | MB |"
	echo "| --- | ---: | ---: |"
	q "$db" "SELECT '| ' || c.relname || CASE WHEN c.relname = 'user_channels'
	                THEN ' (' || (SELECT count(*) FILTER (WHERE deleted_at IS NULL) FROM chatsync.user_channels) || ' live)'
	                WHEN c.relname = 'user_channel_past_versions'
	                THEN ' (' || (SELECT count(*) FILTER (WHERE is_deleted) FROM chatsync.user_channel_past_versions) || ' removal periods)'
	                ELSE '' END
	           || ' | ' || c.reltuples::bigint || ' | ' || round(pg_total_relation_size(c.oid) / 1048576.0) || ' |'
	      FROM pg_class c
	     WHERE c.relnamespace = 'chatsync'::regnamespace AND c.relkind = 'r'
	       AND c.relname IN ('user_channels', 'user_channel_past_versions', 'membership_event_log', 'sync_errors',
	                         'sync_runs', 'sync_cursors', 'users', 'channels')
	     ORDER BY pg_total_relation_size(c.oid) DESC"
	echo
	echo "| query | what | rows | first ms | median ms | target ms | |"
	echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
	for name in "${NAMES[@]}"; do
		read -r rows first median status n <<<"${RES[$name]}"
		[ "$first" = - ] && first="> $((timeout * 1000))"
		if [ "$status" = timeout ]; then
			verdict="**fail** (a run took over $timeout s)"
			median="> $((timeout * 1000))"
		elif within "$median" "${TARGET[$name]}"; then
			verdict=pass
		else
			verdict="**fail**"
		fi
		echo "| $name | ${WHAT[$name]} | $rows | $(fmt_ms "$first") | $(fmt_ms "$median") | ${TARGET[$name]} | $verdict |"
	done
	echo
	echo "$pass of $total queries within their target."
}
report | tee -a "$out"

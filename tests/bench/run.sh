#!/bin/bash
# tests/bench/run.sh - benchmark chatsyncd against two Node.js reference syncs,
# and the analyst queries at scale.
#
# For each sync scenario, on the same fake-API data and with a fresh database
# per tool, runs (1) chatsyncd --once, (2) ref_naive.js, (3) ref_pooled.js
# (ref_conv_naive.js and ref_conv_pooled.js in the Conversations scenarios),
# each twice: an initial load into an empty schema, then an unchanged resync.
# Measures wall time, CPU, peak RSS, HTTP requests, PostgreSQL's CPU, rows
# written and WAL; checks every run's table against the fake's data; writes
# a markdown report.  The analyst scenario (analyst.sh) times the questions
# of doc/questions.sql over a generated schema of a million memberships, on
# the same cluster.  See tests/bench/README.md.
set -eu -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
. "$top/tests/services.sh" # PG_BINDIR, as_pg_user, fake_api_start

: "${top_builddir:=$top}" # make bench passes the build tree
CHATSYNCD=${CHATSYNCD:-$top_builddir/src/chatsyncd}
FAKE_TWILIO=${FAKE_TWILIO:-$top_builddir/tests/fake_twilio}
ACCOUNT_SID=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
SERVICE_SID=IS0123456789abcdef0123456789ABCDEF
AUTH_TOKEN=bench-token-$RANDOM$RANDOM
TIME=/usr/bin/time

usage() {
	cat <<'EOF'
usage: tests/bench/run.sh [OPTION]...
Benchmarks chatsyncd --once against two Node.js references (tests/bench/README.md).

  --scenario NAME       latency, cpu, analyst or all (default all: the three), or
                        conversations or conversations-latency (not in all)
                          latency: 10000 users x 20 channels, 50 ms per response
                          cpu:      2000 users x 500 channels, no latency
                          analyst:  the analyst queries over 10000 users, over a
                                    million memberships, ten million past versions
                          conversations: 2000 users x 250 conversations (Conversations
                                    API, 5 pages of 50 per user), no latency
                          conversations-latency: 10000 users x 60 conversations
                                    (2 pages per user), 50 ms per response
  --quick               small sizes: latency 200 x 20, cpu 100 x 500 (ref2 on 20 users),
                        analyst 500 users, conversations 100 x 250 (ref2 on 20 users),
                        conversations-latency 200 x 60 (ref2 on 50 users)
  --users N             users (overrides the scenario's)
  --channels M          channels, or conversations, per user (overrides the scenario's)
  --latency-ms L        the fake API's delay per response (overrides the scenario's)
  --page-size P         PageSize of every tool (default 1000; the Conversations
                        scenarios page at most 50 at a time, the API's most)
  --concurrency C       chatsyncd's twilio.concurrency (default 16)
  --ref-concurrency R   reference 3's users in flight and pg pool size (default 16)
  --ref2-users N        run reference 2 on the first N users only and extrapolate
                        its wall time, CPU and requests to all users (0: all users);
                        latency=N,cpu=M,conversations=N,conversations-latency=N
                        sets it per scenario
  --ref-async-commit    the references' sessions use synchronous_commit=off, as
                        chatsyncd's does (default: they commit synchronously)
  --skip-ref2           do not run reference 2 (the slow one)
  --skip-ref3           do not run reference 3
  --skip-copy           do not time the COPY ceiling (scenarios without latency)
  --skip-floor          do not time the floors of one transaction per page and
                        per listing (pgbench; scenarios without latency)
  --dimension-users K   the fake also lists K users of its own and their channels
                        (K x channels), for chatsyncd with sync.dimensions on
                        (default: 10000 / channels, so ten pages of channels)
  --skip-dimensions     do not run chatsyncd with sync.dimensions on
  --fake-threads N      the fake API's worker threads when latency is 0 (default 2)
  --skip-analyst        leave the analyst scenario out of all
  --analyst-users N     the analyst scenario's configured users (default 10000)
  --analyst-runs N      runs of each analyst query, the median counts (default 5)
  --out FILE            the markdown report (default tests/bench/results.md)
  --keep                keep the scratch folder (cluster, logs) under /tmp
  -h, --help            this help
EOF
}

scenarios=all
quick=0
o_users= o_channels= o_latency= o_ref2_users=
page_size=1000
concurrency=16
ref_concurrency=16
skip_ref2=0
ref_async=0
skip_ref3=0
skip_copy=0
skip_floor=0
o_dim_users=
skip_dims=0
fake_threads=2
skip_analyst=0
analyst_args=()
out=$here/results.md
keep=0

need_arg() { [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 1; }; }
is_count() { [[ $1 =~ ^[0-9]+$ ]] || { echo "run.sh: $2 must be a number, not \"$1\"" >&2; exit 1; }; }

while [ $# -gt 0 ]; do
	case $1 in
	--scenario) need_arg "$@"; scenarios=$2; shift ;;
	--quick) quick=1 ;;
	--users) need_arg "$@"; is_count "$2" "$1"; o_users=$2; shift ;;
	--channels) need_arg "$@"; is_count "$2" "$1"; o_channels=$2; shift ;;
	--latency-ms) need_arg "$@"; is_count "$2" "$1"; o_latency=$2; shift ;;
	--page-size) need_arg "$@"; is_count "$2" "$1"; page_size=$2; shift ;;
	--concurrency) need_arg "$@"; is_count "$2" "$1"; concurrency=$2; shift ;;
	--ref-concurrency) need_arg "$@"; is_count "$2" "$1"; ref_concurrency=$2; shift ;;
	--ref2-users)
		need_arg "$@"
		[[ $2 =~ ^([0-9]+|((latency|cpu|conversations|conversations-latency)=[0-9]+,?)+)$ ]] || {
			echo "run.sh: --ref2-users takes N or SCENARIO=N[,SCENARIO=N]..." >&2
			exit 1
		}
		o_ref2_users=$2
		shift
		;;
	--skip-ref2) skip_ref2=1 ;;
	--ref-async-commit) ref_async=1 ;;
	--skip-ref3) skip_ref3=1 ;;
	--skip-copy) skip_copy=1 ;;
	--skip-floor) skip_floor=1 ;;
	--dimension-users) need_arg "$@"; is_count "$2" "$1"; o_dim_users=$2; shift ;;
	--skip-dimensions) skip_dims=1 ;;
	--fake-threads) need_arg "$@"; is_count "$2" "$1"; fake_threads=$2; shift ;;
	--skip-analyst) skip_analyst=1 ;;
	--analyst-users) need_arg "$@"; is_count "$2" "$1"; analyst_args+=(--users "$2"); shift ;;
	--analyst-runs) need_arg "$@"; is_count "$2" "$1"; analyst_args+=(--runs "$2"); shift ;;
	--out) need_arg "$@"; out=$2; shift ;;
	--keep) keep=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown option \"$1\"" >&2; usage >&2; exit 1 ;;
	esac
	shift
done

# scenarios: the sync scenarios to run; analyst: 1 to run the analyst one
analyst=0
case $scenarios in
all) scenarios="latency cpu" analyst=$((1 - skip_analyst)) ;;
latency | cpu | conversations | conversations-latency) ;;
analyst) scenarios= analyst=1 ;;
*)
	echo "run.sh: --scenario must be latency, cpu, analyst, all, conversations or" \
		"conversations-latency" >&2
	exit 1
	;;
esac
if [ "$page_size" -lt 1 ] || [ "$page_size" -gt 1000 ]; then
	echo "run.sh: --page-size must be 1..1000" >&2; exit 1
fi
if [ "$concurrency" -lt 1 ] || [ "$concurrency" -gt 64 ] || [ "$ref_concurrency" -lt 1 ]; then
	echo "run.sh: --concurrency must be 1..64 and --ref-concurrency at least 1" >&2; exit 1
fi
case $out in /*) ;; *) out=$PWD/$out ;; esac

die() {
	echo "run.sh: $*" >&2
	exit 1
}

# ------------------------------------------------------------ prerequisites

[ -x "$CHATSYNCD" ] || die "$CHATSYNCD not built: cd $top && make -j2"
[ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ] || die "PostgreSQL server binaries not found (PG_BINDIR)"
command -v psql >/dev/null || die "psql is missing: apt-get install postgresql-client"
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
	die "running as root and there is no postgres user to run the server"
fi
WRITE_MODES=${WRITE_MODES:-$top_builddir/tests/bench/write_modes}
if [ -n "$scenarios" ]; then
	[ -x "$FAKE_TWILIO" ] || die "$FAKE_TWILIO not built: cd $top && make tests/fake_twilio"
	case " $scenarios " in
	*" latency "* | *" cpu "*)
		[ -x "$WRITE_MODES" ] || die "$WRITE_MODES not built: cd $top && make tests/bench/write_modes"
		;;
	esac
	[ -x "$TIME" ] || die "$TIME is missing: apt-get install time"
	command -v node >/dev/null || die "node is missing: apt-get install nodejs npm"
	if [ ! -d "$here/node_modules/twilio" ] || [ ! -d "$here/node_modules/pg" ]; then
		echo "# installing the references' npm packages (npm ci in $here)"
		(cd "$here" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci failed in $here"
	fi
fi

WORK=$(mktemp -d /tmp/chatsync-bench.XXXXXX)
chmod 755 "$WORK"
# Private copies, so that a rebuild during the benchmark does not change what is measured.
# The analyst scenario reads the questions from a copy too.
cp -p "$CHATSYNCD" "$WORK/chatsyncd"
cp -p "$top/doc/questions.sql" "$WORK/questions.sql"
CHATSYNCD=$WORK/chatsyncd
if [ -n "$scenarios" ]; then
	cp -p "$FAKE_TWILIO" "$WORK/fake_twilio"
	FAKE_TWILIO=$WORK/fake_twilio
fi
GIT_REV="git $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?') at the start; binary built $(date -u -r "$CHATSYNCD" '+%Y-%m-%d %H:%M:%S UTC'), sha256 $(sha256sum "$CHATSYNCD" | cut -c 1-12)"
PG_DIR=$WORK/pg
FAKE_PID=
finished=0

cleanup() {
	if [ -n "$FAKE_PID" ]; then
		kill "$FAKE_PID" 2>/dev/null || true
		wait "$FAKE_PID" 2>/dev/null || true
	fi
	if [ -f "$PG_DIR/data/postmaster.pid" ]; then
		as_pg_user "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ "$keep" = 1 ] || [ "$finished" = 0 ]; then
		echo "# scratch folder kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

# ------------------------------------------------------------ PostgreSQL, durable

# Unlike the tests' cluster (tests/services.sh), this one keeps PostgreSQL's
# default durability: fsync, synchronous_commit and full_page_writes on.
# (initdb -N only skips syncing initdb's own files.)
bench_pg_start() {
	mkdir -p "$PG_DIR"
	if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; fi
	as_pg_user "$PG_BINDIR/initdb" -D "$PG_DIR/data" -A trust -N -U postgres --no-instructions \
		>"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
	as_pg_user "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
		-o "-c listen_addresses='' -k $PG_DIR" start >/dev/null ||
		{ cat "$PG_DIR/server.log" >&2; return 1; }
	export PGHOST=$PG_DIR PGUSER=postgres PGDATABASE=postgres
	export PGOPTIONS="-c client_min_messages=warning"
	unset PGPORT PGPASSWORD PGSERVICE PGSSLMODE 2>/dev/null || true
}

# q DB SQL: one query, unaligned, tuples only
q() {
	psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

bench_pg_start || die "could not start PostgreSQL"
CLK_TCK=$(getconf CLK_TCK)

# node's start-up with both libraries (the second of two runs, warm), counted
# once when ref2's run on a subset is extrapolated
if [ -n "$scenarios" ]; then
	for i in 1 2; do
		"$TIME" -f '%e %U %S' -o "$WORK/node-start.time" \
			node -e "require('$here/node_modules/twilio'); require('$here/node_modules/pg')"
	done
	read -r NODE_START_WALL NODE_START_U NODE_START_S <"$WORK/node-start.time"
	NODE_START_CPU=$(awk -v u="$NODE_START_U" -v s="$NODE_START_S" 'BEGIN { print u + s }')
fi
PG_SETTINGS=$(q postgres "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
	WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
	               'shared_buffers', 'max_wal_size', 'checkpoint_timeout')")
[ "$(q postgres 'SHOW fsync')" = on ] && [ "$(q postgres 'SHOW synchronous_commit')" = on ] ||
	die "PostgreSQL is not at its durable defaults: $PG_SETTINGS"

# PostgreSQL's CPU so far, in clock ticks: the postmaster, the children it has
# reaped (backends that ended) and the children still running.
pg_cpu_ticks() {
	local pm total=0 pid f
	pm=$(head -n 1 "$PG_DIR/data/postmaster.pid")
	for pid in "$pm" $(pgrep -P "$pm" || true); do
		# fields after "(comm) ": state ppid ... utime(14) stime(15) cutime(16) cstime(17)
		f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
		set -- $f
		total=$((total + ${12} + ${13} + ${14} + ${15}))
	done
	echo "$total"
}

# Waits until the tool's sessions on database $1 have ended (their stats are
# then flushed); autovacuum may go on.
wait_sessions_gone() {
	local i
	for i in $(seq 600); do
		[ "$(q postgres "SELECT count(*) FROM pg_stat_activity
			WHERE datname = '$1' AND backend_type = 'client backend'")" = 0 ] && return 0
		sleep 0.05
	done
	die "sessions of database $1 did not end within 30 s"
}

# Waits (up to 2 minutes) until no autovacuum worker runs, so that one run's
# clean-up does not land in the next run's numbers.
wait_autovacuum() {
	local i
	for i in $(seq 1200); do
		[ "$(q postgres "SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'autovacuum worker'")" = 0 ] && return 0
		sleep 0.1
	done
	echo "# warning: autovacuum still running; measuring anyway" >&2
}

# Tuples inserted, updated and deleted in all tables of database $1 so far.
tuples_written() {
	q "$1" "SELECT pg_stat_clear_snapshot();
		SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables" | tail -n 1
}

# data_tuples DB SCHEMA: "ins upd del ins upd del" so far, of the scenario's
# table SCHEMA.$listing_table and its past versions, $past_table (0 for a
# table that does not exist).
data_tuples() {
	q "$1" "SELECT pg_stat_clear_snapshot();
		SELECT string_agg(concat_ws(' ', coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0),
			coalesce(s.n_tup_del, 0)), ' ' ORDER BY t.i)
		FROM (VALUES (1, '$listing_table'), (2, '$past_table')) t (i, rel)
		LEFT JOIN pg_stat_user_tables s ON s.schemaname = '$2' AND s.relname = t.rel" | tail -n 1
}

# ------------------------------------------------------------ data

# The user list: US + 32 hex digits of 1..N (so the first k users sort first).
user_sid() { printf 'US%032x' "$1"; }

# The synced columns of each API's table, in the order of the fake's --dump:
# the ten of user_channels (IP Messaging v1), the nineteen of
# user_conversations (Conversations).
V1_COLUMNS="service_sid text, user_sid text, channel_sid text, account_sid text, member_sid text,
	status text, last_consumed_message_index bigint, unread_messages_count bigint,
	channel_url text, member_url text"
CONV_COLUMNS="service_sid text, user_sid text, conversation_sid text, account_sid text,
	participant_sid text, conversation_state text, notification_level text,
	unread_messages_count bigint, last_read_message_index bigint, friendly_name text,
	unique_name text, created_by text, date_created timestamptz, date_updated timestamptz,
	date_inactive timestamptz, date_closed timestamptz, url text, conversation_url text,
	participant_url text"
# column_names "NAME TYPE, ...": the names alone.
column_names() { sed -E 's/[[:space:]]+/ /g; s/ ([a-z]+)(,|$)/\2/g; s/^ //' <<<"$1"; }

# fingerprint DB TABLE [WHERE]: "rows hashsum" of the scenario's synced columns ($columns).
fingerprint() {
	q "$1" "SELECT count(*) || ' ' || coalesce(sum(hashtextextended(ROW($(column_names "$columns"))::text,
		0)::numeric), 0) FROM $2 ${3:+WHERE $3}"
}

# Loads the fake's data for every user, through the scenario's API ($api),
# into database bench_expected.
load_expected() {
	q postgres "DROP DATABASE IF EXISTS bench_expected" >/dev/null
	q postgres "CREATE DATABASE bench_expected" >/dev/null
	q bench_expected "CREATE TABLE expected ($columns)" >/dev/null
	sed 's/^/--dump\n/' "$USERS_FILE" |
		xargs -d '\n' -n 2000 "$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" \
			--api "$api" --channels "$channels" --seed 1 |
		psql -X -q -v ON_ERROR_STOP=1 -d bench_expected -c "\\copy expected FROM STDIN"
}

# write_chatsyncd_config FILE DB DIMENSIONS: sync.dimensions true or false.
write_chatsyncd_config() {
	local file=$1 db=$2 dims=$3
	{
		cat <<CONF
# written by tests/bench/run.sh
twilio: {
  base_url = "$FAKE_URL";
  account_sid = "$ACCOUNT_SID";
  page_size = $spage;
  timeout = 120;
  concurrency = $concurrency;
};
database: { conninfo = "host=$PG_DIR user=postgres dbname=$db"; schema = "chatsync"; };
log: { level = "info"; };
sync: {
  interval = 3600;
  dimensions = $dims;
  services = ( { sid = "$SERVICE_SID"; users = [
CONF
		sed 's/.*/    "&",/; $ s/,$//' "$USERS_FILE"
		echo "  ];$([ "$api" = conversations ] && echo ' api = "conversations";') } );"
		echo '};'
	} >"$file"
}

# ------------------------------------------------------------ one run

declare -A R # results: R[scenario/tool/phase/field]

# run_tool SCENARIO TOOL PHASE: runs one tool once against its database and records R[...].
run_tool() {
	local scen=$1 tool=$2 phase=$3 db=bench_$2 n_users=$users conc cmd=() log
	local tf="$WORK/$scen-$tool-$phase.time" req0 req1 cpu0 cpu1 wal0 wal1 tup0 tup1 status
	local ct0 ct1 schema=ref
	local pgopts=$PGOPTIONS
	[ "$ref_async" = 1 ] && pgopts+=" -c synchronous_commit=off"
	log="$WORK/$scen-$tool-$phase.log"
	case $tool in
	chatsyncd | chatsyncd_dims)
		conc=$concurrency
		write_chatsyncd_config "$WORK/$scen-$tool.conf" "$db" \
			"$([ "$tool" = chatsyncd_dims ] && echo true || echo false)"
		cmd=(env TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$WORK/$scen-$tool.conf" --once)
		;;
	ref2)
		conc=1
		n_users=$ref2_users
		cmd=(env TWILIO_AUTH_TOKEN="$AUTH_TOKEN" PGDATABASE="$db" PGOPTIONS="$pgopts" node "$here/$ref2_js"
			--base-url "$FAKE_URL" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID"
			--users "$USERS_FILE" --page-size "$spage" --limit-users "$n_users")
		;;
	ref3)
		conc=$ref_concurrency
		cmd=(env TWILIO_AUTH_TOKEN="$AUTH_TOKEN" PGDATABASE="$db" PGOPTIONS="$pgopts" node "$here/$ref3_js"
			--base-url "$FAKE_URL" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID"
			--users "$USERS_FILE" --page-size "$spage" --concurrency "$conc")
		;;
	esac
	if [ "$phase" = initial ]; then
		q postgres "DROP DATABASE IF EXISTS $db" >/dev/null
		q postgres "CREATE DATABASE $db" >/dev/null
	fi
	# The resync starts from a settled database: vacuumed, analyzed, no autovacuum pending.
	if [ "$phase" = resync ]; then q "$db" "VACUUM (ANALYZE)" >/dev/null; fi
	wait_autovacuum
	q postgres "CHECKPOINT" >/dev/null
	req0=$(wc -l <"$FAKE_LOG")
	cpu0=$(pg_cpu_ticks)
	wal0=$(q postgres "SELECT pg_current_wal_lsn()")
	tup0=$(tuples_written "$db")
	[ "$tool" != "${tool#chatsyncd}" ] && schema=chatsync
	ct0=$(data_tuples "$db" "$schema")

	printf '# %-8s %-10s %-8s %6d users ... ' "$scen" "$tool" "$phase" "$n_users"
	status=0
	"$TIME" -f '%e %U %S %M' -o "$tf" "${cmd[@]}" >"$log" 2>&1 || status=$?
	wait_sessions_gone "$db"
	req1=$(wc -l <"$FAKE_LOG")
	cpu1=$(pg_cpu_ticks)
	wal1=$(q postgres "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
	tup1=$(tuples_written "$db")
	ct1=$(data_tuples "$db" "$schema")
	if [ "$status" -ne 0 ]; then
		echo "FAILED"
		tail -n 20 "$log" >&2
		die "$tool ($scen, $phase) exited with status $status; log: $log"
	fi

	local wall ucpu scpu rss rows
	read -r wall ucpu scpu rss < <(tail -n 1 "$tf")
	rows=$((n_users * channels))
	verify_run "$scen" "$tool" "$phase" "$db" "$n_users" "$req0" "$req1" "$log"

	local k=$scen/$tool/$phase
	R[$k/users]=$n_users
	R[$k/rows]=$rows
	R[$k/conc]=$conc
	R[$k/wall]=$wall
	R[$k/cpu]=$(awk -v u="$ucpu" -v s="$scpu" 'BEGIN { printf "%.2f", u + s }')
	R[$k/dbcpu]=$(awk -v t=$((cpu1 - cpu0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }')
	R[$k/rss]=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
	R[$k/req]=$((req1 - req0))
	R[$k/written]=$((tup1 - tup0))
	R[$k/wal]=$(awk -v b="$wal1" 'BEGIN { printf "%.1f", b / 1048576 }')
	# ins upd del of the listing's table, then of its past versions
	R[$k/datatup]=$(awk -v a="$ct0" -v b="$ct1" 'BEGIN {
		n = split(a, x); split(b, y)
		for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? " " : ""), y[i] - x[i]
	}')
	echo "${wall} s, ${R[$k/cpu]} s CPU, ${R[$k/dbcpu]} s PostgreSQL CPU, ${R[$k/rss]} MB," \
		"${R[$k/req]} requests, ${R[$k/written]} tuples written"
}

# twin_setup SCENARIO DB TAG: the fake's rows (from bench_expected) written to
# $WORK/SCENARIO.rows, and a fresh database DB with chatsyncd's schema and an
# empty twin of its table, public.twin (CREATE TABLE ... (LIKE ... INCLUDING
# ALL): its columns, defaults, primary key and indexes; no trigger, no
# foreign key).
twin_setup() {
	local scen=$1 db=$2 tag=$3
	psql -X -q -v ON_ERROR_STOP=1 -d bench_expected -c "\\copy expected TO '$WORK/$scen.rows'" ||
		die "could not write the rows to $WORK/$scen.rows"
	q postgres "DROP DATABASE IF EXISTS $db" >/dev/null
	q postgres "CREATE DATABASE $db" >/dev/null
	# --migrate asks nothing of the API: no fake runs yet
	FAKE_URL=http://127.0.0.1:1 write_chatsyncd_config "$WORK/$scen-$tag.conf" "$db" false
	TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$WORK/$scen-$tag.conf" --migrate \
		>"$WORK/$scen-$tag.log" 2>&1 || die "chatsyncd --migrate failed; log: $WORK/$scen-$tag.log"
	q "$db" "CREATE TABLE public.twin (LIKE chatsync.$listing_table INCLUDING ALL)" >/dev/null
}

# twin_begin DB: settles the server before a run into DB's twin and notes
# PostgreSQL's CPU, the WAL position and the tuples written so far.
twin_begin() {
	wait_autovacuum
	q postgres "CHECKPOINT" >/dev/null
	TWIN_CPU0=$(pg_cpu_ticks)
	TWIN_WAL0=$(q postgres "SELECT pg_current_wal_lsn()")
	TWIN_TUP0=$(tuples_written "$1")
}

# twin_end SCENARIO TOOL DB CONNECTIONS TIMEFILE: after the run, fails unless
# the twin holds exactly the fake's data, and records the run's numbers
# (TIMEFILE: GNU time's "%e %U %S %M" of the client).
twin_end() {
	local scen=$1 tool=$2 db=$3 conc=$4 tf=$5 k=$1/$2/initial cpu1 wal1 tup1 got want wall ucpu scpu rss
	wait_sessions_gone "$db"
	cpu1=$(pg_cpu_ticks)
	wal1=$(q postgres "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$TWIN_WAL0')")
	tup1=$(tuples_written "$db")
	want=$(fingerprint bench_expected expected)
	got=$(fingerprint "$db" public.twin)
	[ "$got" = "$want" ] || die "$tool ($scen): the twin table differs from the fake's data ($got, want $want)"
	read -r wall ucpu scpu rss < <(tail -n 1 "$tf")
	R[$k/users]=$users
	R[$k/rows]=$((users * channels))
	R[$k/conc]=$conc
	R[$k/wall]=$wall
	R[$k/cpu]=$(awk -v u="$ucpu" -v s="$scpu" 'BEGIN { printf "%.2f", u + s }')
	R[$k/dbcpu]=$(awk -v t=$((cpu1 - TWIN_CPU0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }')
	R[$k/rss]=$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')
	R[$k/req]=0
	R[$k/written]=$((tup1 - TWIN_TUP0))
	R[$k/wal]=$(awk -v b="$wal1" 'BEGIN { printf "%.1f", b / 1048576 }')
	echo "${wall} s, ${R[$k/dbcpu]} s PostgreSQL CPU, ${R[$k/written]} tuples written"
}

# run_copy SCENARIO: the ceiling of one connection: the scenario's rows
# copied with one COPY into an empty twin of chatsyncd's table (twin_setup),
# in a database of its own, committed synchronously (the server default).
run_copy() {
	local scen=$1 db=bench_copy
	twin_setup "$scen" "$db" copy
	twin_begin "$db"
	printf '# %-8s %-10s %-8s %6d users ... ' "$scen" copy initial "$users"
	"$TIME" -f '%e %U %S %M' -o "$WORK/$scen-copy-initial.time" psql -X -q -v ON_ERROR_STOP=1 -d "$db" \
		-c "\\copy public.twin ($(column_names "$columns")) FROM '$WORK/$scen.rows'" >>"$WORK/$scen-copy.log" 2>&1 ||
		die "the COPY failed; log: $WORK/$scen-copy.log"
	rm -f "$WORK/$scen.rows"
	twin_end "$scen" copy "$db" 1 "$WORK/$scen-copy-initial.time"
}

# run_floor SCENARIO UNIT: the floor of a load that commits every page with
# its rows, as chatsyncd does (UNIT page), or every user's whole listing
# (UNIT listing).  pgbench, from as many connections as chatsyncd's
# --concurrency, runs one transaction per page (or listing): one INSERT ...
# SELECT of its rows (the fake's data, from a table in the same database)
# into an empty twin of chatsyncd's table, with synchronous_commit off, as
# chatsyncd's sessions commit.  No HTTP, no JSON, no array to parse, no
# cursor, page digest, history or run counter.  The connections take the
# pages as chatsyncd's do: each its own users, one after the other, each
# user's pages in order.
run_floor() {
	local scen=$1 unit=$2 db=bench_floor tool=floor cols slots tx pages=$(((channels + spage - 1) / spage))
	# slot: a transaction's rows, numbered in the order the connections take
	# them (client c takes slots c + 1, c + 1 + C, ...): each group of C
	# users (u / C) holds C × pages slots, page p of user u being slot
	# p × C + u % C + 1 in its group; or user u, alone, slot u + 1.  A slot
	# of no row (the last group's users missing) is an empty transaction.
	local slot="(u / $concurrency) * $((pages * concurrency)) + p * $concurrency + u % $concurrency + 1"
	[ "$unit" = listing ] && tool=floor_listing slot="u + 1"
	local script=$WORK/$scen-$tool.sql
	if [ ! -x "$PG_BINDIR/pgbench" ]; then
		echo "# $scen $tool: pgbench not found in $PG_BINDIR: left out"
		return 0
	fi
	cols=$(column_names "$columns")
	twin_setup "$scen" "$db" "$tool"
	q "$db" "CREATE TABLE public.incoming (ord bigint GENERATED ALWAYS AS IDENTITY, $columns)" >/dev/null
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "\\copy public.incoming ($cols) FROM '$WORK/$scen.rows'" ||
		die "could not load the rows into $db"
	rm -f "$WORK/$scen.rows"
	q "$db" "CREATE TABLE public.pages AS
		SELECT $slot AS slot, $cols
		  FROM (SELECT *, dense_rank() OVER (ORDER BY user_sid) - 1 AS u,
		               (row_number() OVER (PARTITION BY user_sid ORDER BY ord) - 1) / $spage AS p
		          FROM public.incoming) i;
		CREATE INDEX ON public.pages (slot);
		DROP TABLE public.incoming" >/dev/null
	q "$db" "VACUUM ANALYZE public.pages" >/dev/null
	slots=$(q "$db" "SELECT max(slot) FROM public.pages")
	tx=$(q "$db" "SELECT count(DISTINCT slot) FROM public.pages")
	{
		echo "\\set slot :client_id + 1 + :n * $concurrency"
		echo '\set n :n + 1'
		echo "INSERT INTO public.twin ($cols) SELECT $cols FROM public.pages WHERE slot = :slot;"
	} >"$script"
	twin_begin "$db"
	printf '# %-8s %-10s %-8s %6d users, %d transactions ... ' "$scen" "$tool" initial "$users" "$tx"
	PGOPTIONS="$PGOPTIONS -c synchronous_commit=off" "$TIME" -f '%e %U %S %M' -o "$WORK/$scen-$tool-initial.time" \
		"$PG_BINDIR/pgbench" -n -M prepared -f "$script" -D n=0 -c "$concurrency" -j "$(nproc)" \
		-t $(((slots + concurrency - 1) / concurrency)) "$db" >>"$WORK/$scen-$tool.log" 2>&1 ||
		die "pgbench failed; log: $WORK/$scen-$tool.log"
	twin_end "$scen" "$tool" "$db" "$concurrency" "$WORK/$scen-$tool-initial.time"
	q postgres "DROP DATABASE $db" >/dev/null
}

# Fails loudly unless the tool's table holds exactly the fake's rows, none
# marked deleted, and the fake served exactly the expected requests of the
# scenario's listing, all with status 200.
verify_run() {
	local scen=$1 tool=$2 phase=$3 db=$4 n_users=$5 req0=$6 req1=$7 log=$8
	local table=ref.$listing_table want got where= pages bad dim_req=0 listed
	[ "$tool" != "${tool#chatsyncd}" ] && table=chatsync.$listing_table
	if [ "$tool" = chatsyncd_dims ]; then
		# the service, then the users and the channels a page of 1000 at a time
		dim_req=$((1 + (dim_users + 999) / 1000 + (dim_users * channels + 999) / 1000))
		got=$(q "$db" "SELECT (SELECT count(*) FROM chatsync.users WHERE deleted_at IS NULL) || ' ' ||
			(SELECT count(*) FROM chatsync.channels WHERE deleted_at IS NULL) || ' ' ||
			(SELECT count(*) FROM chatsync.services)")
		[ "$got" = "$dim_users $((dim_users * channels)) 1" ] ||
			die "$tool ($scen, $phase): users, channels and services hold $got, want $dim_users $((dim_users * channels)) 1"
	fi
	[ "$n_users" -lt "$users" ] && where="user_sid <= '$(user_sid "$n_users")'"
	want=$(fingerprint bench_expected expected "$where")
	got=$(fingerprint "$db" "$table")
	if [ "${got%% *}" != $((n_users * channels)) ]; then
		die "$tool ($scen, $phase): $table holds ${got%% *} rows, not $n_users x $channels = $((n_users * channels)); log: $log"
	fi
	[ "$got" = "$want" ] || die "$tool ($scen, $phase): $table differs from the fake's data ($got, want $want)"
	got=$(q "$db" "SELECT count(*) FROM $table WHERE deleted_at IS NOT NULL")
	[ "$got" = 0 ] || die "$tool ($scen, $phase): $table marks $got rows deleted"
	pages=$(((channels + spage - 1) / spage))
	[ "$pages" -ge 1 ] || pages=1
	[ $((req1 - req0)) -eq $((n_users * pages + dim_req)) ] ||
		die "$tool ($scen, $phase): $((req1 - req0)) requests, expected $n_users x $pages + $dim_req"
	listed=$(tail -n +$((req0 + 1)) "$FAKE_LOG" | head -n $((req1 - req0)) |
		awk -F'\t' -v p="^/v1/Services/$SERVICE_SID/Users/[^/?]+/$listing_path([?]|\$)" '$4 ~ p' | wc -l)
	[ "$listed" -eq $((n_users * pages)) ] ||
		die "$tool ($scen, $phase): $listed requests of users' $listing_path, expected $n_users x $pages"
	bad=$(tail -n +$((req0 + 1)) "$FAKE_LOG" | head -n $((req1 - req0)) | awk -F'\t' '$1 != 200' | wc -l)
	[ "$bad" -eq 0 ] || die "$tool ($scen, $phase): $bad requests were not answered 200 (see $FAKE_LOG)"
	if [ "$tool" != "${tool#chatsyncd}" ]; then
		local run
		run=$(q "$db" "SELECT users_ok, users_failed, rows_inserted, rows_updated, rows_unchanged
			FROM chatsync.sync_runs WHERE finished_at IS NOT NULL ORDER BY run_id DESC LIMIT 1")
		if [ "$phase" = initial ]; then want="$n_users|0|$((n_users * channels))|0|0"; else want="$n_users|0|0|0|$((n_users * channels))"; fi
		[ "$run" = "$want" ] ||
			die "chatsyncd ($scen, $phase): sync_runs says ok|failed|inserted|updated|unchanged = $run, want $want"
	fi
}

# ------------------------------------------------------------ one scenario

# Sets the scenario's sizes and its API's: api, columns, listing_table,
# listing_path, the references' scripts and spage, the PageSize of every tool.
run_scenario() {
	local scen=$1 i tool phase
	case $scen in
	latency) users=10000 channels=20 latency=50 ;;
	cpu) users=2000 channels=500 latency=0 ;;
	conversations) users=2000 channels=250 latency=0 ;;
	conversations-latency) users=10000 channels=60 latency=50 ;;
	esac
	api=ip_messaging_v1 columns=$V1_COLUMNS listing_table=user_channels listing_path=Channels
	past_table=user_channel_past_versions
	ref2_js=ref_naive.js ref3_js=ref_pooled.js spage=$page_size
	if [ "$scen" != "${scen#conversations}" ]; then
		# Conversations pages a user's conversations 50 at a time at most (chatsyncd too).
		api=conversations columns=$CONV_COLUMNS listing_table=user_conversations
		past_table=user_conversation_past_versions
		listing_path=Conversations ref2_js=ref_conv_naive.js ref3_js=ref_conv_pooled.js
		[ "$spage" -le 50 ] || spage=50
	fi
	ref2_users=0
	if [ "$quick" = 1 ]; then
		case $scen in
		latency) users=200 ;;
		cpu) users=100 ref2_users=20 ;;
		conversations) users=100 ref2_users=20 ;;
		conversations-latency) users=200 ref2_users=50 ;;
		esac
	fi
	users=${o_users:-$users}
	channels=${o_channels:-$channels}
	latency=${o_latency:-$latency}
	dim_users=${o_dim_users:-$(((10000 + channels - 1) / channels))}
	case ${o_ref2_users:-} in
	'') ;;
	*=*) [[ ,$o_ref2_users, =~ ,$scen=([0-9]+), ]] && ref2_users=${BASH_REMATCH[1]} ;;
	*) ref2_users=$o_ref2_users ;;
	esac
	[ "$users" -ge 1 ] || die "--users must be at least 1"
	if [ "$ref2_users" -eq 0 ] || [ "$ref2_users" -gt "$users" ]; then ref2_users=$users; fi

	USERS_FILE=$WORK/$scen.users
	for i in $(seq "$users"); do user_sid "$i"; echo; done >"$USERS_FILE"

	FAKE_LOG=$WORK/$scen.requests
	: >"$FAKE_LOG"
	echo "# scenario $scen: $users users x $channels ${listing_path,,} per user ($api), ${latency} ms latency," \
		"page size $spage"
	load_expected || die "could not load the expected data"

	S[$scen]="$users $channels $latency $ref2_users $dim_users $spage $api"
	# the ceiling of one connection, where the API's latency is not what counts
	[ "$latency" = 0 ] && [ "$skip_copy" = 0 ] && run_copy "$scen"
	# the floor of a load committing each page with its rows, and each listing
	if [ "$latency" = 0 ] && [ "$skip_floor" = 0 ]; then
		run_floor "$scen" page
		# (a listing on one page is the same)
		[ "$channels" -gt "$spage" ] && run_floor "$scen" listing
	fi
	for tool in chatsyncd chatsyncd_dims ref2 ref3; do
		# the dimension listings: IP Messaging's scenarios only
		[ "$tool" = chatsyncd_dims ] && { [ "$skip_dims" = 1 ] || [ "$api" = conversations ]; } && continue
		[ "$tool" = ref2 ] && [ "$skip_ref2" = 1 ] && continue
		[ "$tool" = ref3 ] && [ "$skip_ref3" = 1 ] && continue
		fake_restart "$scen" "$channels" "$latency" "$dim_users"
		for phase in initial resync; do
			run_tool "$scen" "$tool" "$phase"
		done
	done

	fake_stop_bench
}

fake_stop_bench() {
	[ -n "$FAKE_PID" ] || return 0
	kill "$FAKE_PID"
	wait "$FAKE_PID" 2>/dev/null || true
	FAKE_PID=
}

# fake_restart SCENARIO CHANNELS LATENCY DIM_USERS: a fresh fake API for the
# next tool, so that each tool's initial load finds no page rendered yet.
# Without latency the fake serves the pages it rendered again from memory
# (--cache-bodies, README.md): each tool's resync gets them so.
fake_restart() {
	local scen=$1 channels=$2 latency=$3 dim_users=$4 cache=()
	fake_stop_bench
	[ "$latency" = 0 ] && cache=(--cache-bodies)
	fake_api_start "$FAKE_TWILIO" "$WORK" "fake-$scen" --account-sid "$ACCOUNT_SID" \
		--auth-token "$AUTH_TOKEN" --channels "$channels" --seed 1 --latency-ms "$latency" \
		--user-count "$dim_users" --threads "$fake_threads" --log "$FAKE_LOG" "${cache[@]}" ||
		die "could not start the fake API"
	echo "# fake API at $FAKE_URL${cache:+ (${cache[*]})}"
}

# ------------------------------------------------------------ report

fmt() { awk -v x="$1" -v f="$2" 'BEGIN { printf f, x }'; }

# ratio A B: A / B, two decimals
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (b <= 0) { printf "n/a"; exit }
		r = a / b
		if (r >= 10) printf "%.0f", r; else if (r >= 0.1) printf "%.2f", r; else printf "%.2g", r
	}'
}

tool_label() {
	case $1 in
	chatsyncd) echo "chatsyncd (C=$concurrency)" ;;
	chatsyncd_dims) echo "chatsyncd (C=$concurrency), sync.dimensions on" ;;
	ref2) echo "ref2 naive (sequential)" ;;
	ref3) echo "ref3 pooled (R=$ref_concurrency)" ;;
	copy) echo "COPY into an empty twin table, one connection" ;;
	floor) echo "pgbench: one INSERT of a page per transaction (C=$concurrency)" ;;
	floor_listing) echo "pgbench: one INSERT of a user's listing per transaction (C=$concurrency)" ;;
	esac
}

# The row of one run; ref2 on a subset is extrapolated to all users.
report_row() {
	local scen=$1 tool=$2 phase=$3 k=$1/$2/$3 f=1 note= wall cpu dbcpu req written wal ideal vs
	local users channels latency ref2_users dim_users spage api
	read -r users channels latency ref2_users dim_users spage api <<<"${S[$scen]}"
	[ -n "${R[$k/wall]:-}" ] || return 0
	if [ "${R[$k/users]}" -lt "$users" ]; then
		f=$(awk -v a="$users" -v b="${R[$k/users]}" 'BEGIN { print a / b }')
		note=" *extrapolated ×$(fmt "$f" %.0f) from ${R[$k/users]} users*"
		extrapolated=1
	fi
	# node's start-up (loading the libraries) happens once, however many users
	wall=$(fmt "$(awk -v w="${R[$k/wall]}" -v f="$f" -v s="$NODE_START_WALL" \
		'BEGIN { if (s > w) s = w; print s + (w - s) * f }')" %.2f)
	cpu=$(fmt "$(awk -v w="${R[$k/cpu]}" -v f="$f" -v s="$NODE_START_CPU" \
		'BEGIN { if (s > w) s = w; print s + (w - s) * f }')" %.2f)
	dbcpu=$(fmt "$(awk -v w="${R[$k/dbcpu]}" -v f="$f" 'BEGIN { print w * f }')" %.2f)
	req=$(fmt "$(awk -v w="${R[$k/req]}" -v f="$f" 'BEGIN { print w * f }')" %.0f)
	written=$(fmt "$(awk -v w="${R[$k/written]}" -v f="$f" 'BEGIN { print w * f }')" %.0f)
	wal=$(fmt "$(awk -v w="${R[$k/wal]}" -v f="$f" 'BEGIN { print w * f }')" %.1f)
	R[$k/xwall]=$wall R[$k/xcpu]=$cpu R[$k/xdbcpu]=$dbcpu
	vs=-
	if [ "$latency" -gt 0 ]; then
		ideal=$(awk -v r="$req" -v l="$latency" -v c="${R[$k/conc]}" 'BEGIN { printf "%.2f", r * l / 1000 / c }')
		vs="$(ratio "$wall" "$ideal") × ($ideal s)"
	fi
	printf '| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
		"$(tool_label "$tool")" "$note" "$phase" "$((users * channels))" "$wall" \
		"$(fmt "$(awk -v r="${R[$k/rows]}" -v w="${R[$k/wall]}" 'BEGIN { print (w > 0 ? r / w : 0) }')" %.0f)" \
		"$cpu" "$dbcpu" "${R[$k/rss]}" "$req" "$written" "$wal" "$vs"
}

# "chatsyncd ÷ other" comparison lines of one phase.
report_ratios() {
	local scen=$1 phase=$2 c=$1/chatsyncd/$2 o
	[ -n "${R[$c/wall]:-}" ] || return 0
	o=$scen/chatsyncd_dims/$phase
	if [ -n "${R[$o/wall]:-}" ]; then
		echo "- $phase, sync.dimensions on ÷ off: wall $(ratio "${R[$o/wall]}" "${R[$c/wall]}")," \
			"CPU $(ratio "${R[$o/cpu]}" "${R[$c/cpu]}"), PostgreSQL CPU $(ratio "${R[$o/dbcpu]}" "${R[$c/dbcpu]}")," \
			"peak RSS $(ratio "${R[$o/rss]}" "${R[$c/rss]}")"
	fi
	o=$scen/ref2/$phase
	if [ -n "${R[$o/xwall]:-}" ]; then
		echo "- $phase, chatsyncd ÷ ref2: wall $(ratio "${R[$c/wall]}" "${R[$o/xwall]}")" \
			"(ref2 takes $(ratio "${R[$o/xwall]}" "${R[$c/wall]}")× as long)"
	fi
	o=$scen/ref3/$phase
	if [ -n "${R[$o/xwall]:-}" ]; then
		echo "- $phase, chatsyncd ÷ ref3: wall $(ratio "${R[$c/wall]}" "${R[$o/xwall]}")," \
			"CPU $(ratio "${R[$c/cpu]}" "${R[$o/xcpu]}")," \
			"CPU incl. PostgreSQL $(ratio "$(awk -v a="${R[$c/cpu]}" -v b="${R[$c/dbcpu]}" 'BEGIN { print a + b }')" \
				"$(awk -v a="${R[$o/xcpu]}" -v b="${R[$o/xdbcpu]}" 'BEGIN { print a + b }')")," \
			"peak RSS $(ratio "${R[$c/rss]}" "${R[$o/rss]}")"
	fi
}

# The initial load against the COPY ceiling and the floors, a line each.
report_twin_ratios() {
	local scen=$1 c=$1/chatsyncd/initial o tool what
	[ -n "${R[$c/wall]:-}" ] || return 0
	for tool in copy floor floor_listing; do
		o=$scen/$tool/initial
		[ -n "${R[$o/wall]:-}" ] || continue
		case $tool in
		copy) what="one COPY into a twin table" ;;
		floor) what="a page's INSERT per transaction alone (pgbench)" ;;
		floor_listing) what="a listing's INSERT per transaction alone (pgbench)" ;;
		esac
		echo "- initial, chatsyncd ÷ $what: rows/s $(ratio "$(rows_per_s "$c")" "$(rows_per_s "$o")")," \
			"PostgreSQL CPU $(ratio "${R[$c/dbcpu]}" "${R[$o/dbcpu]}"), WAL $(ratio "${R[$c/wal]}" "${R[$o/wal]}")"
	done
}

# rows_per_s K: rows/s of run K (scenario/tool/phase), as measured
rows_per_s() { fmt "$(awk -v r="${R[$1/rows]}" -v w="${R[$1/wall]}" 'BEGIN { print (w > 0 ? r / w : 0) }')" %.0f; }

# The tuples a run wrote to the Conversations tables, as measured (ref2 on
# its users only): user_conversations, then user_conversation_past_versions.
report_conversation_tuples() {
	local scen=$1 tool phase k t past
	echo "Tuples written to the Conversations tables, inserted / updated / deleted" \
		"(pg_stat_user_tables; the references keep no past versions):"
	echo
	echo "| tool | run | users | user_conversations | user_conversation_past_versions |"
	echo "| --- | --- | ---: | ---: | ---: |"
	for tool in chatsyncd ref2 ref3; do
		for phase in initial resync; do
			k=$scen/$tool/$phase
			[ -n "${R[$k/datatup]:-}" ] || continue
			read -r -a t <<<"${R[$k/datatup]}"
			past="${t[3]} / ${t[4]} / ${t[5]}"
			[ "$tool" = chatsyncd ] || past=-
			echo "| $(tool_label "$tool") | $phase | ${R[$k/users]} | ${t[0]} / ${t[1]} / ${t[2]} | $past |"
		done
	done
	echo
}

# target NAME OK DETAIL: one pass/fail line of the targets (OK: 1 if met)
target() {
	if [ "$2" = 1 ]; then echo "- PASS: $1 ($3)"; else echo "- FAIL: $1 ($3)"; fi
}

# target_resync_writes_nothing SCENARIO: chatsyncd's unchanged resync wrote no
# tuple to the scenario's table nor to its past versions.
target_resync_writes_nothing() {
	local x tables="user_channels nor user_channel_past_versions"
	[ "${S[$1]##* }" = conversations ] && tables="user_conversations nor user_conversation_past_versions"
	x=$(awk -v t="${R[$1/chatsyncd/resync/datatup]}" 'BEGIN { n = split(t, a); for (i = 1; i <= n; i++) s += a[i]; print s + 0 }')
	target "unchanged resync writes no tuple to $tables" \
		"$([ "$x" -eq 0 ] && echo 1)" "$x tuples"
}

# target_rss SCENARIO PHASE: chatsyncd's peak RSS in that run at most 20 MB.
target_rss() {
	local rss=${R[$1/chatsyncd/$2/rss]}
	target "$2: peak RSS ≤ 20 MB" "$(awk -v m="$rss" 'BEGIN { if (m + 0 <= 20) print 1 }')" "$rss MB"
}

# The targets of chatsyncd in the cpu and Conversations scenarios, as pass/fail lines.
report_targets() {
	local scen=$1 users=$2 channels=$3 latency=$4 spage=$5 k r ideal x rss sizes=1 phase
	[ -n "${R[$scen/chatsyncd/initial/wall]:-}" ] || return 0
	case $scen in
	cpu) [ "$users $channels $latency $spage" = "2000 500 0 1000" ] || sizes=0 ;;
	conversations) [ "$users $channels $latency $spage" = "2000 250 0 50" ] || sizes=0 ;;
	conversations-latency) [ "$users $channels $latency $spage" = "10000 60 50 50" ] || sizes=0 ;;
	esac
	[ "$concurrency" = 16 ] || sizes=0
	echo "Targets of chatsyncd$([ "$sizes" = 1 ] ||
		echo " (this run's sizes or options are not the targets': indicative only)"):"
	echo
	case $scen in
	cpu)
		k=$scen/chatsyncd/initial
		if [ -n "${R[$scen/ref3/initial/wall]:-}" ]; then
			x=$(ratio "${R[$k/dbcpu]}" "${R[$scen/ref3/initial/dbcpu]}")
			target "initial: PostgreSQL CPU per loaded row ≤ ref3's" \
				"$(awk -v a="${R[$k/dbcpu]}" -v b="${R[$scen/ref3/initial/dbcpu]}" 'BEGIN { if (a <= b) print 1 }')" \
				"${R[$k/dbcpu]} s ÷ ${R[$scen/ref3/initial/dbcpu]} s = $x, the same rows"
			x=$(ratio "${R[$k/wall]}" "${R[$scen/ref3/initial/wall]}")
			target "initial: wall ≤ 0.8 × ref3's" \
				"$(awk -v a="${R[$k/wall]}" -v b="${R[$scen/ref3/initial/wall]}" 'BEGIN { if (a <= 0.8 * b) print 1 }')" \
				"${R[$k/wall]} s ÷ ${R[$scen/ref3/initial/wall]} s = $x"
		fi
		if [ -n "${R[$scen/copy/initial/wall]:-}" ]; then
			x=$(awk -v a="$(rows_per_s "$k")" -v b="$(rows_per_s "$scen/copy/initial")" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
			target "initial: ≥ 1.3 × the rows/s of one COPY into a twin table" \
				"$(awk -v x="$x" 'BEGIN { if (x + 0 >= 1.3) print 1 }')" \
				"$(rows_per_s "$k") ÷ $(rows_per_s "$scen/copy/initial") rows/s = $x"
		fi
		k=$scen/chatsyncd/resync
		r=$(rows_per_s "$k")
		target "unchanged resync ≥ 250000 rows/s" "$([ "$r" -ge 250000 ] && echo 1)" "$r rows/s"
		target_resync_writes_nothing "$scen"
		target_rss "$scen" initial
		target_rss "$scen" resync
		;;
	conversations)
		k=$scen/chatsyncd/initial
		r=$(rows_per_s "$k")
		x=
		[ -n "${R[$scen/floor/initial/wall]:-}" ] &&
			x="; a page's INSERT per transaction alone: $(rows_per_s "$scen/floor/initial") rows/s"
		[ -n "${R[$scen/floor_listing/initial/wall]:-}" ] &&
			x="$x; a listing's: $(rows_per_s "$scen/floor_listing/initial") rows/s"
		target "initial load ≥ 50000 rows/s" "$([ "$r" -ge 50000 ] && echo 1)" "$r rows/s$x"
		k=$scen/chatsyncd/resync
		r=$(rows_per_s "$k")
		target "unchanged resync ≥ 200000 rows/s" "$([ "$r" -ge 200000 ] && echo 1)" "$r rows/s"
		target_resync_writes_nothing "$scen"
		;;
	conversations-latency)
		for phase in initial resync; do
			k=$scen/chatsyncd/$phase
			ideal=$(awk -v r="${R[$k/req]}" -v l="$latency" -v c="${R[$k/conc]}" 'BEGIN { print r * l / 1000 / c }')
			x=$(awk -v w="${R[$k/wall]}" -v i="$ideal" 'BEGIN { printf "%.3f", (i > 0 ? w / i : 0) }')
			target "$phase: wall ≤ 1.15 × ideal (pages × latency ÷ concurrency)" \
				"$(awk -v x="$x" 'BEGIN { if (x + 0 > 0 && x + 0 <= 1.15) print 1 }')" \
				"$x × $(fmt "$ideal" %.2f) s = ${R[$k/wall]} s"
			target_rss "$scen" "$phase"
		done
		;;
	esac
}

report() {
	local scen users channels latency ref2_users dim_users spage api phase tool noun
	echo "# chatsyncd benchmark"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- machine: $(nproc) CPUs, $(grep -m 1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
		"$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM," \
		"Linux $(uname -r), /tmp on $(df -P /tmp | awk 'NR == 2 { print $1 }')" \
		"($(findmnt -no FSTYPE --target /tmp 2>/dev/null || echo '?'))"
	echo "- software: $("$CHATSYNCD" --version 2>&1 | head -n 1)" \
		"($GIT_REV)," \
		"$("$PG_BINDIR/postgres" --version)$([ -n "$scenarios" ] && echo ", node $(node --version)," \
			"twilio $(node -p "require('$here/node_modules/twilio/package.json').version")," \
			"pg $(node -p "require('$here/node_modules/pg/package.json').version")")"
	echo "- PostgreSQL: $PG_SETTINGS (defaults; unix socket only)"
	[ -n "$scenarios" ] || return 0
	local page_note=
	[[ " $scenarios " == *" conversations"* ]] && [ "$page_size" -gt 50 ] &&
		page_note=" (50 in the Conversations scenarios, the API's most)"
	echo "- options: page size $page_size$page_note, chatsyncd concurrency $concurrency, ref3 concurrency" \
		"$ref_concurrency, fake API threads $fake_threads (when latency is 0); a fake API started afresh" \
		"for each tool, serving the pages it rendered from memory (--cache-bodies) when latency is 0$([ "$quick" = 1 ] && echo ', --quick')"
	local cs_commit
	cs_commit=$(grep -a -o -m 1 'SET synchronous_commit TO [a-z]*' "$CHATSYNCD" | head -n 1 || true)
	echo "- commits: chatsyncd $([ -n "$cs_commit" ] && echo "runs \"$cs_commit\" in its session" || echo 'uses the server default');" \
		"the references commit $([ "$ref_async" = 1 ] && echo 'with synchronous_commit=off too (--ref-async-commit)' || echo 'synchronously (the server default)')"
	for scen in $scenarios; do
		[ -n "${S[$scen]:-}" ] || continue
		read -r users channels latency ref2_users dim_users spage api <<<"${S[$scen]}"
		noun=channels
		[ "$api" = conversations ] && noun=conversations
		echo
		echo "## Scenario $scen: $users users × $channels $noun = $((users * channels)) rows, ${latency} ms per response"
		echo
		if [ "$api" = conversations ]; then
			echo "Through the Conversations API (\`api = \"conversations\"\`), into \`user_conversations\`:" \
				"$(((channels + spage - 1) / spage)) pages of up to $spage per user."
		elif [ "$skip_dims" = 0 ]; then
			echo "With sync.dimensions on, chatsyncd also lists the service, $dim_users users and" \
				"$((dim_users * channels)) channels (the fake's own, besides the users synced)."
		fi
		echo
		echo "| tool | run | rows | wall s | rows/s | CPU s | PostgreSQL CPU s | peak RSS MB | HTTP requests | tuples written | WAL MB | wall ÷ ideal |"
		echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
		for tool in chatsyncd chatsyncd_dims ref2 ref3 copy floor floor_listing; do
			for phase in initial resync; do
				report_row "$scen" "$tool" "$phase"
			done
		done
		echo
		for phase in initial resync; do
			report_ratios "$scen" "$phase"
		done
		report_twin_ratios "$scen"
		if [ "$api" = conversations ]; then
			echo
			report_conversation_tuples "$scen"
		fi
		case $scen in
		cpu | conversations*)
			echo
			report_targets "$scen" "$users" "$channels" "$latency" "$spage"
			;;
		esac
	done
	echo
	if [ "$extrapolated" = 1 ]; then
		echo "*Extrapolated*: ref2 ran on the first N users only. Its wall time and CPU are node's start-up"
		echo "(${NODE_START_WALL} s, ${NODE_START_CPU} s CPU, measured once) plus the rest × users ÷ N; PostgreSQL"
		echo "CPU, requests, tuples written and WAL are × users ÷ N; rows/s and peak RSS are as measured."
		echo
	fi
	echo "Columns are explained in tests/bench/README.md. Every run was checked: its table holds"
	echo "exactly users × channels (or conversations) rows, none marked deleted, equal to the fake"
	echo "API's data, and the fake answered exactly one request per user and page, all with status 200."
}

declare -A S # S[scenario] = "users channels latency ref2_users dim_users spage api"
extrapolated=0
for scen in $scenarios; do
	run_scenario "$scen"
done
report | tee "$out"

# The write path alone (write_modes.c): one unnest statement per page vs. a
# pipeline of row statements, on the same cluster, in a database of its own.
write_path() {
	local wm_users=200
	[ "$quick" = 1 ] && wm_users=20
	q postgres "DROP DATABASE IF EXISTS bench_write_modes" >/dev/null
	q postgres "CREATE DATABASE bench_write_modes" >/dev/null
	wait_autovacuum
	q postgres "CHECKPOINT" >/dev/null
	echo "# write path: unnest vs. pipeline, $wm_users users x 500 channels"
	"$WRITE_MODES" --conninfo "dbname=bench_write_modes" --users "$wm_users" --channels 500 \
		>"$WORK/write-modes.md" 2>"$WORK/write-modes.log" ||
		{ cat "$WORK/write-modes.log" >&2; die "write_modes failed; log: $WORK/write-modes.log"; }
	{
		echo
		echo "## Write path: one unnest statement vs. a pipeline of row statements"
		echo
		cat "$WORK/write-modes.md"
	} | tee -a "$out"
}
# (with the IP Messaging scenarios: its table is shaped like user_channels)
case " $scenarios " in *" latency "* | *" cpu "*) write_path ;; esac

# The analyst queries (analyst.sh), on the same cluster, in a database of
# their own; the sync databases are dropped first, so that their pages do
# not compete for the cache.
if [ "$analyst" = 1 ]; then
	for db in $(q postgres "SELECT datname FROM pg_database WHERE datname LIKE 'bench\_%'"); do
		q postgres "DROP DATABASE $db" >/dev/null
	done
	wait_autovacuum
	q postgres "CHECKPOINT" >/dev/null
	CHATSYNCD=$CHATSYNCD QUESTIONS=$WORK/questions.sql bash "$here/analyst.sh" --db bench_analyst \
		$([ "$quick" = 1 ] && echo --quick) ${analyst_args[@]+"${analyst_args[@]}"} --out "$out" ||
		die "the analyst scenario failed"
fi
echo "# report written to $out"
if grep -q '^- \(PASS\|FAIL\): ' "$out"; then
	echo "# targets: $(grep -c '^- PASS: ' "$out" || true) met, $(grep -c '^- FAIL: ' "$out" || true) missed" \
		"(see the report)"
fi
finished=1

#!/usr/bin/env bash
# Upgrading a schema written by any released chatsyncd keeps every row, every
# history version and the history's readers, and ends with the schema of a
# fresh install.  For each released schema version N (1 to 4) a database is
# built with the migration files as they were released (tests/data/released,
# 001 to N), written to with that version's sync_page(), and brought to the
# current version by chatsyncd --migrate.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

RELEASED=$top_srcdir/tests/data/released
S=IS0123456789abcdef0123456789ABCDEF
U=US00000000000000000000000000000001
U2=US00000000000000000000000000000002
HIST_COLS="service_sid, user_sid, channel_sid, account_sid, member_sid, status,
	last_consumed_message_index, unread_messages_count, channel_url, member_url, valid_from, valid_to"
# What chatsyncd runs at the end of a sweep: the totals in this order.
FINISH_SQL="SELECT users_ok, users_failed, pages, rows_received, rows_inserted, rows_updated,
	rows_unchanged, rows_deleted, rows_rejected, http_requests, http_retries
	FROM sync_run_finish(\$1::bigint, \$2::integer, \$3::integer)"
finish() { # finish RUN: the end of sweep RUN, with 2 requests and 1 retry
	sql "SET search_path TO chatsync; PREPARE finish AS $FINISH_SQL; EXECUTE finish('$1', '2', '1')"
}
# The columns of user_channels in every version.
CURRENT_COLS="service_sid, user_sid, channel_sid, account_sid, member_sid, status,
	last_consumed_message_index, unread_messages_count, channel_url, member_url, first_seen_at,
	updated_at, deleted_at"
# The columns of sync_cursors in every version.
CURSOR_COLS="service_sid, user_sid, run_id, state, next_page_url, pages_done, last_complete_at,
	last_error, last_error_at, updated_at"

FAKE_URL=http://127.0.0.1:9 write_config "$TEST_TMP/c.conf" "$U" # --migrate makes no request
migrate() { TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/c.conf" --migrate 2>>"$TEST_TMP/err"; }

# schema DB: the schema chatsync of database DB, privileges included, as
# pg_dump writes it (without the random key of \restrict).
schema() {
	"$PG_BINDIR/pg_dump" --schema-only -n chatsync -d "$1" | sed '/^\\\(un\)\{0,1\}restrict /d'
}

# same_schema DB DESCRIPTION: DB's schema is the fresh install's.
same_schema() {
	schema "$1" >"$TEST_TMP/$1.schema"
	# (the order of the grantees of an object is the order the grants were made)
	diff -u <(sort "$TEST_TMP/fresh.schema") <(sort "$TEST_TMP/$1.schema") >"$TEST_TMP/$1.diff"
	ok $? "$2"
	[ -s "$TEST_TMP/$1.diff" ] && diag "$(head -n 40 "$TEST_TMP/$1.diff")"
	return 0
}

differ() { # differ A B: rows in one and not the other, both ways
	sql "SELECT (SELECT count(*) FROM ($1 EXCEPT ALL $2) a) + (SELECT count(*) FROM ($2 EXCEPT ALL $1) b)"
}

# A role that may read the history, as the upgrades leave it.
sql "CREATE ROLE upgrade_reader" >/dev/null

# ------------------------------------------------------------ a fresh install

sql "CREATE DATABASE fresh" >/dev/null
PGDATABASE=fresh migrate
is "$?" 0 "--migrate installs the current schema into an empty database"
PGDATABASE=fresh sql "GRANT USAGE ON SCHEMA chatsync TO upgrade_reader;
	GRANT SELECT ON chatsync.user_channel_past_versions, chatsync.user_channel_history TO upgrade_reader"
schema fresh >"$TEST_TMP/fresh.schema"
grep -q 'CREATE FUNCTION chatsync.sync_page(' "$TEST_TMP/fresh.schema" &&
	grep -q 'CREATE VIEW chatsync.user_channel_history' "$TEST_TMP/fresh.schema"
ok $? "the fresh schema has sync_page() and the history view"

# ------------------------------------------------------------ released versions

# build N: database vN at schema version N, as chatsyncd left it, with
# upgrade_reader granted the history table since version 1.
build() {
	local n=$1 f
	sql "CREATE DATABASE v$n" >/dev/null
	{
		echo "CREATE SCHEMA chatsync; SET search_path = chatsync;"
		echo "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
		echo "  applied_at timestamptz NOT NULL DEFAULT now());"
		for f in $(cd "$RELEASED" && ls -- *.sql | head -n "$n"); do
			cat "$RELEASED/$f"
			f=${f%.sql}
			echo "INSERT INTO schema_migrations (version, name) VALUES (${f:0:3}::integer, '$f');"
			[ "$f" = 001_initial ] || continue
			echo "GRANT USAGE ON SCHEMA chatsync TO upgrade_reader;"
			echo "GRANT SELECT ON user_channel_history TO upgrade_reader;"
		done
	} | PGDATABASE=v$n psql -X -q -v ON_ERROR_STOP=1 >/dev/null
}

# page N RUN FIRST NEXT 'ch1,ch2' 'unread1,unread2': one call of version N's
# sync_page() (version 1's takes no digest); NEXT - for the last page.
page() {
	local next=NULL digest=", NULL"
	[ "$4" = - ] || next="'$4'"
	[ "$1" -gt 1 ] || digest=
	sql "SELECT * FROM chatsync.sync_page($2, '$S', '$U', $3, $next,
		'{$5}'::text[], NULL::text[], NULL::text[], NULL::text[], NULL::bigint[], '{$6}'::bigint[],
		NULL::text[], NULL::text[], 0, 1, 0 $digest)" >/dev/null
}
run() { sql "INSERT INTO chatsync.sync_runs DEFAULT VALUES RETURNING run_id"; }

# fill N: sweeps written by version N, the last one in progress.
fill() {
	local r
	r=$(run); page "$1" "$r" true - CH1,CH2,CH3 0,0,0
	sleep 0.01
	r=$(run); page "$1" "$r" true - CH1,CH2,CH3 5,0,0 # CH1 changes
	sql "SELECT chatsync.sync_user_failed($r, '$S', '$U2', 'HTTP 500', 3, 2)" >/dev/null
	sleep 0.01
	r=$(run); page "$1" "$r" true - CH1,CH3 5,2 # CH2 goes, CH3 changes
	sleep 0.01
	r=$(run); page "$1" "$r" true - CH1,CH2,CH3 5,1,2 # CH2 comes back
	sleep 0.01
	r=$(run); page "$1" "$r" true http://x/2 CH1 6 # a listing in progress: CH1 changes
}

for n in 1 2 3 4; do
	build "$n"
	is "$?" 0 "schema version $n created from tests/data/released"
	export PGDATABASE=v$n
	fill "$n"
	sql "CREATE TABLE public.before_history AS SELECT $HIST_COLS FROM chatsync.user_channel_history;
	     CREATE TABLE public.before_current AS SELECT * FROM chatsync.user_channels;
	     CREATE TABLE public.before_cursors AS SELECT $CURSOR_COLS FROM chatsync.sync_cursors;
	     CREATE TABLE public.before_runs AS SELECT * FROM chatsync.sync_runs;
	     CREATE TABLE public.before_seen AS SELECT * FROM chatsync.sync_seen"
	is "$(sql 'SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL) FROM public.before_history')" "7|3" \
		"version $n holds 7 history versions, 3 of them open"

	migrate
	is "$?" 0 "--migrate upgrades version $n"
	is "$(sql "SELECT string_agg(version || ':' || name, ',' ORDER BY version) FROM chatsync.schema_migrations")" \
		"1:001_initial,2:002_listing_digest,3:003_custom_plans,4:004_current_versions,5:005_writer_fence,6:006_analyst_layer,7:007_analyst_indexes,8:008_dimension_sync,9:009_kept_state,10:010_conversations,11:011_notification_level,12:012_leases,13:013_listing_pages,14:014_page_bodies" \
		"from version $n: every migration recorded, once"
	same_schema "v$n" "from version $n: the schema is that of a fresh install, privileges included"

	is "$(differ "SELECT $HIST_COLS FROM chatsync.user_channel_history" "SELECT * FROM public.before_history")" 0 \
		"from version $n: user_channel_history shows exactly the versions it held before"
	is "$(differ "SELECT $CURRENT_COLS FROM chatsync.user_channels" "SELECT * FROM public.before_current")" 0 \
		"from version $n: user_channels is untouched"
	# (the listings of these versions send no status: nothing was invited or joined)
	is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE first_invited_at IS NOT NULL OR first_joined_at IS NOT NULL")" 0 \
		"from version $n: no membership gets a first invitation or join the history does not show"
	is "$(sql "SELECT string_agg(channel_sid || ':' || members || ':' || unread_messages_count, ',' ORDER BY channel_sid)
	             FROM chatsync.channel_unread_hourly WHERE hour = date_trunc('hour', now())")" \
		"CH1:1:6,CH2:1:1,CH3:1:2" \
		"from version $n: channel_unread_hourly reads the history: each channel as it stands"
	is "$(sql "SELECT count(*) FROM chatsync.sync_user_keys")" "$(sql "SELECT count(*) FROM chatsync.sync_cursors")" \
		"from version $n: every cursor's key is in sync_user_keys"
	is "$(sql "SELECT rebuilt FROM chatsync.sync_kept_state")" t "from version $n: and the rebuild is recorded"
	is "$(sql 'SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL) FROM chatsync.user_channel_past_versions WHERE NOT is_deleted')" "4|0" \
		"from version $n: the 4 ended versions are kept, the open ones live in user_channels only"
	is "$(sql "SELECT string_agg(channel_sid || ':' || valid_from::text || '-' || valid_to::text, ',')
	             FROM chatsync.user_channel_past_versions WHERE is_deleted")" \
	   "$(sql "SELECT 'CH2:' || d.valid_to::text || '-' || b.valid_from::text
	             FROM public.before_history d, public.before_history b
	            WHERE d.channel_sid = 'CH2' AND b.channel_sid = 'CH2' AND b.valid_from > d.valid_to
	            ORDER BY d.valid_to DESC, b.valid_from LIMIT 1")" \
		"from version $n: the time CH2 was gone is recovered as a removal version"
	is "$(sql "SELECT string_agg(event || ':' || channel_sid, ',' ORDER BY at) FROM chatsync.membership_event_log")" \
		"removed:CH2,added:CH2" \
		"from version $n: the history's events are recovered: CH2 removed, then added back"
	is "$(differ "SELECT $CURSOR_COLS FROM chatsync.sync_cursors" "SELECT * FROM public.before_cursors")" 0 \
		"from version $n: cursors are untouched"
	is "$(differ "SELECT * FROM chatsync.sync_runs" "SELECT * FROM public.before_runs")" 0 \
		"from version $n: runs and their counters are untouched"
	is "$(differ "SELECT service_sid, user_sid, unnest(listed) FROM chatsync.sync_listing_pages" "SELECT * FROM public.before_seen")" 0 \
		"from version $n: a listing in progress keeps what it has seen, in sync_listing_pages"
	is "$(sql "SELECT string_agg(p.page_no || ':' || (p.digest IS NULL), ',' ORDER BY p.page_no)
	             FROM chatsync.sync_listing_pages p JOIN chatsync.sync_cursors c USING (service_sid, user_sid)
	            WHERE c.state = 'running'")" \
		"$(sql "SELECT string_agg(g || ':true', ',' ORDER BY g) FROM chatsync.sync_cursors c, generate_series(1, c.pages_done) g
	            WHERE c.state = 'running'")" \
		"from version $n: a row for each page it committed, none with a digest (none is skipped)"
	is "$(sql "SET ROLE upgrade_reader; SELECT count(*) FROM chatsync.user_channel_history")" 7 \
		"from version $n: a role that could read the history can read the view"
	is "$(sql "SELECT count(*) FROM chatsync.user_channel_history WHERE (history_id IS NULL) <> (valid_to IS NULL)")" 0 \
		"from version $n: history_id is NULL exactly for the current versions"

	# The current sync_page() goes on from there: the listing's last page.
	r=$(sql 'SELECT max(run_id) FROM chatsync.sync_runs')
	# (without a lease token, as a tool would: no instance holds the user)
	is "$(sql "SELECT * FROM chatsync.sync_page($r, '$S', '$U', false, NULL,
		'{CH3}'::text[], NULL::text[], NULL::text[], NULL::text[], NULL::bigint[], '{2}'::bigint[],
		NULL::text[], NULL::text[], 0, 1, 0, NULL)")" "0|0|1|1" \
		"from version $n: the listing finishes: CH3 unchanged, CH2 (not listed) deleted"
	is "$(sql "SELECT string_agg(channel_sid || ':' || unread_messages_count || ':' || (valid_to IS NULL), ',' ORDER BY channel_sid, valid_from) FROM chatsync.user_channel_history")" \
		"CH1:0:false,CH1:5:false,CH1:6:true,CH2:0:false,CH2:1:false,CH3:0:false,CH3:2:true" \
		"from version $n: history: every version, the open ones those of live memberships"
	is "$(sql "SELECT count(*) FROM chatsync.user_channel_history h JOIN chatsync.user_channel_history n
		USING (service_sid, user_sid, channel_sid) WHERE n.valid_from > h.valid_from AND n.valid_from < coalesce(h.valid_to, 'infinity')")" 0 \
		"from version $n: no two versions of a membership overlap"
	is "$(sql "SELECT pages, users_ok, rows_received, rows_unchanged, rows_deleted, http_requests
		FROM chatsync.sync_runs WHERE run_id = $r")" "2|1|2|1|1|2" \
		"from version $n: the run counts both pages of the listing"
	is "$(finish "$r")" "1|0|2|2|0|1|1|1|0|4|1" \
		"from version $n: sync_run_finish() adds the last requests and returns the run's totals"
	is "$(sql "SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NOT NULL")" 1 \
		"from version $n: and marks that run finished, only that one"
	is "$(finish $((r + 1)) && echo none)" none "from version $n: sync_run_finish() of no run returns no row"
	unset PGDATABASE
done

# ------------------------------------------------------------ every run

# The functions and views are applied on every run, the migrations once.
export PGDATABASE=fresh
tamper() { # sync_user_failed() replaced, with its signature, by one that does nothing
	sql "CREATE OR REPLACE FUNCTION chatsync.sync_user_failed(p_run_id bigint, p_service text,
	     p_user text, p_error text, p_requests integer, p_retries integer, p_kind text,
	     p_page integer, p_lease bigint DEFAULT NULL)
	     RETURNS boolean LANGUAGE sql AS 'SELECT false'"
}
body() { sql "SELECT prosrc FROM pg_proc WHERE oid = 'chatsync.sync_user_failed'::regproc"; }
tamper
is "$(body)" "SELECT false" "sync_user_failed() tampered with"
migrate
is "$?" 0 "--migrate again"
is "$(sql 'SELECT count(*) FROM chatsync.schema_migrations')" 14 "applies no migration twice"
same_schema fresh "but writes the functions again, and keeps the grants on the view"
sql "INSERT INTO chatsync.schema_migrations VALUES (999, '999_future')"
tamper
migrate
is "$?" 2 "a schema newer than the binary is refused"
is "$(body)" "SELECT false" "and none of its functions is written"
sql "DELETE FROM chatsync.schema_migrations WHERE version = 999"
unset PGDATABASE

done_testing

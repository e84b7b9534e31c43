#!/usr/bin/env bash
# Upgrading a schema written by an older chatsyncd keeps every row and every
# history version: the data is written with the migrations and sync_page() of
# schema version 3, then chatsyncd --migrate brings it to the current version.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

S=IS0123456789abcdef0123456789ABCDEF
U=US00000000000000000000000000000001

# Schema version 3, as chatsyncd 0.1.0 left it.
{
	echo "CREATE SCHEMA chatsync; SET search_path = chatsync;"
	echo "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
	echo "  applied_at timestamptz NOT NULL DEFAULT now());"
	for f in 001_initial 002_listing_digest 003_custom_plans; do
		cat "$top_srcdir/sql/$f.sql"
		echo "INSERT INTO schema_migrations (version, name) VALUES (${f:0:3}::integer, '$f');"
	done
} | psql -X -q -v ON_ERROR_STOP=1 >/dev/null
is "$?" 0 "schema version 3 created from sql/001..003"

# page RUN FIRST NEXT 'ch1,ch2' 'unread1,unread2': one call of version 3's sync_page().
page() {
	local next=NULL
	[ "$3" = - ] || next="'$3'"
	sql "SELECT * FROM chatsync.sync_page($1, '$S', '$U', $2, $next,
		'{$4}'::text[], NULL::text[], NULL::text[], NULL::text[], NULL::bigint[], '{$5}'::bigint[],
		NULL::text[], NULL::text[], 0, 1, 0, NULL)" >/dev/null
}
run() { sql "INSERT INTO chatsync.sync_runs DEFAULT VALUES RETURNING run_id"; }

r=$(run); page "$r" true - CH1,CH2,CH3 0,0,0
sleep 0.01
r=$(run); page "$r" true - CH1,CH2,CH3 5,0,0 # CH1 changes
sleep 0.01
r=$(run); page "$r" true - CH1,CH3 5,2 # CH2 goes, CH3 changes
sleep 0.01
r=$(run); page "$r" true - CH1,CH2,CH3 5,1,2 # CH2 comes back
sleep 0.01
r=$(run); page "$r" true http://x/2 CH1 6 # a listing in progress: CH1 changes
HIST_COLS="service_sid, user_sid, channel_sid, account_sid, member_sid, status,
	last_consumed_message_index, unread_messages_count, channel_url, member_url, valid_from, valid_to"
sql "CREATE TABLE public.before_history AS SELECT $HIST_COLS FROM chatsync.user_channel_history"
sql "CREATE TABLE public.before_current AS SELECT * FROM chatsync.user_channels"
sql "CREATE TABLE public.before_cursors AS SELECT * FROM chatsync.sync_cursors"
is "$(sql 'SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL) FROM public.before_history')" "7|3" \
	"version 3 holds 7 history versions, 3 of them open"
# A reporting role that may read the history table.
sql "DROP ROLE IF EXISTS upgrade_reader; CREATE ROLE upgrade_reader;
     GRANT USAGE ON SCHEMA chatsync TO upgrade_reader;
     GRANT SELECT ON chatsync.user_channel_history TO upgrade_reader" >/dev/null

FAKE_URL=http://127.0.0.1:9 write_config "$TEST_TMP/c.conf" "$U" # --migrate makes no request
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/c.conf" --migrate 2>"$TEST_TMP/err"
is "$?" 0 "--migrate upgrades it"
is "$(sql 'SELECT max(version) FROM chatsync.schema_migrations')" 4 "to version 4"

differ() { # differ A B: rows in one and not the other, both ways
	sql "SELECT (SELECT count(*) FROM ($1 EXCEPT ALL $2) a) + (SELECT count(*) FROM ($2 EXCEPT ALL $1) b)"
}
is "$(differ "SELECT $HIST_COLS FROM chatsync.user_channel_history" "SELECT * FROM public.before_history")" 0 \
	"user_channel_history shows exactly the versions it held before"
is "$(differ "SELECT * FROM chatsync.user_channels" "SELECT * FROM public.before_current")" 0 \
	"user_channels is untouched"
is "$(sql 'SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL) FROM chatsync.user_channel_past_versions')" "4|0" \
	"the 4 ended versions are kept, the open ones now live in user_channels only"
is "$(differ "SELECT service_sid, user_sid, run_id, state, next_page_url, pages_done, listing_digest FROM chatsync.sync_cursors" \
	"SELECT service_sid, user_sid, run_id, state, next_page_url, pages_done, listing_digest FROM public.before_cursors")" 0 \
	"cursors are untouched"
is "$(sql 'SELECT count(*) FROM chatsync.sync_seen')" 1 "a listing in progress keeps what it has seen"
is "$(sql "SET ROLE upgrade_reader; SELECT count(*) FROM chatsync.user_channel_history")" 7 \
	"a role that could read the history table can read the view"
is "$(sql "SELECT count(*) FROM chatsync.user_channel_history WHERE (history_id IS NULL) <> (valid_to IS NULL)")" 0 \
	"history_id is NULL exactly for the current versions"

# The new sync_page() goes on from there: the listing's last page.
r=$(sql 'SELECT max(run_id) FROM chatsync.sync_runs')
sql "SELECT * FROM chatsync.sync_page($r, '$S', '$U', false, NULL,
	'{CH3}'::text[], NULL::text[], NULL::text[], NULL::text[], NULL::bigint[], '{2}'::bigint[],
	NULL::text[], NULL::text[], 0, 1, 0, NULL)" >"$TEST_TMP/out"
is "$(cat "$TEST_TMP/out")" "0|0|1|1" "the listing finishes: CH3 unchanged, CH2 (not listed) deleted"
is "$(sql "SELECT string_agg(channel_sid || ':' || unread_messages_count || ':' || (valid_to IS NULL), ',' ORDER BY channel_sid, valid_from) FROM chatsync.user_channel_history")" \
	"CH1:0:false,CH1:5:false,CH1:6:true,CH2:0:false,CH2:1:false,CH3:0:false,CH3:2:true" \
	"history: every version, the open ones those of live memberships"
is "$(sql "SELECT count(*) FROM chatsync.user_channel_history h JOIN chatsync.user_channel_history n
	USING (service_sid, user_sid, channel_sid) WHERE n.valid_from > h.valid_from AND n.valid_from < coalesce(h.valid_to, 'infinity')")" 0 \
	"no two versions of a membership overlap"

done_testing

#!/usr/bin/env bash
# contrib/grafana/chatsync.json: it parses and every panel has a data source;
# every PromQL expression in it parses (promtool check rules); every SQL query
# in it runs against a database that chatsyncd has synced from the fake API,
# with Grafana's macros and the dashboard's variables replaced by plain SQL.
. "$(dirname "$0")/lib.sh"

DASH=$top_srcdir/contrib/grafana/chatsync.json
command -v jq >/dev/null || skip_all "jq is not installed (Debian package jq)"

show() { sed 's/^/#   /' <<<"$1"; }

# jq definitions: panels (rows' nested panels included, rows left out); the
# data sources __inputs declares, "${NAME}" -> plugin id; a query with the
# dashboard's variables at their defaults ($vars); Grafana's own PromQL
# variables; Grafana's PostgreSQL macros for a fixed range ($from, $to).
JQ_DEFS='
def panels: [.panels[] | ., (.panels // [])[]] | map(select(.type != "row"))[];
def inputs: .__inputs | map(select(.type == "datasource") | {key: "${\(.name)}", value: .pluginId})
	| from_entries;
def vars: [.templating.list[] | {key: .name,
	value: ((.current.value | if type == "array" then .[0] else . end) as $v
		| if $v == "$__all" then (.allValue // ".*") else $v end)}] | from_entries;
def plain($vars): reduce ($vars | to_entries[]) as $v (.;
	gsub("\\$\\{\($v.key)\\}|\\$\($v.key)\\b|\\[\\[\($v.key)\\]\\]"; $v.value));
def promql: gsub("\\$__rate_interval\\b"; "5m") | gsub("\\$__interval\\b"; "1m")
	| gsub("\\$__range\\b"; "1h");
def sql($from; $to):
	gsub("\\$__timeFilter\\((?<c>[^)]*)\\)"; "\(.c) BETWEEN \($from) AND \($to)")
	| gsub("\\$__timeGroupAlias\\((?<c>[^,)]*)(,[^)]*)?\\)"; "date_trunc(\u0027hour\u0027, \(.c)) AS time")
	| gsub("\\$__timeGroup\\((?<c>[^,)]*)(,[^)]*)?\\)"; "date_trunc(\u0027hour\u0027, \(.c))")
	| gsub("\\$__timeFrom\\(\\)"; $from) | gsub("\\$__timeTo\\(\\)"; $to);
'
# q PROGRAM [JQ-OPTIONS]: jq -r PROGRAM, with those definitions, on the dashboard.
q() {
	local prog=$1
	shift
	jq -r "$@" "$JQ_DEFS$prog" "$DASH"
}

# ------------------------------------------------------------ (a) the JSON

if ! jq -e 'type == "object"' "$DASH" >/dev/null; then
	ok 1 "chatsync.json parses as a JSON object"
	done_testing
	exit
fi
ok 0 "chatsync.json parses as a JSON object"

is "$(q '[.__inputs[] | select(.type == "datasource") | .pluginId] | sort | join(" ")')" \
	"grafana-postgresql-datasource prometheus" \
	"__inputs declares a PostgreSQL and a Prometheus data source, as an export does"
q '.schemaVersion >= 36 and (.uid | length) > 0 and .id == null' -e >/dev/null
ok $? "schemaVersion 36 or later, a uid, no id (importable)"
is "$(q 'inputs as $in | panels | select($in[.datasource.uid // ""] != .datasource.type or .datasource.type == null) | .title')" \
	"" "every panel has a data source, one of __inputs and of its type"
is "$(q 'inputs as $in | panels | . as $p | .targets[]
	| select($in[.datasource.uid // ""] != .datasource.type or .datasource.type != $p.datasource.type)
	| "\($p.title) (\(.refId))"')" \
	"" "every query has its panel's data source"
is "$(q 'panels | . as $p | .targets[]
	| select(if .datasource.type == "prometheus" then (.expr // "") == ""
		 else (.rawSql // "") == "" or .rawQuery != true end)
	| "\($p.title) (\(.refId))"')" \
	"" "every Prometheus query has an expr, every PostgreSQL query a rawSql"
is "$(q 'inputs as $in | .templating.list[] | select(.type == "query")
	| select($in[.datasource.uid // ""] != .datasource.type) | .name')" \
	"" "every query variable has a data source of __inputs"
is "$(q '[.panels[] | ., (.panels // [])[] | .id] | group_by(.) | map(select(length > 1) | .[0])[]')" \
	"" "panel ids are unique"
is "$(q '[panels | .description // "" | scan("^\\(([0-9]+)\\)") | .[0] | tonumber] | unique
	| [range(1; 11)] - . | map(tostring) | join(" ")')" \
	"" "a PostgreSQL panel answers each of the ten questions (1) to (10)"
n_prom=$(q '[panels | .targets[] | select(.datasource.type == "prometheus")] | length')
n_sql=$(q '[panels | .targets[] | select(.datasource.type == "grafana-postgresql-datasource")] | length')
diag "$n_prom Prometheus queries, $n_sql PostgreSQL queries"

# ------------------------------------------------------------ (b) PromQL

# Each expression, variables replaced, as a recording rule (JSON is YAML).
q 'vars as $vars | {groups: [{name: "dashboard", rules: [panels | .id as $id | .targets[]
	| select(.datasource.type == "prometheus")
	| {record: "dashboard:panel_\($id)_\(.refId)", expr: (.expr | plain($vars) | promql)}]}]}' \
	>"$TEST_TMP/dashboard.rules.json"
is "$(jq -r '.groups[].rules[] | select(.expr | test("\\$")) | .record' "$TEST_TMP/dashboard.rules.json")" \
	"" "no variable is left in the PromQL once the dashboard's are replaced"
if command -v promtool >/dev/null; then
	out=$(promtool check rules "$TEST_TMP/dashboard.rules.json" 2>&1)
	status=$?
	ok $status "promtool check rules accepts every PromQL expression of the dashboard"
	[ $status -eq 0 ] || show "$out"
	grep -q "SUCCESS: $n_prom rules found" <<<"$out"
	ok $? "all $n_prom of them"
else
	ok 0 "# SKIP promtool is not installed (Debian package prometheus)"
	ok 0 "# SKIP promtool is not installed (Debian package prometheus)"
fi
exported=$(sed -n 's/^\.BR \(chatsync_[a-z0-9_]*\|process_[a-z_]*\).*/\1/p' \
	"$top_srcdir/doc/chatsyncd.8.in" | sort -u)
used=$(jq -r '.groups[].rules[].expr' "$TEST_TMP/dashboard.rules.json" |
	grep -oE '\b(chatsync|process)_[a-z0-9_]+' | sort -u)
is "$(comm -23 <(echo "$used") <(echo "$exported"))" "" \
	"every metric the dashboard names is one chatsyncd exports ($(wc -l <<<"$used") metrics)"

# ------------------------------------------------------------ (c) SQL

# The range of $__timeFilter, $__timeFrom() and $__timeTo(): the last 30
# days, as Grafana writes it, a quoted UTC timestamp.
FROM="'$(date -u -d '30 days ago' +%Y-%m-%dT%H:%M:%SZ)'"
TO="'$(date -u -d '1 hour' +%Y-%m-%dT%H:%M:%SZ)'"
mkdir "$TEST_TMP/sql"
TITLES=()
while IFS=$'\t' read -r title ref text; do
	base64 -d <<<"$text" >"$TEST_TMP/sql/${#TITLES[@]}.sql"
	TITLES+=("$title ($ref)")
done < <(q 'vars as $vars | panels | . as $p | .targets[]
	| select(.datasource.type == "grafana-postgresql-datasource")
	| [$p.title, .refId, (.rawSql | sql($from; $to) | plain($vars) | promql | @base64)] | @tsv' \
	--arg from "$FROM" --arg to "$TO")
left=$(cd "$TEST_TMP/sql" && grep -l '\$' ./*.sql)
is "${#TITLES[@]}|$left" "$n_sql|" "every SQL query is plain SQL once the macros and variables are replaced"

# panel_sql TITLE: the plain SQL of the first query of the panel TITLE.
panel_sql() {
	local i
	for i in "${!TITLES[@]}"; do
		[ "${TITLES[$i]%% (*}" = "$1" ] && cat "$TEST_TMP/sql/$i.sql" && return 0
	done
	echo "no panel titled $1" >&2
	echo "SELECT 'no panel titled $1'::integer"
}

SKIP_C=
if [ -z "${PG_BINDIR:-}" ] || [ ! -x "$PG_BINDIR/initdb" ]; then
	SKIP_C="PostgreSQL server binaries not found (install postgresql-15)"
elif [ ! -x "$FAKE_TWILIO" ] || [ ! -x "$CHATSYNCD" ]; then
	SKIP_C="tests/fake_twilio or src/chatsyncd not built"
elif [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
	SKIP_C="running as root and there is no postgres user to run the server"
fi

# Two sweeps: the fake's data set, then a variant that removes and changes
# memberships; a user the API does not know fails in both.
USERS=(US0123456789abcdef0123456789abcdef alice bob)
CHANNELS=30
sweep() { # sweep VARIANT: chatsyncd --once against that variant; its exit status in SWEEP_RC
	SWEEP_RC=
	fake_start "v$1" --channels $CHANNELS --variant "$1" --fault 404:ghost:0 || return
	write_config "$TEST_TMP/chatsyncd.conf" "${USERS[@]}" ghost
	run_once "$TEST_TMP/chatsyncd.conf"
	SWEEP_RC=$?
	fake_stop
}
if [ -z "$SKIP_C" ]; then
	pg_start || exit 1
	sweep 0
	rcs=$SWEEP_RC
	sweep 1
	is "$rcs|$SWEEP_RC" "3|3" "chatsyncd syncs twice, one of the users failing (exit 3)"
	load_dump public.expected0 --channels $CHANNELS --variant 0 -- "${USERS[@]}"
	load_expected --channels $CHANNELS --variant 1 -- "${USERS[@]}"
	is "$(diff_expected)" 0 "the database holds the API's memberships"
	for v in memberships membership_history membership_events sync_health sync_errors; do
		table_exists "chatsync.$v" && have_views=1
	done
	[ -n "${have_views:-}" ] || SKIP_C="views not in this schema yet"
else
	ok 0 "# SKIP $SKIP_C"
	ok 0 "# SKIP $SKIP_C"
fi

# c_is GOT WANT DESCRIPTION: is, or a skip when the queries cannot run here.
c_is() { if [ -n "$SKIP_C" ]; then ok 0 "# SKIP $SKIP_C"; else is "$@"; fi; }
# pq SQL: the result of SQL (nothing when the queries cannot run here).
pq() { [ -n "$SKIP_C" ] || sql "$1"; }

for i in "${!TITLES[@]}"; do
	out=
	[ -n "$SKIP_C" ] || out=$(psql -X -q -v ON_ERROR_STOP=1 -f "$TEST_TMP/sql/$i.sql" 2>&1 >/dev/null)
	c_is "$out" "" "${TITLES[$i]} runs"
done

# What the panels show follows from the fake's data sets.
live=$(pq 'SELECT count(*) FROM public.expected')
c_is "$(pq "SELECT sum(unread) FROM ($(panel_sql 'Unread messages per user')) p")" \
	"$(pq 'SELECT sum(unread_messages_count) FROM public.expected')" \
	"unread messages per user add up to the API's"
c_is "$(pq "SELECT count(*) FROM ($(panel_sql 'Users above $min_unread unread for over 24 hours')) p")" \
	0 "no user is above N unread for 24 hours: nothing was synced that long ago"
c_is "$(pq "SELECT sum(members), sum(invited) FROM ($(panel_sql 'Channel members by status')) p")" \
	"$(pq "SELECT count(*), count(*) FILTER (WHERE status = 'invited') FROM public.expected")" \
	"channel members by status count every membership and invitation"
c_is "$(pq "SELECT count(*) FROM ($(panel_sql 'Pending invitations')) p WHERE age >= 0")" \
	"$(pq "SELECT count(*) FROM public.expected WHERE status = 'invited'")" \
	"pending invitations list each invited membership, with its age"
c_is "$(pq "SELECT sum(gained), sum(lost) FROM ($(panel_sql 'Memberships gained and lost per day')) p")" \
	"$(pq "SELECT (SELECT count(*) FROM (SELECT service_sid, user_sid, channel_sid FROM public.expected
	                                      EXCEPT SELECT service_sid, user_sid, channel_sid FROM public.expected0) a) || '|' ||
	              (SELECT count(*) FROM (SELECT service_sid, user_sid, channel_sid FROM public.expected0
	                                      EXCEPT SELECT service_sid, user_sid, channel_sid FROM public.expected) r)")" \
	"memberships gained and lost per day: what the variant adds and removes (a user's first listing is no event)"
c_is "$(pq "SELECT count(DISTINCT metric) BETWEEN 1 AND 10 FROM ($(panel_sql 'Unread messages, top 10 channels')) p")" \
	t "the unread trend has a series for each of at most 10 channels"
c_is "$(pq "WITH p AS ($(panel_sql 'Unread messages, top 10 channels'))
	          SELECT max(unread) FROM p WHERE time = (SELECT max(time) FROM p)")" \
	"$(pq "SELECT max(u) FROM (SELECT sum(unread_messages_count) AS u FROM public.expected GROUP BY channel_sid) t")" \
	"and its highest point of the last hour is the channel with the most unread messages"
c_is "$(pq "SELECT count(*), sum(memberships) FROM ($(panel_sql 'Per-service totals')) p")" \
	"1|$live" "per-service totals: one service, every live membership"
c_is "$(pq "SELECT count(*) FROM ($(panel_sql 'Invited, never joined')) p")" \
	"$(pq "SELECT count(*) FROM public.expected0 WHERE status = 'invited'")" \
	"invited, never joined: every membership ever invited (the fake never changes a status)"
c_is "$(pq "SELECT sum(errors) > 0 FROM ($(panel_sql 'Sync errors per hour by kind')) p")" \
	t "sync errors per hour show the failing user"
c_is "$(pq "SELECT count(*) FROM ($(panel_sql 'Sweeps: duration and retries')) p WHERE duration >= 0")" \
	2 "one point per finished sweep"

done_testing

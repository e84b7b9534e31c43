#!/usr/bin/env bash
# tests/sync_api_faults.sh - the faults of sync_resume.sh, sync_faults.sh,
# sync_failures.sh and sync_stored_url.sh, for the listings of the other two
# APIs: Conversations through a service (/v1/Services/{IS}/Users/{U}/Conversations,
# "conv"), Conversations of the account's default service, a group without sid
# (/v1/Users/{U}/Conversations, "def"), and Chat v2 (/v2/Services/{IS}/Users/{U}/Channels,
# "v2").  Every listing has 5 pages of 50 (250 slots; 225 entries with
# --variant 1 or 2).  For each of the three:
#
#   A  hostile next_page_url on page 3, pointing at another host (the fake's
#      foreign fault), or, rewritten by a small proxy in front of the fake, at
#      another scheme, another port, another path of the same host (the
#      listing of another service, of the default service, of v1) or another
#      user's listing: never requested, the user fails with an error naming
#      page 3, only pages 1 and 2 stored; no request reaches another host
#      (the fakes listening there log none, the proxy sees no TLS handshake).
#      Two 429s on page 2: retried, the listing completes.
#   B  expired page tokens: a listing left failed at page 3 (500s in A) whose
#      stored next_page_url the API now refuses (400) restarts from page 1
#      once and completes, equal to the API's changed data; refused again
#      in the restarted listing, it fails and does not restart twice; a 404
#      there restarts once too, and page 1's 404 then fails the user as not
#      found, its rows untouched.
#   C  kill -9 with 2 of 5 pages committed: the next process's first request
#      for the user is page index 2 at the stored next_page_url; the table
#      equals the API's data, each page committed once (sync_runs), no past
#      version, no event.
#   D  deletions: a user listed whole, then killed -9 at page 3 of the
#      listing of changed data (--variant 1, 25 entries gone) marks nothing
#      deleted; the completed listing marks exactly those 25, each with one
#      past version and one removal event.
#   E  a stored next_page_url (sync_cursors written to) on another host, of
#      another user's listing or at another path is never requested: the
#      listing restarts from page 1; one of the user's own listing resumes.
#
# Each part and API has its own schema: a_conv, a_def, a_v2 (A, then B),
# k_* (C), d_* (D), e_* (E).
. "$(dirname "$0")/lib.sh"
need_tools
command -v python3 >/dev/null || skip_all "python3 not installed (the proxy that rewrites next_page_url)"
export LC_ALL=C
pg_start || { echo "Bail out! could not start PostgreSQL"; exit 1; }

T_START=$SECONDS
DATA=(--seed 9 --channels 250) # 5 pages of 50
DEF=IS00000000000000000000000000000def
OTHER_SERVICE=IS99999999999999999999999999999999
MODES=(conv def v2)
LATENCY_MS=400

# The columns of user_conversations that the fake's --dump gives, in its order.
CONV_COLS="service_sid, user_sid, conversation_sid, account_sid, participant_sid,
           conversation_state, notification_level, unread_messages_count,
           last_read_message_index, friendly_name, unique_name, created_by, date_created,
           date_updated, date_inactive, date_closed, url, conversation_url, participant_url"

like() { # like GOT PATTERN DESCRIPTION
	local got=$1 pat=$2
	shift 2
	if [[ $got == $pat ]]; then ok 0 "$*"; else ok 1 "$*"; diag "got:  $got" "want: $pat"; fi
}

# mode MODE: the API under test (conv, def or v2): API, SVC (the service SID
# of its rows), P (the prefix of its users' identities), TABLE, PAST, EVENTS,
# COLS (TABLE's columns in the order of the fake's --dump) and DUMP (the
# fake's arguments for that dump).
mode() {
	MODE=$1
	P=${1:0:1}-
	case $1 in
	conv | def)
		API=conversations TABLE=user_conversations KEY_COL=conversation_sid
		PAST=user_conversation_past_versions
		EVENTS=conversation_event_log COLS=$CONV_COLS
		if [ "$1" = conv ]; then
			SVC=$SERVICE_SID DUMP=(--api conversations --service "$SERVICE_SID")
		else
			SVC=$DEF DUMP=(--api conversations)
		fi
		;;
	v2)
		API=chat_v2 SVC=$SERVICE_SID TABLE=user_channels KEY_COL=channel_sid
		PAST=user_channel_past_versions
		EVENTS=membership_event_log COLS="$VALUE_COLS, notification_level"
		DUMP=(--api chat_v2 --service "$SERVICE_SID")
		;;
	esac
}

# listing_path USER [SERVICE]: the path of USER's listing in this API
# (an identity without characters to encode).
listing_path() {
	case $MODE in
	conv) echo "/v1/Services/${2:-$SERVICE_SID}/Users/$1/Conversations" ;;
	def) echo "/v1/Users/$1/Conversations" ;;
	v2) echo "/v2/Services/${2:-$SERVICE_SID}/Users/$1/Channels" ;;
	esac
}

# conf FILE BASE USER...: a config of this API's service (no sid for def) at BASE.
conf() {
	local file=$1 base=$2
	shift 2
	FAKE_URL=$base SERVICE_EXTRA="api = \"$API\";" PAGE_SIZE=1000 write_config "$file" "$@"
	[ "$MODE" != def ] || sed -i 's/{ sid = "IS[0-9a-fA-F]*"; /{ /' "$file"
}

# sweep CONF: one chatsyncd --once, its stderr appended to LOG; exit status in RC.
sweep() {
	printf -- '----- %(%T)T %s\n' -1 "$1" >>"$LOG"
	TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$1" --once 2>>"$LOG"
	RC=$?
}

# expect NAME FAKE-ARGS -- USER...: public.NAME, the rows the fake serves
# those users, in TABLE's columns (HEAD=N: each user's first N only).
expect() {
	local name=$1 args=() u
	shift
	while [ "$1" != "--" ]; do
		args+=("$1")
		shift
	done
	shift
	sql "DROP TABLE IF EXISTS public.$name;
	     CREATE TABLE public.$name AS SELECT $COLS FROM chatsync.$TABLE LIMIT 0"
	for u; do
		"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" "${DUMP[@]}" "${args[@]}" --dump "$u" |
			head -n "${HEAD:-1000000}" |
			psql -X -q -v ON_ERROR_STOP=1 -c "\\copy public.$name FROM STDIN"
	done
}

# in_list USER...: the users as an SQL list.
in_list() {
	local u s=
	for u; do s+="${s:+, }'$u'"; done
	echo "$s"
}

# differ NAME USER...: live rows of those users (SCHEMA) that differ from public.NAME, both ways.
differ() {
	local name=$1 users
	shift
	users=$(in_list "$@")
	sql "SELECT count(*) FROM (
	       (SELECT $COLS FROM $SCHEMA.$TABLE
	         WHERE deleted_at IS NULL AND service_sid = '$SVC' AND user_sid IN ($users)
	        EXCEPT ALL SELECT * FROM public.$name)
	       UNION ALL
	       (SELECT * FROM public.$name
	        EXCEPT ALL SELECT $COLS FROM $SCHEMA.$TABLE
	         WHERE deleted_at IS NULL AND service_sid = '$SVC' AND user_sid IN ($users))) d"
}

# counts USER: live|deleted rows of USER (SCHEMA).
counts() {
	sql "SELECT count(*) FILTER (WHERE deleted_at IS NULL) || '|' || count(*) FILTER (WHERE deleted_at IS NOT NULL)
	       FROM $SCHEMA.$TABLE WHERE service_sid = '$SVC' AND user_sid = '$1'"
}

# cursor USER: state:pages_done:last_error of USER's cursor (SCHEMA).
cursor() {
	sql "SELECT state || ':' || pages_done || ':' || coalesce(last_error, '-')
	       FROM $SCHEMA.sync_cursors WHERE service_sid = '$SVC' AND user_sid = '$1'"
}

# trail USER [FROM]: USER's requests in FAKE_LOG after line FROM, as status:page,...
trail() {
	awk -F'\t' -v u="$1" -v a="${2:-0}" \
		'NR > a && $2 == u { printf "%s%s:%s", s, $1, $3; s = "," } END { print "" }' "$FAKE_LOG"
}

# ============================================================ the servers
# The fake with the faults of parts A and B (each user's identity starts with
# its API's prefix, so one fake serves the three), a fake on another host at
# its port (where the foreign fault points), one on another port, and the
# proxy in front of the fake that rewrites the next_page_url of the pages
# named in $TEST_TMP/rules.
faults=()
for m in "${MODES[@]}"; do
	mode "$m"
	faults+=(--fault "429:${P}rl:2@1" --fault "foreign:${P}host:2"
		--fault "500:${P}exp:99@2" --fault "500:${P}exp2:99@2" --fault "500:${P}gone:99@2")
done
fake_start api "${DATA[@]}" "${faults[@]}" || { echo "Bail out! could not start fake_twilio"; exit 1; }
API_PORT=${FAKE_URL##*:} API_PID=$FAKE_PID API_LOG=$FAKE_LOG
fake_start elsewhere --listen "127.0.0.2:$API_PORT" "${DATA[@]}" ||
	{ echo "Bail out! could not listen on 127.0.0.2"; exit 1; }
ELSEWHERE_LOG=$FAKE_LOG
fake_start otherport "${DATA[@]}" || { echo "Bail out! could not start fake_twilio"; exit 1; }
OTHERPORT_URL=$FAKE_URL OTHERPORT_LOG=$FAKE_LOG
FAKE_URL=http://127.0.0.1:$API_PORT FAKE_PID=$API_PID FAKE_LOG=$API_LOG

# The proxy: forwards each GET to the fake (with its Host and Authorization
# headers, so that the fake's page URLs point back at the proxy) and answers
# with the fake's status and body, but for a page named in the rules file
# (user TAB page-index TAB url, read at each request): its
# meta.next_page_url is replaced by the url.  It logs each request line to
# the proxy log, and "TLS" for a connection that opens with a TLS handshake
# (a next page followed with https://).
cat >"$TEST_TMP/proxy.py" <<'PY'
import http.client, json, os, socket, sys, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port_file, upstream, rules_file, log_file = sys.argv[1:5]
lock = threading.Lock()


def log(line):
    with lock, open(log_file, "a") as f:
        f.write(line + "\n")


def rule(user, page):
    try:
        with open(rules_file) as f:
            for line in f:
                u, p, url = line.rstrip("\n").split("\t")
                if (u, p) == (user, page):
                    return url
    except FileNotFoundError:
        pass
    return None


class Handler(BaseHTTPRequestHandler):
    def handle(self):
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if first == b"\x16":
            log("TLS")
            return
        super().handle()

    def do_GET(self):
        log("GET " + self.path)
        headers = {k: self.headers[k] for k in ("Host", "Authorization") if self.headers[k]}
        conn = http.client.HTTPConnection("127.0.0.1", int(upstream), timeout=60)
        conn.request("GET", self.path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        path, _, query = self.path.partition("?")
        segs = path.split("/")
        if resp.status == 200 and len(segs) >= 4 and segs[-3] == "Users":
            user = urllib.parse.unquote(segs[-2])
            page = urllib.parse.parse_qs(query).get("Page", ["0"])[-1]
            url = rule(user, page)
            if url is not None:
                doc = json.loads(body)
                doc["meta"]["next_page_url"] = url
                body = json.dumps(doc).encode()
                log("REWROTE %s %s" % (user, page))
        self.send_response(resp.status)
        for k in ("Content-Type", "Retry-After"):
            if resp.getheader(k):
                self.send_header(k, resp.getheader(k))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        conn.close()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write("%d\n" % server.server_address[1])
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
PROXY_LOG=$TEST_TMP/proxy.log
RULES=$TEST_TMP/rules
: >"$PROXY_LOG"
: >"$RULES"
python3 "$TEST_TMP/proxy.py" "$TEST_TMP/proxy.port" "$API_PORT" "$RULES" "$PROXY_LOG" \
	2>"$TEST_TMP/proxy.err" &
FAKE_PIDS+=($!)
for _ in $(seq 100); do
	[ -s "$TEST_TMP/proxy.port" ] && break
	nap 0.05
done
[ -s "$TEST_TMP/proxy.port" ] || { cat "$TEST_TMP/proxy.err"; echo "Bail out! the proxy did not start"; exit 1; }
PROXY=127.0.0.1:$(cat "$TEST_TMP/proxy.port")
PROXY_URL=http://$PROXY

# The schema the expected tables take their columns from.
FAKE_URL=$PROXY_URL write_config "$TEST_TMP/migrate.conf" nobody
TWILIO_AUTH_TOKEN=$AUTH_TOKEN "$CHATSYNCD" -c "$TEST_TMP/migrate.conf" --migrate 2>>"$TEST_TMP/migrate.log" ||
	{ cat "$TEST_TMP/migrate.log"; echo "Bail out! could not migrate"; exit 1; }

# ============================================================ A. hostile next pages, 429
diag "--- A: hostile next_page_url, 429 ($((SECONDS - T_START)) s)"
Q3="?PageSize=50&Page=3&PageToken=PT3" # the next page of page 3 (index 2)
for m in "${MODES[@]}"; do
	mode "$m"
	export SCHEMA=a_$m
	LOG=$TEST_TMP/chatsyncd.a_$m.log
	# hostile USER URL: USER's page 3 (index 2) names URL as the next page; what it changes, for the test names.
	declare -A HOSTILE=() WHAT=()
	HOSTILE[${P}host]="http://127.0.0.2:$API_PORT$(listing_path "${P}host")$Q3"
	WHAT[${P}host]="another host (the fake's foreign fault)"
	HOSTILE[${P}scheme]="https://$PROXY$(listing_path "${P}scheme")$Q3"
	WHAT[${P}scheme]="another scheme (https)"
	HOSTILE[${P}port]="$OTHERPORT_URL$(listing_path "${P}port")$Q3"
	WHAT[${P}port]="another port"
	HOSTILE[${P}user]="$PROXY_URL$(listing_path victim)$Q3"
	WHAT[${P}user]="another user's listing"
	case $m in
	conv)
		HOSTILE[${P}path]="$PROXY_URL/v1/Users/${P}path/Conversations$Q3"
		WHAT[${P}path]="the same user's listing in the default service (/v1/Users/...)"
		HOSTILE[${P}svc]="$PROXY_URL$(listing_path "${P}svc" "$OTHER_SERVICE")$Q3"
		WHAT[${P}svc]="the same user's listing in another service"
		;;
	def)
		HOSTILE[${P}path]="$PROXY_URL/v1/Services/$DEF/Users/${P}path/Conversations$Q3"
		WHAT[${P}path]="the same listing under the default service's own path (/v1/Services/$DEF/...)"
		HOSTILE[${P}svc]="$PROXY_URL/v1/Services/$SERVICE_SID/Users/${P}svc/Conversations$Q3"
		WHAT[${P}svc]="the same user's listing in another service"
		;;
	v2)
		HOSTILE[${P}path]="$PROXY_URL/v1/Services/$SERVICE_SID/Users/${P}path/Channels$Q3"
		WHAT[${P}path]="the same user's listing under /v1"
		HOSTILE[${P}svc]="$PROXY_URL$(listing_path "${P}svc" "$OTHER_SERVICE")$Q3"
		WHAT[${P}svc]="the same user's listing in another service"
		;;
	esac
	H=("${P}host" "${P}scheme" "${P}port" "${P}path" "${P}svc" "${P}user")
	: >"$RULES"
	for u in "${H[@]:1}"; do
		printf '%s\t2\t%s\n' "$u" "${HOSTILE[$u]}" >>"$RULES"
	done
	conf "$TEST_TMP/a_$m.conf" "$PROXY_URL" "${P}rl" "${H[@]}" "${P}exp" "${P}exp2" "${P}gone"
	from=$(log_lines)
	proxy_from=$(wc -l <"$PROXY_LOG")
	sweep "$TEST_TMP/a_$m.conf"
	is "$RC" 3 "A $m: a sweep in which users fail exits 3"
	expect a_full "${DATA[@]}" -- "${P}rl"
	HEAD=100 expect a_head "${DATA[@]}" -- "${H[@]}"

	# 429
	is "$(trail "${P}rl" "$from")" "200:0,429:1,429:1,200:1,200:2,200:3,200:4" \
		"A $m: two 429s on page 2 are retried, then the listing goes on to its 5th page"
	is "$(cursor "${P}rl")|$(counts "${P}rl")|$(differ a_full "${P}rl")" "complete:5:-|250|0|0" \
		"A $m: its cursor is complete after 5 pages, and the table holds exactly the API's 250 rows"
	is "$(grep -c "user \"${P}rl\" page 2: HTTP 429 .*; retry [12] of 2 in" "$LOG")" 2 \
		"A $m: each 429 is logged as a retry of page 2"

	# hostile next pages
	is "$(grep -c "^REWROTE ${P}" "$PROXY_LOG")" 5 \
		"A $m: (the proxy served its 5 rewritten third pages)"
	for u in "${H[@]}"; do
		is "$(cursor "$u")" "failed:2:page 3: refusing next_page_url \"${HOSTILE[$u]}\": not this user's listing at $PROXY_URL" \
			"A $m: $u: a next page at ${WHAT[$u]} fails the user, the error naming page 3 and the URL"
		is "$(trail "$u" "$from")" "200:0,200:1,200:2" "A $m: $u: that next page is never requested, page 3 not asked again"
	done
	is "$(grep -cE "user \"${P}(host|scheme|port|path|svc|user)\": page 3: refusing next_page_url" "$LOG")" 6 \
		"A $m: the log says so once for each of the 6 users"
	is "$(sql "SELECT count(*) || ':' || string_agg(DISTINCT n::text, ',') FROM (
	             SELECT user_sid, count(*) FILTER (WHERE deleted_at IS NULL) || '/' || count(*) AS n
	               FROM $SCHEMA.$TABLE WHERE user_sid IN ($(in_list "${H[@]}")) GROUP BY 1) c")|$(differ a_head "${H[@]}")" \
		"6:100/100|0" "A $m: each of them holds its first two pages alone (100 rows, the API's first 100): nothing of page 3 or later"
	is "$(sql "SELECT count(*) FROM $SCHEMA.$TABLE WHERE user_sid = 'victim'")|$(awk -F'\t' -v a="$from" 'NR > a && $2 == "victim"' "$FAKE_LOG" | wc -l)" \
		"0|0" "A $m: the other user's listing is neither requested nor stored"
	pre=$(listing_path @U@)
	is "$(awk -F'\t' -v a="$from" -v pre="${pre%%@U@*}" -v suf="${pre##*@U@}" '
		NR > a && $2 !~ /^@/ { split($4, t, "?"); if (t[1] != pre $2 suf) print $4 }' "$FAKE_LOG" | head -n 3)" "" \
		"A $m: every request the fake got is a page of the requesting user's own listing"
	is "$(wc -l <"$ELSEWHERE_LOG")|$(wc -l <"$OTHERPORT_LOG")|$(grep -c '^TLS' "$PROXY_LOG")" "0|0|0" \
		"A $m: no request reaches the fake on another host or port, no TLS handshake reaches the proxy"
	is "$(tail -n +$((proxy_from + 1)) "$PROXY_LOG" | grep -c '^GET ')" "$(($(log_lines) - from))" \
		"A $m: every request the proxy got was one the fake answered"
	unset HOSTILE WHAT
done

# ============================================================ B. expired page tokens
# The fake again on the same port (the stored next pages point at the proxy,
# which forwards there), with changed data: variant 2 removes the slots i % 10
# == 2.  exp's, exp2's and gone's cursors are failed at page 3 (index 2, 500s
# in A): the API now refuses that stored page once (exp) or twice (exp2)
# with 400, or knows the user no more (gone: 404 for every request).
diag "--- B: expired page tokens ($((SECONDS - T_START)) s)"
fake_stop
faults=()
for m in "${MODES[@]}"; do
	mode "$m"
	faults+=(--fault "400:${P}exp:1@2" --fault "400:${P}exp2:2@2" --fault "404:${P}gone:0")
done
fake_start api-b --listen "127.0.0.1:$API_PORT" "${DATA[@]}" --variant 2 "${faults[@]}" ||
	{ echo "Bail out! could not start fake_twilio on port $API_PORT"; exit 1; }
: >"$RULES"
for m in "${MODES[@]}"; do
	mode "$m"
	export SCHEMA=a_$m
	LOG=$TEST_TMP/chatsyncd.b_$m.log
	stored=$(sql "SELECT state || ':' || pages_done || ' ' || next_page_url FROM $SCHEMA.sync_cursors
	               WHERE service_sid = '$SVC' AND user_sid = '${P}exp'")
	is "${stored%% *}" "failed:2" "B $m: (${P}exp's listing was left failed at page 3)"
	conf "$TEST_TMP/b_$m.conf" "$PROXY_URL" "${P}exp" "${P}exp2" "${P}gone"
	from=$(log_lines)
	sweep "$TEST_TMP/b_$m.conf"
	is "$RC" 3 "B $m: the sweep exits 3 (${P}exp2 and ${P}gone fail)"
	is "$(trail "${P}exp" "$from")" "400:2,200:0,200:1,200:2,200:3,200:4" \
		"B $m: ${P}exp: the stored page refused (400), then pages 1 to 5 from the start"
	is "$(awk -F'\t' -v a="$from" -v u="${P}exp" 'NR > a && $2 == u { print $4; exit }' "$FAKE_LOG")" \
		"${stored#* "$PROXY_URL"}" "B $m: its first request was the stored next_page_url"
	is "$(grep -c "user \"${P}exp\" page 3: HTTP 400 (Twilio error 21481: Invalid PageToken) for a resumed page; restarting the listing from page 1" "$LOG")" 1 \
		"B $m: one warning names the user, the page and the API's refusal"
	expect b_v2 "${DATA[@]}" --variant 2 -- "${P}exp"
	is "$(cursor "${P}exp")|$(differ b_v2 "${P}exp")|$(counts "${P}exp")" "complete:5:-|0|225|10" \
		"B $m: ${P}exp completes and equals the API's changed data: 225 rows live, the 10 of its first two pages that the API dropped deleted"
	is "$(trail "${P}exp2" "$from")" "400:2,200:0,200:1,400:2" \
		"B $m: ${P}exp2: restarted once; refused again at page 3 of the new listing, it does not restart again"
	is "$(cursor "${P}exp2")|$(grep -c "user \"${P}exp2\" page 3: HTTP 400 .*restarting the listing" "$LOG")" \
		"failed:2:could not fetch page 3: HTTP 400 (Twilio error 21481: Invalid PageToken)|1" \
		"B $m: ${P}exp2 fails there, its new two pages committed, with one restart warning"
	is "$(counts "${P}exp2")" "110|0" \
		"B $m: ${P}exp2: nothing deleted by the incomplete listing (its rows: the slots 0..109 of both first two pages)"
	is "$(trail "${P}gone" "$from")" "404:2,404:0" \
		"B $m: ${P}gone: a 404 for the stored page restarts the listing once, and page 1's 404 ends it"
	like "$(cursor "${P}gone")|$(counts "${P}gone")" \
		"failed:2:user not found: could not fetch page 1: HTTP 404 (Twilio error 20404*|100|0" \
		"B $m: ${P}gone fails as user not found, its rows untouched (none deleted)"
done
is "$(wc -l <"$ELSEWHERE_LOG")|$(wc -l <"$OTHERPORT_LOG")|$(grep -c '^TLS' "$PROXY_LOG")" "0|0|0" \
	"no request ever reached another host or port"

# ============================================================ C, D. kill -9 mid-listing
# One fake (variant 1: 25 of the 250 slots gone, others changed) answering in
# 400 ms, so that a kill lands between pages; another without latency at
# variant 0 for D's first, whole listing.
diag "--- C, D: kill -9 at page 3 of 5 ($((SECONDS - T_START)) s)"
fake_start v0 "${DATA[@]}" || { echo "Bail out! could not start fake_twilio"; exit 1; }
V0_URL=$FAKE_URL V0_LOG=$FAKE_LOG
fake_start slow "${DATA[@]}" --variant 1 --latency-ms $LATENCY_MS ||
	{ echo "Bail out! could not start fake_twilio"; exit 1; }
LOG=$TEST_TMP/chatsyncd.kill.log

# kill_at CONF USER N: chatsyncd --once on CONF, killed with SIGKILL once
# USER's listing has committed N pages in this sweep (or after 8 s); then
# until nothing of it can still land (its request in flight, its backends).
kill_at() {
	local i
	bg_start "$LOG" "$1" --once
	for ((i = 0; i < 400; i++)); do
		[ "$(sql "SELECT state || ':' || pages_done FROM $SCHEMA.sync_cursors WHERE user_sid = '$2'" 2>/dev/null)" = "running:$3" ] &&
			break
		nap 0.02
	done
	((i < 400)) && kill -0 "$BG_PID" 2>/dev/null
	ok $? "$MODE: chatsyncd killed while running, once $3 pages of $2's listing were committed"
	kill -9 "$BG_PID"
	wait "$BG_PID" 2>/dev/null
	BG_PID=
	nap "$(printf '%d.%03d' $(((LATENCY_MS + 100) / 1000)) $(((LATENCY_MS + 100) % 1000)))"
	settle
}

# pages_fetched USER: how often each page index 0..4 of USER was fetched,
# the one in flight at the kill (index 2) counted once.
pages_fetched() {
	requests "$1" | awk -F'\t' '{ n[$3]++ } END {
		for (p = 0; p < 5; p++) printf "%s%d", p ? "," : "", (p == 2 && n[p] == 2) ? 1 : n[p] }'
}

for m in "${MODES[@]}"; do
	mode "$m"

	# ---- C: a first listing killed at page 3, resumed
	export SCHEMA=k_$m
	U="${P}k/1 x@y" # an identity whose path segment is encoded
	conf "$TEST_TMP/k_$m.conf" "$FAKE_URL" "$U"
	kill_at "$TEST_TMP/k_$m.conf" "$U" 2
	at_kill=$(sql "SELECT state || ':' || pages_done || ' ' || coalesce(next_page_url, '-')
	                 FROM $SCHEMA.sync_cursors WHERE user_sid = '$U'")
	next=${at_kill#* }
	like "$at_kill" "running:2 $FAKE_URL/*Page=2&PageToken=PT2" \
		"C $m: killed with 2 of 5 pages committed, the next page stored"
	mark=$(log_lines)
	bg_start "$LOG" "$TEST_TMP/k_$m.conf" --once
	wait_bg 30
	is "$BG_RC" 0 "C $m: the next process exits 0"
	is "$(grep -c "user \"$U\": resuming at page 3" "$LOG")" 1 "C $m: it logs that it resumes at page 3"
	is "$(awk -F'\t' -v a="$mark" -v u="$U" 'NR > a && $2 == u { print $3 " " $4; exit }' "$FAKE_LOG")" \
		"2 ${next#"$FAKE_URL"}" "C $m: its first request for the user is page index 2, at the stored next_page_url"
	is "$(pages_fetched "$U")" "1,1,1,1,1" \
		"C $m: no committed page fetched again, no page twice but the one in flight at the kill"
	expect c_exp "${DATA[@]}" --variant 1 -- "$U"
	is "$(differ c_exp "$U")|$(counts "$U")" "0|225|0" "C $m: the table holds exactly the API's 225 rows"
	is "$(sql "SELECT count(*) || ':' || count(finished_at) || ':' || sum(users_ok) || ':' || sum(pages) || ':' ||
	                  sum(rows_received) || ':' || sum(rows_inserted) || ':' || sum(rows_updated) || ':' ||
	                  sum(rows_unchanged) || ':' || sum(rows_deleted) FROM $SCHEMA.sync_runs")" \
		"1:1:1:5:225:225:0:0:0" \
		"C $m: one run over both processes, each of the 5 pages committed once (225 rows inserted, none again)"
	is "$(sql "SELECT count(*) FROM $SCHEMA.$PAST")|$(sql "SELECT count(*) FROM $SCHEMA.$EVENTS")|$(cursor "$U")" \
		"0|0|complete:5:-" "C $m: no past version, no event (as for an undisturbed first listing); the cursor complete"

	# ---- D: changed data, killed at page 3: nothing deleted until the listing is whole
	export SCHEMA=d_$m
	U=${P}del
	conf "$TEST_TMP/d0_$m.conf" "$V0_URL" "$U"
	sweep "$TEST_TMP/d0_$m.conf"
	is "$RC|$(counts "$U")" "0|250|0" "D $m: a first sweep lists $U whole: 250 rows (variant 0)"
	conf "$TEST_TMP/d_$m.conf" "$FAKE_URL" "$U"
	kill_at "$TEST_TMP/d_$m.conf" "$U" 2
	is "$(counts "$U")" "250|0" "D $m: killed at page 3 of the changed listing, nothing is marked deleted"
	bg_start "$LOG" "$TEST_TMP/d_$m.conf" --once
	wait_bg 30
	is "$BG_RC" 0 "D $m: the next process completes the listing (exit 0)"
	expect d_before "${DATA[@]}" -- "$U"
	expect d_after "${DATA[@]}" --variant 1 -- "$U"
	is "$(sql "SELECT count(*) FROM public.d_before b WHERE NOT EXISTS (
	             SELECT 1 FROM public.d_after a WHERE a.$KEY_COL = b.$KEY_COL)")" 25 \
		"D $m: (variant 1 drops 25 of the user's 250 entries)"
	is "$(differ d_after "$U")|$(counts "$U")" "0|225|25" "D $m: the table equals the API's changed data, 25 rows deleted"
	is "$(sql "SELECT count(*) FROM (
	             (SELECT $KEY_COL FROM $SCHEMA.$TABLE WHERE user_sid = '$U' AND deleted_at IS NOT NULL
	              EXCEPT SELECT $KEY_COL FROM public.d_before b WHERE NOT EXISTS (
	                SELECT 1 FROM public.d_after a WHERE a.$KEY_COL = b.$KEY_COL))
	             UNION ALL
	             (SELECT $KEY_COL FROM public.d_before b WHERE NOT EXISTS (
	                SELECT 1 FROM public.d_after a WHERE a.$KEY_COL = b.$KEY_COL)
	              EXCEPT SELECT $KEY_COL FROM $SCHEMA.$TABLE WHERE user_sid = '$U' AND deleted_at IS NOT NULL)) d")" 0 \
		"D $m: the deleted ones are exactly those the API dropped"
	is "$(sql "SELECT count(*) FROM (
	             (SELECT $COLS FROM $SCHEMA.$PAST WHERE NOT is_deleted
	              EXCEPT ALL (SELECT * FROM public.d_before EXCEPT ALL SELECT * FROM public.d_after))
	             UNION ALL
	             ((SELECT * FROM public.d_before EXCEPT ALL SELECT * FROM public.d_after)
	              EXCEPT ALL SELECT $COLS FROM $SCHEMA.$PAST WHERE NOT is_deleted)) d")|$(sql "SELECT count(*) FROM $SCHEMA.$EVENTS WHERE event = 'removed'")" \
		"0|25" "D $m: one past version for each entry changed or dropped, none twice; one removal event for each dropped"
	is "$(sql "SELECT pages || ':' || rows_received || ':' || rows_deleted || ':' || (finished_at IS NOT NULL)
	             FROM $SCHEMA.sync_runs ORDER BY run_id DESC LIMIT 1")" "5:225:25:true" \
		"D $m: the sweep across the kill committed each of its 5 pages once, and deleted 25 rows"
done

# ============================================================ E. tampered stored next pages
# A stored next page is requested with the credentials only if it is a page of
# the same user's listing at the configured base URL, as a next_page_url from
# a response must be; any other restarts the listing from page 1 (the
# cursors are written to as in sync_stored_url.sh: left at page 2 of an
# earlier sweep).
diag "--- E: tampered stored next pages ($((SECONDS - T_START)) s)"
FAKE_URL=$V0_URL FAKE_LOG=$V0_LOG
Q1="?PageSize=50&Page=1&PageToken=PT1"
for m in "${MODES[@]}"; do
	mode "$m"
	export SCHEMA=e_$m
	LOG=$TEST_TMP/chatsyncd.e_$m.log
	declare -A STORED=() WHAT=()
	STORED[${P}s-host]="http://127.0.0.2:$API_PORT$(listing_path "${P}s-host")$Q1"
	WHAT[${P}s-host]="on another host"
	STORED[${P}s-user]="$FAKE_URL$(listing_path "${P}s-own")$Q1"
	WHAT[${P}s-user]="of another user's listing"
	case $m in
	conv) STORED[${P}s-path]="$FAKE_URL/v1/Users/${P}s-path/Conversations$Q1" ;;
	def) STORED[${P}s-path]="$FAKE_URL/v1/Services/$DEF/Users/${P}s-path/Conversations$Q1" ;;
	v2) STORED[${P}s-path]="$FAKE_URL/v1/Services/$SERVICE_SID/Users/${P}s-path/Channels$Q1" ;;
	esac
	WHAT[${P}s-path]="at ${STORED[${P}s-path]#"$FAKE_URL"}"
	STORED[${P}s-own]="$FAKE_URL$(listing_path "${P}s-own")$Q1"
	S=("${P}s-host" "${P}s-user" "${P}s-path")
	conf "$TEST_TMP/e_$m.conf" "$FAKE_URL" "${S[@]}" "${P}s-own"
	sweep "$TEST_TMP/e_$m.conf"
	is "$RC" 0 "E $m: a first sweep completes"
	for u in "${S[@]}" "${P}s-own"; do
		sql "UPDATE $SCHEMA.sync_cursors SET state = 'failed', pages_done = 1, next_page_url = '${STORED[$u]}'
		      WHERE service_sid = '$SVC' AND user_sid = '$u'"
	done
	from=$(log_lines)
	sweep "$TEST_TMP/e_$m.conf"
	is "$RC" 0 "E $m: the sweep over the tampered cursors completes"
	expect e_exp "${DATA[@]}" -- "${S[@]}"
	for u in "${S[@]}"; do
		is "$(grep -cF "user \"$u\": the stored next page \"${STORED[$u]}\" is not this user's listing at $FAKE_URL; restarting the listing from page 1" "$LOG")|$(trail "$u" "$from")" \
			"1|200:0,200:1,200:2,200:3,200:4" \
			"E $m: $u: a stored next page ${WHAT[$u]} is refused, logged, and the listing restarted from page 1"
	done
	is "$(trail "${P}s-own" "$from")|$(grep -c "user \"${P}s-own\": the stored next page" "$LOG")" "200:1,200:2,200:3,200:4|0" \
		"E $m: a stored page of the user's own listing is resumed, without a warning (and asked for once: not by ${P}s-user)"
	is "$(differ e_exp "${S[@]}")|$(sql "SELECT count(*) FROM $SCHEMA.$TABLE WHERE user_sid IN ($(in_list "${S[@]}")) AND deleted_at IS NOT NULL")" \
		"0|0" "E $m: the restarted listings equal the API's data, nothing deleted"
	is "$(sql "SELECT string_agg(state || ':' || pages_done, ',') FROM $SCHEMA.sync_cursors")" \
		"complete:5,complete:5,complete:5,complete:5" "E $m: every listing completes"
	unset STORED WHAT
done
is "$(wc -l <"$ELSEWHERE_LOG")" 0 "E: no request, and so no credentials, ever reached the other host"

diag "run time $((SECONDS - T_START)) s"
if [ "$tap_failed" -ne 0 ]; then
	for f in "$TEST_TMP"/chatsyncd.*.log; do
		diag "--- $f" && grep -E 'warning|error' "$f" | tail -n 20 | sed 's/^/#   /'
	done
fi
done_testing

#!/usr/bin/env bash
# The fake's dimension endpoints: the service, its users and its channels have
# the documented fields, page like the memberships, agree with the memberships
# (a user by SID and by identity, the channels of every membership), change
# with the variant, take faults by pseudo-user, and equal what --dump-service,
# --dump-users and --dump-channels print.
. "$(dirname "$0")/lib.sh"
need_tools
command -v curl >/dev/null || skip_all "curl not installed"
command -v python3 >/dev/null || skip_all "python3 not installed"
pg_start || exit 1

# Twelve users, k = 0..11: three named (one spelled like a SID), nine generated.
USERS="alice b/c@x+y%z?#é,US0123456789abcdef0123456789abcdef,日本 user"
IDENTITIES=("alice b/c@x+y%z?#é" US0123456789abcdef0123456789abcdef "日本 user")
for i in $(seq 1 9); do IDENTITIES+=("$(printf 'user-%04d' "$i")"); done
N_USERS=12
CH=23 # slots 0..22: 7 private (i % 3 == 2), 16 public
DATA=(--users "$USERS" --user-count 9 --channels $CH)
AUTH="$ACCOUNT_SID:$AUTH_TOKEN"
BASE=/v1/Services/$SERVICE_SID

# ------------------------------------------------------------ helpers

# dims.py COMMAND ARGS: reads the fake's JSON (see each command).
cat >"$TEST_TMP/dims.py" <<'PY'
import json, re, sys
from fake_api import *  # tests/fake_api.py: shared with the other fake tests

DATE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
SERVICE = ["sid", "account_sid", "friendly_name", "date_created", "date_updated",
           "default_service_role_sid", "default_channel_role_sid",
           "default_channel_creator_role_sid", "read_status_enabled", "reachability_enabled",
           "typing_indicator_timeout", "consumption_report_interval", "limits", "webhooks",
           "pre_webhook_url", "post_webhook_url", "webhook_method", "webhook_filters",
           "notifications", "url", "links"]


def text(value, nullable=False):
    return isinstance(value, str) or (nullable and value is None)


def integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def json_object_string(value):
    try:
        return isinstance(json.loads(value), dict)
    except (TypeError, ValueError):
        return False


def check_service(s, service, account):
    base = "https://ip-messaging.twilio.com/v1/Services/" + service
    return [
        list(s) == SERVICE, s["sid"] == service, s["account_sid"] == account,
        text(s["friendly_name"]), re.fullmatch(DATE, s["date_created"]),
        re.fullmatch(DATE, s["date_updated"]) and s["date_updated"] >= s["date_created"],
        all(sid(s[k], "RL") for k in SERVICE[5:8]),
        all(isinstance(s[k], bool) for k in SERVICE[8:10]),
        all(integer(s[k]) for k in SERVICE[10:12]),
        integer(s["limits"]["user_channels"]) and integer(s["limits"]["channel_members"]),
        isinstance(s["webhook_filters"], list), isinstance(s["notifications"], dict),
        s["url"] == base,
        s["links"] == {"channels": base + "/Channels", "roles": base + "/Roles",
                       "users": base + "/Users"},
    ]


def check_user(u, service, account):
    url = "https://ip-messaging.twilio.com/v1/Services/%s/Users/%s" % (service, u["sid"])
    return [
        list(u) == USER, sid(u["sid"], "US"), u["account_sid"] == account,
        u["service_sid"] == service, text(u["identity"]), text(u["friendly_name"], True),
        sid(u["role_sid"], "RL"), json_object_string(u["attributes"]),
        isinstance(u["is_online"], bool), u["is_notifiable"] in (True, False, None),
        re.fullmatch(DATE, u["date_created"]), re.fullmatch(DATE, u["date_updated"]),
        integer(u["joined_channels_count"]), u["url"] == url,
        u["links"] == {"user_channels": url + "/Channels"},
    ]


def check_channel(c, service, account):
    url = "https://ip-messaging.twilio.com/v1/Services/%s/Channels/%s" % (service, c["sid"])
    return [
        list(c) == CHANNEL, sid(c["sid"], "CH"), c["account_sid"] == account,
        c["service_sid"] == service, text(c["friendly_name"], True),
        text(c["unique_name"], True), json_object_string(c["attributes"]),
        c["type"] in ("public", "private"), re.fullmatch(DATE, c["date_created"]),
        re.fullmatch(DATE, c["date_updated"]), text(c["created_by"]),
        integer(c["members_count"]), integer(c["messages_count"]), c["url"] == url,
        c["links"] == {"members": url + "/Members", "messages": url + "/Messages",
                       "invites": url + "/Invites"},
    ]


def cmd_fields(kind, service, account, *paths):
    """fields KIND SERVICE ACCOUNT FILE...: 'ok', or the first entry that breaks a rule."""
    check = {"service": check_service, "users": check_user, "channels": check_channel}[kind]
    items = [load(paths[0])] if kind == "service" else entries(paths)
    for item in items:
        results = check(item, service, account)
        if not all(results):
            print("rule %d broken by %s" % ([bool(r) for r in results].index(False),
                                            json.dumps(item)))
            return
    print("ok" if items else "no entries")


def cmd_meta(key, size, *paths):
    """meta KEY PAGE_SIZE FILE...: 'ok' if the pages, in order, chain as one listing."""
    pages = [load(p) for p in paths]
    size = int(size)
    for i, d in enumerate(pages):
        m = d["meta"]
        last = i == len(pages) - 1
        want_url = "Page=%d" % i + ("&PageToken=PT%d" % i if i > 0 else "")
        problems = [
            set(d) != {key, "meta"} and "body keys %s" % sorted(d),
            set(m) != META and "meta keys %s" % sorted(m),
            m["page"] != i and "page %r" % m["page"],
            m["page_size"] != size and "page_size %r" % m["page_size"],
            m["key"] != key and "key %r" % m["key"],
            not m["url"].endswith("PageSize=%d&%s" % (size, want_url)) and "url %s" % m["url"],
            m["first_page_url"] != pages[0]["meta"]["url"] and "first_page_url",
            m["previous_page_url"] != (pages[i - 1]["meta"]["url"] if i else None)
            and "previous_page_url",
            m["next_page_url"] != (None if last else pages[i + 1]["meta"]["url"])
            and "next_page_url",
            not (len(d[key]) == size or (last and len(d[key]) <= size))
            and "%d entries" % len(d[key]),
        ]
        problems = [p for p in problems if p]
        if problems:
            print("page %d: %s" % (i, ", ".join(problems)))
            return
    print("ok")


def cmd_rows(kind, *paths):
    """rows KIND FILE...: the entries as --dump-KIND prints them."""
    items = [load(paths[0])] if kind == "service" else entries(paths)
    out = sys.stdout.buffer
    for item in items:
        line = "\t".join(copy_text(item[c]) for c in COLUMNS[kind]) + "\n"
        out.write(line.encode("utf-8"))


def cmd_code(path):
    """code FILE: the code of a Twilio error body."""
    print(load(path)["code"])


def cmd_users(path):
    """users FILE: each user's SID, its URL-encoded identity and its joined_channels_count."""
    from urllib.parse import quote
    for u in entries([path]):
        print("%s\t%s\t%d" % (u["sid"], quote(u["identity"], safe=""),
                              u["joined_channels_count"]))


def cmd_memberships(path):
    """memberships FILE: the page's entries, one JSON a line, and each channel and status."""
    for e in load(path)["channels"]:
        print("%s\t%s\t%s" % (e["channel_sid"], e["status"], json.dumps(e, sort_keys=True)))


def cmd_joined(*paths):
    """joined FILE...: each channel's SID and members_count."""
    for c in entries(paths):
        print("%s\t%d" % (c["sid"], c["members_count"]))


globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
dims() { PYTHONPATH="$top_srcdir/tests" python3 "$TEST_TMP/dims.py" "$@"; }

# dump ARGS: the fake's --dump-* output for the data set and ARGS.
dump() {
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" "${DATA[@]}" "$@"
}

fake_start dims "${DATA[@]}" || { echo "Bail out! could not start fake_twilio"; exit 1; }

# ------------------------------------------------------------ the service

fetch "$BASE" "$TEST_TMP/service.json"
is "$CODE" 200 "GET /v1/Services/{IS} answers 200"
is "$(dims fields service "$SERVICE_SID" "$ACCOUNT_SID" "$TEST_TMP/service.json")" ok \
	"the service has the documented fields, in order, with their types and links"
dims rows service "$TEST_TMP/service.json" >"$TEST_TMP/service.rows"
dump --dump-service >"$TEST_TMP/service.dump"
same "$TEST_TMP/service.dump" "$TEST_TMP/service.rows" "--dump-service prints what the service endpoint serves"
is "$(tail -n 1 "$FAKE_LOG")" "200	@service	-	$BASE" "the log names the service @service, with no page"

# ------------------------------------------------------------ the users

walk users "$BASE/Users?PageSize=5"
is "${#PAGES[@]}" 3 "$N_USERS users at PageSize=5 take three pages"
is "$(dims meta users 5 "${PAGES[@]}")" ok \
	"every page's meta is complete and the pages chain by next_page_url, key users"
is "$(dims next "${PAGES[0]}")" "$FAKE_URL$BASE/Users?PageSize=5&Page=1&PageToken=PT1" \
	"next_page_url has the form of the memberships listing's"
is "$(dims fields users "$SERVICE_SID" "$ACCOUNT_SID" "${PAGES[@]}")" ok \
	"every user has the documented fields, in order, with their types and links"
is "$(dims field identity "${PAGES[@]}")" "$(printf '%s\n' "${IDENTITIES[@]}")" \
	"following next_page_url lists every user once, --users first, in order"
is "$(dims field sid "${PAGES[@]}" | sort -u | wc -l)" $N_USERS "every user has its own SID"
dims rows users "${PAGES[@]}" >"$TEST_TMP/users.rows"
dump --dump-users >"$TEST_TMP/users.dump"
same "$TEST_TMP/users.dump" "$TEST_TMP/users.rows" "--dump-users prints what the users listing serves"
walk users1000 "$BASE/Users?PageSize=1000"
dims rows users "${PAGES[@]}" >"$TEST_TMP/users1000.rows"
same "$TEST_TMP/users.rows" "$TEST_TMP/users1000.rows" "one page of 1000 lists the same users"
is "$(awk -F'\t' '$2 == "@users" { print $1, $3 }' "$FAKE_LOG" | tr '\n' ,)" "200 0,200 1,200 2,200 0," \
	"the log names the users listing @users, with its pages"

# ------------------------------------------------------------ the channels

walk public "$BASE/Channels?PageSize=7"
is "$(dims meta channels 7 "${PAGES[@]}")" ok "the channel listing's pages chain, key channels"
is "$(dims field type "${PAGES[@]}" | sort | uniq -c | awk '{ print $2, $1 }')" "public $((16 * N_USERS))" \
	"without Type only the public channels are listed"
is "$(dims fields channels "$SERVICE_SID" "$ACCOUNT_SID" "${PAGES[@]}")" ok \
	"every channel has the documented fields, in order, with their types and links"
dims field sid "${PAGES[@]}" >"$TEST_TMP/public.sids"

walk private "$BASE/Channels?Type=private&PageSize=7"
is "$(dims field type "${PAGES[@]}" | sort | uniq -c | awk '{ print $2, $1 }')" "private $((7 * N_USERS))" \
	"Type=private lists the private channels"
is "$(dims next "${PAGES[0]}")" "$FAKE_URL$BASE/Channels?Type=private&PageSize=7&Page=1&PageToken=PT1" \
	"next_page_url keeps the Type filter"
dims field sid "${PAGES[@]}" >"$TEST_TMP/private.sids"

walk both "$BASE/Channels?Type=public&Type=private&PageSize=50"
BOTH_PAGES=("${PAGES[@]}")
is "$(dims meta channels 50 "${PAGES[@]}")" ok "so does the listing of both types"
dims field sid "${PAGES[@]}" >"$TEST_TMP/both.sids"
is "$(wc -l <"$TEST_TMP/both.sids")|$(sort -u "$TEST_TMP/both.sids" | wc -l)" \
	"$((CH * N_USERS))|$((CH * N_USERS))" "Type=public&Type=private lists all $((CH * N_USERS)) channels, each once"
is "$(sort "$TEST_TMP/public.sids" "$TEST_TMP/private.sids" | md5sum)" "$(sort "$TEST_TMP/both.sids" | md5sum)" \
	"and they are the public ones and the private ones"
dims rows channels "${PAGES[@]}" >"$TEST_TMP/channels.rows"
dump --dump-channels >"$TEST_TMP/channels.dump"
same "$TEST_TMP/channels.dump" "$TEST_TMP/channels.rows" \
	"--dump-channels prints what Type=public&Type=private serves, in order"
walk both_reversed "$BASE/Channels?Type=private&Type=public&PageSize=1000"
dims field sid "${PAGES[@]}" >"$TEST_TMP/both_reversed.sids"
same "$TEST_TMP/both.sids" "$TEST_TMP/both_reversed.sids" "the order of the Type parameters does not matter"
fetch "$BASE/Channels?Type=archived" "$TEST_TMP/badtype.json"
is "$CODE|$(dims code "$TEST_TMP/badtype.json")" "400|20001" "an unknown Type is a 400 with code 20001"
is "$(awk -F'\t' '$2 == "@channels" && $1 == 200 && $3 == 1 { print $4; exit }' "$FAKE_LOG")" \
	"$BASE/Channels?PageSize=7&Page=1&PageToken=PT1" "the log names the channel listing @channels, with its pages"

# ------------------------------------------------------------ consistency with the memberships

fetch "$BASE/Users?PageSize=1000" "$TEST_TMP/all_users.json"
dims users "$TEST_TMP/all_users.json" >"$TEST_TMP/users.tsv"
same_members=0 joined_ok=0
: >"$TEST_TMP/member.sids"
while IFS=$'\t' read -r sid identity joined; do
	fetch "$BASE/Users/$identity/Channels?PageSize=1000" "$TEST_TMP/m_identity.json"
	fetch "$BASE/Users/$sid/Channels?PageSize=1000" "$TEST_TMP/m_sid.json"
	dims memberships "$TEST_TMP/m_identity.json" >"$TEST_TMP/m_identity.tsv"
	dims memberships "$TEST_TMP/m_sid.json" >"$TEST_TMP/m_sid.tsv"
	cmp -s "$TEST_TMP/m_identity.tsv" "$TEST_TMP/m_sid.tsv" && [ -s "$TEST_TMP/m_sid.tsv" ] &&
		same_members=$((same_members + 1))
	[ "$(awk -F'\t' '$2 == "joined"' "$TEST_TMP/m_sid.tsv" | wc -l)" = "$joined" ] &&
		joined_ok=$((joined_ok + 1))
	awk -F'\t' '{ print $1 "\t" ($2 == "joined") }' "$TEST_TMP/m_sid.tsv" >>"$TEST_TMP/member.sids"
done <"$TEST_TMP/users.tsv"
is "$same_members" $N_USERS "every user's SID lists the same memberships as its identity"
is "$joined_ok" $N_USERS "joined_channels_count counts the user's joined memberships"
is "$(cut -f1 "$TEST_TMP/member.sids" | sort | md5sum)" "$(sort "$TEST_TMP/both.sids" | md5sum)" \
	"the channels are exactly the channels of the users' memberships"
dims joined "${BOTH_PAGES[@]}" >"$TEST_TMP/members_count.tsv"
is "$(sort "$TEST_TMP/member.sids" | md5sum)" "$(sort "$TEST_TMP/members_count.tsv" | md5sum)" \
	"members_count is 1 where the membership is joined, else 0"
first_sid=$(head -n 1 "$TEST_TMP/users.tsv" | cut -f1)
"$FAKE_TWILIO" --service "$SERVICE_SID" "${DATA[@]}" --dump "$first_sid" | cut -f1,3- >"$TEST_TMP/by_sid.dump"
"$FAKE_TWILIO" --service "$SERVICE_SID" "${DATA[@]}" --dump "${IDENTITIES[0]}" | cut -f1,3- >"$TEST_TMP/by_identity.dump"
ok "$([ -s "$TEST_TMP/by_sid.dump" ] && cmp -s "$TEST_TMP/by_sid.dump" "$TEST_TMP/by_identity.dump"; echo $?)" \
	"--dump of a user's SID prints the memberships of its identity"

# ------------------------------------------------------------ the dumps load with \copy

sql "CREATE TABLE dim_service (sid text, account_sid text, friendly_name text,
       date_created timestamptz, date_updated timestamptz, default_service_role_sid text,
       default_channel_role_sid text, default_channel_creator_role_sid text,
       read_status_enabled boolean, reachability_enabled boolean,
       typing_indicator_timeout int, consumption_report_interval int, url text);
     CREATE TABLE dim_users (service_sid text, sid text, identity text, account_sid text,
       friendly_name text, role_sid text, attributes jsonb, is_online boolean,
       is_notifiable boolean, joined_channels_count int, date_created timestamptz,
       date_updated timestamptz, url text);
     CREATE TABLE dim_channels (service_sid text, sid text, account_sid text, friendly_name text,
       unique_name text, attributes jsonb, type text, created_by text, members_count int,
       messages_count int, date_created timestamptz, date_updated timestamptz, url text)"
for t in service users channels; do
	psql -X -q -v ON_ERROR_STOP=1 -c "\\copy dim_$t FROM '$TEST_TMP/$t.dump'"
done
is "$(sql "SELECT (SELECT count(*) FROM dim_service), (SELECT count(*) FROM dim_users),
             (SELECT count(*) FROM dim_channels)")" "1|$N_USERS|$((CH * N_USERS))" \
	"the three dumps load with \\copy into typed tables"
is "$(sql "SELECT count(*) FILTER (WHERE identity = 'alice b/c@x+y%z?#é'),
                    count(*) FILTER (WHERE friendly_name ~ E'\\t' AND friendly_name ~ '^Zoë \"'),
                    count(*) FILTER (WHERE friendly_name IS NULL) FROM dim_users")" \
	"1|1|1" "an identity, a name with a tab, quotes and UTF-8, and a null name survive the round trip"
is "$(sql "SELECT count(*) FROM dim_channels c WHERE NOT EXISTS (SELECT FROM dim_users u WHERE u.identity = c.created_by)
             OR date_updated < date_created")" 0 "every channel's creator is a user; no update precedes creation"

# ------------------------------------------------------------ variants

fake_start v1 "${DATA[@]}" --variant 1 || { echo "Bail out! could not start fake_twilio v1"; exit 1; }
walk v1users "$BASE/Users?PageSize=4"
is "$(dims field identity "${PAGES[@]}" | tr '\n' ,)" \
	"$(printf '%s\n' "${IDENTITIES[@]}" | awk 'NR % 4 != 0' | tr '\n' ,)" \
	"variant 1 deletes the users k % 4 == 3 from the listing"
dims rows users "${PAGES[@]}" >"$TEST_TMP/v1users.rows"
dump --variant 1 --dump-users >"$TEST_TMP/v1users.dump"
same "$TEST_TMP/v1users.dump" "$TEST_TMP/v1users.rows" "--dump-users --variant 1 prints what variant 1 lists"
is "$(dims field friendly_name "${PAGES[@]}" | grep -c ' (variant 1)$')" 3 \
	"variant 1 renames the users k % 3 == 1 still listed"
walk v1both "$BASE/Channels?Type=public&Type=private&PageSize=100"
dims field sid "${PAGES[@]}" >"$TEST_TMP/v1both.sids"
is "$(wc -l <"$TEST_TMP/v1both.sids")" $(((CH - 2) * N_USERS)) \
	"variant 1 deletes the channels of slots 1 and 21 of every user"
dims rows channels "${PAGES[@]}" >"$TEST_TMP/v1channels.rows"
dump --variant 1 --dump-channels >"$TEST_TMP/v1channels.dump"
same "$TEST_TMP/v1channels.dump" "$TEST_TMP/v1channels.rows" "--dump-channels --variant 1 prints what variant 1 lists"
is "$(dims field friendly_name "${PAGES[@]}" | grep -c ' (variant 1)$')" $((3 * N_USERS)) \
	"variant 1 renames the channels of slots 6, 11 and 16 (and 1, 21, deleted)"
for identity in "${IDENTITIES[@]}"; do
	dump --variant 1 --dump "$identity" | cut -f3
done | sort -u >"$TEST_TMP/v1member.sids"
is "$(comm -23 "$TEST_TMP/v1member.sids" <(sort -u "$TEST_TMP/v1both.sids") | wc -l)|$(wc -l <"$TEST_TMP/v1member.sids")" \
	"0|$(((CH - 3) * N_USERS))" "every channel of a variant-1 membership is still listed"
fetch "$BASE" "$TEST_TMP/v1service.json"
is "$(dims rows service "$TEST_TMP/v1service.json" | cut -f3)" "$(cut -f3 "$TEST_TMP/service.dump") (variant 1)" \
	"variant 1 renames the service"
fake_stop

fake_start v2 --users "$USERS" --user-count 9 --channels $CH --variant 2 ||
	{ echo "Bail out! could not start fake_twilio v2"; exit 1; }
walk v2users "$BASE/Users?PageSize=1000"
is "$(dims field sid "${PAGES[@]}" | md5sum)" "$(cut -f2 "$TEST_TMP/users.dump" | md5sum)" \
	"variant 2 lists every user again"
is "$(dims field friendly_name "${PAGES[@]}" | grep -c ' (variant 1)$')|$(dims field friendly_name "${PAGES[@]}" | grep -c ' (variant 2)$')" \
	"0|4" "variant 2 takes back the names of variant 1 and renames the users k % 3 == 2"
walk v2both "$BASE/Channels?Type=public&Type=private&PageSize=1000"
is "$(dims field sid "${PAGES[@]}" | md5sum)" "$(md5sum <"$TEST_TMP/both.sids")" \
	"variant 2 lists every channel again"
fake_stop

# ------------------------------------------------------------ faults

fake_start faults --users "$USERS" --channels $CH --fault '429:*:1' --fault 500:@users:1 \
	--fault 'truncate:@channels:1' --fault 404:@service:0 ||
	{ echo "Bail out! could not start fake_twilio faults"; exit 1; }
is "$(http_statuses "$BASE/Users" "$BASE/Users" "$BASE/Users")" "429 500 200 " \
	"@users takes a 500 for its first request after '*' took a 429"
is "$(http_statuses "$BASE/Users/alice/Channels" "$BASE/Users/alice/Channels")" "429 200 " \
	"the memberships take the '*' fault, not the @users one"
is "$(http_statuses "$BASE" "$BASE")" "429 404 " "the service takes the '*' fault, then 404:@service"
fetch "$BASE" "$TEST_TMP/gone.json"
is "$CODE|$(dims code "$TEST_TMP/gone.json")" "404|20404" "a Twilio not-found error, code 20404"
http_statuses "$BASE/Channels?PageSize=5" >/dev/null
fetch "$BASE/Channels?PageSize=5&Page=1&PageToken=PT1" "$TEST_TMP/cut.json"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$TEST_TMP/cut.json" 2>/dev/null
is "$?|$(curl -s -u "$AUTH" -o /dev/null -w '%{http_code}' "$FAKE_URL$BASE/Channels?PageSize=5")" "1|200" \
	"truncate:@channels:1 cuts page 1 of the channel listing only"
is "$(awk -F'\t' '{ print $1, $2, $3 }' "$FAKE_LOG" | head -n 5 | tr '\n' ,)" \
	"429 @users 0,500 @users 0,200 @users 0,429 alice 0,200 alice 0," \
	"the log has status, pseudo-user and page for each request"
is "$(awk -F'\t' '$2 == "@service" { print $1, $3, $4 }' "$FAKE_LOG" | tr '\n' ,)" \
	"429 - $BASE,404 - $BASE,404 - $BASE," "the service's requests are logged against @service, without a page"
timeout 10 "$FAKE_TWILIO" --fault 500:@user:1 --port-file "$TEST_TMP/none.port" 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'unknown pseudo-user "@user"' "$TEST_TMP/bad.err")" "2|1" "an unknown pseudo-user is refused"
timeout 10 "$FAKE_TWILIO" --users a,b,a --port-file "$TEST_TMP/none.port" 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'user "a" given twice' "$TEST_TMP/bad.err")" "2|1" "a user given twice is refused"

done_testing

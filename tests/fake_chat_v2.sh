#!/usr/bin/env bash
# The fake's Chat v2 endpoints: every /v1 path also under /v2, from the same
# data, with v2's PageSize bounds, fields (user_sid, url, notification_level),
# status spelling (notParticipating) and URLs; page URLs that lead back to the
# fake; faults, auth and the log as under /v1; unknown /v2 paths 404; and
# --api chat_v2 dumps equal to what /v2 serves, while /v1 and its dumps stay
# as they were.
. "$(dirname "$0")/lib.sh"
[ -x "$FAKE_TWILIO" ] || skip_all "tests/fake_twilio not built (needs libmicrohttpd-dev)"
command -v curl >/dev/null || skip_all "curl not installed"
command -v python3 >/dev/null || skip_all "python3 not installed"

ALICE="alice b/c@x+y%z?#é" # an identity that needs percent-encoding
CH=120                     # channel slots: 120 memberships a user
DATA=(--users "$ALICE,bob" --channels $CH)
V1=/v1/Services/$SERVICE_SID
V2=/v2/Services/$SERVICE_SID

# ------------------------------------------------------------ helpers

# v2.py COMMAND ARGS: reads the fake's JSON (see each command).
cat >"$TEST_TMP/v2.py" <<'PY'
import json, re, sys
from fake_api import *  # tests/fake_api.py: shared with the other fake tests

V1 = "https://ip-messaging.twilio.com/v1/Services/"
V2 = "https://chat.twilio.com/v2/Services/"
# The fields of chat.v2.service.user.user_channel, in the spec's order, and those of v1.
ENTRY_V2 = ["account_sid", "service_sid", "channel_sid", "user_sid", "member_sid", "status",
            "last_consumed_message_index", "unread_messages_count", "links", "url",
            "notification_level"]
ENTRY_V1 = ["account_sid", "service_sid", "channel_sid", "member_sid", "status",
            "last_consumed_message_index", "unread_messages_count", "links"]
# chat.v2.service, in the spec's order.
SERVICE_V2 = ["sid", "account_sid", "friendly_name", "date_created", "date_updated",
              "default_service_role_sid", "default_channel_role_sid",
              "default_channel_creator_role_sid", "read_status_enabled", "reachability_enabled",
              "typing_indicator_timeout", "consumption_report_interval", "limits",
              "pre_webhook_url", "post_webhook_url", "webhook_method", "webhook_filters",
              "pre_webhook_retry_count", "post_webhook_retry_count", "notifications", "media",
              "url", "links"]


def cmd_entries(service, account, user_sid, *paths):
    """entries SERVICE ACCOUNT USER_SID FILE...: whether every entry is a v2 user channel."""
    def check(e):
        ch, mb = e["channel_sid"], e["member_sid"]
        channel = V2 + service + "/Channels/" + ch
        return [
            list(e) == ENTRY_V2, e["account_sid"] == account, e["service_sid"] == service,
            sid(ch, "CH"), e["user_sid"] == user_sid, mb is None or sid(mb, "MB"),
            e["status"] in ("joined", "invited", "notParticipating", None),
            integer(e["last_consumed_message_index"], True), integer(e["unread_messages_count"]),
            e["links"] is None or (e["links"]["channel"] == channel and
                                   re.fullmatch(re.escape(channel) + "/Members/" + SID["MB"],
                                                e["links"]["member"]) and
                                   (mb is None or e["links"]["member"].endswith("/" + mb))),
            e["url"] == V2 + service + "/Users/" + user_sid + "/Channels/" + ch,
            e["notification_level"] in ("default", "muted"),
        ]
    report(entries(paths), check)


def cmd_v1entries(service, *paths):
    """v1entries SERVICE FILE...: whether every entry has v1's fields and links, no more."""
    def check(e):
        return [list(e) == ENTRY_V1, e["status"] in ("joined", "invited", "not_participating", None),
                e["links"] is None or
                e["links"]["channel"] == V1 + service + "/Channels/" + e["channel_sid"]]
    report(entries(paths), check)


def cmd_rows(user, *paths):
    """rows USER FILE...: the entries as --dump USER prints them, with --api chat_v2 for v2's."""
    v1_status = {"notParticipating": "not_participating"}
    for e in entries(paths):
        links = e["links"] or {}
        level = [e["notification_level"]] if "user_sid" in e else []
        write([e["service_sid"], user, e["channel_sid"], e["account_sid"], e["member_sid"],
               v1_status.get(e["status"], e["status"]), e["last_consumed_message_index"],
               e["unread_messages_count"], links.get("channel"), links.get("member")] + level)


def cmd_dims(kind, *paths):
    """dims KIND FILE...: the service, users or channels as --dump-KIND prints them."""
    for item in [load(paths[0])] if kind == "service" else entries(paths):
        write([item[c] for c in COLUMNS[kind]])


def cmd_service(service, account, path):
    """service SERVICE ACCOUNT FILE: whether the service is a v2 service."""
    base = V2 + service
    def check(s):
        return [list(s) == SERVICE_V2, s["sid"] == service, s["account_sid"] == account,
                integer(s["pre_webhook_retry_count"]), integer(s["post_webhook_retry_count"]),
                integer(s["media"]["size_limit_mb"]), s["url"] == base,
                s["links"] == {"channels": base + "/Channels", "roles": base + "/Roles",
                               "users": base + "/Users", "bindings": base + "/Bindings"}]
    report([load(path)], check)


def cmd_users(service, path, *paths):
    """users SERVICE FILE...: whether every user has v2's fields and links."""
    def check(u):
        url = V2 + service + "/Users/" + u["sid"]
        return [list(u) == USER, sid(u["sid"], "US"), u["url"] == url,
                u["links"] == {"user_channels": url + "/Channels",
                               "user_bindings": url + "/Bindings"}]
    report(entries((path,) + paths), check)


def cmd_channels(service, *paths):
    """channels SERVICE FILE...: whether every channel has v2's fields and links."""
    def check(c):
        url = V2 + service + "/Channels/" + c["sid"]
        last = c["links"]["last_message"]
        return [list(c) == CHANNEL, sid(c["sid"], "CH"), c["url"] == url,
                list(c["links"]) == ["members", "messages", "invites", "webhooks", "last_message"],
                c["links"]["members"] == url + "/Members", c["links"]["messages"] == url + "/Messages",
                c["links"]["invites"] == url + "/Invites", c["links"]["webhooks"] == url + "/Webhooks",
                (last is None) == (c["messages_count"] == 0),
                last is None or (last.startswith(url + "/Messages/") and
                                 sid(last[len(url + "/Messages/"):], "IM"))]
    report(entries(paths), check)


globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
v2() { PYTHONPATH="$top_srcdir/tests" python3 "$TEST_TMP/v2.py" "$@"; }

# dump ARGS: the fake's --dump* output for the data set and ARGS.
dump() {
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" --service "$SERVICE_SID" "${DATA[@]}" "$@"
}

# count STRING FILE...: how many times STRING occurs in the files.
count() {
	local s=$1
	shift
	cat "$@" | grep -o -F -- "$s" | wc -l
}

ENC=$(v2 quote "$ALICE")
ALICE_SID=$(dump --dump-users | awk -F'\t' -v id="$ALICE" '$3 == id { print $2 }')
CAROL_SID=$("$FAKE_TWILIO" --service "$SERVICE_SID" --users carol --dump-users | cut -f2)

fake_start v2 "${DATA[@]}" || { echo "Bail out! could not start fake_twilio"; exit 1; }

# ------------------------------------------------------------ a user's channels

walk p50 "$V2/Users/$ENC/Channels?PageSize=50"
P50=("${PAGES[@]}")
is "${#P50[@]}|$(v2 meta channels 50 "$FAKE_URL$V2/Users/$ENC/Channels?" "${P50[@]}")" "3|ok" \
	"$CH memberships at PageSize=50 take three pages under /v2, each with a complete meta, chained by next_page_url"
is "$(v2 next "${P50[0]}")" "$FAKE_URL$V2/Users/$ENC/Channels?PageSize=50&Page=1&PageToken=PT1" \
	"next_page_url leads back to the fake, under /v2"
is "$(v2 entries "$SERVICE_SID" "$ACCOUNT_SID" "$ALICE_SID" "${P50[@]}")" ok \
	"every entry has v2's fields in order: user_sid the user's SID, its own url, notification_level, v2 links"
v2 rows "$ALICE" "${P50[@]}" >"$TEST_TMP/p50.rows"
dump --api chat_v2 --dump "$ALICE" >"$TEST_TMP/alice.v2dump"
is "$(wc -l <"$TEST_TMP/alice.v2dump")|$(awk -F'\t' '{ print NF }' "$TEST_TMP/alice.v2dump" | sort -u)" \
	"$CH|11" "--dump --api chat_v2 prints $CH rows of 11 columns"
same "$TEST_TMP/alice.v2dump" "$TEST_TMP/p50.rows" \
	"the pages of 50 are --dump --api chat_v2, statuses mapped back, notification_level last"
is "$(cut -f11 "$TEST_TMP/alice.v2dump" | sort | uniq -c | awk '{ print $2, $1 }' | tr '\n' ,)" \
	"default 90,muted 30," "notification_level is muted for one slot in four"

walk p20 "$V2/Users/$ENC/Channels?PageSize=20"
is "${#PAGES[@]}|$(v2 meta channels 20 "$FAKE_URL$V2/Users/$ENC/Channels?" "${PAGES[@]}")" "6|ok" \
	"at PageSize=20 six pages, each with a complete meta, chained by next_page_url"
v2 rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/p20.rows"
same "$TEST_TMP/alice.v2dump" "$TEST_TMP/p20.rows" "the pages of 20 are the same rows, in the same order"
fetch "$V2/Users/$ENC/Channels" "$TEST_TMP/default.json"
is "$CODE|$(v2 meta channels 50 "$FAKE_URL$V2/Users/$ENC/Channels?" "$TEST_TMP/default.json" "${P50[@]:1}")" \
	"200|ok" "without PageSize a page holds 50 and chains as PageSize=50 does"

fetch "$V2/Users/$ENC/Channels?PageSize=51" "$TEST_TMP/p51.json"
is "$CODE|$(v2 error "$TEST_TMP/p51.json")" \
	"400|400|20001|Invalid PageSize: must be an integer between 1 and 50" \
	"PageSize=51 is refused with a 400 that names v2's bound of 50"
is "$(http_statuses "$V2/Users/$ENC/Channels?PageSize=0" "$V2/Users/$ENC/Channels?PageSize=x" \
	"$V1/Users/$ENC/Channels?PageSize=51" "$V1/Users/$ENC/Channels?PageSize=1000")" "400 400 200 200 " \
	"PageSize 0 or not a number is refused too; /v1 keeps its bound of 1000"

is "$(count '"status":"notParticipating"' "${P50[@]}")|$(count not_participating "${P50[@]}")" \
	"$(grep -c 'not_participating' "$TEST_TMP/alice.v2dump")|0" \
	"/v2 spells notParticipating wherever the dump says not_participating, and never not_participating"

# ------------------------------------------------------------ user_sid: by identity and by SID

walk by_sid "$V2/Users/$ALICE_SID/Channels?PageSize=50"
is "$(v2 field user_sid "${P50[@]}" | sort -u)|$(v2 field user_sid "${PAGES[@]}" | sort -u)" \
	"$ALICE_SID|$ALICE_SID" "user_sid is the SID the users listing gives, asked by identity or by SID"
cat "${P50[@]}" | sed 's/^//' >"$TEST_TMP/p50.body"
cat "${PAGES[@]}" | sed "s|/Users/$ALICE_SID/Channels?|/Users/$ENC/Channels?|g" >"$TEST_TMP/by_sid.body"
same "$TEST_TMP/p50.body" "$TEST_TMP/by_sid.body" \
	"by SID the pages are those by identity, byte for byte but for their own page URLs"
walk carol "$V2/Users/carol/Channels?PageSize=50"
is "$(v2 field user_sid "${PAGES[@]}" | sort -u)" "$CAROL_SID" \
	"an identity outside --users gets the SID the users listing would give it"

# ------------------------------------------------------------ /v1 unchanged

walk v1p50 "$V1/Users/$ENC/Channels?PageSize=50"
is "$(v2 field channel_sid "${PAGES[@]}" | md5sum)|$(v2 field channel_sid "${PAGES[@]}" | wc -l)" \
	"$(v2 field channel_sid "${P50[@]}" | md5sum)|$CH" "/v1 lists the same $CH channel SIDs, in the same order"
is "$(v2 v1entries "$SERVICE_SID" "${PAGES[@]}")|$(count '"status":"not_participating"' "${PAGES[@]}")" \
	"ok|$(grep -c 'not_participating' "$TEST_TMP/alice.v2dump")" \
	"/v1 entries keep v1's fields, links and not_participating"
v2 rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/v1.rows"
cut -f1-8 "$TEST_TMP/v1.rows" >"$TEST_TMP/v1.values"
cut -f1-8 "$TEST_TMP/p50.rows" >"$TEST_TMP/v2.values"
same "$TEST_TMP/v2.values" "$TEST_TMP/v1.values" "/v1 and /v2 serve the same memberships with the same values"
dump --dump "$ALICE" >"$TEST_TMP/alice.v1dump"
same "$TEST_TMP/alice.v1dump" "$TEST_TMP/v1.rows" "/v1 still serves what --dump without --api prints"
V1_LINKS=https://ip-messaging.twilio.com/v1/Services/$SERVICE_SID/Channels/CH
V2_LINKS=https://chat.twilio.com/v2/Services/$SERVICE_SID/Channels/CH
columns=$(awk -F'\t' '{ print NF }' "$TEST_TMP/alice.v1dump" | sort -u)
v1_urls=$(cut -f9,10 "$TEST_TMP/alice.v1dump" | grep -c "^$V1_LINKS.*"$'\t'"$V1_LINKS")
v2_urls=$(cut -f9,10 "$TEST_TMP/alice.v2dump" | grep -c "^$V2_LINKS.*"$'\t'"$V2_LINKS")
is "$columns|$v1_urls|$(cut -f9,10 "$TEST_TMP/alice.v1dump" | grep -c chat.twilio.com)" "10|$v2_urls|0" \
	"--dump without --api keeps 10 columns and v1 URLs; chat_v2 has v2 URLs in the same places"
dump --api ip_messaging_v1 --dump "$ALICE" >"$TEST_TMP/alice.v1named"
same "$TEST_TMP/alice.v1dump" "$TEST_TMP/alice.v1named" "--api ip_messaging_v1 is the default"
is "$(cut -f1-8 "$TEST_TMP/alice.v1dump" | md5sum)" "$(md5sum <"$TEST_TMP/v2.values")" \
	"both dumps hold the same values, statuses spelled as in v1"

# ------------------------------------------------------------ the log and auth

is "$(awk -F'\t' '$1 == 200 && $3 == 1 && $4 ~ /^\/v2\/.*PageSize=20/ { print $2; exit }' "$FAKE_LOG")" "$ALICE" \
	"the log names the user and page of a /v2 request"
anonymous=$(curl -s -o /dev/null -w '%{http_code}' "$FAKE_URL$V2/Users/$ENC/Channels")
wrong=$(curl -s -u "$ACCOUNT_SID:wrong" -o /dev/null -w '%{http_code}' "$FAKE_URL$V2/Users")
is "$anonymous|$wrong" "401|401" "/v2 asks for the same credentials"

# ------------------------------------------------------------ unknown paths

for t in "$V2/Roles" "$V2/Users/$ENC/Channels/x" "$V2/Users/$ENC/Bindings" "/v3/Services/$SERVICE_SID/Users" \
	"/v2/Services/ISnot-a-sid/Users"; do
	fetch "$t" "$TEST_TMP/unknown.json"
	printf '%s %s\n' "$CODE" "$(v2 error "$TEST_TMP/unknown.json" | cut -d'|' -f2)"
done >"$TEST_TMP/unknown.codes"
is "$(sort -u "$TEST_TMP/unknown.codes")" "404 20404" "a path that is not served under /v2 (or /v3) is a 404, code 20404"
fake_stop

# ------------------------------------------------------------ the service, users and channels

# 150 users with 3 channel slots each: 2 pages of users and 5 of channels at PageSize=100.
DATA=(--users "$ALICE,bob" --user-count 148 --channels 3)
fake_start dims "${DATA[@]}" || { echo "Bail out! could not start fake_twilio dims"; exit 1; }

fetch "$V2" "$TEST_TMP/service.json"
is "$CODE|$(v2 service "$SERVICE_SID" "$ACCOUNT_SID" "$TEST_TMP/service.json")" "200|ok" \
	"the service has v2's fields in the spec's order, no webhooks, v2 URL and links"
v2 dims service "$TEST_TMP/service.json" >"$TEST_TMP/service.rows"
dump --api chat_v2 --dump-service >"$TEST_TMP/service.dump"
same "$TEST_TMP/service.dump" "$TEST_TMP/service.rows" "--dump-service --api chat_v2 prints what /v2 serves"
fetch "$V1" "$TEST_TMP/service_v1.json"
is "$(v2 dims service "$TEST_TMP/service_v1.json" | cut -f1-12)" "$(cut -f1-12 "$TEST_TMP/service.rows")" \
	"/v1 serves the same service"

walk users "$V2/Users?PageSize=100"
is "${#PAGES[@]}|$(v2 meta users 100 "$FAKE_URL$V2/Users?" "${PAGES[@]}")" "2|ok" \
	"150 users at PageSize=100 take two pages under /v2, chained by next_page_url"
is "$(v2 users "$SERVICE_SID" "${PAGES[@]}")" ok "every user has v2's url and links (user_channels, user_bindings)"
v2 dims users "${PAGES[@]}" >"$TEST_TMP/users.rows"
dump --api chat_v2 --dump-users >"$TEST_TMP/users.dump"
same "$TEST_TMP/users.dump" "$TEST_TMP/users.rows" "--dump-users --api chat_v2 prints what /v2 lists"
walk users_v1 "$V1/Users?PageSize=1000"
is "$(v2 dims users "${PAGES[@]}" | cut -f1-12 | md5sum)" "$(cut -f1-12 "$TEST_TMP/users.rows" | md5sum)" \
	"/v1 lists the same users"
fetch "$V2/Users?PageSize=101" "$TEST_TMP/u101.json"
is "$CODE|$(v2 error "$TEST_TMP/u101.json")" "400|400|20001|Invalid PageSize: must be an integer between 1 and 100" \
	"the users listing refuses PageSize=101 under /v2, naming the bound"

walk channels "$V2/Channels?Type=public&Type=private&PageSize=100"
is "${#PAGES[@]}|$(v2 meta channels 100 "$FAKE_URL$V2/Channels?Type=public&Type=private&" "${PAGES[@]}")" "5|ok" \
	"450 channels at PageSize=100 take five pages under /v2"
is "$(v2 next "${PAGES[0]}")" "$FAKE_URL$V2/Channels?Type=public&Type=private&PageSize=100&Page=1&PageToken=PT1" \
	"the channels' next_page_url keeps the Type filter, under /v2"
is "$(v2 channels "$SERVICE_SID" "${PAGES[@]}")" ok \
	"every channel has v2's url and links, last_message a message when it has any"
v2 dims channels "${PAGES[@]}" >"$TEST_TMP/channels.rows"
dump --api chat_v2 --dump-channels >"$TEST_TMP/channels.dump"
same "$TEST_TMP/channels.dump" "$TEST_TMP/channels.rows" "--dump-channels --api chat_v2 prints what /v2 lists"
fetch "$V2/Channels?PageSize=101" "$TEST_TMP/c101.json"
is "$CODE|$(v2 error "$TEST_TMP/c101.json" | cut -d'|' -f3)" "400|Invalid PageSize: must be an integer between 1 and 100" \
	"the channels listing refuses PageSize=101 under /v2"
is "$(http_statuses "$V1/Users?PageSize=1000" "$V1/Channels?PageSize=1000")" "200 200 " \
	"/v1's listings keep their bound of 1000"
fake_stop

# ------------------------------------------------------------ faults, variants and unknown fields

DATA=(--users "$ALICE,bob" --channels 60 --variant 1 --seed 5)
fake_start faults "${DATA[@]}" --fault "429:$ALICE:1" --fault "oddstatus:bob:1" --fault "truncate:@users:0" ||
	{ echo "Bail out! could not start fake_twilio faults"; exit 1; }
fetch "$V2/Users/$ENC/Channels" "$TEST_TMP/f429.json"
is "$CODE|$(v2 error "$TEST_TMP/f429.json" | cut -d'|' -f2)|$(http_statuses "$V2/Users/$ENC/Channels" "$V1/Users/$ENC/Channels")" \
	"429|20429|200 200 " "a 429 count fault for a user fires under /v2, then the user is served, as under /v1"
walk bob "$V2/Users/bob/Channels?PageSize=20"
v2 rows bob "${PAGES[@]}" >"$TEST_TMP/bob.rows"
dump --api chat_v2 --page-size 20 --fault "oddstatus:bob:1" --dump bob >"$TEST_TMP/bob.dump"
is "$(grep -c archived "$TEST_TMP/bob.rows")" 1 "an oddstatus fault changes page 1 under /v2"
same "$TEST_TMP/bob.dump" "$TEST_TMP/bob.rows" \
	"--dump --api chat_v2 of variant 1, seed 5 and that fault is what /v2 serves"
fetch "$V2/Users" "$TEST_TMP/cut.json"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$TEST_TMP/cut.json" 2>/dev/null
is "$?" 1 "a truncate fault on @users cuts the /v2 users listing"
"$FAKE_TWILIO" --service "$SERVICE_SID" --api chat_v2 --page-size 51 --dump bob >/dev/null 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'chat_v2 allows 1..50' "$TEST_TMP/bad.err")" "2|1" "--page-size 51 is refused with --api chat_v2"
"$FAKE_TWILIO" --service "$SERVICE_SID" --api chat_v3 --dump bob >/dev/null 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'invalid value for --api' "$TEST_TMP/bad.err")" "2|1" "an unknown --api is refused"
fake_stop

fake_start extra "${DATA[@]}" --extra-fields || { echo "Bail out! could not start fake_twilio extra"; exit 1; }
walk extra "$V2/Users/$ENC/Channels?PageSize=50"
v2 rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/extra.rows"
dump --api chat_v2 --dump "$ALICE" >"$TEST_TMP/extra.dump"
is "$(v2 dupes "${PAGES[@]}")|$(count '"roles":[]' "${PAGES[@]}")" "0|$(wc -l <"$TEST_TMP/extra.dump")" \
	"--extra-fields adds unknown fields under /v2 without repeating a known one"
same "$TEST_TMP/extra.dump" "$TEST_TMP/extra.rows" "and the known ones are still those of the dump"
fake_stop

done_testing

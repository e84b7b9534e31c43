#!/usr/bin/env bash
# The fake's Conversations v1 endpoints: a user's conversations in a service
# (/v1/Services/{IS}/Users/{U}/Conversations) and in the account's default
# service (/v1/Users/{U}/Conversations), and /v1/Configuration.  Checked
# against Twilio's spec: the field lists below are those of
# twilio_conversations_v1.json (compared with the document when it is at
# hand), every entry has those fields in that order with their types, SID
# patterns and enums; paging by next_page_url reaches every slot once at
# PageSize 1, 7 and 50, 0 and 51 are refused; conversation i is the channel
# of slot i; a user by identity and by SID; --dump --api conversations equal
# to what is served, field for field; what a variant removes and changes;
# faults, latency, auth and the log as for a user's channels; --cache-bodies
# serves a page again from memory, byte for byte as rendered, logged and
# authenticated as before, counted as a hit, and refuses the options whose
# answers vary.
. "$(dirname "$0")/lib.sh"
[ -x "$FAKE_TWILIO" ] || skip_all "tests/fake_twilio not built (needs libmicrohttpd-dev)"
command -v curl >/dev/null || skip_all "curl not installed"
command -v python3 >/dev/null || skip_all "python3 not installed"

ALICE="alice b/c@x+y%z?#é" # an identity that needs percent-encoding
CH=120                     # channel slots: 120 conversations a user
DATA=(--users "$ALICE,bob" --channels $CH)
DEFAULT_IS=IS00000000000000000000000000000def # the fake's default conversation service
SPEC=${TWILIO_OAI:-$top_srcdir/../shared/twilio-oai}/twilio_conversations_v1.json
S=/v1/Services/$SERVICE_SID
CONV=https://conversations.twilio.com/v1

# ------------------------------------------------------------ helpers

# conv.py COMMAND ARGS: reads the fake's JSON and dumps (see each command).
cat >"$TEST_TMP/conv.py" <<'PY'
import json, re, sys
from datetime import datetime, timedelta
from fake_api import *  # tests/fake_api.py: shared with the other fake tests

CONV = "https://conversations.twilio.com/v1"
DATE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def pattern(prefix):
    return "^%s[0-9a-fA-F]{32}$" % prefix


# The properties of the spec's schemas, in its order: name, type, format,
# pattern, enum, nullable (an enum's $ref resolved).  cmd_spec compares them
# with the document.
USER_CONVERSATION = [
    ("account_sid", "string", None, pattern("AC"), None, True),
    ("chat_service_sid", "string", None, pattern("IS"), None, True),
    ("conversation_sid", "string", None, pattern("CH"), None, True),
    ("unread_messages_count", "integer", None, None, None, True),
    ("last_read_message_index", "integer", None, None, None, True),
    ("participant_sid", "string", None, pattern("MB"), None, True),
    ("user_sid", "string", None, pattern("US"), None, True),
    ("friendly_name", "string", None, None, None, True),
    ("conversation_state", "string", None, None, ["inactive", "active", "closed"], False),
    ("timers", None, None, None, None, True),
    ("attributes", "string", None, None, None, True),
    ("date_created", "string", "date-time", None, None, True),
    ("date_updated", "string", "date-time", None, None, True),
    ("created_by", "string", None, None, None, True),
    ("notification_level", "string", None, None, ["default", "muted"], False),
    ("unique_name", "string", None, None, None, True),
    ("url", "string", "uri", None, None, True),
    ("links", "object", "uri-map", None, None, True),
]
CONFIGURATION = [
    ("account_sid", "string", None, pattern("AC"), None, True),
    ("default_chat_service_sid", "string", None, pattern("IS"), None, True),
    ("default_messaging_service_sid", "string", None, pattern("MG"), None, True),
    ("default_inactive_timer", "string", None, None, None, True),
    ("default_closed_timer", "string", None, None, None, True),
    ("url", "string", "uri", None, None, True),
    ("links", "object", "uri-map", None, None, True),
]
SCHEMAS = {
    "conversations.v1.service.service_user.service_user_conversation": USER_CONVERSATION,
    "conversations.v1.user.user_conversation": USER_CONVERSATION,
    "conversations.v1.configuration": CONFIGURATION,
}
LISTINGS = {
    "/v1/Services/{ChatServiceSid}/Users/{UserSid}/Conversations":
        "conversations.v1.service.service_user.service_user_conversation",
    "/v1/Users/{UserSid}/Conversations": "conversations.v1.user.user_conversation",
}
# The nullable fields the fake fills all the same.
NOT_NULL = {f[0] for f in USER_CONVERSATION} - {"friendly_name", "unique_name",
                                                 "last_read_message_index"}
# The timers each state may have, as the fake draws them.
TIMERS = {"active": {"date_inactive", "date_closed"}, "inactive": {"date_closed"}, "closed": set()}
# The columns of --dump --api conversations.
DUMP = ["service_sid", "user_sid", "conversation_sid", "account_sid", "participant_sid",
        "conversation_state", "notification_level", "unread_messages_count",
        "last_read_message_index", "friendly_name", "unique_name", "created_by", "date_created",
        "date_updated", "date_inactive", "date_closed", "url", "conversation_url",
        "participant_url"]
COL = {c: i for i, c in enumerate(DUMP)}


def spec_fields(spec, name):
    schemas = spec["components"]["schemas"]
    out = []
    for field, p in schemas[name]["properties"].items():
        if "$ref" in p:
            p = schemas[p["$ref"].rsplit("/", 1)[1]]
        out.append((field, p.get("type"), p.get("format"), p.get("pattern"), p.get("enum"),
                    p.get("nullable", False)))
    return out


def cmd_spec(path):
    """spec FILE: 'ok' if the document has the schemas above, and both listings the key
    conversations, the meta of fake_api.META and PageSize 1..50; else what differs."""
    spec = load(path)
    problems = [name for name, fields in SCHEMAS.items() if spec_fields(spec, name) != fields]
    for where, schema in LISTINGS.items():
        get = spec["paths"][where]["get"]
        size = next(p["schema"] for p in get["parameters"] if p["name"] == "PageSize")
        body = get["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
        if (size["minimum"], size["maximum"]) != (1, 50):
            problems.append(where + " PageSize")
        if set(body) != {"conversations", "meta"} or \
                body["conversations"]["items"]["$ref"].rsplit("/", 1)[1] != schema:
            problems.append(where + " body")
        if set(body["meta"]["properties"]) != META:
            problems.append(where + " meta")
    print(", ".join(problems) or "ok")


def typed(value, field):
    """Whether value has field's type, format, pattern and enum (or is null where nullable)."""
    name, kind, fmt, pat, enum, nullable = field
    if value is None:
        return nullable
    if kind == "integer":
        return integer(value)
    if kind == "object":
        return isinstance(value, dict) and (fmt != "uri-map" or all(
            isinstance(u, str) and u.startswith("https://") for u in value.values()))
    if kind == "string":
        return (isinstance(value, str) and (pat is None or re.search(pat, value) is not None)
                and (enum is None or value in enum)
                and (fmt != "date-time" or re.fullmatch(DATE, value) is not None)
                and (fmt != "uri" or value.startswith("https://")))
    return True


def cmd_entries(scope, service, account, user_sid, *paths):
    """entries SCOPE SERVICE ACCOUNT USER_SID FILE...: whether every entry is a user
    conversation of the spec, of SERVICE and USER_SID, its URLs under /v1/Services/SERVICE
    (SCOPE service) or right under /v1 (SCOPE default)."""
    base = CONV + ("/Services/" + service if scope == "service" else "")

    def check(e):
        timers = e["timers"]
        conversation = base + "/Conversations/" + e["conversation_sid"]
        return [
            list(e) == [f[0] for f in USER_CONVERSATION],
            all(typed(e[f[0]], f) for f in USER_CONVERSATION),
            all(e[k] is not None for k in NOT_NULL),
            e["account_sid"] == account, e["chat_service_sid"] == service,
            e["user_sid"] == user_sid,
            isinstance(timers, dict) and set(timers) <= TIMERS[e["conversation_state"]]
            and all(re.fullmatch(DATE, d) and d > e["date_updated"] for d in timers.values()),
            isinstance(json.loads(e["attributes"]), dict),
            e["date_created"] <= e["date_updated"],
            e["url"] == base + "/Users/" + user_sid + "/Conversations/" + e["conversation_sid"],
            list(e["links"]) == ["participant", "conversation"],
            e["links"] == {"participant": conversation + "/Participants/" + e["participant_sid"],
                           "conversation": conversation},
        ]
    report(entries(paths), check)


def cmd_configuration(account, service, path):
    """configuration ACCOUNT SERVICE FILE: whether it is the spec's configuration, SERVICE the
    default chat service, no timers."""
    def check(c):
        return [list(c) == [f[0] for f in CONFIGURATION],
                all(typed(c[f[0]], f) for f in CONFIGURATION),
                c["account_sid"] == account, c["default_chat_service_sid"] == service,
                c["default_messaging_service_sid"] is not None,
                c["default_inactive_timer"] is None and c["default_closed_timer"] is None,
                c["url"] == CONV + "/Configuration",
                c["links"] == {"service": CONV + "/Services/" + service + "/Configuration",
                               "webhooks": CONV + "/Configuration/Webhooks"}]
    report([load(path)], check)


def cmd_variety(*paths):
    """variety FILE...: the states, notification levels and timers the entries have, and the
    nullable fields that are null in some."""
    es = entries(paths)

    def seen(f):
        return ",".join(sorted({f(e) for e in es}))
    nulls = [k for k in ("friendly_name", "unique_name", "last_read_message_index")
             if any(e[k] is None for e in es)]
    print("|".join([seen(lambda e: e["conversation_state"]),
                    seen(lambda e: e["notification_level"]),
                    seen(lambda e: "+".join(sorted(e["timers"])) or "none"), ",".join(nulls)]))


def cmd_rows(user, *paths):
    """rows USER FILE...: the entries as --dump USER --api conversations prints them."""
    for e in entries(paths):
        t, links = e["timers"], e["links"]
        write([e["chat_service_sid"], user, e["conversation_sid"], e["account_sid"],
               e["participant_sid"], e["conversation_state"], e["notification_level"],
               e["unread_messages_count"], e["last_read_message_index"], e["friendly_name"],
               e["unique_name"], e["created_by"], e["date_created"], e["date_updated"],
               t.get("date_inactive"), t.get("date_closed"), e["url"], links["conversation"],
               links["participant"]])


def split(args):
    i = args.index("--")
    return entries(args[:i]), entries(args[i + 1:])


def cmd_memberships(*args):
    """memberships CONVERSATION-FILE... -- CHANNEL-FILE...: 'ok' if conversation i is the
    user's channel i: its SID, the member as participant (where the channel entry has one),
    the unread count and the last read index."""
    convs, chans = split(args)
    if len(convs) != len(chans):
        return print("%d conversations, %d channels" % (len(convs), len(chans)))
    for c, m in zip(convs, chans):
        if (c["conversation_sid"], c["unread_messages_count"], c["last_read_message_index"]) != \
                (m["channel_sid"], m["unread_messages_count"], m["last_consumed_message_index"]) \
                or m["member_sid"] not in (None, c["participant_sid"]):
            return print("differs: %s %s" % (json.dumps(c), json.dumps(m)))
    print("ok")


def cmd_channels(*args):
    """channels CONVERSATION-FILE... -- CHANNEL-LISTING-FILE...: 'ok' if every conversation
    has the name, unique name, attributes, creation date and creator of its channel in the
    service's channel listing."""
    convs, chans = split(args)
    by_sid = {c["sid"]: c for c in chans}
    keys = ("friendly_name", "unique_name", "attributes", "date_created", "created_by")
    for c in convs:
        ch = by_sid.get(c["conversation_sid"])
        if ch is None or any(c[k] != ch[k] for k in keys):
            return print("differs: %s %s" % (json.dumps(c), json.dumps(ch)))
    print("ok" if convs else "no entries")


NEXT = {"active": "inactive", "inactive": "closed", "closed": "active"}


def later(date, hours):
    d = datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ") + timedelta(hours=hours)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def variant_row(b, i, v, counts):
    """Slot i of variant 0's dump (b) as variant v's dump has it: a regular expression a
    column."""
    want = [re.escape(x) for x in b]
    changed, renamed = i % 7 == v % 7, i % 5 == v % 5
    anydate = r"\\N|" + DATE
    if changed:
        state = NEXT[b[COL["conversation_state"]]]
        want[COL["conversation_state"]] = state
        want[COL["unread_messages_count"]] = str(int(b[COL["unread_messages_count"]]) + v)
        if b[COL["last_read_message_index"]] != "\\N":
            want[COL["last_read_message_index"]] = str(int(b[COL["last_read_message_index"]]) + v)
        want[COL["date_inactive"]] = anydate if state == "active" else r"\\N"
        want[COL["date_closed"]] = anydate if state != "closed" else r"\\N"
    if renamed:
        name = b[COL["friendly_name"]]
        want[COL["friendly_name"]] = (".+" if name == "\\N" else re.escape(name)) + \
            re.escape(" (variant %d)" % v)
    if changed or renamed:
        want[COL["date_updated"]] = later(b[COL["date_updated"]], v)
    if renamed and not changed:
        for c in ("date_inactive", "date_closed"):
            if b[COL[c]] != "\\N":
                want[COL[c]] = later(b[COL[c]], v)
    counts["changed"] += changed
    counts["renamed"] += renamed
    counts["kept"] += not (changed or renamed)
    return want


def cmd_variant(v, base_path, var_path):
    """variant V BASE VARIANT: whether the dump of variant V (VARIANT) is that of variant 0
    (BASE, a line a slot) with the slots i % 10 == V % 10 removed; those i % 7 == V % 7 in the
    next state with V more unread messages and a last read index V higher; those i % 5 == V % 5
    renamed; date_updated V hours later for both; nothing else changed.  'ok' and the counts,
    or the first slot that breaks it."""
    v = int(v)

    def rows(p):
        return [line.rstrip("\n").split("\t") for line in open(p, encoding="utf-8")]
    got = rows(var_path)
    counts = {"removed": 0, "changed": 0, "renamed": 0, "kept": 0}
    j = 0
    for i, b in enumerate(rows(base_path)):
        if i % 10 == v % 10:
            counts["removed"] += 1
            continue
        want = variant_row(b, i, v, counts)
        if j >= len(got) or not all(re.fullmatch(w, g) for w, g in zip(want, got[j])):
            return print("slot %d: %s" % (i, got[j] if j < len(got) else "missing"))
        j += 1
    if j != len(got):
        return print("%d rows more" % (len(got) - j))
    print("ok " + " ".join("%s %d" % kv for kv in counts.items()))


globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
conv() { PYTHONPATH="$top_srcdir/tests" python3 "$TEST_TMP/conv.py" "$@"; }

# dump ARGS: the fake's --dump output for the data set and ARGS.
dump() {
	"$FAKE_TWILIO" --account-sid "$ACCOUNT_SID" "${DATA[@]}" "$@"
}

# count STRING FILE...: how many times STRING occurs in the files.
count() {
	local s=$1
	shift
	cat "$@" | grep -o -F -- "$s" | wc -l
}

# error_of FILE: the status, code and message of the Twilio error body in FILE.
error_of() { fake_api error "$1"; }

ENC=$(fake_api quote "$ALICE")
ALICE_SID=$(dump --service "$SERVICE_SID" --dump-users | awk -F'\t' -v id="$ALICE" '$3 == id { print $2 }')
BOB_SID=$(dump --service "$SERVICE_SID" --dump-users | awk -F'\t' '$3 == "bob" { print $2 }')
CAROL_SID=$("$FAKE_TWILIO" --service "$SERVICE_SID" --users carol --dump-users | cut -f2)

# ------------------------------------------------------------ the spec

if [ -r "$SPEC" ]; then
	is "$(conv spec "$SPEC")" ok \
		"the field lists checked here are those of $(basename "$SPEC"), as are the listings' key, meta and PageSize 1..50"
else
	ok 0 "# SKIP $SPEC not found (set TWILIO_OAI to the directory of Twilio's OpenAPI documents)"
fi

fake_start conv "${DATA[@]}" || { echo "Bail out! could not start fake_twilio"; exit 1; }

# ------------------------------------------------------------ a user's conversations in a service

LIST=$S/Users/$ENC/Conversations
walk p50 "$LIST?PageSize=50"
P50=("${PAGES[@]}")
is "${#P50[@]}|$(fake_api meta conversations 50 "$FAKE_URL$LIST?" "${P50[@]}")" "3|ok" \
	"$CH conversations at PageSize=50 take three pages, each with a complete meta (key conversations), chained by next_page_url"
is "$(fake_api next "${P50[0]}")" "$FAKE_URL$LIST?PageSize=50&Page=1&PageToken=PT1" \
	"next_page_url leads back to the fake"
is "$(conv entries service "$SERVICE_SID" "$ACCOUNT_SID" "$ALICE_SID" "${P50[@]}")" ok \
	"every entry has the spec's fields in order, types, SID patterns and enums; the user's SID, URLs and links under /v1/Services/{IS}"
is "$(conv variety "${P50[@]}")" \
	"active,closed,inactive|default,muted|date_closed,date_closed+date_inactive,none|friendly_name,unique_name,last_read_message_index" \
	"the data has every conversation_state and notification_level, the three shapes of timers and nulls where the spec allows them"
dump --api conversations --service "$SERVICE_SID" --dump "$ALICE" >"$TEST_TMP/alice.dump"
is "$(wc -l <"$TEST_TMP/alice.dump")|$(awk -F'\t' '{ print NF }' "$TEST_TMP/alice.dump" | sort -u)" \
	"$CH|19" "--dump --api conversations prints $CH rows of 19 columns"
conv rows "$ALICE" "${P50[@]}" >"$TEST_TMP/p50.rows"
same "$TEST_TMP/alice.dump" "$TEST_TMP/p50.rows" \
	"the pages of 50 are --dump --api conversations, every field in its column, NULL where null or without that timer"

walk p7 "$LIST?PageSize=7"
is "${#PAGES[@]}|$(fake_api meta conversations 7 "$FAKE_URL$LIST?" "${PAGES[@]}")" "18|ok" \
	"at PageSize=7 eighteen pages, chained by next_page_url"
conv rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/p7.rows"
same "$TEST_TMP/alice.dump" "$TEST_TMP/p7.rows" "the pages of 7 are the same rows, in the same order"
walk p1 "$LIST?PageSize=1"
is "${#PAGES[@]}|$(fake_api meta conversations 1 "$FAKE_URL$LIST?" "${PAGES[@]}")" "$CH|ok" \
	"at PageSize=1 one page a conversation, chained by next_page_url"
conv rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/p1.rows"
same "$TEST_TMP/alice.dump" "$TEST_TMP/p1.rows" "the pages of 1 are the same rows, in the same order"
is "$(cut -f3 "$TEST_TMP/p1.rows" | sort -u | wc -l)" $CH "every slot is listed exactly once"
fetch "$LIST" "$TEST_TMP/default_size.json"
is "$CODE|$(fake_api meta conversations 50 "$FAKE_URL$LIST?" "$TEST_TMP/default_size.json" "${P50[@]:1}")" \
	"200|ok" "without PageSize a page holds 50 and chains as PageSize=50 does"

fetch "$LIST?PageSize=51" "$TEST_TMP/p51.json"
is "$CODE|$(error_of "$TEST_TMP/p51.json")" \
	"400|400|20001|Invalid PageSize: must be an integer between 1 and 50" \
	"PageSize=51 is refused with a Twilio error that names the bound of 50"
fetch "$LIST?PageSize=0" "$TEST_TMP/p0.json"
is "$CODE|$(error_of "$TEST_TMP/p0.json")|$(http_statuses "$LIST?PageSize=x" "/v1/Users/$ENC/Conversations?PageSize=51")" \
	"400|400|20001|Invalid PageSize: must be an integer between 1 and 50|400 400 " \
	"PageSize 0 and x are refused as well, and 51 on the default service's listing"
fetch "$LIST?PageSize=50&Page=1" "$TEST_TMP/notoken.json"
is "$CODE|$(error_of "$TEST_TMP/notoken.json" | cut -d'|' -f2)" "400|21481" \
	"a Page without its PageToken is refused, as for channels"
is "$(http_statuses "$S/Users/$ENC/Channels?PageSize=1000" "$S/Users?PageSize=1000" "$S")" "200 200 200 " \
	"IP Messaging's channels and users listings keep PageSize 1000, the service is still served"

# ------------------------------------------------------------ conversation i is channel i

walk channels "$S/Users/$ENC/Channels?PageSize=1000"
is "$(conv memberships "${P50[@]}" -- "${PAGES[@]}")" ok \
	"conversation i is the user's channel i: its SID, the member as participant, unread count and last read index"
walk listing "$S/Channels?Type=public&Type=private&PageSize=1000"
is "$(conv channels "${P50[@]}" -- "${PAGES[@]}")" ok \
	"each conversation has the name, unique name, attributes, creation date and creator of its channel"

# ------------------------------------------------------------ by identity and by SID

walk by_sid "$S/Users/$ALICE_SID/Conversations?PageSize=50"
is "$(fake_api field user_sid "${P50[@]}" | sort -u)|$(fake_api field user_sid "${PAGES[@]}" | sort -u)" \
	"$ALICE_SID|$ALICE_SID" "user_sid is the SID the users listing gives, asked by identity or by SID"
cat "${P50[@]}" >"$TEST_TMP/p50.body"
cat "${PAGES[@]}" | sed "s|/Users/$ALICE_SID/Conversations?|/Users/$ENC/Conversations?|g" >"$TEST_TMP/by_sid.body"
same "$TEST_TMP/p50.body" "$TEST_TMP/by_sid.body" \
	"by SID the pages are those by identity, byte for byte but for their own page URLs"
conv rows "$ALICE_SID" "${PAGES[@]}" >"$TEST_TMP/by_sid.rows"
dump --api conversations --service "$SERVICE_SID" --dump "$ALICE_SID" >"$TEST_TMP/by_sid.dump"
same "$TEST_TMP/by_sid.dump" "$TEST_TMP/by_sid.rows" "--dump by SID prints what the listing by SID serves"
is "$(cut -f1,3- "$TEST_TMP/by_sid.dump" | md5sum)|$(cut -f2 "$TEST_TMP/by_sid.dump" | sort -u)" \
	"$(cut -f1,3- "$TEST_TMP/alice.dump" | md5sum)|$ALICE_SID" \
	"and the same rows as by identity, but for the user column, which names the user as asked"
walk carol "$S/Users/carol/Conversations?PageSize=50"
is "$(fake_api field user_sid "${PAGES[@]}" | sort -u)|$(fake_api field created_by "${PAGES[@]}" | sort -u)" \
	"$CAROL_SID|carol" "an identity outside --users gets the SID the users listing would give it"

# ------------------------------------------------------------ the default service

DLIST=/v1/Users/$ENC/Conversations
walk default "$DLIST?PageSize=50"
is "${#PAGES[@]}|$(fake_api meta conversations 50 "$FAKE_URL$DLIST?" "${PAGES[@]}")" "3|ok" \
	"/v1/Users/{U}/Conversations pages as the service's listing does, its page URLs on its own path"
is "$(conv entries default "$DEFAULT_IS" "$ACCOUNT_SID" "$ALICE_SID" "${PAGES[@]}")" ok \
	"its entries are of the default service $DEFAULT_IS, their URLs and links right under /v1"
conv rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/default.rows"
dump --api conversations --dump "$ALICE" >"$TEST_TMP/default.dump"
same "$TEST_TMP/default.dump" "$TEST_TMP/default.rows" \
	"--dump --api conversations without --service prints what /v1/Users/{U}/Conversations serves"
walk in_default "/v1/Services/$DEFAULT_IS/Users/$ENC/Conversations?PageSize=50"
conv rows "$ALICE" "${PAGES[@]}" | cut -f1-16 >"$TEST_TMP/in_default.values"
is "$(cut -f1-16 "$TEST_TMP/default.rows" | md5sum)|$(conv entries service "$DEFAULT_IS" "$ACCOUNT_SID" "$ALICE_SID" "${PAGES[@]}")" \
	"$(md5sum <"$TEST_TMP/in_default.values")|ok" \
	"the default service named by its SID lists the same conversations, with /v1/Services/{IS} URLs"

fetch /v1/Configuration "$TEST_TMP/configuration.json"
is "$CODE|$(conv configuration "$ACCOUNT_SID" "$DEFAULT_IS" "$TEST_TMP/configuration.json")" "200|ok" \
	"/v1/Configuration has the spec's fields in order, the default service, a messaging service, no timers"

# ------------------------------------------------------------ auth, the log, unknown paths

for t in "$LIST" "$S/Users/$ENC/Channels"; do
	curl -s -D "$TEST_TMP/anon.headers" -o "$TEST_TMP/anon.json" -w '%{http_code} ' "$FAKE_URL$t"
	printf '%s %s\n' "$(error_of "$TEST_TMP/anon.json")" "$(grep -ci '^WWW-Authenticate: Basic' "$TEST_TMP/anon.headers")"
done >"$TEST_TMP/anon.out"
is "$(sort -u "$TEST_TMP/anon.out" | wc -l)|$(head -n 1 "$TEST_TMP/anon.out")" "1|401 401|20003|Authenticate 1" \
	"without credentials a user's conversations get the 401 its channels get: a Twilio error, WWW-Authenticate"
wrong=$(for t in "$DLIST" /v1/Configuration; do
	curl -s -u "$ACCOUNT_SID:wrong" -o /dev/null -w '%{http_code} ' "$FAKE_URL$t"
done)
is "$wrong" "401 401 " "a wrong token is refused on the default service's listing and /v1/Configuration"

is "$(awk -F'\t' '$1 == 200 && $3 == 1 && $4 ~ /\/Conversations\?PageSize=7&/ { print $2; exit }' "$FAKE_LOG")" "$ALICE" \
	"the log names the user and page of a conversations request"
is "$(grep -c -F "$(printf '200\t@configuration\t-\t/v1/Configuration')" "$FAKE_LOG")" 1 \
	"the log names /v1/Configuration @configuration, with no page"

for t in "/v2/Services/$SERVICE_SID/Users/$ENC/Conversations" "$LIST/CH00000000000000000000000000000000" \
	"/v1/Services/ISnot-a-sid/Users/$ENC/Conversations" "/v1/Users/$ENC/Channels" "/v1/Users" \
	"/v1/Configuration/Webhooks" "/v2/Configuration" "/v1/Users//Conversations"; do
	fetch "$t" "$TEST_TMP/unknown.json"
	printf '%s %s\n' "$CODE" "$(error_of "$TEST_TMP/unknown.json" | cut -d'|' -f2)"
done >"$TEST_TMP/unknown.codes"
is "$(sort -u "$TEST_TMP/unknown.codes")" "404 20404" \
	"paths Conversations does not serve (under /v2, a single conversation, a bad SID, channels of the default service) are 404s"
fake_stop

# ------------------------------------------------------------ a variant

# Variant 3 removes the slots i % 10 == 3 (12 of 120), changes those
# i % 7 == 3 (17, less the 2 removed: 15) and renames those i % 5 == 3
# (24, less the 12 removed: 12; 2 both changed and renamed), leaving 83 as
# they were.
fake_start variant "${DATA[@]}" --variant 3 || { echo "Bail out! could not start fake_twilio variant"; exit 1; }
walk v50 "$LIST?PageSize=50"
V50=("${PAGES[@]}")
conv rows "$ALICE" "${V50[@]}" >"$TEST_TMP/variant.rows"
dump --api conversations --service "$SERVICE_SID" --variant 3 --dump "$ALICE" >"$TEST_TMP/variant.dump"
same "$TEST_TMP/variant.dump" "$TEST_TMP/variant.rows" "--dump --api conversations --variant 3 prints what variant 3 serves"
is "$(conv variant 3 "$TEST_TMP/alice.dump" "$TEST_TMP/variant.rows")" "ok removed 12 changed 15 renamed 12 kept 83" \
	"variant 3 removes, moves to the next state (with more unread), renames exactly the slots it should, and keeps the rest"
walk vchannels "$S/Users/$ENC/Channels?PageSize=1000"
is "$(conv memberships "${V50[@]}" -- "${PAGES[@]}")|$(conv entries service "$SERVICE_SID" "$ACCOUNT_SID" "$ALICE_SID" "${V50[@]}")" \
	"ok|ok" "the variant's conversations are still its channels, the same slots removed, and still the spec's"
fake_stop

# ------------------------------------------------------------ faults

fake_start faults "${DATA[@]}" --fault "429:$ALICE:2" --fault "429:bob:1" --fault "oddstatus:bob:1" \
	--fault "typedrift:carol:*" --fault "503:@configuration:1" ||
	{ echo "Bail out! could not start fake_twilio faults"; exit 1; }
fetch "$LIST" "$TEST_TMP/f429.json"
is "$CODE|$(error_of "$TEST_TMP/f429.json" | cut -d'|' -f1,2)|$(http_statuses "$S/Users/$ENC/Channels" "$DLIST" "$S/Users/$ENC/Channels")" \
	"429|429|20429|429 200 200 " \
	"429:USER:2 answers the user's first two listings 429, conversations or channels alike, then serves both"
is "$(http_statuses "/v1/Users/bob/Conversations" "/v1/Users/bob/Conversations")" "429 200 " \
	"a fault for a user reaches its listing in the default service too"
walk bob "/v1/Users/bob/Conversations?PageSize=20"
conv rows bob "${PAGES[@]}" >"$TEST_TMP/bob.rows"
dump --api conversations --page-size 20 --fault "oddstatus:bob:1" --dump bob >"$TEST_TMP/bob.dump"
is "$(cut -f6 "$TEST_TMP/bob.rows" | grep -c archived)|$(sed -n 21p "$TEST_TMP/bob.rows" | cut -f6)" "1|archived" \
	"oddstatus on page 1 makes the conversation_state of its first entry archived"
same "$TEST_TMP/bob.dump" "$TEST_TMP/bob.rows" "--dump with --page-size 20 and that fault prints it too"
fetch "/v1/Users/carol/Conversations" "$TEST_TMP/drift.json"
is "$(count '"conversation_state":7' "$TEST_TMP/drift.json")|$(grep -o -E '"unread_messages_count":"[0-9]+"' "$TEST_TMP/drift.json" | wc -l)|$(count '"conversation_sid"' "$TEST_TMP/drift.json")" \
	"50|50|50" "typedrift makes every conversation_state a number and unread_messages_count a string"
is "$(http_statuses /v1/Configuration /v1/Configuration)" "503 200 " "/v1/Configuration takes faults as @configuration"
fake_stop

fake_start extra "${DATA[@]}" --extra-fields || { echo "Bail out! could not start fake_twilio extra"; exit 1; }
walk extra "$LIST?PageSize=50"
conv rows "$ALICE" "${PAGES[@]}" >"$TEST_TMP/extra.rows"
is "$(fake_api dupes "${PAGES[@]}")|$(count '"roles":[]' "${PAGES[@]}")" "0|$CH" \
	"--extra-fields adds unknown fields to every conversation without repeating a known one"
same "$TEST_TMP/alice.dump" "$TEST_TMP/extra.rows" "and the known ones are still those of the dump"
fake_stop

# ------------------------------------------------------------ --default-service and latency

OTHER_IS=ISabcdef0123456789abcdef0123456789
fake_start other "${DATA[@]}" --default-service "$OTHER_IS" --latency-ms 300 ||
	{ echo "Bail out! could not start fake_twilio other"; exit 1; }
fetch /v1/Configuration "$TEST_TMP/other.json"
walk other "/v1/Users/bob/Conversations?PageSize=50"
is "$(conv configuration "$ACCOUNT_SID" "$OTHER_IS" "$TEST_TMP/other.json")|$(conv entries default "$OTHER_IS" "$ACCOUNT_SID" "$BOB_SID" "${PAGES[@]}")" \
	"ok|ok" "--default-service names the service of /v1/Configuration and /v1/Users/{U}/Conversations"
conv rows bob "${PAGES[@]}" >"$TEST_TMP/other.rows"
dump --api conversations --default-service "$OTHER_IS" --dump bob >"$TEST_TMP/other.dump"
same "$TEST_TMP/other.dump" "$TEST_TMP/other.rows" "--dump with --default-service and no --service prints that service's"
elapsed=$(curl -s -u "$ACCOUNT_SID:$AUTH_TOKEN" -o /dev/null -w '%{time_total}' "$FAKE_URL$DLIST")
is "$(awk -v t="$elapsed" 'BEGIN { print (t >= 0.3) }')" 1 "--latency-ms delays a user's conversations (${elapsed} s)"
fake_stop

# ------------------------------------------------------------ --cache-bodies

# fetch_as HOST TARGET NAME: GETs TARGET with that Host header (page URLs
# carry it) into $TEST_TMP/NAME; the HTTP status in CODE.
fetch_as() {
	CODE=$(curl -s -u "$ACCOUNT_SID:$AUTH_TOKEN" -H "Host: $1" -o "$TEST_TMP/$3" -w '%{http_code}' "$FAKE_URL$2")
}

CONV_PAGE="$LIST?PageSize=50&Page=1&PageToken=PT1"
CHAN_PAGE="$S/Users/$ENC/Channels?PageSize=50"
fake_start rendered "${DATA[@]}" || { echo "Bail out! could not start fake_twilio rendered"; exit 1; }
fetch_as fake.test "$CONV_PAGE" rendered.conv
fetch_as fake.test "$CHAN_PAGE" rendered.chan
fake_stop
is "$(count '"conversation_sid"' "$TEST_TMP/rendered.conv")|$(count '"channel_sid"' "$TEST_TMP/rendered.chan")|$(count 'http://fake.test/' "$TEST_TMP/rendered.conv")" \
	"50|50|4" "without --cache-bodies a page of 50 conversations and one of 50 channels, their page URLs on the Host asked"

fake_start cached "${DATA[@]}" --cache-bodies || { echo "Bail out! could not start fake_twilio --cache-bodies"; exit 1; }
codes=
for i in 1 2; do
	fetch_as fake.test "$CONV_PAGE" "cached.conv.$i"
	codes+="$CODE "
	fetch_as fake.test "$CHAN_PAGE" "cached.chan.$i"
	codes+="$CODE "
done
for f in conv.1 conv.2 chan.1 chan.2; do
	cmp -s "$TEST_TMP/rendered.${f%.*}" "$TEST_TMP/cached.$f" && echo same || echo differs
done >"$TEST_TMP/cached.cmp"
is "$codes|$(sort "$TEST_TMP/cached.cmp" | uniq -c | xargs)" "200 200 200 200 |4 same" \
	"with --cache-bodies a Conversations page and a v1 Channels page, each fetched twice, are byte for byte those rendered without it"
is "$(grep -c -x -F "$(printf '200\t%s\t1\t%s' "$ALICE" "$CONV_PAGE")" "$FAKE_LOG")|$(grep -c -x -F "$(printf '200\t%s\t0\t%s' "$ALICE" "$CHAN_PAGE")" "$FAKE_LOG")" \
	"2|2" "the log has both requests of each page, with user and page, as without the option"
fetch_as other.test "$CONV_PAGE" cached.other
is "$CODE|$(count 'http://other.test/' "$TEST_TMP/cached.other")|$(sed 's|http://other\.test/|http://fake.test/|g' "$TEST_TMP/cached.other" | cmp -s - "$TEST_TMP/rendered.conv" && echo same)" \
	"200|4|same" "the same target on another Host is rendered for it, its page URLs on that Host"
anon=$(curl -s -o /dev/null -w '%{http_code}' "$FAKE_URL$CONV_PAGE")
wrong=$(curl -s -u "$ACCOUNT_SID:wrong" -o /dev/null -w '%{http_code}' -H "Host: fake.test" "$FAKE_URL$CONV_PAGE")
is "$anon $wrong|$(grep -c -x -F "$(printf '401\t%s\t-\t%s' "$ALICE" "$CONV_PAGE")" "$FAKE_LOG")" "401 401|2" \
	"a kept page still needs the credentials: 401 without them and with a wrong token, and both logged"
fake_stop
bytes=$(($(wc -c <"$TEST_TMP/rendered.conv") + $(wc -c <"$TEST_TMP/rendered.chan") + $(wc -c <"$TEST_TMP/cached.other")))
is "$(grep 'cache:' "$TEST_TMP/cached.out")" "fake_twilio: cache: 2 hits, 3 renders, 3 bodies, $bytes bytes" \
	"at exit the fake reports 2 hits (the second fetch of each page came from memory) and the 3 bodies it rendered and kept, $bytes bytes"

# Many requests at once over a few targets, on the thread pool: one body kept
# a target, whichever thread rendered it; the races lost are renders too.
fake_start racing "${DATA[@]}" --cache-bodies --threads 4 || { echo "Bail out! could not start fake_twilio racing"; exit 1; }
# shellcheck disable=SC2016 # sh -c's script expands its own arguments
for i in $(seq 0 39); do
	case $((i % 4)) in
	0) t="$LIST?PageSize=50" ;;
	1) t="$CONV_PAGE" ;;
	2) t="$CHAN_PAGE" ;;
	3) t="$S/Channels?Type=public&Type=private&PageSize=100" ;;
	esac
	printf '%s\n%s\n' "$FAKE_URL$t" "$TEST_TMP/race.$((i % 4)).$i"
done | xargs -d '\n' -n 2 -P 8 sh -c 'curl -s -u "$0" -o "$2" -w "%{http_code}\n" "$1"' \
	"$ACCOUNT_SID:$AUTH_TOKEN" >"$TEST_TMP/race.codes" # $0 the credentials, $1 a URL, $2 its file
for k in 0 1 2 3; do
	md5sum "$TEST_TMP"/race.$k.* | cut -d' ' -f1 | sort -u | wc -l # distinct bodies of target k
done >"$TEST_TMP/race.sums"
fake_stop
is "$(sort -u "$TEST_TMP/race.codes" | xargs)|$(wc -l <"$TEST_TMP/race.codes")|$(sort -u "$TEST_TMP/race.sums")" \
	"200|40|1" "40 requests at once over 4 targets: all answered 200, every target the same bytes each time"
read -r hits renders bodies < <(sed -n 's/.*cache: \([0-9]*\) hits, \([0-9]*\) renders, \([0-9]*\) bodies.*/\1 \2 \3/p' "$TEST_TMP/racing.out")
is "$((hits + renders))|$bodies" "40|4" "the fake counts them as hits or renders, 40 in all, and keeps 4 bodies ($hits hits, $renders renders)"

# ------------------------------------------------------------ options

"$FAKE_TWILIO" --default-service ISnot-a-sid --api conversations --dump bob >/dev/null 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'invalid value for --default-service' "$TEST_TMP/bad.err")" "2|1" "an invalid --default-service is refused"
"$FAKE_TWILIO" --service "$SERVICE_SID" --api conversations --dump-users >/dev/null 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'dumps a user.s conversations only' "$TEST_TMP/bad.err")" "2|1" \
	"--api conversations refuses the dimension dumps, whose listings stay IP Messaging's"
"$FAKE_TWILIO" --api conversations --page-size 51 --dump bob >/dev/null 2>"$TEST_TMP/bad.err"
is "$?|$(grep -c 'conversations allows 1..50' "$TEST_TMP/bad.err")" "2|1" "--page-size 51 is refused with --api conversations"
is "$(dump --service "$SERVICE_SID" --dump bob | awk -F'\t' '{ print NF }' | sort -u)|$(dump --service "$SERVICE_SID" --api chat_v2 --dump bob | awk -F'\t' '{ print NF }' | sort -u)" \
	"10|11" "--dump keeps 10 columns without --api and 11 with --api chat_v2"
for o in "--fault 429:bob:1" "--fault-rate 503=0.5" "--default-service-switch 1:$OTHER_IS"; do
	# shellcheck disable=SC2086 # an option and its value; a fake that listens is stopped
	timeout 5 "$FAKE_TWILIO" --cache-bodies $o --port-file "$TEST_TMP/refused.port" >/dev/null 2>"$TEST_TMP/bad.err"
	printf '%s %s %s\n' "$?" "$(grep -c -F -- "--cache-bodies cannot be combined with ${o%% *}:" "$TEST_TMP/bad.err")" \
		"$([ -e "$TEST_TMP/refused.port" ] && echo listened || echo refused)"
done >"$TEST_TMP/refused"
is "$(sort -u "$TEST_TMP/refused" | xargs)" "2 1 refused" \
	"--cache-bodies with --fault, --fault-rate or --default-service-switch exits 2 at startup, naming that option"
"$FAKE_TWILIO" --help >"$TEST_TMP/help"
is "$(grep -c -e '--default-service IS' -e "$DEFAULT_IS" -e 'chat_v2 or conversations' \
	-e 'date_inactive, date_closed' -e '/v1/Users/{UserSid}/Conversations' "$TEST_TMP/help")" 6 \
	"--help documents --default-service and its default, --api conversations, its dump columns and paths"
is "$(grep -c -e '--cache-bodies  *bench only' "$TEST_TMP/help")" 1 "--help documents --cache-bodies, for the bench"

done_testing

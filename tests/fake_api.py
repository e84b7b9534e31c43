"""fake_api.py - what the fake API's tests (tests/fake_*.sh) read its answers
with: the shapes of IDs, meta and entries, the dump columns, and the commands
the scripts share (cmd_field, cmd_next, cmd_meta, cmd_error, cmd_dupes,
cmd_quote)."""
import json
import re
import sys
from urllib.parse import quote

SID = {"AC": r"AC[0-9a-f]{32}", "IS": r"IS[0-9a-fA-F]{32}", "US": r"US[0-9a-f]{32}",
       "RL": r"RL[0-9a-f]{32}", "CH": r"CH[0-9a-fA-F]{32}", "MB": r"MB[0-9a-fA-F]{32}",
       "IM": r"IM[0-9a-f]{32}", "MG": r"MG[0-9a-f]{32}"}
META = {"page", "page_size", "first_page_url", "previous_page_url", "url", "next_page_url", "key"}
USER = ["sid", "account_sid", "service_sid", "identity", "friendly_name", "role_sid",
        "attributes", "is_online", "is_notifiable", "date_created", "date_updated",
        "joined_channels_count", "links", "url"]
CHANNEL = ["sid", "account_sid", "service_sid", "friendly_name", "unique_name", "attributes",
           "type", "date_created", "date_updated", "created_by", "members_count",
           "messages_count", "url", "links"]
# The columns of --dump-service, --dump-users and --dump-channels.
COLUMNS = {
    "service": ["sid", "account_sid", "friendly_name", "date_created", "date_updated",
                "default_service_role_sid", "default_channel_role_sid",
                "default_channel_creator_role_sid", "read_status_enabled",
                "reachability_enabled", "typing_indicator_timeout",
                "consumption_report_interval", "url"],
    "users": ["service_sid", "sid", "identity", "account_sid", "friendly_name", "role_sid",
              "attributes", "is_online", "is_notifiable", "joined_channels_count",
              "date_created", "date_updated", "url"],
    "channels": ["service_sid", "sid", "account_sid", "friendly_name", "unique_name",
                 "attributes", "type", "created_by", "members_count", "messages_count",
                 "date_created", "date_updated", "url"],
}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def entries(paths):
    out = []
    for p in paths:
        d = load(p)
        out.extend(d[d["meta"]["key"]])
    return out


def sid(value, prefix):
    return isinstance(value, str) and re.fullmatch(SID[prefix], value) is not None


def copy_text(value):
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    s = str(value)
    for a, b in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        s = s.replace(a, b)
    return s


def cmd_field(name, *paths):
    """field NAME FILE...: NAME of every entry, one a line (\\N for null)."""
    for item in entries(paths):
        sys.stdout.buffer.write((copy_text(item[name]) + "\n").encode("utf-8"))


def cmd_next(path):
    """next FILE: the page's next_page_url, or nothing on the last page."""
    print(load(path)["meta"]["next_page_url"] or "")


def integer(value, nullable=False):
    return (isinstance(value, int) and not isinstance(value, bool)) or (nullable and value is None)


def report(items, check):
    """'ok', or the first item that breaks a rule of check."""
    for item in items:
        results = check(item)
        if not all(results):
            print("rule %d broken by %s" % ([bool(r) for r in results].index(False),
                                            json.dumps(item)))
            return
    print("ok" if items else "no entries")


def cmd_meta(key, size, prefix, *paths):
    """meta KEY PAGE_SIZE PREFIX FILE...: 'ok' if the pages chain as one listing at PREFIX
    (a URL up to PageSize: PREFIX + "PageSize=...")."""
    pages = [load(p) for p in paths]
    size = int(size)
    for i, d in enumerate(pages):
        m = d["meta"]
        last = i == len(pages) - 1
        want_url = prefix + "PageSize=%d&Page=%d" % (size, i) + ("&PageToken=PT%d" % i if i else "")
        problems = [
            set(d) != {key, "meta"} and "body keys %s" % sorted(d),
            set(m) != META and "meta keys %s" % sorted(m),
            m["page"] != i and "page %r" % m["page"],
            m["page_size"] != size and "page_size %r" % m["page_size"],
            m["key"] != key and "key %r" % m["key"],
            m["url"] != want_url and "url %s" % m["url"],
            m["first_page_url"] != pages[0]["meta"]["url"] and "first_page_url",
            m["previous_page_url"] != (pages[i - 1]["meta"]["url"] if i else None)
            and "previous_page_url",
            m["next_page_url"] != (None if last else pages[i + 1]["meta"]["url"])
            and "next_page_url",
            not (len(d[key]) == size or (last and 0 < len(d[key]) < size))
            and "%d entries" % len(d[key]),
        ]
        problems = [p for p in problems if p]
        if problems:
            print("page %d: %s" % (i, ", ".join(problems)))
            return
    print("ok")


def write(fields):
    sys.stdout.buffer.write(("\t".join(copy_text(f) for f in fields) + "\n").encode("utf-8"))


def cmd_error(path):
    """error FILE: status, code and message of a Twilio error body."""
    d = load(path)
    print("%s|%s|%s" % (d["status"], d["code"], d["message"]))


def cmd_dupes(*paths):
    """dupes FILE...: the number of keys an object repeats, over every page."""
    n = 0
    def hook(pairs):
        nonlocal n
        n += len(pairs) - len({k for k, _ in pairs})
        return dict(pairs)
    for p in paths:
        with open(p, encoding="utf-8") as f:
            json.load(f, object_pairs_hook=hook)
    print(n)


def cmd_quote(s):
    """quote S: S as one percent-encoded path segment."""
    print(quote(s, safe=""))

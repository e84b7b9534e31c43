"""fake_api.py - what tests/fake_dimensions.sh and tests/fake_chat_v2.sh read
the fake API's answers with: the shapes of IDs, meta and entries, the dump
columns, and the commands both scripts share (cmd_field, cmd_next)."""
import json
import re
import sys

SID = {"AC": r"AC[0-9a-f]{32}", "IS": r"IS[0-9a-fA-F]{32}", "US": r"US[0-9a-f]{32}",
       "RL": r"RL[0-9a-f]{32}", "CH": r"CH[0-9a-fA-F]{32}", "MB": r"MB[0-9a-fA-F]{32}",
       "IM": r"IM[0-9a-f]{32}"}
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

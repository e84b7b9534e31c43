#!/usr/bin/env bash
# A service of a subaccount, with its own account_sid and credentials in its
# group: its requests carry them, and only them, to its own API; the other
# services keep twilio.*'s.  A subaccount whose credentials are refused fails
# its own users at once, and the other services' sweep goes on.  Its secret
# reaches neither the log nor the command line.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

SUB_SID=ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
SUB_TOKEN=sub-token-$RANDOM$RANDOM
SUB_SERVICE=IS00000000000000000000000000000b0b
KEY_SID=SK0123456789abcdef0123456789abcdef
KEY_SECRET=sub-key-secret-$RANDOM$RANDOM

# The parent account's API, and the subaccount's (another fake, other credentials).
fake_start parent --channels 5 || exit 1
PARENT_URL=$FAKE_URL PARENT_LOG=$FAKE_LOG
fake_api_start "$FAKE_TWILIO" "$TEST_TMP" sub --account-sid "$SUB_SID" --auth-token "$SUB_TOKEN" \
	--log "$TEST_TMP/sub.requests" --channels 3 || exit 1
FAKE_PIDS+=("$FAKE_PID")
SUB_URL=$FAKE_URL SUB_LOG=$TEST_TMP/sub.requests

printf '%s\n' "$SUB_TOKEN" >"$TEST_TMP/sub-token"
chmod 600 "$TEST_TMP/sub-token"

# conf FILE SUB-CREDENTIALS: the parent's service (alice, bob) and the subaccount's (carol, dan).
conf() {
	cat >"$1" <<CONF
twilio: { base_url = "$PARENT_URL"; account_sid = "$ACCOUNT_SID"; page_size = 50;
          concurrency = 2; max_retries = 1; backoff_base_ms = 10; max_backoff = 1; };
database: { conninfo = ""; schema = "chatsync"; };
sync: {
  interval = 1;
  dimensions = false;
  services = (
    { sid = "$SERVICE_SID"; users = [ "alice", "bob" ]; },
    { sid = "$SUB_SERVICE"; users = [ "carol", "dan" ]; base_url = "$SUB_URL"; $2 }
  );
};
CONF
	chmod 600 "$1"
}
rows() { sql "SELECT count(*) FROM chatsync.user_channels WHERE service_sid = '$1'"; }

conf "$TEST_TMP/c.conf" "account_sid = \"$SUB_SID\"; auth_token_file = \"$TEST_TMP/sub-token\";"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/c.conf" --check-config >/dev/null 2>&1
is "$?" 0 "a service group with its own account_sid and auth_token_file is a valid configuration"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/c.conf" --once 2>"$TEST_TMP/a.log" &
pid=$!
args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
wait "$pid"
is "$?" 0 "a sweep over the parent's service and the subaccount's succeeds"
is "$(rows "$SERVICE_SID")|$(rows "$SUB_SERVICE")" "10|6" "both services' memberships landed"
is "$(awk -F'\t' '$1 == 200' "$SUB_LOG" | wc -l)|$(wc -l <"$SUB_LOG")" "2|2" \
	"the subaccount's API heard of its two users only, each authenticated with its credentials"
is "$(awk -F'\t' '$1 == 200' "$PARENT_LOG" | cut -f 2 | sort | tr '\n' ' ')" "alice bob " \
	"the parent's API heard of the parent's users only, with the parent's token"
is "$(sql "SELECT string_agg(DISTINCT account_sid, ',') FROM chatsync.user_channels WHERE service_sid = '$SUB_SERVICE'")" \
	"$SUB_SID" "the subaccount's rows carry its Account SID"
ok $(grep -q -- "$SUB_TOKEN" "$TEST_TMP/a.log" && echo 1 || echo 0) "its token is not in the log"
ok $([[ "$args" == *"$SUB_TOKEN"* ]] && echo 1 || echo 0) "nor on the command line"

# The subaccount's token refused: its users fail at once; the parent's are synced.
# One listing at a time, so that dan's request is not already on its way
# when carol's is refused.
printf 'not-the-token\n' >"$TEST_TMP/sub-token"
: >"$SUB_LOG"
: >"$PARENT_LOG"
sed 's/concurrency = 2;/concurrency = 1;/' "$TEST_TMP/c.conf" >"$TEST_TMP/c1.conf"
chmod 600 "$TEST_TMP/c1.conf"
grep -q 'concurrency = 1;' "$TEST_TMP/c1.conf"
ok $? "(that sweep's configuration has concurrency 1)"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/c1.conf" --once 2>"$TEST_TMP/b.log"
is "$?" 3 "a subaccount's refused credentials fail its users (exit status 3), not the sweep"
is "$(wc -l <"$SUB_LOG")" 1 "one request to its API: its other user fails without one"
grep -q "authentication failed for account $SUB_SID" "$TEST_TMP/b.log"
ok $? "the log names the account whose credentials to check"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE service_sid = '$SERVICE_SID' AND state = 'complete' AND run_id = (SELECT max(run_id) FROM chatsync.sync_runs)")|$(awk -F'\t' '$1 == 200' "$PARENT_LOG" | wc -l)" \
	"2|2" "the parent's users were synced all the same"
is "$(sql "SELECT string_agg(user_sid || ':' || state, ' ' ORDER BY user_sid) FROM chatsync.sync_cursors WHERE service_sid = '$SUB_SERVICE'")" \
	"carol:failed dan:failed" "the subaccount's users are recorded failed"
is "$(sql "SELECT count(*) FROM chatsync.sync_errors WHERE service_sid = '$SUB_SERVICE' AND kind = 'auth'")" 2 \
	"each with an authentication error"
is "$(rows "$SUB_SERVICE")" 6 "and their stored memberships are untouched"
ok $(grep -q -- "not-the-token" "$TEST_TMP/b.log" && echo 1 || echo 0) "the refused token is not logged either"

# An API key of the subaccount, its secret inline in a file only its owner reads.
fake_stop
fake_api_start "$FAKE_TWILIO" "$TEST_TMP" subkey --account-sid "$KEY_SID" --auth-token "$KEY_SECRET" \
	--log "$TEST_TMP/subkey.requests" --channels 3 --listen "${SUB_URL#http://}" || exit 1
FAKE_PIDS+=("$FAKE_PID")
conf "$TEST_TMP/k.conf" "account_sid = \"$SUB_SID\"; api_key_sid = \"$KEY_SID\"; api_key_secret = \"$KEY_SECRET\";"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/k.conf" --once 2>"$TEST_TMP/k.log"
is "$?" 0 "a subaccount's API key works as its token does"
is "$(awk -F'\t' '$1 == 200' "$TEST_TMP/subkey.requests" | wc -l)" 2 "its requests carry the key"
chmod 644 "$TEST_TMP/k.conf"
TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/k.conf" --check-config 2>"$TEST_TMP/k2.log" >/dev/null
grep -q "holds the auth token or API key secret of a service's account and is readable" "$TEST_TMP/k2.log"
ok $? "a secret in a group of a file others can read draws a warning"
ok $(grep -q -- "$KEY_SECRET" "$TEST_TMP/k2.log" && echo 1 || echo 0) "which does not show it"

# Configurations refused, each with a line naming the file, the line and the key.
bad() { # bad CREDENTIALS PATTERN DESCRIPTION
	conf "$TEST_TMP/bad.conf" "$1"
	TWILIO_AUTH_TOKEN="$AUTH_TOKEN" "$CHATSYNCD" -c "$TEST_TMP/bad.conf" --check-config >/dev/null 2>"$TEST_TMP/bad.log"
	local rc=$?
	is "$rc|$(grep -c "bad.conf:[0-9]*: sync.services\[1\]: $2" "$TEST_TMP/bad.log")" "1|1" "$3"
}
bad "auth_token = \"x\";" "auth_token is given without the account_sid it belongs to" \
	"a token without account_sid"
bad "account_sid = \"ACnope\"; auth_token = \"x\";" "account_sid must be an Account SID" \
	"a malformed account_sid"
bad "account_sid = \"$SUB_SID\";" "a service with its own account_sid needs its auth_token" \
	"an account_sid without a secret"
bad "account_sid = \"$SUB_SID\"; auth_token = \"x\"; api_key_sid = \"$KEY_SID\"; api_key_secret = \"y\";" \
	"give either an API key or an auth token, not both" "both a token and an API key"
bad "account_sid = \"$SUB_SID\"; auth_token = \"x\"; auth_token_file = \"f\";" \
	"a service with its own account_sid needs its auth_token: give auth_token or auth_token_file" \
	"both a token and a token file"

done_testing

#!/usr/bin/env bash
# An API key instead of the auth token: the sweep authenticates with the key
# (SK..., its secret from the environment or a file), never with the token,
# and the secret reaches neither the log nor the command line.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

KEY_SID=SK0123456789abcdef0123456789abcdef
KEY_SECRET=key-secret-$RANDOM$RANDOM
# The fake accepts the key's SID and secret as its basic-auth user and password.
fake_api_start "$FAKE_TWILIO" "$TEST_TMP" keyed --account-sid "$KEY_SID" --auth-token "$KEY_SECRET" \
	--log "$TEST_TMP/keyed.requests" --channels 5 || exit 1
FAKE_PIDS+=("$FAKE_PID")
FAKE_LOG=$TEST_TMP/keyed.requests

EXTRA='' write_config "$TEST_TMP/key.conf" alice bob
sed -i "s|account_sid = \"$ACCOUNT_SID\";|account_sid = \"$ACCOUNT_SID\"; api_key_sid = \"$KEY_SID\";|" "$TEST_TMP/key.conf"
grep -q "api_key_sid = \"$KEY_SID\"" "$TEST_TMP/key.conf"
ok $? "the configuration names the API key"

TWILIO_API_KEY_SECRET="$KEY_SECRET" "$CHATSYNCD" -c "$TEST_TMP/key.conf" --once 2>"$TEST_TMP/key.log"
is "$?" 0 "a sweep with the API key's secret in TWILIO_API_KEY_SECRET succeeds"
is "$(awk -F'\t' '$1 == 200' "$FAKE_LOG" | wc -l)|$(wc -l <"$FAKE_LOG")" "2|2" "every request was authenticated with the key"
is "$(sql "SELECT count(DISTINCT user_sid) FROM chatsync.user_channels")" 2 "both users' memberships landed"
ok $(grep -q -- "$KEY_SECRET" "$TEST_TMP/key.log" && echo 1 || echo 0) "the secret is not in the log"

# From a file, as a systemd credential would be.
printf '%s\n' "$KEY_SECRET" >"$TEST_TMP/key-secret"
chmod 600 "$TEST_TMP/key-secret"
sed -i "s|api_key_sid = \"$KEY_SID\";|api_key_sid = \"$KEY_SID\"; api_key_secret_file = \"$TEST_TMP/key-secret\";|" "$TEST_TMP/key.conf"
before=$(log_lines)
"$CHATSYNCD" -c "$TEST_TMP/key.conf" --once 2>>"$TEST_TMP/key.log" &
pid=$!
args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
wait "$pid"
is "$?" 0 "a sweep with api_key_secret_file succeeds"
ok $([[ "$args" == *"$KEY_SECRET"* ]] && echo 1 || echo 0) "the secret is not on the command line"
is "$(tail -n +$((before + 1)) "$FAKE_LOG" | awk -F'\t' '$1 == 200' | wc -l)" 2 "its requests were authenticated"

# A wrong secret: the API refuses it, and the sweep says which credentials to check.
TWILIO_API_KEY_SECRET=not-the-secret "$CHATSYNCD" -c "$TEST_TMP/key.conf" --once 2>"$TEST_TMP/bad.log"
is "$?" 1 "a wrong secret: the sweep stops (exit status 1)"
grep -q "check twilio.api_key_sid and its secret" "$TEST_TMP/bad.log"
ok $? "the log says to check the API key"

# The auth token alone is no longer what the fake accepts: the key is what was used above.
EXTRA='' write_config "$TEST_TMP/token.conf" alice
run_once "$TEST_TMP/token.conf"
is "$?" 1 "the same fake refuses the account's auth token"

done_testing

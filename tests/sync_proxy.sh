#!/usr/bin/env bash
# Proxies: the environment's http_proxy and friends never apply (they would
# carry the Basic credentials to a proxy nobody configured); twilio.proxy does.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

fake_start api --channels 5
api_url=$FAKE_URL api_log=$FAKE_LOG api_pid=$FAKE_PID
fake_start proxy --channels 5
proxy_url=$FAKE_URL proxy_log=$FAKE_LOG
FAKE_URL=$api_url FAKE_LOG=$api_log FAKE_PID=$api_pid

write_config "$TEST_TMP/c.conf" u-a u-b
http_proxy=$proxy_url HTTP_PROXY=$proxy_url https_proxy=$proxy_url HTTPS_PROXY=$proxy_url \
	ALL_PROXY=$proxy_url all_proxy=$proxy_url no_proxy= NO_PROXY= run_once "$TEST_TMP/c.conf"
is "$?" 0 "with every proxy variable of the environment set, the sweep completes"
is "$(wc -l <"$proxy_log")" 0 "and not one request goes through the environment's proxy"
is "$(wc -l <"$api_log")" 2 "the API is asked directly"

EXTRA='' write_config "$TEST_TMP/p.conf" u-a u-b
sed -i "s|^  account_sid = |  proxy = \"$proxy_url\";\\n  account_sid = |" "$TEST_TMP/p.conf"
: >"$api_log"
run_once "$TEST_TMP/p.conf"
is "$(wc -l <"$api_log")" 0 "with twilio.proxy set, nothing goes to the API directly"
ok $(($(wc -l <"$proxy_log") == 0)) "every request goes through the configured proxy"

sed -i "s|^  proxy = .*|  proxy = \"ftp://127.0.0.1:1\";|" "$TEST_TMP/p.conf"
"$CHATSYNCD" -c "$TEST_TMP/p.conf" --check-config 2>"$TEST_TMP/err" >/dev/null
is "$?" 1 "a proxy of another scheme is refused"
grep -q "twilio.proxy: scheme must be http, https, socks5 or socks5h" "$TEST_TMP/err"
ok $? "naming the key and the reason"

done_testing

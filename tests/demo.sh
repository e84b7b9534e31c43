#!/usr/bin/env bash
# tests/demo.sh - one sync against the bundled fake Twilio API, into a throwaway
# PostgreSQL under .demo/ in the checkout, then a summary of what landed.
# Run it through `./dev.sh demo` (or `make demo` in a configured tree).
set -euo pipefail

top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
top_builddir=${top_builddir:-$top_srcdir}
. "$top_srcdir/tests/services.sh"

DEMO=$top_srcdir/.demo
SERVICE=IS00000000000000000000000000000001
ACCOUNT=AC00000000000000000000000000000001

# The server runs as "postgres" when we are root; it must be able to reach .demo.
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$top_srcdir"; then
	DEMO=$(mktemp -d /tmp/chatsync-demo.XXXXXX)
	chmod 755 "$DEMO"
	echo "note: the postgres user cannot reach $top_srcdir; using $DEMO instead"
fi

cleanup() {
	[ -n "${FAKE_PID:-}" ] && kill "$FAKE_PID" 2>/dev/null
	cluster_stop "$DEMO/pg" fast 2>/dev/null || true
}
trap cleanup EXIT

cluster_stop "$DEMO/pg" immediate 2>/dev/null || true
rm -rf "$DEMO"
mkdir -p "$DEMO"
chmod 755 "$DEMO"
echo "== starting PostgreSQL in $DEMO/pg (unix socket only)"
cluster_start "$DEMO/pg"

# A secret the way production keeps one: in a file only its owner can read.
(umask 077 && head -c 24 /dev/urandom | base64 >"$DEMO/auth_token")
echo "== starting the fake Twilio API"
fake_api_start "$top_builddir/tests/fake_twilio" "$DEMO" fake-twilio --account-sid "$ACCOUNT" \
	--auth-token-file "$DEMO/auth_token" --channels 120 --latency-ms 5 --log "$DEMO/requests.log"
echo "   listening on $FAKE_URL"

cat >"$DEMO/chatsyncd.conf" <<CONF
twilio: {
  base_url = "$FAKE_URL";
  account_sid = "$ACCOUNT";
  auth_token_file = "$DEMO/auth_token";
  page_size = 50;
};
database: { conninfo = "host=$DEMO/pg dbname=chatsync user=postgres"; schema = "chatsync"; };
sync: {
  interval = 300;
  services = ( { sid = "$SERVICE";
                 users = [ "US00000000000000000000000000000001", "alice@example.com", "Bob Smith" ]; } );
};
log: { level = "info"; };
CONF
chmod 600 "$DEMO/chatsyncd.conf"

echo "== chatsyncd --once"
"$top_builddir/src/chatsyncd" -c "$DEMO/chatsyncd.conf" --once

echo
echo "== what landed"
psql -X -q -P footer=off -c "
SELECT user_sid AS \"user\",
       count(*) AS channels,
       count(*) FILTER (WHERE status = 'joined') AS joined,
       count(*) FILTER (WHERE status = 'invited') AS invited,
       count(*) FILTER (WHERE status = 'not_participating') AS not_participating,
       sum(unread_messages_count) AS unread
  FROM chatsync.user_channels WHERE deleted_at IS NULL
 GROUP BY user_sid ORDER BY user_sid"
psql -X -q -P footer=off -c "
SELECT run_id, users_ok, users_failed, pages, rows_received AS received,
       rows_inserted AS inserted, http_requests AS requests,
       round(extract(epoch FROM finished_at - started_at)::numeric, 2) AS seconds
  FROM chatsync.sync_runs ORDER BY run_id"
echo "The cluster stops when this script exits; its files stay in $DEMO."

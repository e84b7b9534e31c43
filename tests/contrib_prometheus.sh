#!/usr/bin/env bash
# contrib/prometheus: the alerting rules load, and their unit tests pass and cover every rule.
. "$(dirname "$0")/lib.sh"

DIR=$top_srcdir/contrib/prometheus
RULES=$DIR/chatsync-alerts.yml
UNIT_TESTS=$DIR/chatsync-alerts.test.yml
command -v promtool >/dev/null || skip_all "promtool is not installed (Debian package prometheus)"

show() { sed 's/^/#   /' <<<"$1"; }

alerts=$(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\) *$/\1/p' "$RULES" | sort)
n_alerts=$(wc -l <<<"$alerts")

out=$(promtool check rules "$RULES" 2>&1)
status=$?
ok $status "promtool check rules accepts chatsync-alerts.yml"
[ $status -eq 0 ] || show "$out"
grep -q "SUCCESS: $n_alerts rules found" <<<"$out"
ok $? "and finds its $n_alerts alerts"

out=$(promtool test rules "$UNIT_TESTS" 2>&1)
status=$?
ok $status "promtool test rules: every test of chatsync-alerts.test.yml passes"
[ $status -eq 0 ] || show "$out"

# The alerts that the tests expect to fire (exp_labels) and to stay quiet
# (exp_alerts: []) at some evaluation.
tested=$(awk '/alertname:/ { name = $2 }
	      /exp_alerts: \[\]/ { quiet[name] = 1 }
	      /exp_labels:/ { fires[name] = 1 }
	      END { for (n in fires) if (n in quiet) print n }' "$UNIT_TESTS" | sort)
is "$(comm -23 <(echo "$alerts") <(echo "$tested"))" "" \
	"every alert has a test where it fires and one where it must not"

# The metrics the rules use are those chatsyncd serves (chatsyncd(8), METRICS).
exported=$(sed -n 's/^\.BR \(chatsync_[a-z0-9_]*\|process_[a-z_]*\).*/\1/p' \
	"$top_srcdir/doc/chatsyncd.8.in" | sort -u)
used=$(grep -v '^ *#' "$RULES" | grep -o 'chatsync_[a-z0-9_]*' | sort -u)
is "$(comm -23 <(echo "$used") <(echo "$exported"))" "" \
	"every metric the rules name is one chatsyncd exports ($(wc -l <<<"$used") metrics)"

done_testing

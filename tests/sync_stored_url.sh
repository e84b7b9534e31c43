#!/usr/bin/env bash
# A stored next page (sync_cursors.next_page_url) is requested with the
# credentials only if it is a page of the same user's listing at the
# configured base URL, as a next_page_url from a response must be; any
# other restarts the listing from page 1.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

CHANNELS=30
fake_start api --channels $CHANNELS
port=${FAKE_URL##*:}
main_url=$FAKE_URL main_log=$FAKE_LOG main_pid=$FAKE_PID
# Where a tampered cursor, or the base URL before a change, points: it must never be asked anything.
fake_start elsewhere --listen "127.0.0.2:$port" --channels $CHANNELS
elsewhere_log=$FAKE_LOG
FAKE_URL=$main_url FAKE_LOG=$main_log FAKE_PID=$main_pid

PAGE_SIZE=10 write_config "$TEST_TMP/c.conf" u-a u-b u-c
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a first sweep completes"
load_expected --channels $CHANNELS -- u-a u-b u-c

path() { echo "/v1/Services/$SERVICE_SID/Users/$1/Channels?PageSize=10&Page=1&PageToken=PT1"; }
# stored USER URL: a listing left at page 2 of an earlier sweep, with URL as its next page.
stored() {
	sql "UPDATE chatsync.sync_cursors SET state = 'failed', pages_done = 1, next_page_url = '$2'
	      WHERE user_sid = '$1'"
}
stored u-a "http://127.0.0.2:$port$(path u-a)"   # another host (or the base URL before a change)
stored u-b "$FAKE_URL$(path u-c)"                 # the right host, another user's listing
stored u-c "$FAKE_URL$(path u-c)"                 # a page of its own listing: resumed
# (u-c's page 1 is still stored from the first sweep, in sync_listing_pages: its last page
# counts what that page listed, and deletes nothing.)
: >"$TEST_TMP/chatsyncd.log"
: >"$main_log"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "the sweep over the tampered cursors completes"
is "$(wc -l <"$elsewhere_log")" 0 "no request, and so no credentials, ever reaches the other host"
grep -q "user \"u-a\": the stored next page \"http://127.0.0.2:$port/v1/Services/.*\" is not this user's listing at $FAKE_URL; restarting the listing from page 1" "$TEST_TMP/chatsyncd.log"
ok $? "u-a: the log says its stored page was refused and the listing restarted"
grep -q "user \"u-b\": the stored next page .* is not this user's listing" "$TEST_TMP/chatsyncd.log"
ok $? "u-b: another user's page is refused too"
is "$(grep -c 'Users/u-b/Channels' "$main_log")|$(grep -c 'Users/u-c/Channels' "$main_log")" "3|2" \
	"u-b is listed again from page 1 (3 pages); u-c resumes at page 2 (2 pages)"
is "$(grep -c 'Users/u-c/Channels?PageSize=10&Page=1&PageToken=PT1' "$main_log")" 1 \
	"u-c resumes at the stored page"
grep -q 'user "u-c": the stored next page' "$TEST_TMP/chatsyncd.log"
ok $((!$?)) "u-c's stored page is accepted without a warning"
is "$(sql "SELECT string_agg(user_sid || ':' || state || ':' || pages_done, ',' ORDER BY user_sid) FROM chatsync.sync_cursors")" \
	"u-a:complete:3,u-b:complete:3,u-c:complete:3" "every listing completes"
is "$(diff_expected)" 0 "every user equals the API's data, u-c too (its page 1 as stored)"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL")" 0 \
	"none of their memberships is marked deleted"

done_testing

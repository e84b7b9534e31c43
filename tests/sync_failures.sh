#!/usr/bin/env bash
# Failing users: each fails alone, loses nothing, records why, and resumes at its cursor.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

CHANNELS=30
U=(u-ok u-malformed u-shape u-nometa u-truncate u-404 u-badrow u-odd u-foreign u-500)
FAULTS=(--fault malformed:u-malformed:1 --fault shape:u-shape:0 --fault nometa:u-nometa:0
	--fault truncate:u-truncate:1 --fault 404:u-404:0 --fault badrow:u-badrow:1
	--fault oddstatus:u-odd:0 --fault foreign:u-foreign:0 --fault 500:u-500:1000)
fake_start api --channels $CHANNELS "${FAULTS[@]}"
port=${FAKE_URL##*:}
main_log=$FAKE_LOG
main_pid=$FAKE_PID
# A second server where a forged next_page_url points: it must never be asked anything.
fake_start elsewhere --listen "127.0.0.2:$port" --channels $CHANNELS
elsewhere_log=$FAKE_LOG
FAKE_LOG=$main_log
FAKE_PID=$main_pid

PAGE_SIZE=10 write_config "$TEST_TMP/c.conf" "${U[@]}"
run_once "$TEST_TMP/c.conf"
is "$?" 3 "a sweep in which some users failed exits 3"

count() { sql "SELECT count(*) FROM chatsync.user_channels WHERE user_sid = '$1'"; }
err() { sql "SELECT state || ' ' || pages_done || ' ' || coalesce(last_error, '') FROM chatsync.sync_cursors WHERE user_sid = '$1'"; }
like() { # like GOT PATTERN DESCRIPTION
	local got=$1 pat=$2
	shift 2
	if [[ $got == $pat ]]; then ok 0 "$*"; else ok 1 "$*"; diag "got: $got" "want: $pat"; fi
}

is "$(count u-ok)" $CHANNELS "a healthy user is synced in full"
is "$(count u-malformed)" 10 "malformed JSON on page 2: page 1 stays committed, page 2 is not"
like "$(err u-malformed)" "failed 1 could not parse page 2: invalid JSON*at byte [0-9]*" \
	"the error names the page and the byte offset"
is "$(count u-shape)" 0 "a response of the wrong shape stores nothing"
like "$(err u-shape)" "failed 0 could not parse page 1: the response is an array, not an object at byte*" "and says so"
like "$(err u-nometa)" "failed 0 could not parse page 1: the response has no \"meta\" object*" "a response without meta is refused"
is "$(count u-nometa)" 0 "and stores nothing"
is "$(count u-truncate)" 10 "a transfer cut short commits nothing of its page"
like "$(err u-truncate)" "failed 1 could not fetch page 2 after 2 retries: *" "and is recorded as a fetch failure, after its retries"
is "$(count u-404)" 0 "a user the API does not know stores nothing"
like "$(err u-404)" "failed 0 user not found: could not fetch page 1: HTTP 404 (Twilio error 20404*" "and records the 404 as user not found"
is "$(count u-badrow)" $CHANNELS "entries without a valid channel_sid are rejected, the rest of their page lands"
is "$(sql "SELECT state FROM chatsync.sync_cursors WHERE user_sid = 'u-badrow'")" complete "that user still completes"
is "$(sql "SELECT status FROM chatsync.user_channels WHERE user_sid = 'u-odd' AND status NOT IN ('joined', 'invited', 'not_participating')")" \
	archived "an unexpected status is stored as received"
grep -q 'u-odd.*unexpected status "archived"' "$TEST_TMP/chatsyncd.log"
ok $? "and logged"
grep -q 'u-badrow.*rejected an entry: channel_sid' "$TEST_TMP/chatsyncd.log"
ok $? "rejected entries are logged"
is "$(count u-foreign)" 0 "a page whose next_page_url leaves the API is not committed"
like "$(err u-foreign)" "failed 0 page 1: refusing next_page_url \"http://127.0.0.2:$port/*" "and the URL is refused"
is "$(wc -l <"$elsewhere_log")" 0 "no request ever reaches another host"
like "$(err u-500)" "failed 0 could not fetch page 1 after 2 retries: HTTP 500*" "a lasting server error is recorded once its retries are spent"
is "$(awk -F'\t' '$2 == "u-500"' "$main_log" | wc -l)" 3 "one request and max_retries (2) retries"
is "$(sql 'SELECT users_ok, users_failed, rows_rejected, finished_at IS NOT NULL FROM chatsync.sync_runs')" \
	"3|7|2|t" "the run counts 3 users ok, 7 failed, 2 rejected entries"
grep -q "$AUTH_TOKEN" "$TEST_TMP/chatsyncd.log"
ok $((!$?)) "the auth token never appears in the log"

# --- the next sweep resumes each failed user at its cursor ------------------
fake_stop
: >"$main_log"
fake_start api --listen "127.0.0.1:$port" --channels $CHANNELS
run_once "$TEST_TMP/c.conf"
is "$?" 0 "with the faults gone the next sweep succeeds"
load_expected --channels $CHANNELS -- "${U[@]}"
is "$(diff_expected)" 0 "every user now equals the API (u-odd's odd status corrected too)"
first_page() { awk -F'\t' -v u="$1" '$2 == u { print $3; exit }' "$FAKE_LOG"; }
is "$(first_page u-malformed)" 1 "the user that failed on page 2 resumes at page 2"
is "$(first_page u-truncate)" 1 "so does the one whose transfer was cut"
is "$(first_page u-shape)" 0 "a user that failed on page 1 starts at page 1"
is "$(first_page u-ok)" 0 "complete users list again from the first page"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE state <> 'complete' OR last_error IS NOT NULL")" 0 \
	"every cursor is complete and its error cleared"

# --- wrong credentials ------------------------------------------------------
: >"$TEST_TMP/chatsyncd.log"
: >"$FAKE_LOG"
TWILIO_AUTH_TOKEN=wrong-token "$CHATSYNCD" -c "$TEST_TMP/c.conf" --once 2>>"$TEST_TMP/chatsyncd.log"
is "$?" 1 "a sweep with a wrong token exits 1"
is "$(wc -l <"$FAKE_LOG")" 1 "it stops at the first 401: every user would fail"
# The users go stalest first: the one that met the 401 is the one the fake heard of.
met=$(cut -f 2 "$FAKE_LOG" | head -n 1)
like "$(err "$met")" "complete * authentication failed" "the user that met it ($met) records the authentication failure, its state as it was"
grep -q 'error: authentication failed (HTTP 401' "$TEST_TMP/chatsyncd.log"
ok $? "and the log says so"
is "$(count u-ok)" $CHANNELS "stored data is untouched"
is "$(sql 'SELECT count(*) FROM chatsync.sync_runs WHERE finished_at IS NULL')" 1 "the sweep stays open, to be resumed"
grep -q "wrong-token" "$TEST_TMP/chatsyncd.log"
ok $((!$?)) "the wrong token is not logged either"

done_testing

#!/usr/bin/env bash
# A first sweep lands exactly what the API lists; a resync of unchanged data writes nothing.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=(US0123456789abcdef0123456789abcdef "alice b/c@x+y%z?#é" "日本 user")
CHANNELS=45
fake_start api --channels $CHANNELS --extra-fields

# --- many small pages -------------------------------------------------------
PAGE_SIZE=7 write_config "$TEST_TMP/small.conf" "${USERS[@]}"
run_once "$TEST_TMP/small.conf"
is "$?" 0 "first sweep exits 0"

load_expected --channels $CHANNELS -- "${USERS[@]}"
is "$(sql 'SELECT count(*) FROM public.expected')" $((CHANNELS * 3)) "the fake lists $CHANNELS channels per user"
is "$(diff_expected)" 0 "user_channels equals the API's data, every field, NULLs included"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE notification_level IS NOT NULL")" 0 \
	"IP Messaging v1 sends no notification level: NULL"
is "$(sql 'SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL')" 0 "nothing marked deleted"
is "$(sql "SELECT count(DISTINCT user_sid) FROM chatsync.user_channels")" 3 \
	"identities are stored verbatim (3 distinct users)"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE user_sid = 'alice b/c@x+y%z?#é'")" $CHANNELS \
	"an identity with space, /, @, +, %, ?, # and UTF-8 survives the round trip"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE channel_sid ~ '^CH[0-9A-F]{32}$' AND substr(channel_sid, 3) ~ '[A-F]'")" \
	"$(sql "SELECT count(*) FROM public.expected WHERE channel_sid ~ '^CH[0-9A-F]{32}$' AND substr(channel_sid, 3) ~ '[A-F]'")" \
	"upper-case SIDs are kept as received"

pages=$(( (CHANNELS + 6) / 7 ))
is "$(wc -l <"$FAKE_LOG")" $((pages * 3)) "one request per page ($pages pages per user)"
is "$(awk -F'\t' '$1 != 200' "$FAKE_LOG" | wc -l)" 0 "every request authenticated (HTTP 200)"
is "$(awk -F'\t' '$3 == 0 && $4 !~ /PageSize=7$/' "$FAKE_LOG" | wc -l)" 0 "first pages ask for PageSize=7"
is "$(sql "SELECT string_agg(DISTINCT state || ':' || pages_done || ':' || coalesce(next_page_url, 'null'), ',') FROM chatsync.sync_cursors")" \
	"complete:$pages:null" "every cursor is complete after $pages pages"
is "$(sql 'SELECT count(*) FROM chatsync.sync_cursors WHERE last_complete_at IS NULL OR last_error IS NOT NULL')" 0 \
	"cursors record the completed listing and no error"
is "$(sql 'SELECT users_ok, users_failed, pages, rows_received, rows_inserted, rows_updated, rows_unchanged, rows_deleted, rows_rejected, http_requests, finished_at IS NOT NULL FROM chatsync.sync_runs')" \
	"3|0|$((pages * 3))|$((CHANNELS * 3))|$((CHANNELS * 3))|0|0|0|0|$((pages * 3))|t" "sync_runs counts the sweep"
is "$(sql 'SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL) FROM chatsync.user_channel_history')" \
	"$((CHANNELS * 3))|$((CHANNELS * 3))" "history opens one version per membership"
is "$(sql 'SELECT count(*) FROM chatsync.user_channel_past_versions')" 0 \
	"a first listing writes each membership once: no past version"
is "$(sql 'SELECT count(*), count(digest), count(DISTINCT (user_sid, page_no)), min(page_no), max(page_no), sum(entries)
	   FROM chatsync.sync_listing_pages')" "$((pages * 3))|$((pages * 3))|$((pages * 3))|1|$pages|$((CHANNELS * 3))" \
	"each page of each listing is stored, with its digest and the number of its entries"
is "$(sql "SELECT count(*) FROM ((SELECT user_sid, unnest(listed) FROM chatsync.sync_listing_pages
	                            EXCEPT ALL SELECT user_sid, channel_sid FROM chatsync.user_channels)
	                           UNION ALL
	                           (SELECT user_sid, channel_sid FROM chatsync.user_channels
	                            EXCEPT ALL SELECT user_sid, unnest(listed) FROM chatsync.sync_listing_pages)) d")" 0 \
	"the stored pages list each user's channels, each once"
is "$(sql 'SELECT count(listing_digest) FROM chatsync.sync_cursors')|$(sql "SELECT string_agg(DISTINCT listing_rows::text, ',') FROM chatsync.sync_cursors")" \
	"0|$CHANNELS" "listings of several pages keep no digest on the cursor, only the entries of their pages"

# --- unchanged resync costs no write ----------------------------------------
writes() {
	backends_gone
	sql "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'chatsync' AND relname = '$1'"
}
calls() {
	backends_gone
	sql "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = 'chatsync' AND funcname = '$1'"
}
before=$(writes user_channels)
hist_before=$(writes user_channel_past_versions)
stored_pages=$(sql "SELECT string_agg(user_sid || ':' || page_no || ':' || digest, ',' ORDER BY user_sid, page_no) FROM chatsync.sync_listing_pages")
page_calls=$(calls sync_page) unchanged_calls=$(calls sync_listing_unchanged)
run_once "$TEST_TMP/small.conf"
is "$?" 0 "resync exits 0"
sleep 0.5
is "$(writes user_channels)" "$before" "an unchanged resync inserts and updates no row of user_channels"
is "$(writes user_channel_past_versions)" "$hist_before" "and writes no history"
is "$(sql 'SELECT rows_inserted, rows_updated, rows_unchanged, rows_deleted, pages FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1')" \
	"0|0|$((CHANNELS * 3))|0|$((pages * 3))" "the run counts every row unchanged, and every page"
is "$(( $(calls sync_page) - page_calls ))|$(( $(calls sync_listing_unchanged) - unchanged_calls ))" "0|3" \
	"no page is sent: each listing of $pages pages, as stored, is one sync_listing_unchanged() call"
is "$(sql "SELECT string_agg(user_sid || ':' || page_no || ':' || digest, ',' ORDER BY user_sid, page_no) FROM chatsync.sync_listing_pages")" \
	"$stored_pages" "the stored pages stay as they were"

# --- one page per user, first listing ---------------------------------------
PAGE_SIZE=1000 SCHEMA=fresh write_config "$TEST_TMP/fresh.conf" "${USERS[@]}"
run_once "$TEST_TMP/fresh.conf"
is "$?" 0 "a first sweep of one-page listings exits 0"
is "$(SCHEMA=fresh diff_expected)" 0 "it lands the API's data exactly"
is "$(sql 'SELECT count(*) FROM fresh.sync_listing_pages')|$(sql 'SELECT count(*) FROM fresh.user_channel_past_versions')|$(sql 'SELECT count(*) FROM fresh.user_channels WHERE deleted_at IS NOT NULL')" \
	"0|0|0" "and stores no page (one-page listings), no past version and no deletion"
is "$(sql 'SELECT rows_inserted, rows_updated, rows_unchanged, rows_deleted FROM fresh.sync_runs')" \
	"$((CHANNELS * 3))|0|0|0" "every row counted inserted"

# --- one page per user ------------------------------------------------------
: >"$FAKE_LOG"
PAGE_SIZE=1000 write_config "$TEST_TMP/big.conf" "${USERS[@]}"
run_once "$TEST_TMP/big.conf"
is "$?" 0 "sweep with PageSize=1000 exits 0"
is "$(wc -l <"$FAKE_LOG")" 3 "one request per user when a page holds the whole listing"
is "$(sql 'SELECT count(DISTINCT listing_digest) FROM chatsync.sync_cursors')" 3 \
	"a one-page listing leaves its digest on the cursor, one per user"
is "$(sql 'SELECT count(*) FROM chatsync.sync_listing_pages')" 0 \
	"and drops the pages its listing of several pages had stored"
page_calls=$(calls sync_page) unchanged_calls=$(calls sync_listing_unchanged)
run_once "$TEST_TMP/big.conf"
is "$?" 0 "resync of one-page listings exits 0"
sleep 0.5
is "$(( $(calls sync_page) - page_calls ))|$(( $(calls sync_listing_unchanged) - unchanged_calls ))" "0|3" \
	"an unchanged one-page listing is not sent: only the cursor moves (sync_listing_unchanged)"
is "$(sql 'SELECT users_ok, pages, rows_received, rows_inserted, rows_updated, rows_unchanged, rows_deleted, http_requests FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1')" \
	"3|3|$((CHANNELS * 3))|0|0|$((CHANNELS * 3))|0|3" "and the run still counts every row, unchanged"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE state = 'complete' AND run_id = (SELECT max(run_id) FROM chatsync.sync_runs) AND last_complete_at > now() - interval '1 minute'")" 3 \
	"every cursor records the completed listing in this sweep"
run_id=$(sql 'SELECT max(run_id) FROM chatsync.sync_runs')
is "$(sql "SELECT coalesce(chatsync.sync_listing_unchanged($run_id, '$SERVICE_SID', '${USERS[0]}', '{other}', 5, 0, 1, 0)::text, 'null')")|$(sql "SELECT pages FROM chatsync.sync_runs WHERE run_id = $run_id")" \
	"null|3" "sync_listing_unchanged() with another digest does nothing and says so"
# Another instance holds the user: a live lease, token 41.
sql "UPDATE chatsync.sync_cursors SET lease_instance = 999, lease_token = 41,
            lease_expires_at = now() + interval '1 hour' WHERE user_sid = '${USERS[0]}'"
digest=$(sql "SELECT listing_digest FROM chatsync.sync_cursors WHERE user_sid = '${USERS[0]}'")
is "$(sql "SELECT chatsync.sync_listing_unchanged($run_id, '$SERVICE_SID', '${USERS[0]}', '{$digest}', 5, 0, 1, 0, 40)")|$(sql "SELECT chatsync.sync_listing_unchanged($run_id, '$SERVICE_SID', '${USERS[0]}', '{$digest}', 5, 0, 1, 0)")|$(sql "SELECT pages FROM chatsync.sync_runs WHERE run_id = $run_id")" \
	"-1|-1|3" "a call with a token not the cursor's, or without one while a lease is live, is refused (-1), even with the right digest"
is "$(sql "SELECT count(*) FROM chatsync.sync_page($run_id, '$SERVICE_SID', '${USERS[0]}', true, NULL,
             '{}'::text[], '{}'::text[], '{}'::text[], '{}'::text[], '{}'::bigint[], '{}'::bigint[],
             '{}'::text[], '{}'::text[], 0, 1, 0, NULL, NULL, 40) WHERE inserted IS NULL")|$(sql "SELECT count(*) FROM chatsync.user_channels WHERE user_sid = '${USERS[0]}' AND deleted_at IS NULL")" \
	"1|$CHANNELS" "sync_page() with a token taken over changes nothing: an empty last page deletes nothing"
is "$(sql "SELECT chatsync.sync_listing_unchanged($run_id, '$SERVICE_SID', '${USERS[0]}', '{$digest}', 5, 0, 1, 0, 41)")|$(sql "SELECT lease_instance IS NULL AND lease_expires_at IS NULL FROM chatsync.sync_cursors WHERE user_sid = '${USERS[0]}'")" \
	"$CHANNELS|t" "the lease's own token is applied, and the completed listing ends the lease"

# The cursor's digest moves while chatsyncd claims the users (another
# session updates it and commits 2 s later): the locked user is skipped,
# claimed once the lock is gone, with the digest as it moved, and its page
# is sent whole.
page_calls=$(calls sync_page) unchanged_calls=$(calls sync_listing_unchanged)
psql -X -q -c "BEGIN" -c "UPDATE chatsync.sync_cursors SET listing_digest = 'moved' WHERE user_sid = '${USERS[0]}'" \
	-c "SELECT pg_sleep(2)" -c "COMMIT" >/dev/null &
locker=$!
for _ in $(seq 100); do
	[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)' AND state = 'active'")" = 1 ] && break
	sleep 0.05
done
run_once "$TEST_TMP/big.conf"
is "$?" 0 "a resync whose digest moves under it exits 0"
wait "$locker"
sleep 0.5
is "$(( $(calls sync_listing_unchanged) - unchanged_calls ))|$(( $(calls sync_page) - page_calls ))" "2|1" \
	"two unchanged-listing calls, and the page whose digest moved sent whole once"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE listing_digest = 'moved'")|$(diff_expected)" "0|0" \
	"its digest is renewed and the table still equals the API's data"

sql "UPDATE chatsync.sync_cursors SET listing_digest = 'stale'"
run_once "$TEST_TMP/big.conf"
is "$(sql "SELECT count(*) FROM chatsync.sync_cursors WHERE listing_digest = 'stale'")" 0 \
	"a listing whose digest does not match is compared row by row, and its digest renewed"
is "$(diff_expected)" 0 "still equal to the API's data"
is "$(writes user_channels)" "$before" "still no write for unchanged rows"

# --- an open sweep over many users: cursors are read 64 users at a time ------
many=()
for i in $(seq -w 1 150); do many+=("many-$i"); done
PAGE_SIZE=1000 CONCURRENCY=8 SCHEMA=many write_config "$TEST_TMP/many.conf" "${many[@]}"
run_once "$TEST_TMP/many.conf"
is "$?|$(sql 'SELECT count(*) FROM many.user_channels')" "0|$((150 * CHANNELS))" "150 users swept"
# Reopen the sweep as if it had stopped with four users left: the 1st, the
# two either side of 64 (where a second read of cursors begins) and the last.
left="'many-001', 'many-064', 'many-065', 'many-150'"
sql "UPDATE many.sync_runs SET finished_at = NULL;
     UPDATE many.sync_cursors SET state = 'running', listing_digest = NULL WHERE user_sid IN ($left);
     UPDATE many.user_channels SET unread_messages_count = -1 WHERE user_sid IN ($left)"
: >"$FAKE_LOG"
run_once "$TEST_TMP/many.conf"
is "$?" 0 "the reopened sweep finishes"
is "$(cut -f 2 "$FAKE_LOG" | sort | tr '\n' ' ')" "many-001 many-064 many-065 many-150 " \
	"exactly the four users left are fetched, whichever batch of cursors they are in"
is "$(sql "SELECT count(*) FROM many.user_channels WHERE unread_messages_count = -1")" 0 "and stored again"
is "$(sql "SELECT count(*) FROM many.sync_cursors WHERE state = 'complete' AND run_id = (SELECT max(run_id) FROM many.sync_runs)")" 150 \
	"every cursor is complete in that sweep"

done_testing

#!/usr/bin/env bash
# Changes, removals and reappearances: current table, soft deletes and SCD-2 history.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=(US00000000000000000000000000000aaa "bob@example.com")
CHANNELS=40

sweep_variant() { # sweep_variant V PAGE_SIZE
	fake_start "api$1" --channels $CHANNELS --variant "$1"
	PAGE_SIZE=$2 write_config "$TEST_TMP/c.conf" "${USERS[@]}"
	run_once "$TEST_TMP/c.conf"
	local rc=$?
	fake_stop
	load_expected --channels $CHANNELS --variant "$1" -- "${USERS[@]}"
	return $rc
}

live() { sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NULL"; }
gone() { sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL"; }

# keep_served: the fake's data set just swept (public.expected) becomes
# public.served, what the next sweep changes from.
keep_served() { sql "DROP TABLE IF EXISTS public.served; CREATE TABLE public.served AS TABLE public.expected"; }

# Memberships of public.served that public.expected drops (key only), and
# those it keeps with other values.
DROPPED="SELECT service_sid, user_sid, channel_sid FROM public.served
         EXCEPT SELECT service_sid, user_sid, channel_sid FROM public.expected"
CHANGED="SELECT s.service_sid, s.user_sid, s.channel_sid
           FROM public.served s JOIN public.expected e USING (service_sid, user_sid, channel_sid)
          WHERE ROW(s.*) IS DISTINCT FROM ROW(e.*)"

# The overlaps between versions of one membership in the history view: each
# version must start no earlier than the one before it ended.
OVERLAPS="SELECT count(*) FROM (
            SELECT valid_from, lag(coalesce(valid_to, 'infinity')) OVER (
                     PARTITION BY service_sid, user_sid, channel_sid
                     ORDER BY valid_from, valid_to NULLS LAST) AS prev_to
              FROM chatsync.user_channel_history) v
           WHERE valid_from < prev_to"

for page_size in 1000 9; do
	SCHEMA=chatsync
	sql "DROP SCHEMA IF EXISTS chatsync CASCADE"
	diag "page size $page_size"
	expect_no_past

	sweep_variant 0 $page_size
	is "$?" 0 "[$page_size] variant 0 synced"
	is "$(diff_expected)" 0 "[$page_size] variant 0 equals the API"

	sql "DROP TABLE IF EXISTS public.v0; CREATE TABLE public.v0 AS SELECT * FROM chatsync.user_channels"
	keep_served
	# Variant 1 drops slots 1, 11, 21, 31 and changes slots 1, 8, 15, ...
	sweep_variant 1 $page_size
	is "$?" 0 "[$page_size] variant 1 synced"
	expect_past_ended public.served public.expected
	is "$(diff_expected)" 0 "[$page_size] variant 1: live rows equal the API"
	is "$(gone)" 8 "[$page_size] 4 memberships per user are marked deleted"
	is "$(live)" $((2 * CHANNELS - 8)) "[$page_size] the others stay live"
	is "$(sql 'SELECT rows_inserted, rows_deleted FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1')" \
		"0|8" "[$page_size] the run counts 8 deletions"
	changed=$(sql 'SELECT rows_updated FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1')
	ok $([ "$changed" -gt 0 ] && echo 0 || echo 1) "[$page_size] changed memberships are counted as updated ($changed)"
	is "$(past_differ)|$(sql 'SELECT count(*) FROM public.expected_past')" "0|$((changed + 8))" \
		"[$page_size] past versions: exactly the variant-0 values of the memberships variant 1 changes or drops"
	is "$(sql "SELECT count(*) FROM ($DROPPED) d JOIN chatsync.user_channels uc USING (service_sid, user_sid, channel_sid)
	            WHERE uc.deleted_at IS NOT NULL
	              AND (SELECT array_agg(p.valid_to) FROM chatsync.user_channel_past_versions p
	                    WHERE (p.service_sid, p.user_sid, p.channel_sid) = (d.service_sid, d.user_sid, d.channel_sid))
	                  = ARRAY[uc.deleted_at]")" \
		8 "[$page_size] each membership variant 1 drops has one past version, closed when it was marked deleted"
	is "$(sql 'SELECT count(*) FROM chatsync.user_channel_history')" \
		$((2 * CHANNELS + changed)) "[$page_size] a change opens exactly one new version"
	is "$(sql "SELECT count(*) FROM ($CHANGED) c
	             JOIN public.expected e USING (service_sid, user_sid, channel_sid)
	             JOIN chatsync.user_channel_history o USING (service_sid, user_sid, channel_sid)
	             JOIN chatsync.user_channel_past_versions p USING (service_sid, user_sid, channel_sid)
	            WHERE o.valid_to IS NULL AND p.valid_to = o.valid_from
	              AND (o.account_sid, o.member_sid, o.status, o.last_consumed_message_index,
	                   o.unread_messages_count, o.channel_url, o.member_url)
	                  IS NOT DISTINCT FROM
	                  (e.account_sid, e.member_sid, e.status, e.last_consumed_message_index,
	                   e.unread_messages_count, e.channel_url, e.member_url)")" \
		"$changed" "[$page_size] each membership variant 1 changes: its open version holds the new values and starts when its past version ends"
	is "$(sql "SELECT count(*) FROM chatsync.user_channel_past_versions")|$(sql "SELECT count(*)
		FROM chatsync.user_channel_past_versions p
		JOIN public.v0 o USING (service_sid, user_sid, channel_sid)
		JOIN chatsync.user_channels uc USING (service_sid, user_sid, channel_sid)
		WHERE (p.account_sid, p.member_sid, p.status, p.last_consumed_message_index,
		       p.unread_messages_count, p.channel_url, p.member_url, p.valid_from)
		      IS NOT DISTINCT FROM
		      (o.account_sid, o.member_sid, o.status, o.last_consumed_message_index,
		       o.unread_messages_count, o.channel_url, o.member_url, o.updated_at)
		  AND p.valid_to = uc.updated_at")" "$((changed + 8))|$((changed + 8))" \
		"[$page_size] each changed or deleted membership's past version holds its old values, valid from its old updated_at to the change"

	# Variant 2 drops slots 2, 12, ... and brings 1, 11, ... back.
	keep_served
	sweep_variant 2 $page_size
	is "$?" 0 "[$page_size] variant 2 synced"
	expect_past_ended public.served public.expected
	is "$(diff_expected)" 0 "[$page_size] variant 2: live rows equal the API"
	is "$(gone)" 8 "[$page_size] the newly removed are deleted, the revived are not"
	is "$(sql "SELECT count(*) FROM chatsync.user_channels uc WHERE deleted_at IS NULL AND (SELECT count(*) FROM chatsync.user_channel_history h WHERE (h.service_sid, h.user_sid, h.channel_sid) = (uc.service_sid, uc.user_sid, uc.channel_sid)) >= 2 AND first_seen_at < updated_at")" \
		"$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NULL AND first_seen_at < updated_at")" \
		"[$page_size] every revived or changed membership has several versions"
	is "$(past_differ)" 0 \
		"[$page_size] past versions: exactly those variant 1 ended and those variant 2 ends, none for the revived ($(sql 'SELECT count(*) FROM public.expected_past') in all)"
	is "$(sql "$OVERLAPS")" 0 "[$page_size] no two versions of one membership overlap in time, open or past"

	sweep_variant 0 $page_size
	is "$(diff_expected)" 0 "[$page_size] back to variant 0"
	is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL")" 0 "[$page_size] everything revived"
done

# A listing that fails part-way must not delete what its later pages would have listed.
sql "DROP SCHEMA IF EXISTS chatsync CASCADE"
sweep_variant 0 9 >/dev/null
fake_start partial --channels $CHANNELS --variant 1 --fault "500:${USERS[1]}:1000"
PAGE_SIZE=9 write_config "$TEST_TMP/c.conf" "${USERS[@]}"
run_once "$TEST_TMP/c.conf"
is "$?" 3 "a sweep with a failing user exits 3"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE user_sid = '${USERS[1]}' AND deleted_at IS NOT NULL")" 0 \
	"no deletion is marked for a user whose listing did not complete"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE user_sid = '${USERS[0]}' AND deleted_at IS NOT NULL")" 4 \
	"the user whose listing completed gets its deletions"

done_testing

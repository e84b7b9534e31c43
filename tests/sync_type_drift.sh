#!/usr/bin/env bash
# A field of an unexpected type (Twilio changing a type, say) never deletes a
# membership: an entry whose channel_sid is valid is stored, the drifted
# fields as NULL, and each drifted field is logged once per listing.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

CHANNELS=30
fake_start before --channels $CHANNELS
PAGE_SIZE=10 write_config "$TEST_TMP/c.conf" u-a u-b u-c
run_once "$TEST_TMP/c.conf"
is "$?" 0 "a first sweep completes"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NULL")" 90 "with 90 memberships"
sql "CREATE TABLE public.before AS SELECT * FROM chatsync.user_channels"

fake_stop
# page 2 of u-a, and every page of u-b: status 7, unread_messages_count "5"
fake_start drift --channels $CHANNELS --fault typedrift:u-a:1 --fault 'typedrift:u-b:*'
PAGE_SIZE=10 write_config "$TEST_TMP/c.conf" u-a u-b u-c
: >"$TEST_TMP/chatsyncd.log"
run_once "$TEST_TMP/c.conf"
is "$?" 0 "the sweep over drifted types completes"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL")" 0 \
	"no membership is marked deleted"
is "$(sql "SELECT count(*) FROM chatsync.user_channel_history WHERE valid_to IS NOT NULL AND
             (service_sid, user_sid, channel_sid) NOT IN
             (SELECT service_sid, user_sid, channel_sid FROM chatsync.user_channels)")" 0 \
	"no history version ends for a membership that is gone"
is "$(sql "SELECT user_sid || ':' || count(*) FILTER (WHERE status IS NULL AND unread_messages_count IS NULL)
                  || ':' || count(*)
             FROM chatsync.user_channels GROUP BY user_sid ORDER BY user_sid" | paste -sd' ')" \
	"u-a:10:30 u-b:30:30 u-c:0:30" \
	"the drifted fields are stored as NULL: u-a's page 2, all of u-b, none of u-c"
is "$(sql "SELECT count(*) FROM chatsync.user_channels u JOIN public.before b USING (service_sid, user_sid, channel_sid)
             WHERE (u.last_consumed_message_index, u.member_sid, u.channel_url, u.member_url)
                   IS DISTINCT FROM (b.last_consumed_message_index, b.member_sid, b.channel_url, b.member_url)")" 0 \
	"the fields that kept their type keep their values"
is "$(sql "SELECT rows_rejected || ':' || rows_deleted || ':' || users_failed FROM chatsync.sync_runs ORDER BY run_id DESC LIMIT 1")" \
	"0:0:0" "the run rejected, deleted and failed nothing"
is "$(grep -c 'user "u-a" page 2: channel CH[0-9a-fA-F]*: status has an unexpected type; stored as NULL' "$TEST_TMP/chatsyncd.log")|$(grep -c 'user "u-a" .*unread_messages_count has an unexpected type' "$TEST_TMP/chatsyncd.log")" \
	"1|1" "u-a: each drifted field is logged once, naming the page and the channel"
is "$(grep -c 'user "u-b" .* has an unexpected type' "$TEST_TMP/chatsyncd.log")" 2 \
	"u-b: two lines for 30 drifted entries on 3 pages, not 60"
is "$(sql "SELECT count(*) FROM chatsync.membership_events WHERE event = 'status_changed'")" 0 \
	"a status of an unexpected type is no status change in membership_events"

fake_stop
fake_start after --channels $CHANNELS
PAGE_SIZE=10 write_config "$TEST_TMP/c.conf" u-a u-b u-c
run_once "$TEST_TMP/c.conf"
load_expected --channels $CHANNELS -- u-a u-b u-c
is "$(diff_expected)" 0 "once the types are back, the tables equal the API's data again"
is "$(sql "SELECT count(*) FROM chatsync.user_channels WHERE deleted_at IS NOT NULL")" 0 \
	"and nothing was ever marked deleted"

done_testing

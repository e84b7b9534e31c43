#!/usr/bin/env bash
# The analyst layer: the views, their comments, the read-only role, the
# error log, retention, and the ten documented questions (doc/questions.sql),
# each run as chatsync_reader against data synced from the fake API through
# three data sets (memberships added, changed, removed and coming back), and
# checked against the fake's own data.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

USERS=(US00000000000000000000000000000aaa "bob@example.com" "carol")
GONE=u-gone # a user the API does not know: it fails every sweep
CHANNELS=30

sweep_variant() { # sweep_variant V: one sweep of data set V, and the fake's copy of it in public.vV
	fake_start "api$1" --channels $CHANNELS --variant "$1" --fault "404:$GONE:0"
	PAGE_SIZE=10 EXTRA="${HISTORY:-}" write_config "$TEST_TMP/c.conf" "${USERS[@]}" "$GONE"
	sed -i 's/interval = 1;/interval = 3600;/' "$TEST_TMP/c.conf" # fresh for 2 hours
	run_once "$TEST_TMP/c.conf"
	local rc=$?
	fake_stop
	load_dump "public.v$1" --channels $CHANNELS --variant "$1" -- "${USERS[@]}"
	return $rc
}
for v in 0 1 2; do
	sweep_variant $v
	is "$?" 3 "data set $v: the sweep ends, with $GONE failed"
done

# The memberships each data set has, and what changed from one to the next.
sql "CREATE VIEW public.keys AS
       SELECT 0 AS v, * FROM public.v0 UNION ALL SELECT 1, * FROM public.v1
       UNION ALL SELECT 2, * FROM public.v2;
     CREATE VIEW public.steps AS
       SELECT coalesce(a.service_sid, b.service_sid) AS service_sid,
              coalesce(a.user_sid, b.user_sid) AS user_sid,
              coalesce(a.channel_sid, b.channel_sid) AS channel_sid,
              a.status AS old_status, b.status AS new_status,
              CASE WHEN a.channel_sid IS NULL THEN 'added' WHEN b.channel_sid IS NULL THEN 'removed'
                   WHEN a.status IS DISTINCT FROM b.status THEN 'status_changed' END AS event
         FROM (SELECT * FROM public.keys WHERE v = 0 UNION ALL SELECT * FROM public.keys WHERE v = 1) a
         FULL JOIN (SELECT * FROM public.keys WHERE v = 1 UNION ALL SELECT * FROM public.keys WHERE v = 2) b
           ON (a.v + 1, a.service_sid, a.user_sid, a.channel_sid)
              = (b.v, b.service_sid, b.user_sid, b.channel_sid)
        WHERE a.v IS NULL OR b.v IS NULL OR a.v + 1 = b.v" >/dev/null
# A key present in v0, absent from v1, back in v2: removed, then added.
revived=$(sql "SELECT count(*) FROM (SELECT service_sid, user_sid, channel_sid FROM public.v0
                 INTERSECT SELECT service_sid, user_sid, channel_sid FROM public.v2
                 EXCEPT SELECT service_sid, user_sid, channel_sid FROM public.v1) k")
ok $([ "$revived" -gt 0 ] && echo 0 || echo 1) "the data sets bring memberships back ($revived)"

# --- the views -----------------------------------------------------------------
MCOLS="service_sid, user_sid, channel_sid, member_sid, status, last_consumed_message_index, unread_messages_count"
is "$(sql "SELECT count(*) FROM ((SELECT $MCOLS FROM chatsync.memberships EXCEPT ALL SELECT $MCOLS FROM public.v2)
            UNION ALL (SELECT $MCOLS FROM public.v2 EXCEPT ALL SELECT $MCOLS FROM chatsync.memberships)) d")" 0 \
	"memberships: exactly the API's current memberships"
is "$(sql "SELECT count(*) FROM chatsync.memberships m JOIN chatsync.sync_cursors c
             ON c.service_sid = m.service_sid AND c.user_sid = m.user_sid
            WHERE m.synced_at IS DISTINCT FROM c.last_complete_at")" 0 \
	"memberships.synced_at is when the user's last complete listing confirmed it"
is "$(sql "SELECT string_agg(DISTINCT coalesce(identity, '-'), ',' ORDER BY coalesce(identity, '-')) FROM chatsync.memberships")" \
	"-,bob@example.com,carol" "identity: the configured identity, none for a user configured by SID"
for e in added removed status_changed; do
	is "$(sql "SELECT count(*) FROM chatsync.membership_events WHERE event = '$e'")" \
		"$(sql "SELECT count(*) FROM public.steps WHERE event = '$e'")" \
		"membership_events: every '$e' the data sets imply, and no other"
done
is "$(sql "SELECT count(*) FROM ((SELECT service_sid, user_sid, channel_sid, event, old_status, new_status
              FROM chatsync.membership_events WHERE event <> 'added')
            EXCEPT ALL (SELECT service_sid, user_sid, channel_sid, event, old_status, new_status
              FROM public.steps WHERE event IN ('removed', 'status_changed'))) d")" 0 \
	"membership_events: removals and status changes with their old and new status"
is "$(sql "SELECT count(*) FROM chatsync.membership_history WHERE is_deleted AND NOT is_current")" "$revived" \
	"membership_history: a removal that ended (the membership came back) is a version of its own"
is "$(sql "SELECT count(*) FROM chatsync.membership_history WHERE is_deleted AND is_current")" \
	"$(sql "SELECT count(*) FROM (SELECT service_sid, user_sid, channel_sid FROM public.keys
              EXCEPT SELECT service_sid, user_sid, channel_sid FROM public.v2) k")" \
	"membership_history: a membership gone now has a current removal version"
is "$(sql "SELECT count(*) FROM chatsync.membership_history WHERE is_current AND NOT is_deleted")" \
	"$(sql "SELECT count(*) FROM public.v2")" "membership_history: one current version per live membership"
is "$(sql "SELECT count(*) FROM (SELECT valid_from, lag(valid_to) OVER (PARTITION BY service_sid, user_sid, channel_sid
             ORDER BY valid_from) AS prev_to FROM chatsync.membership_history) h WHERE valid_from <> prev_to")" 0 \
	"membership_history: each version starts where the one before it ended, removals included"
is "$(sql "SELECT \"user\" || ':' || coalesce(state, '-') || ':' || is_stale FROM chatsync.sync_health ORDER BY \"user\"" | paste -sd' ')" \
	"US00000000000000000000000000000aaa:complete:false bob@example.com:complete:false carol:complete:false u-gone:failed:true" \
	"sync_health: every configured user; the one that fails is stale"
is "$(sql "SELECT count(*) || ':' || min(kind) || ':' || min(page) || ':' || bool_and(message LIKE 'user not found%')
             FROM chatsync.sync_errors WHERE \"user\" = '$GONE'")" "3:http 404:1:true" \
	"sync_errors: each failure, with its kind, page and message"

# --- comments and the read-only role -------------------------------------------
is "$(sql "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'chatsync'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
              AND (c.relkind = 'v' OR c.relname = 'sync_errors')
              AND col_description(c.oid, a.attnum) IS NULL AND a.attname <> 'error_id'")" 0 \
	"every column of every view, and of sync_errors, has a comment"
is "$(sql "SELECT count(*) FILTER (WHERE obj_description(c.oid, 'pg_class') IS NULL) || '|' || count(*)
             FROM pg_class c WHERE c.relnamespace = 'chatsync'::regnamespace AND c.relkind = 'v'")" \
	"0|11" "and every one of the 11 views a description"
sql "CREATE ROLE analyst LOGIN IN ROLE chatsync_reader" >/dev/null
as_reader() { psql -X -q -A -t -v ON_ERROR_STOP=1 -U analyst -c "SET search_path TO chatsync" -c "$1" 2>&1; }
unreadable=0
for rel in $(sql "SELECT relname FROM pg_class WHERE relnamespace = 'chatsync'::regnamespace AND relkind IN ('r', 'v')"); do
	as_reader "SELECT count(*) FROM $rel" >/dev/null || { unreadable=$((unreadable + 1)); diag "cannot read $rel"; }
done
is "$unreadable" 0 "chatsync_reader reads every table and view of the schema"
for stmt in "INSERT INTO sync_errors (service_sid, \"user\", kind, message) VALUES ('x', 'y', 'z', 'w')" \
	"UPDATE user_channels SET status = 'x'" "DELETE FROM sync_runs" "TRUNCATE sync_listing_pages" \
	"DROP VIEW memberships" "CREATE TABLE intruder (x int)" "SELECT sync_prune(0, 1)"; do
	out=$(as_reader "$stmt")
	ok $((!$?)) "chatsync_reader may not: ${stmt%% (*} ($(echo "$out" | head -n 1 | cut -c1-60))"
done

# --- the ten questions, as the reader ------------------------------------------
# question N: the statement of "-- QN:" in doc/questions.sql, run as the reader.
question() {
	awk -v q="-- Q$1:" 'index($0, q) == 1 { on = 1; next } on && /^-- Q[0-9]+:/ { exit } on' \
		"$top_srcdir/doc/questions.sql" >"$TEST_TMP/q$1.sql"
	psql -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -U analyst -c "SET search_path TO chatsync" \
		-f "$TEST_TMP/q$1.sql" 2>&1
}
is "$(question 1 | awk -F'|' '{ n++; u += $3 } END { print n ":" u }')" \
	"$(sql "SELECT count(DISTINCT user_sid) || ':' || sum(unread_messages_count) FROM public.v2")" \
	"Q1 unread per user: a row per user, the API's unread total"
q6=$(question 6 | awk -F'|' -v h="$(sql "SELECT date_trunc('hour', now())")" '$2 == h { print $1 "|" $3 }' | sort)
top=$(echo "$q6" | cut -d'|' -f1 | sed "s/.*/'&'/" | paste -sd,)
is "$(echo "$q6" | wc -l)" "$(sql "SELECT least(10, count(DISTINCT channel_sid)) FROM chatsync.user_channels WHERE deleted_at IS NULL")" \
	"Q6 unread trend: the current hour of ten channels"
is "$q6" "$(sql "SELECT channel_sid || '|' || coalesce(sum(unread_messages_count)::text, '')
                   FROM chatsync.user_channels WHERE deleted_at IS NULL AND channel_sid IN (${top:-''})
                  GROUP BY channel_sid" | sort)" \
	"Q6: each with its unread total now"
is "$(sql "SELECT count(*) FROM (SELECT channel_sid, sum(unread_messages_count) AS u FROM chatsync.user_channels
                                   WHERE deleted_at IS NULL GROUP BY channel_sid) t
            WHERE channel_sid NOT IN (${top:-''})
              AND u > (SELECT min(u) FROM (SELECT sum(unread_messages_count) AS u FROM chatsync.user_channels
                                            WHERE deleted_at IS NULL AND channel_sid IN (${top:-''})
                                            GROUP BY channel_sid) x)")" 0 \
	"Q6: and they are the channels with the most unread messages"
is "$(question 8 | cut -d'|' -f3,4,6)" \
	"$(sql "SELECT (SELECT count(DISTINCT user_sid) FROM chatsync.sync_health) || '|' || count(*) || '|' || sum(unread_messages_count) FROM chatsync.user_channels WHERE deleted_at IS NULL")" \
	"Q8 per-service totals: users (one per person), memberships and unread"
sql "UPDATE chatsync.user_channels SET unread_messages_count = 42, updated_at = now() - interval '2 days'
      WHERE (user_sid, channel_sid) = (SELECT user_sid, min(channel_sid) FROM chatsync.user_channels
                                        WHERE user_sid = 'carol' AND deleted_at IS NULL GROUP BY user_sid)"
is "$(question 2 | cut -d'|' -f2,4)" "carol|42" "Q2 over 10 unread for over 24 h: exactly that membership"
is "$(question 3 | awk -F'|' '{ print $1 "|" $3 "|" $4 }' | sort)" \
	"$(sql "SELECT channel_sid || '|' || coalesce(status, '') || '|' || count(*) FROM public.v2 GROUP BY channel_sid, status" | sort)" \
	"Q3 member counts by status: as in the API"
is "$(question 4 | wc -l)" "$(sql "SELECT count(*) FROM public.v2 WHERE status = 'invited'")" \
	"Q4 pending invitations: one row per invited membership"
is "$(question 5 | cut -d'|' -f2,3)" \
	"$(sql "SELECT count(*) FILTER (WHERE event = 'added') || '|' || count(*) FILTER (WHERE event = 'removed') FROM public.steps")" \
	"Q5 gained and lost per day: today's are every addition and removal"
is "$(question 7 | cut -d'|' -f2,3)" "$GONE|failed" "Q7 stale users: the one that never synced"
is "$(question 9 | cut -d'|' -f2,4 | sort)" \
	"$(sql "SELECT user_sid || '|' || channel_sid FROM public.keys GROUP BY user_sid, channel_sid
             HAVING bool_or(status = 'invited') AND NOT bool_or(status = 'joined')" | sort)" \
	"Q9 invited, never joined: as the data sets have it"
is "$(question 10 | cut -d'|' -f2,6)" '3|{"http 404": 3}' "Q10 sync health over time: 3 sweeps today, 3 errors of kind http 404"

# --- retention -----------------------------------------------------------------
sql "UPDATE chatsync.user_channel_past_versions SET valid_from = valid_from - interval '3 days',
            valid_to = valid_to - interval '3 days'
      WHERE history_id % 2 = 0;
     UPDATE chatsync.membership_event_log SET at = at - interval '3 days' WHERE event_id % 2 = 0;
     UPDATE chatsync.sync_errors SET at = at - interval '3 days' WHERE error_id = (SELECT min(error_id) FROM chatsync.sync_errors)" >/dev/null
sql "CREATE TABLE public.recent AS
       SELECT 'v' || history_id AS id FROM chatsync.user_channel_past_versions WHERE valid_to >= now() - interval '1 day'
       UNION ALL SELECT 'e' || event_id FROM chatsync.membership_event_log WHERE at >= now() - interval '1 day'
       UNION ALL SELECT 'r' || error_id FROM chatsync.sync_errors WHERE at >= now() - interval '1 day'" >/dev/null
keep=$(sql "SELECT count(*) FROM public.recent")
old=$(sql "SELECT (SELECT count(*) FROM chatsync.user_channel_past_versions WHERE valid_to < now() - interval '1 day')
            + (SELECT count(*) FROM chatsync.membership_event_log WHERE at < now() - interval '1 day')
            + (SELECT count(*) FROM chatsync.sync_errors WHERE at < now() - interval '1 day')")
HISTORY='history: { retention_days = 1; };' sweep_variant 2
is "$(sql "SELECT (SELECT count(*) FROM chatsync.user_channel_past_versions WHERE valid_to < now() - interval '1 day')
            + (SELECT count(*) FROM chatsync.membership_event_log WHERE at < now() - interval '1 day')
            + (SELECT count(*) FROM chatsync.sync_errors WHERE at < now() - interval '1 day')")" 0 \
	"history.retention_days = 1: the $old older versions, events and errors are pruned after the sweep"
is "$(sql "SELECT count(*) FROM public.recent WHERE id NOT IN (
              SELECT 'v' || history_id FROM chatsync.user_channel_past_versions
              UNION ALL SELECT 'e' || event_id FROM chatsync.membership_event_log
              UNION ALL SELECT 'r' || error_id FROM chatsync.sync_errors)")" 0 \
	"and the $keep recent ones are kept"
grep -q "pruned $old rows of history older than 1 days" "$TEST_TMP/chatsyncd.log"
ok $? "the pruning is logged"

done_testing

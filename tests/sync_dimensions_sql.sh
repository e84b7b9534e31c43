#!/usr/bin/env bash
# The SQL side of the dimension listings (sql/functions/sync_dimensions.sql):
# the service, users and channels pages, their cursors and seen sets, the
# deletion of a user and of its memberships, failures, the leases on the
# listings, the merge of a user configured by identity into its User SID, the
# resolution of the configured users (refused to an instance no longer live),
# and sync_health after a merge.  Each function is called as chatsyncd calls
# it, on a session that names a live instance (chatsync.instance).
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

S=$SERVICE_SID
sid() { printf 'US%032x' "$1"; } # sid N: a User SID
U1=$(sid 1) U2=$(sid 2) U3=$(sid 3) U4=$(sid 4) U5=$(sid 5) U6=$(sid 6) U7=$(sid 7) U8=$(sid 8)
U9=$(sid 9) U10=$(sid 10)

FAKE_URL=http://127.0.0.1:9 write_config "$TEST_TMP/c.conf" "$U1" # --migrate makes no request
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/c.conf" --migrate 2>>"$TEST_TMP/err"
is "$?" 0 "chatsyncd --migrate creates the schema"
# The instance the writer works for, live for an hour; and one no longer live.
instance=$(sql "SELECT chatsync.sync_instance_register('test', 'localhost', $$, now(), 3600)")
expired=$(sql "SELECT chatsync.sync_instance_register('gone', 'localhost', 1, now(), 3600)")
sql "UPDATE chatsync.sync_instances SET expires_at = now() - interval '1 minute'
      WHERE instance_id = $expired" >/dev/null

# as INSTANCE QUERY: QUERY in schema chatsync on a session naming INSTANCE
# (chatsync.instance), whose statistics are then flushed (for
# pg_stat_user_tables).
as() {
	PGOPTIONS="-c client_min_messages=warning -c search_path=chatsync -c chatsync.instance=$1" \
		psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$2" -c '\o /dev/null' -c "SELECT pg_stat_force_next_flush()"
}
w() { as "$instance" "$1"; } # w QUERY: as the writer
q() { sql "SET search_path TO chatsync; $1"; }

# writes TABLE...: rows inserted, updated and deleted in these tables so far.
writes() {
	local t
	t=$(printf "'%s'," "$@")
	sql "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables
	      WHERE schemaname = 'chatsync' AND relname IN (${t%,})"
}
run() { q "INSERT INTO sync_runs DEFAULT VALUES RETURNING run_id"; }
# opt NEXT: NULL for -, else NEXT quoted.
opt() { if [ "$1" = - ]; then echo NULL; else echo "'$1'"; fi; }

# users RUN FIRST NEXT SIDS IDENTITIES NAMES: one page of the users listing
# (comma-separated lists; NEXT - on the last page), 2 requests and 1 retry;
# prints the counts inserted|updated|unchanged|deleted.
users() {
	w "SELECT * FROM sync_users_page($1, '$S', $2, $(opt "$3"), '{$4}', NULL, '{$5}', '{$6}',
	     NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2, 1, $(opt "${DIGEST:--}")${LEASE:+, $LEASE})"
}
# channels RUN FIRST NEXT SIDS TYPES: the same for the channels listing.
# (users and channels send LEASE as the lease token, if set.)
channels() {
	w "SELECT * FROM sync_channels_page($1, '$S', $2, $(opt "$3"), '{$4}', NULL, NULL, '{$5}',
	     NULL, NULL, NULL, NULL, NULL, NULL, 2, 1${LEASE:+, NULL, $LEASE})"
}
# page RUN USER FIRST NEXT CHANNELS STATUSES [DIGEST]: one page of USER's
# memberships (sync_page).
page() {
	w "SELECT * FROM sync_page($1, '$S', '$2', $3, $(opt "$4"), '{$5}', NULL, NULL, '{$6}',
	     NULL, NULL, NULL, NULL, 0, 1, 0, $(opt "${7:--}"))" >/dev/null
}
cursor() { # cursor LISTING: its run, state, next page, pages done, completed?, error
	q "SELECT run_id, state, coalesce(next_page_url, '-'), pages_done, last_complete_at IS NOT NULL,
	          coalesce(last_error, '-')
	     FROM sync_dimension_cursors WHERE service_sid = '$S' AND listing = '$1'"
}
# stored_pages KEY: the pages stored of KEY's listing (number:digest:channels), - for no digest.
stored_pages() {
	q "SELECT string_agg(page_no || ':' || coalesce(digest, '-') || ':' || array_to_string(listed, ','), ' '
	                     ORDER BY page_no)
	     FROM sync_listing_pages WHERE service_sid = '$S' AND user_sid = '$1'"
}
live() { # live TABLE KEY: the live rows' keys, sorted
	q "SELECT string_agg($2, ',' ORDER BY $2) FROM $1 WHERE deleted_at IS NULL"
}

R=$(run) # the sweep of the dimension listings
M=$(run) # a sweep of memberships (sync_page)

# --- the service --------------------------------------------------------------
is "$(w "SELECT * FROM sync_service_row($R, '$S', '$ACCOUNT_SID', 'Support', '2020-01-01', '2020-02-01', 1, 0)")" 1 \
	"sync_service_row(): a new service is stored (changed 1)"
is "$(q "SELECT account_sid, friendly_name, date_created::date, date_updated::date FROM services")" \
	"$ACCOUNT_SID|Support|2020-01-01|2020-02-01" "with its values"
is "$(cursor service)" "$R|complete|-|1|t|-" "and the service's listing is complete in this run"
before=$(writes services)
is "$(w "SELECT * FROM sync_service_row($R, '$S', '$ACCOUNT_SID', 'Support', '2020-01-01', '2020-02-01', 1, 0)")" 0 \
	"the same service again: changed 0"
is "$(writes services)" "$before" "and its row is not written"
first=$(q "SELECT first_seen_at FROM services")
is "$(w "SELECT * FROM sync_service_row($R, '$S', '$ACCOUNT_SID', 'Help desk', '2020-01-01', '2020-03-01', 1, 1)")" 1 \
	"a service renamed: changed 1"
is "$(q "SELECT friendly_name, date_updated::date, first_seen_at = '$first', updated_at > first_seen_at FROM services")" \
	"Help desk|2020-03-01|t|t" "new values, updated_at moves, first_seen_at stays"

# --- users: one page ----------------------------------------------------------
is "$(users "$R" true - "$U1,$U2,$U3,$U5,$U2" "alice,bob,carol,dave,bobby" "A,B,C,D,B2")" "4|0|0|0" \
	"sync_users_page(): 4 new users, a SID twice counts once"
is "$(q "SELECT identity || ':' || friendly_name FROM users WHERE user_sid = '$U2'")" "bobby:B2" \
	"of two entries with one SID, the last counts"
is "$(cursor users)" "$R|complete|-|1|t|-" "the users listing on one page is complete"
is "$(q "SELECT string_agg(page || ':' || cardinality(sids), ' ') FROM sync_dimension_pages WHERE listing = 'users'")" "1:4" \
	"a one-page listing keeps its page: its SIDs"
stamps=$(q "SELECT string_agg(user_sid || updated_at || first_seen_at, ',' ORDER BY user_sid) FROM users")
before=$(writes users)
is "$(users "$R" true - "$U1,$U2,$U3,$U5" "alice,bobby,carol,dave" "A,B2,C,D")" "0|0|4|0" \
	"the same users again: 4 unchanged"
is "$(writes users)" "$before" "and no row of users is written"
is "$(q "SELECT string_agg(user_sid || updated_at || first_seen_at, ',' ORDER BY user_sid) FROM users")" "$stamps" \
	"updated_at and first_seen_at stay"
is "$(users "$R" true - "$U1,$U2,$U3,$U5" "alice,bob,carol,dave" "A,B,C,D")" "0|1|3|0" \
	"one user's identity changed: 1 updated"
is "$(q "SELECT string_agg(user_sid, ',') FROM users WHERE updated_at > first_seen_at")" "$U2" \
	"only its updated_at moves"
is "$(w "SELECT * FROM sync_users_page($R, '$S', true, NULL, '{$U1,$U2,$U3,$U5}', '{AC1,AC1,AC1,AC1}',
	'{alice,bob,carol,dave}', '{A,B,C,D}', '{RL1,RL1,RL1,RL1}', '{3,-1,0,0}', '{t,f,t,f}',
	'{t,t,f,f}', '{\"{}\",\"{}\",\"{}\",\"{}\"}', '{2020-01-01 12:00:00.123456+02,NULL,NULL,NULL}',
	'{2020-01-02,NULL,NULL,NULL}', 1, 0)")" "0|4|0|0" "every value sent is compared: 4 updated"
is "$(q "SELECT account_sid, role_sid, coalesce(joined_channels_count::text, 'null'), is_online, is_notifiable,
	        attributes, date_created = '2020-01-01 10:00:00.123456+00', date_updated::date
	   FROM users WHERE user_sid = '$U1'")" "AC1|RL1|3|t|t|{}|t|2020-01-02" "and stored as sent"
is "$(q "SELECT coalesce(joined_channels_count::text, 'null') FROM users WHERE user_sid = '$U2'")" null \
	"a negative joined_channels_count is stored as NULL, and does not fail the page"
before=$(writes users)
is "$(w "SELECT * FROM sync_users_page($R, '$S', true, NULL, '{$U1,$U2,$U3,$U5}', '{AC1,AC1,AC1,AC1}',
	'{alice,bob,carol,dave}', '{A,B,C,D}', '{RL1,RL1,RL1,RL1}', '{3,-1,0,0}', '{t,f,t,f}',
	'{t,t,f,f}', '{\"{}\",\"{}\",\"{}\",\"{}\"}', '{2020-01-01 12:00:00.123456+02,NULL,NULL,NULL}',
	'{2020-01-02,NULL,NULL,NULL}', 1, 0)")|$(writes users)" "0|0|4|0|$before" \
	"the same values again: unchanged, nothing written"

# --- users: several pages, and the memberships of a deleted user --------------
# carol (U3) has memberships under her SID, listed completely before; and
# under her identity, a listing still in progress.  dave (U5) has some under
# his identity, which U6 will also have.
page "$M" "$U3" true - CH1,CH2 joined,invited
page "$M" carol true http://x/carol/2 CH3 joined dg-c1
page "$M" dave true - CH4 joined
page "$M" "$U1" true - CH1 joined
is "$(stored_pages carol)|$(stored_pages "$U3")" "1:dg-c1:CH3|" \
	"the first page of carol's listing in progress is stored with its digest; her SID's one-page listing stores none"
events=$(q "SELECT count(*) FROM membership_event_log")
is "$(users "$R" true http://x/users/2 "$U1,$U2" "alice,bob" "A,B")" "0|2|0|0" \
	"a first page of two: its users (other values now NULL: updated)"
is "$(q "SELECT string_agg(page || ':' || array_to_string(sids, ','), ' ') FROM sync_dimension_pages WHERE listing = 'users'")" "1:$U1,$U2" \
	"its SIDs are recorded in sync_dimension_pages, one row for the page"
is "$(cursor users)" "$R|running|http://x/users/2|1|t|-" "the cursor: running, with the next page"
is "$(live users user_sid)" "$U1,$U2,$U3,$U5" "no user is deleted before the last page"
is "$(users "$R" false - "$U4,$U6" "erin,dave" "E,D2")" "2|0|0|2" \
	"the last page: 2 new users, the 2 listed by no page deleted"
is "$(live users user_sid)" "$U1,$U2,$U4,$U6" "the users of both pages are kept"
is "$(q "SELECT count(*) FROM users WHERE user_sid IN ('$U3', '$U5') AND deleted_at = updated_at
           AND deleted_at > first_seen_at")" 2 "carol and the first dave: deleted_at and updated_at set"
is "$(cursor users)" "$R|complete|-|2|t|-" "the cursor: complete after 2 pages"
is "$(q "SELECT string_agg(page || ':' || cardinality(sids), ' ' ORDER BY page) FROM sync_dimension_pages WHERE listing = 'users'")" "1:2 2:2" \
	"sync_dimension_pages holds the listing's two pages, and no more"

is "$(q "SELECT string_agg(user_sid || '/' || channel_sid, ',' ORDER BY user_sid, channel_sid)
           FROM user_channels WHERE deleted_at IS NOT NULL AND deleted_at = updated_at")" \
	"$U3/CH1,$U3/CH2,carol/CH3" \
	"carol's memberships are deleted, under her SID and under her identity"
is "$(q "SELECT string_agg(user_sid || '/' || channel_sid || '/' || status, ',' ORDER BY user_sid, channel_sid)
           FROM user_channel_past_versions p
          WHERE NOT is_deleted AND valid_to = (SELECT deleted_at FROM user_channels u
                  WHERE (u.service_sid, u.user_sid, u.channel_sid) = (p.service_sid, p.user_sid, p.channel_sid))")" \
	"$U3/CH1/joined,$U3/CH2/invited,carol/CH3/joined" "each one's version is archived, ending when it was deleted"
is "$(q "SELECT string_agg(user_sid || '/' || channel_sid || '/' || event || '/' || old_status, ',' ORDER BY channel_sid)
           FROM membership_event_log WHERE user_sid IN ('$U3', 'carol')")" \
	"$U3/CH1/removed/joined,$U3/CH2/removed/invited" \
	"a 'removed' event where the key had a complete listing before, none for the identity's first listing"
is "$(live user_channels "user_sid || '/' || channel_sid")" "$U1/CH1,dave/CH4" \
	"the memberships of dave's identity, which a user not deleted has, are kept; a listed user's too"
is "$(stored_pages carol)" "1:-:CH3" \
	"the page stored of carol's listing in progress stays, without its digest (dg-c1): the table no longer holds what it listed"
is "$(q "SELECT pages, users_ok, users_failed, rows_received, rows_inserted, rows_updated, rows_unchanged,
	        rows_deleted, rows_rejected FROM sync_runs WHERE run_id = $R")" "0|0|0|0|0|0|0|0|0" \
	"the dimension listings count no page, user or row in the run"
is "$(q "SELECT http_requests || '/' || http_retries FROM sync_runs WHERE run_id = $R")" "15/6" \
	"only their requests and retries"
is "$(users "$R" true - "$U1,$U2,$U3,$U4,$U6" "alice,bob,carol,erin,dave" "A,B,C,E,D2")" "0|1|4|0" \
	"carol comes back: updated (the first dave, not listed, is deleted already: not counted again)"
is "$(q "SELECT deleted_at IS NULL AND updated_at > first_seen_at FROM users WHERE user_sid = '$U3'")" t \
	"her deleted_at is cleared"

# --- channels -----------------------------------------------------------------
is "$(channels "$R" true - CH1,CH2,CH3 public,group,private)" "3|0|0|0" "sync_channels_page(): 3 new channels"
is "$(q "SELECT string_agg(channel_sid || ':' || coalesce(type, 'null'), ',' ORDER BY channel_sid) FROM channels")" \
	"CH1:public,CH2:null,CH3:private" "a type other than public or private is stored as NULL, the page not failed"
before=$(writes channels)
is "$(channels "$R" true - CH1,CH2,CH3 public,group,private)|$(writes channels)" "0|0|3|0|$before" \
	"the same channels again: unchanged, nothing written"
memberships() {
	q "SELECT string_agg(user_sid || channel_sid || coalesce(deleted_at::text, '-'), ','
	                     ORDER BY user_sid, channel_sid) FROM user_channels"
}
mships=$(memberships)
is "$(channels "$R" true http://x/channels/2 CH1 public)" "0|0|1|0" "a first page of two"
is "$(w "SELECT sync_dimension_failed($R, '$S', 'channels', 'HTTP 500: oops', 'http 500', 2, 3, 2)")" "" \
	"sync_dimension_failed(): the second page fails"
is "$(cursor channels)" "$R|failed|http://x/channels/2|1|t|HTTP 500: oops" \
	"the cursor keeps its position, state failed, with the error"
is "$(q "SELECT \"user\" || '|' || page || '|' || kind || '|' || message FROM sync_errors")" \
	"@channels|2|http 500|HTTP 500: oops" "sync_errors: the failure under user @channels, with its page and kind"
is "$(q "SELECT users_failed || '/' || http_requests || '/' || http_retries FROM sync_runs WHERE run_id = $R")" "0/26/12" \
	"the run counts its requests and retries, no failed user"
is "$(live channels channel_sid)" "CH1,CH2,CH3" "a failed listing deletes nothing"
is "$(channels "$R" false - CH4 private)" "1|0|0|2" "the listing resumed: its last page deletes the channels no page showed"
is "$(live channels channel_sid)" "CH1,CH4" "those of the page before the failure are kept"
is "$(cursor channels)" "$R|complete|-|2|t|-" "the cursor is complete, its error cleared"
is "$(memberships)" "$mships" "a deleted channel's memberships are not touched"
is "$(channels "$R" true - CH1,CH2,CH4 public,group,private)" "0|1|2|0" \
	"a deleted channel listed again with the values it had: updated"
is "$(live channels channel_sid)" "CH1,CH2,CH4" "it comes back (deleted_at cleared)"
is "$(w "SELECT sync_dimension_failed($R, '$S', 'users', 'could not connect', 'transport', NULL, 1, 0)")" "" \
	"a listing that fails before its first page"
is "$(cursor users)|$(q "SELECT count(*) FROM sync_errors WHERE \"user\" = '@users' AND page IS NULL")" \
	"$R|failed|-|1|t|could not connect|1" "its cursor and sync_errors say so"

# --- an unchanged sweep writes nothing ----------------------------------------
sweep() {
	w "SELECT sync_service_row($R, '$S', '$ACCOUNT_SID', 'Help desk', '2020-01-01', '2020-03-01', 1, 0)" >/dev/null
	users "$R" true http://x/users/2 "$U1,$U2,$U3" "alice,bob,carol" "A,B,C" >/dev/null
	users "$R" false - "$U4,$U6" "erin,dave" "E,D2"
	channels "$R" true - CH1,CH2,CH4 public,public,private
}
sweep >/dev/null
before=$(writes services users channels)
is "$(sweep | paste -sd' ')" "0|0|2|0 0|0|3|0" "an unchanged sweep of every listing: all unchanged"
is "$(writes services users channels)" "$before" "and not one row of services, users or channels is written"

# --- the leases ---------------------------------------------------------------
# dim_lease INSTANCE TOKEN FOR: a lease of INSTANCE, with TOKEN, live for FOR
# (an interval; negative: expired) on each listing of the service; - for no lease.
dim_lease() {
	if [ "$1" = - ]; then
		q "UPDATE sync_dimension_cursors SET lease_instance = NULL, lease_token = NULL, lease_expires_at = NULL
		    WHERE service_sid = '$S'"
	else
		q "UPDATE sync_dimension_cursors SET lease_instance = $1, lease_token = $2,
		          lease_expires_at = now() + interval '$3' WHERE service_sid = '$S'"
	fi >/dev/null
}
# leases: listing:instance:token:expiry (live, expired, or - for none) of each
# listing's lease, - where NULL.
leases() {
	q "SELECT string_agg(concat_ws(':', listing, coalesce(lease_instance::text, '-'),
	                               coalesce(lease_token::text, '-'),
	                               CASE WHEN lease_expires_at > now() THEN 'live'
	                                    WHEN lease_expires_at IS NOT NULL THEN 'expired' ELSE '-' END),
	                     ',' ORDER BY listing)
	     FROM sync_dimension_cursors WHERE service_sid = '$S'"
}
# stored: what a refused call must leave alone.
stored() {
	q "SELECT (SELECT string_agg(concat_ws(':', service_sid, account_sid, friendly_name, updated_at), ',') FROM services),
	          (SELECT string_agg(user_sid || coalesce(deleted_at::text, '-'), ',' ORDER BY user_sid) FROM users),
	          (SELECT string_agg(channel_sid || coalesce(deleted_at::text, '-'), ',' ORDER BY channel_sid) FROM channels),
	          (SELECT string_agg(concat_ws(':', listing, state, run_id, next_page_url, pages_done, updated_at, last_error,
	                                       lease_instance, lease_token, lease_expires_at), ',' ORDER BY listing)
	             FROM sync_dimension_cursors),
	          (SELECT string_agg(concat_ws(':', listing, page, digest, array_to_string(sids, ' ')), ','
	                             ORDER BY listing, page) FROM sync_dimension_pages),
	          (SELECT count(*) FROM sync_errors), (SELECT http_requests FROM sync_runs WHERE run_id = $R)"
}
# Another instance (999) holds each listing, with token 41, for an hour yet.
dim_lease 999 41 '1 hour'
is "$(leases)" "channels:999:41:live,service:999:41:live,users:999:41:live" \
	"another instance holds a live lease on each listing, token 41"
before=$(stored)
for tok in 40 ""; do
	is "$(LEASE=$tok users "$R" true - "$U1" alice A)" "|||" \
		"a call with ${tok:+token }${tok:-no token}, the lease another's: a users page (the whole listing) gets NULL counts"
	is "$(LEASE=$tok channels "$R" true - "" "")" "|||" "so does a channels page"
	is "$(w "SELECT coalesce(changed::text, 'null')
		FROM sync_service_row($R, '$S', 'AC', 'x', NULL, NULL, 1, 0${tok:+, $tok})")" null "and the service's row"
	w "SELECT sync_dimension_failed($R, '$S', 'users', 'x', 'x', 1, 1, 0${tok:+, $tok})" >/dev/null
	is "$(stored)" "$before" \
		"nothing written: no service changed, no user or channel deleted, no cursor moved, no lease ended, no page kept, no error, no request counted"
done

# The lease's own token is applied; a completed listing ends the lease.
is "$(w "SELECT changed FROM sync_service_row($R, '$S', '$ACCOUNT_SID', 'Help desk', '2020-01-01', '2020-03-01',
	1, 0, 41)")|$(leases)" "0|channels:999:41:live,service:-:41:-,users:999:41:live" \
	"with the lease's token (41): the service's row is applied (unchanged), and its listing's lease ends"
is "$(LEASE=41 users "$R" true http://x/users/2 "$U1,$U2,$U3" "alice,bob,carol" "A,B,C")|$(cursor users)|$(leases)" \
	"0|0|3|0|$R|running|http://x/users/2|1|t|-|channels:999:41:live,service:-:41:-,users:999:41:live" \
	"a first page of two with the token: applied, the cursor moves on, the lease is kept"
is "$(LEASE=41 users "$R" false - "$U4,$U6" "erin,dave" "E,D2")|$(cursor users)|$(leases)" \
	"0|0|2|0|$R|complete|-|2|t|-|channels:999:41:live,service:-:41:-,users:-:41:-" \
	"its last page: applied, the listing complete, its lease ended"
is "$(LEASE=41 channels "$R" true - CH1,CH2,CH4 public,public,private)|$(leases)" \
	"0|0|3|0|channels:-:41:-,service:-:41:-,users:-:41:-" \
	"a one-page channels listing with the token: applied, its lease ended"
# A lease that has expired no longer holds a call without a token back.
dim_lease 999 42 '-1 minute'
is "$(w "SELECT changed FROM sync_service_row($R, '$S', '$ACCOUNT_SID', 'Help desk', '2020-01-01', '2020-03-01',
	1, 0)")|$(leases)" "0|channels:999:42:expired,service:-:42:-,users:999:42:expired" \
	"another instance's lease expired: a call without a token is applied (and ends it)"
dim_lease -

# --- sync_merge_user ----------------------------------------------------------
# frank (U7), configured by identity: a history of his own (CH1 changed,
# CH2 removed), a complete one-page listing with its digest.
users "$R" true - "$U1,$U2,$U3,$U4,$U6,$U7,$U8,$U9,$U10" \
	"alice,bob,carol,erin,dave,frank,hank,ivy,kim" "A,B,C,E,D2,F,H,I,K" >/dev/null
page "$M" frank true - CH1,CH2 invited,joined
page "$M" frank true - CH1,CH2 joined,joined
page "$M" frank true - CH1 joined digest-1
HIST="channel_sid, account_sid, member_sid, status, last_consumed_message_index, unread_messages_count,
	channel_url, member_url, valid_from, valid_to, is_deleted"
snapshot() { # snapshot KEY: every row stored under KEY, without the key
	q "SELECT string_agg(r, ';' ORDER BY r) FROM (
	     SELECT 'c' || (channel_sid, status, first_seen_at, updated_at, deleted_at)::text AS r
	       FROM user_channels WHERE user_sid = '$1'
	     UNION ALL SELECT 'v' || ($HIST)::text FROM user_channel_past_versions WHERE user_sid = '$1'
	     UNION ALL SELECT 'e' || (event_id, at, channel_sid, event, old_status, new_status)::text
	       FROM membership_event_log WHERE user_sid = '$1'
	     UNION ALL SELECT 'k' || (run_id, state, pages_done, last_complete_at, last_error)::text
	       FROM sync_cursors WHERE user_sid = '$1') s"
}
keyed() { # keyed KEY: rows under KEY in each table that holds memberships' keys
	q "SELECT (SELECT count(*) FROM user_channels WHERE user_sid = '$1') || '|' ||
	          (SELECT count(*) FROM user_channel_past_versions WHERE user_sid = '$1') || '|' ||
	          (SELECT count(*) FROM membership_event_log WHERE user_sid = '$1') || '|' ||
	          (SELECT count(*) FROM sync_cursors WHERE user_sid = '$1') || '|' ||
	          (SELECT count(*) FROM sync_listing_pages WHERE user_sid = '$1')"
}
frank=$(snapshot frank)
is "$(keyed frank)|$(keyed "$U7")" "2|2|2|1|0|0|0|0|0|0" "frank's identity holds 2 memberships, 2 past versions, 2 events"
is "$(w "SELECT sync_merge_user('$S', 'frank', '$U7')")" 2 \
	"sync_merge_user(), only the identity has data: its 2 memberships are moved"
is "$(keyed frank)|$(keyed "$U7")" "0|0|0|0|0|2|2|2|1|0" "nothing is left under the identity"
is "$(snapshot "$U7")" "$frank" "the SID holds the same memberships, versions, events and cursor: no history lost"
is "$(q "SELECT coalesce(next_page_url, '-') || (listing_digest IS NULL)::text || (listing_rows IS NULL)::text
	   FROM sync_cursors WHERE user_sid = '$U7'")" "-truetrue" \
	 "the cursor is rekeyed without its digest, so that the next listing is sent whole"

# gina, an identity in the middle of a listing, merged into a User SID that
# has nothing stored: the listing moves, and starts again from its first page.
page "$M" gina true http://x/gina/2 CH1,CH2 joined,joined dg-g1
is "$(w "SELECT sync_merge_user('$S', 'gina', '$(sid 11)')")" 2 "an identity in the middle of a listing"
is "$(q "SELECT state || '|' || coalesce(next_page_url, '-') || '|' || pages_done
	   FROM sync_cursors WHERE user_sid = '$(sid 11)'")|$(keyed "$(sid 11)")|$(stored_pages "$(sid 11)")" \
	"running|-|0|2|0|0|1|1|1:-:CH1,CH2" \
	 "its cursor restarts from the first page (no next page); its stored page moves with it, without its digest"

# hank, configured both ways: his identity and U8 both have data.
page "$M" hank true - CH1,CH2 invited,joined
page "$M" hank true http://x/hank/2 CH1 joined dg-h1 # CH1: a past version and an event
page "$M" hank false - CH2 joined dg-h2
page "$M" "$U8" true http://x/u8/2 CH1 invited dg-81
page "$M" "$U8" false - CH3 joined dg-82
is "$(stored_pages hank)|$(stored_pages "$U8")" "1:dg-h1:CH1 2:dg-h2:CH2|1:dg-81:CH1 2:dg-82:CH3" \
	"the last listing of each key was on two pages: their pages are stored, with their digests"
is "$(w "SELECT sync_merge_user('$S', 'hank', '$U8')")" 2 \
	"sync_merge_user(), both keys have data, the SID's listing the later: CH1 (both) dropped, CH2 (identity only) moved"
is "$(keyed hank)" "0|0|0|0|0" "nothing is left under the identity: its stored pages went with its cursor"
is "$(stored_pages "$U8")" "1:-:CH1 2:-:CH3" \
	"the SID's stored pages stay, without their digests: the next listing skips none of them"
is "$(q "SELECT string_agg(channel_sid || ':' || status, ',' ORDER BY channel_sid)
	   FROM user_channels WHERE user_sid = '$U8'")" \
	"CH1:invited,CH2:joined,CH3:joined" "one membership per channel: the SID's own CH1 and CH3, the identity's CH2"
is "$(q "SELECT string_agg(status || ':' || (valid_to = (SELECT updated_at FROM user_channels
	            WHERE user_sid = '$U8' AND channel_sid = 'CH1')), ',' ORDER BY valid_from)
	   FROM user_channel_past_versions WHERE user_sid = '$U8'")|$(q "SELECT string_agg(event, ',')
	   FROM membership_event_log WHERE user_sid = '$U8'")" "invited:false,joined:true|status_changed" \
	 "the identity's history of CH1 from before the SID first saw it stays: its versions, the current one archived up to then, and its event"
is "$(q "SELECT run_id || state FROM sync_cursors WHERE user_sid = '$U8'")" "${M}complete" "the SID keeps its own cursor"
is "$(q "SELECT (SELECT count(*) FROM memberships WHERE user_sid = '$U8') || '|' ||
	          (SELECT count(*) FROM membership_history WHERE user_sid = '$U8')")" "3|5" \
	 "memberships show one row per membership; membership_history the three and CH1's two earlier versions"
is "$(q "SELECT count(*) FROM (SELECT valid_from, lag(valid_to) OVER (PARTITION BY channel_sid ORDER BY valid_from) AS prev_to
	   FROM membership_history WHERE user_sid = '$U8') h WHERE valid_from <> prev_to")" 0 \
	 "each version of CH1 begins where the one before ended: no overlap, no gap"
u8=$(snapshot "$U8")
is "$(w "SELECT sync_merge_user('$S', 'hank', '$U8')")|$(snapshot "$U8")" "0|$u8" \
	"sync_merge_user(), only the SID has data: nothing to do"

# lena, first configured by SID, later by identity: the identity's listing is
# the later one and wins; the SID's older version of CH1 stays as history.
L=$(sid 45)
page "$M" "$L" true - CH1 invited
page "$M" lena true - CH1,CH2 joined,joined
is "$(w "SELECT sync_merge_user('$S', 'lena', '$L')")" 3 \
	"sync_merge_user(), the identity's listing the later: the SID's CH1 dropped, the identity's two moved"
is "$(q "SELECT string_agg(channel_sid || ':' || status, ',' ORDER BY channel_sid) FROM user_channels WHERE user_sid = '$L'")|$(q "SELECT string_agg(status || ':' || is_deleted, ',') FROM user_channel_past_versions WHERE user_sid = '$L'")" \
	"CH1:joined,CH2:joined|invited:false" "the identity's memberships are current; the SID's invitation is CH1's earlier version"
is "$(q "SELECT count(*) FROM sync_cursors WHERE user_sid IN ('lena', '$L')")|$(keyed lena)" "1|0|0|0|0|0" \
	"one cursor, under the SID; nothing under the identity"

# --- sync_resolve_users -------------------------------------------------------
page "$M" ivy true - CH1 joined
is "$(w "SELECT user_key
	   FROM sync_resolve_users('$S', '{$U2,alice,nobody,$U2,bob,alice,ivy,dave,$U5}', false)" | paste -sd,)" \
	"$U2,$U1,nobody,$U9,$U6,$U5" \
	"sync_resolve_users(): in order; an identity as its User SID (a user not deleted preferred), unknown as is; duplicates once"
is "$(keyed ivy)|$(keyed "$U9")" "0|0|0|0|0|1|0|0|1|0" "what was stored under a resolved identity is merged into its SID"
is "$(w "SELECT user_key FROM sync_resolve_users('$S', NULL, true)" | paste -sd,)" \
	"$(q "SELECT string_agg(user_sid, ',' ORDER BY user_sid) FROM users WHERE deleted_at IS NULL")" \
	"with p_all: every user of the service not deleted, by User SID"
is "$(w "SELECT count(*) FROM sync_resolve_users('$S', '{}', false)")" 0 "no users, no keys"
page "$M" kim true - CH1 joined
is "$(as "$expired" "SELECT count(*) || ':' || count(user_key) FROM sync_resolve_users('$S', '{kim}', false)")|$(keyed kim)" "1:0|1|0|0|1|0" \
	"a session whose instance has expired gets one NULL row (refused), and nothing is merged"
is "$(as "$expired" "SELECT coalesce(sync_merge_user('$S', 'kim', '$U10')::text, 'null')")|$(keyed kim)" "null|1|0|0|1|0" \
	"nor does sync_merge_user()"
is "$(as 999999 "SELECT count(*) || ':' || count(user_key) FROM sync_resolve_users('$S', '{kim}', false)")|$(as 999999 "SELECT coalesce(sync_merge_user('$S', 'kim', '$U10')::text, 'null')")|$(keyed kim)" \
	"1:0|null|1|0|0|1|0" "so does a session whose instance has no row"

# --- sync_health after a merge ------------------------------------------------
w "SELECT sync_user_failed($M, '$S', 'zed', 'user not found', 1, 0, 'http 404', 1)" >/dev/null
w "SELECT sync_record_config(3600, '{$S,$S,$S,$S,$S,$S}', '{frank,hank,$U8,kim,zed,$(sid 12)}')" >/dev/null
# health USER KEY: USER's row of sync_health, and whether its last_complete_at is KEY's cursor's.
health() {
	q "SELECT \"user\" || '|' || user_sid || '|' || coalesce(identity, '-') || '|' || coalesce(state, '-') || '|' ||
	          coalesce((last_complete_at = (SELECT last_complete_at FROM sync_cursors c
	                                          WHERE c.user_sid = '$2'))::text, '-')
	     FROM sync_health WHERE \"user\" = '$1'"
}
is "$(health frank "$U7")" "frank|$U7|frank|complete|true" \
	"sync_health: an identity merged into its SID shows the configured identity with the SID's cursor"
is "$(health hank "$U8")|$(health "$U8" "$U8")" "hank|$U8|hank|complete|true|$U8|$U8|hank|complete|true" \
	"a user configured both ways: both rows show the SID's cursor"
is "$(health kim kim)" "kim|$U10|kim|complete|true" "an identity known but not merged yet: its own cursor"
is "$(health zed zed)" "zed|zed|zed|failed|-" "an identity the users listing does not know: as configured"
is "$(q "SELECT user_sid || '|' || coalesce(identity, '-') || '|' || coalesce(state, '-') || '|' || is_stale
	   FROM sync_health WHERE \"user\" = '$(sid 12)'")" "$(sid 12)|-|-|true" \
	 "a User SID never synced: no state, stale"
is "$(q "SELECT count(*) FROM sync_health")" 6 "one row per configured user"
is "$(q "SELECT (SELECT count(*) FROM (SELECT FROM memberships GROUP BY service_sid, user_sid, channel_sid
	                                     HAVING count(*) > 1) d) || '|' ||
	          (SELECT count(*) FROM (SELECT FROM user_keys GROUP BY service_sid, configured
	                                  HAVING count(*) > 1) d)")" "0|0" \
	"memberships and user_keys: one row per membership and per cursor"

# --- documentation and the reader ---------------------------------------------
is "$(q "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           WHERE c.relnamespace = 'chatsync'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
             AND (c.relname IN ('sync_dimension_cursors', 'sync_dimension_pages')
                  OR (c.relname = 'users' AND a.attname = 'account_sid'))
             AND col_description(c.oid, a.attnum) IS NULL")" 0 "every new column has a comment"
is "$(q "SELECT col_description(attrelid, attnum) LIKE '%@users%' FROM pg_attribute
           WHERE attrelid = 'sync_errors'::regclass AND attname = 'user'")" t \
	"sync_errors.user's comment tells of @users"
sql "CREATE ROLE dim_reader LOGIN IN ROLE chatsync_reader" >/dev/null
is "$(psql -X -q -A -t -U dim_reader -c "SELECT (SELECT count(*) FROM chatsync.sync_dimension_cursors) > 0,
	(SELECT count(*) FROM chatsync.sync_dimension_pages) >= 0" 2>&1)" "t|t" "chatsync_reader reads the new tables"

# --- page digests: a page the same as last time is neither compared nor written
S_MAIN=$S
S=IS00000000000000000000000000000d16 # a service of its own
DIGEST=d1 users "$R" true http://x/users/2 "$U1,$U2" "alice,bob" "A,B" >/dev/null
DIGEST=d2 users "$R" false - "$U4,$U6" "erin,dave" "E,D2" >/dev/null
before=$(writes users)
pages_before=$(writes sync_dimension_pages)
is "$(DIGEST=d1 users "$R" true http://x/users/2 "$U1,$U2" "alice,bob" "A,B")" "0|0|2|0" \
	"a first page with the digest it had: its 2 users unchanged"
is "$(DIGEST=d2 users "$R" false - "$U4,$U6" "erin,dave" "E,D2")" "0|0|2|0" \
	"the last page too, and nobody is deleted"
is "$(writes users)|$(writes sync_dimension_pages)" "$before|$pages_before" \
	"neither users nor sync_dimension_pages is written"
is "$(DIGEST=d1 users "$R" true - "$U1,$U2" "alice,bob" "A,B")" "0|0|2|2" \
	"the listing now ends after its first page, unchanged: the users of the old second page are deleted"
is "$(q "SELECT string_agg(page::text, ' ') FROM sync_dimension_pages WHERE listing = 'users' AND service_sid = '$S'")|$(q "SELECT string_agg(user_sid, ',' ORDER BY user_sid) FROM users WHERE service_sid = '$S' AND deleted_at IS NULL")" \
	"1|$U1,$U2" "the page past the last is dropped; the first page's users stay"
S=$S_MAIN

done_testing

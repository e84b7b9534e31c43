#!/usr/bin/env bash
# The SQL side of a user's conversations (migration 010,
# sql/functions/sync_conversations.sql): sync_conversations_page() as
# sync_page() is for memberships (fresh insert, unchanged pages that write
# nothing, changes that keep a past version and log an event, listings of
# several pages and what they leave out, removals and returns, duplicates,
# the digest of a one-page listing, the pages of a listing on several pages
# (stored with their digests, skipped as unchanged, the checks of a last
# page), the lease, the run's counters), and what
# the rest of the schema does with conversations: a user the users listing
# deletes, the merge of an identity into its User SID, retention, comments
# and the read-only role.  Each function is called as chatsyncd calls it,
# on a session that names a live instance (chatsync.instance).
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

S=$SERVICE_SID
sid() { printf 'US%032x' "$1"; } # sid N: a User SID

FAKE_URL=http://127.0.0.1:9 write_config "$TEST_TMP/c.conf" "$(sid 1)" # --migrate makes no request
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
run() { q "INSERT INTO sync_runs DEFAULT VALUES RETURNING run_id"; }
opt() { if [ "$1" = - ]; then echo NULL; else echo "'$1'"; fi; } # opt X: NULL for -, else X quoted

# writes TABLE...: rows inserted, updated and deleted in these tables so far.
writes() {
	local t
	t=$(printf "'%s'," "$@")
	sql "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables
	      WHERE schemaname = 'chatsync' AND relname IN (${t%,})"
}
CONV_TABLES="user_conversations user_conversation_past_versions conversation_event_log"

# conv RUN USER FIRST NEXT SIDS STATES [UNREADS [DIGEST]]: one page of USER's
# conversations (comma-separated lists, NULL for a NULL; NEXT - on the last
# page; STATES and UNREADS may be shorter than SIDS, the rest NULL): each
# conversation with its account, participant, name and URL derived from its
# SID, REJECTED (default 0) entries rejected, 1 request, no retry.  If set:
# LEASE the lease token, PAGE the page's number, EARLIER the digests of the
# earlier pages skipped as unchanged (a text[] literal), SKIPPED
# "PAGES,ROWS" the pages skipped before this one and their entries.  Prints
# inserted|updated|unchanged|deleted.
conv() {
	local named=${LEASE:+, p_lease => $LEASE}${PAGE:+, p_page => $PAGE}
	named+=${EARLIER:+, p_earlier => \'$EARLIER\'}
	named+=${SKIPPED:+, p_skipped_pages => ${SKIPPED%,*}, p_skipped_rows => ${SKIPPED#*,}}
	w "SELECT p.* FROM (SELECT '{$5}'::text[] AS s) x,
	     LATERAL sync_conversations_page($1, '$S', '$2', $3, $(opt "$4"), x.s,
	       array(SELECT '$ACCOUNT_SID' FROM unnest(x.s)), array(SELECT 'MB' || c FROM unnest(x.s) c),
	       '{$6}', NULL, '{${7:-}}', NULL, array(SELECT 'Conversation ' || c FROM unnest(x.s) c),
	       NULL, NULL, NULL, NULL, NULL, NULL,
	       array(SELECT 'https://conversations.twilio.com/v1/Conversations/' || c FROM unnest(x.s) c),
	       NULL, NULL, ${REJECTED:-0}, 1, 0, $(opt "${8:--}")$named) p"
}
# listed USER: USER's conversations, SID:state, the deleted ones marked with a -.
listed() {
	q "SELECT string_agg(conversation_sid || ':' || coalesce(conversation_state, 'null')
	                     || CASE WHEN deleted_at IS NOT NULL THEN '-' ELSE '' END,
	                     ',' ORDER BY conversation_sid)
	     FROM user_conversations WHERE user_sid = '$1'"
}
# events USER: USER's events in order (of one sweep, by SID): SID:event:old:new.
events() {
	q "SELECT string_agg(conversation_sid || ':' || event || ':' || coalesce(old_state, '-') || ':'
	                     || coalesce(new_state, '-'), ',' ORDER BY at, conversation_sid)
	     FROM conversation_event_log WHERE user_sid = '$1'"
}
# past USER: USER's past versions in order: SID:state, a removal period marked with a -.
past() {
	q "SELECT string_agg(conversation_sid || ':' || coalesce(conversation_state, 'null')
	                     || CASE WHEN is_deleted THEN '-' ELSE '' END,
	                     ',' ORDER BY conversation_sid, valid_from)
	     FROM user_conversation_past_versions WHERE user_sid = '$1'"
}
cursor() { # cursor USER: its run, state, next page, pages done, completed?, digest, rows
	q "SELECT run_id, state, coalesce(next_page_url, '-'), pages_done, last_complete_at IS NOT NULL,
	          coalesce(listing_digest, '-'), coalesce(listing_rows::text, '-')
	     FROM sync_cursors WHERE service_sid = '$S' AND user_sid = '$1'"
}
# pages USER: the pages of USER's listing stored in sync_listing_pages, in
# order: number:digest:entries:SIDs listed (space-separated), - for a NULL digest.
pages() {
	q "SELECT string_agg(concat_ws(':', page_no, coalesce(digest, '-'), entries, array_to_string(listed, ' ')),
	                     ',' ORDER BY page_no)
	     FROM sync_listing_pages WHERE service_sid = '$S' AND user_sid = '$1'"
}
# breaks: versions that do not begin where the one before them ended, or
# (the first) when the conversation was first seen, over every stored
# conversation: its past versions, its current one (live since updated_at,
# or gone since deleted_at).  0 when the versions of each neither overlap
# nor leave a gap.
breaks() {
	q "WITH v AS (
	       SELECT service_sid, user_sid, conversation_sid, valid_from, valid_to
	         FROM user_conversation_past_versions
	       UNION ALL
	       SELECT service_sid, user_sid, conversation_sid, coalesce(deleted_at, updated_at), NULL
	         FROM user_conversations
	   ), o AS (
	       SELECT v.*, lag(valid_to) OVER w AS prev_to, row_number() OVER w AS n
	         FROM v WINDOW w AS (PARTITION BY service_sid, user_sid, conversation_sid ORDER BY valid_from)
	   )
	   SELECT count(*) FROM o JOIN user_conversations uc USING (service_sid, user_sid, conversation_sid)
	    WHERE CASE WHEN o.n = 1 THEN o.valid_from <> uc.first_seen_at
	               ELSE o.valid_from IS DISTINCT FROM o.prev_to END"
}
# overlaps: pairs of versions of one conversation of which one begins inside the other.
overlaps() {
	q "WITH v AS (
	       SELECT service_sid, user_sid, conversation_sid, valid_from, valid_to
	         FROM user_conversation_past_versions
	       UNION ALL
	       SELECT service_sid, user_sid, conversation_sid, coalesce(deleted_at, updated_at), NULL
	         FROM user_conversations
	   )
	   SELECT count(*) FROM v h JOIN v n USING (service_sid, user_sid, conversation_sid)
	    WHERE n.valid_from > h.valid_from AND n.valid_from < coalesce(h.valid_to, 'infinity')"
}

M=$(run)

# --- a user's first listing ----------------------------------------------------
U1=$(sid 1)
is "$(conv "$M" "$U1" true - C1,C2,C3 active,inactive,closed 1,2,3)" "3|0|0|0" \
	"sync_conversations_page(): a user's first listing: 3 conversations inserted"
is "$(q "SELECT string_agg(concat_ws('|', conversation_sid, account_sid, participant_sid, conversation_state,
	        unread_messages_count, friendly_name, url), ',' ORDER BY conversation_sid)
	   FROM user_conversations WHERE user_sid = '$U1'")" \
	"C1|$ACCOUNT_SID|MBC1|active|1|Conversation C1|https://conversations.twilio.com/v1/Conversations/C1,C2|$ACCOUNT_SID|MBC2|inactive|2|Conversation C2|https://conversations.twilio.com/v1/Conversations/C2,C3|$ACCOUNT_SID|MBC3|closed|3|Conversation C3|https://conversations.twilio.com/v1/Conversations/C3" \
	"stored with the values sent"
is "$(q "SELECT count(*) FROM user_conversations WHERE user_sid = '$U1'
	   AND first_seen_at = updated_at AND deleted_at IS NULL")" 3 "first seen now, not deleted"
is "$(events "$U1")|$(past "$U1")" "|" "a first listing logs no event and ends no version"
is "$(cursor "$U1")" "$M|complete|-|1|t|-|-" "the cursor: complete after one page, no digest sent"

# --- an unchanged listing writes nothing -----------------------------------------
before=$(writes $CONV_TABLES)
updated=$(q "SELECT string_agg(updated_at::text, ',' ORDER BY conversation_sid) FROM user_conversations WHERE user_sid = '$U1'")
is "$(conv "$M" "$U1" true - C1,C2,C3 active,inactive,closed 1,2,3)" "0|0|3|0" "the same listing again: 3 unchanged"
is "$(writes $CONV_TABLES)" "$before" \
	"and not one row of user_conversations, its past versions or its events is written"
is "$(q "SELECT string_agg(updated_at::text, ',' ORDER BY conversation_sid) FROM user_conversations WHERE user_sid = '$U1'")" \
	"$updated" "updated_at stays"

# --- a change --------------------------------------------------------------------
old=$(q "SELECT updated_at FROM user_conversations WHERE user_sid = '$U1' AND conversation_sid = 'C1'")
is "$(conv "$M" "$U1" true - C1,C2,C3 closed,inactive,closed 1,2,3)" "0|1|2|0" "C1 closed: 1 updated, 2 unchanged"
is "$(writes $CONV_TABLES)" "$((before + 3))" "three rows written: the row, its past version, an event"
is "$(past "$U1")" "C1:active" "the version it replaces is kept"
is "$(q "SELECT valid_from = '$old' AND valid_to = (SELECT updated_at FROM user_conversations
	          WHERE user_sid = '$U1' AND conversation_sid = 'C1') AND NOT is_deleted
	   FROM user_conversation_past_versions WHERE user_sid = '$U1'")" t \
	"valid from the old updated_at to the new one"
is "$(events "$U1")" "C1:state_changed:active:closed" "and a state_changed event, with the old and new state"
is "$(conv "$M" "$U1" true - C1,C2,C3 closed,inactive,closed 1,5,3)" "0|1|2|0" "C2's unread count changes"
is "$(past "$U1")|$(events "$U1")" "C1:active,C2:inactive|C1:state_changed:active:closed" \
	"a past version, but no event: its state is the same"
is "$(conv "$M" "$U1" true - C1,C2,C3 closed,NULL,closed 1,5,3)" "0|1|2|0" "C2's state not sent (NULL)"
is "$(listed "$U1")|$(events "$U1")" "C1:closed,C2:null,C3:closed|C1:state_changed:active:closed" \
	"stored as NULL, but a NULL state is no change: no event"
is "$(conv "$M" "$U1" true - C1,C2,C3,C4 closed,inactive,closed,archived 1,5,3)" "1|1|2|0" \
	"C4 new with a state this version does not know, C2's state back"
is "$(listed "$U1")|$(events "$U1")" \
	"C1:closed,C2:inactive,C3:closed,C4:archived|C1:state_changed:active:closed,C4:added:-:archived" \
	"an unknown state is stored as received; a new conversation after the first listing is added; from NULL is no change"

# --- every value is compared ------------------------------------------------------
COLS=(account_sid participant_sid conversation_state notification_level unread_messages_count
	last_read_message_index friendly_name unique_name created_by date_created date_updated
	date_inactive date_closed url conversation_url participant_url)
TYPES=(text text text text bigint bigint text text text timestamptz timestamptz timestamptz
	timestamptz text text text)
BASE=(AC1 MB1 active default 3 7 Ops ops alice "2020-01-01 00:00:00+00" "2020-01-02 00:00:00+00"
	"2020-02-01 00:00:00+00" "2020-03-01 00:00:00+00" u1 c1 p1)
OTHER=(AC2 MB2 inactive muted 4 8 "Ops 2" ops2 bob "2021-01-01 00:00:00+00" "2021-01-02 00:00:00+00"
	"2021-02-01 00:00:00+00" "2021-03-01 00:00:00+00" u2 c2 p2)
# full RUN USER SID [COL VALUE]: a one-page listing of conversation SID with
# every value set (BASE), or VALUE in COL (NULL: a NULL).
full() {
	local args="" i v
	for i in "${!COLS[@]}"; do
		v=${BASE[i]}
		[ "${COLS[i]}" = "${4:-}" ] && v=$5
		if [ "$v" = NULL ]; then
			args+=", ARRAY[NULL]::${TYPES[i]}[]"
		else
			args+=", ARRAY['$v']::${TYPES[i]}[]"
		fi
	done
	w "SELECT * FROM sync_conversations_page($1, '$S', '$2', true, NULL, ARRAY['$3']$args, 0, 1, 0, NULL)"
}
# stored_as VALUES...: does F1's row hold these values, column by column?
stored_as() {
	local cond="" i
	for i in "${!COLS[@]}"; do
		cond+="${cond:+ AND }${COLS[i]} = '${1}'::${TYPES[i]}"
		shift
	done
	q "SELECT $cond FROM user_conversations WHERE user_sid = 'fiona' AND conversation_sid = 'F1'"
}
is "$(full "$M" fiona F1)|$(stored_as "${BASE[@]}")" "1|0|0|0|t" "a conversation with every value set is stored as sent"
got= want=
for i in "${!COLS[@]}"; do
	got+="${COLS[i]}:$(full "$M" fiona F1 "${COLS[i]}" "${OTHER[i]}")/$(q "SELECT ${COLS[i]} = '${OTHER[i]}'
		FROM user_conversations WHERE user_sid = 'fiona'")/$(full "$M" fiona F1) "
	want+="${COLS[i]}:0|1|0|0/t/0|1|0|0 "
done
is "$got" "$want" "each of the 16 values is compared: a change of any one alone updates the row, and so does a change back"
is "$(q "SELECT count(*) FROM user_conversation_past_versions WHERE user_sid = 'fiona'")|$(events fiona)|$(stored_as "${BASE[@]}")" \
	"32|F1:state_changed:active:inactive,F1:state_changed:inactive:active|t" \
	"each change ended a version (32), the two of the state logged events; the row holds the values last sent"
is "$(full "$M" fiona F1)|$(writes $CONV_TABLES)" "0|0|1|0|$(writes $CONV_TABLES)" \
	"every value as stored: unchanged, nothing written"
is "$(full "$M" fiona F1 date_closed NULL)|$(full "$M" fiona F1 date_closed NULL)" "0|1|0|0|0|0|1|0" \
	"a value that becomes NULL is a change; NULL again is none"

# --- duplicates in one page: the last counts --------------------------------------
is "$(conv "$M" dup true - D1,D2,D1 active,active,closed 1,2,3)" "2|0|0|0" \
	"a first listing with D1 twice: 2 inserted"
is "$(listed dup)|$(q "SELECT unread_messages_count FROM user_conversations WHERE user_sid = 'dup' AND conversation_sid = 'D1'")" \
	"D1:closed,D2:active|3" "of the two D1 entries, the last is stored"
is "$(conv "$M" dup true - D1,D2,D1,D2 inactive,active,closed,closed 4,2,3,2)" "0|1|1|0" \
	"a later listing, D1 and D2 twice each: D1 (last as stored) unchanged, D2 (last closed) updated"
is "$(listed dup)|$(events dup)" "D1:closed,D2:closed|D2:state_changed:active:closed" \
	"the last of each is stored; the entries before it leave no trace"

# --- a first listing whose later page lists a conversation again ---------------------
# (the plain INSERT of a first listing's page fails on the key; the page is compared)
is "$(conv "$M" repeat true http://x/repeat/p2 P1,P2,P3 active,active,active)|$(conv "$M" repeat false - P0,P2,P4 active,closed,active)" \
	"3|0|0|0|2|1|0|0" "a first listing's page 2 lists P2 again, closed: P0 and P4 inserted, P2 updated"
is "$(listed repeat)|$(past repeat)|$(events repeat)|$(cursor repeat | cut -d'|' -f2,4,5)" \
	"P0:active,P1:active,P2:closed,P3:active,P4:active|P2:active||complete|2|t" \
	"P0 (inserted before the INSERT failed on P2) once, P2's first version ended, no event (a first listing), nothing deleted, the listing complete"
is "$(conv "$M" repeat2 true http://x/repeat2/p2 Q1,Q2 active,active)|$(conv "$M" repeat2 false - Q3,Q2 active,active)|$(listed repeat2)|$(past repeat2)" \
	"2|0|0|0|1|0|1|0|Q1:active,Q2:active,Q3:active|" "the same, unchanged: Q3 inserted, Q2 unchanged, no version ended"

# --- a listing of three pages, and what it leaves out --------------------------------
R=$(run)
U2=$(sid 2)
is "$(conv "$R" "$U2" true - C1,C2,C3,C4,C5,C6,C7 active,active,active,active,active,active,active)" "7|0|0|0" \
	"a user's first listing: 7 conversations"
is "$(conv "$R" "$U2" true http://x/p2 C1,C2 active,active "" dg-a1)" "0|0|2|0" "the next listing's first page of three"
is "$(pages "$U2")|$(cursor "$U2")" "1:dg-a1:2:C1 C2|$R|running|http://x/p2|1|t|-|-" \
	"page 1 stored in sync_listing_pages with its digest and the conversations it listed; the cursor running, with the next page"
is "$(REJECTED=2 conv "$R" "$U2" false http://x/p3 C3,C4 active,closed "" dg-a2)" "0|1|1|0" \
	"the second page: C4 closed"
is "$(pages "$U2")|$(listed "$U2")" \
	"1:dg-a1:2:C1 C2,2:dg-a2:2:C3 C4|C1:active,C2:active,C3:active,C4:closed,C5:active,C6:active,C7:active" \
	"page 2 stored as well; nothing deleted before the last page"
is "$(conv "$R" "$U2" false - C5 active "" dg-a3)" "0|0|1|2" "the last page: C5 unchanged, the 2 no page listed deleted"
is "$(listed "$U2")" "C1:active,C2:active,C3:active,C4:closed,C5:active,C6:active-,C7:active-" \
	"exactly C6 and C7 are deleted"
is "$(q "SELECT count(*) FROM user_conversations WHERE user_sid = '$U2' AND deleted_at IS NOT NULL
	   AND deleted_at = updated_at AND deleted_at > first_seen_at")" 2 "deleted_at and updated_at set"
is "$(past "$U2")" "C4:active,C6:active,C7:active" "the versions of C6 and C7 end where they were deleted (C4's where it closed)"
is "$(q "SELECT count(*) FROM user_conversation_past_versions p JOIN user_conversations u
	   USING (service_sid, user_sid, conversation_sid)
	   WHERE user_sid = '$U2' AND conversation_sid IN ('C6', 'C7') AND p.valid_to = u.deleted_at")" 2 \
	"valid until deleted_at"
is "$(events "$U2")" "C4:state_changed:active:closed,C6:removed:active:-,C7:removed:active:-" \
	"a removed event for each, with the state it had"
is "$(pages "$U2")|$(cursor "$U2")" "1:dg-a1:2:C1 C2,2:dg-a2:2:C3 C4,3:dg-a3:1:C5|$R|complete|-|3|t|-|5" \
	"the three pages stay stored (for the next listing to skip); the cursor complete after 3 pages, no digest of its own, the 5 entries of its pages"
is "$(q "SELECT concat_ws('|', pages, users_ok, rows_received, rows_inserted, rows_updated, rows_unchanged,
	        rows_deleted, rows_rejected, http_requests, http_retries) FROM sync_runs WHERE run_id = $R")" \
	"4|2|14|7|1|4|2|2|4|0" "the run counts the pages, users, rows (rejected ones too) and requests"
is "$(conv "$M" "$U2" true - C1,C2,C3,C4,C5,C6 active,active,active,closed,active,inactive)" "0|1|5|0" \
	"C6 comes back (inactive): updated; C7, deleted already, is not counted again"
is "$(pages "$U2")" "" "a listing on one page drops the pages the listing before it stored"
is "$(listed "$U2")|$(past "$U2")" \
	"C1:active,C2:active,C3:active,C4:closed,C5:active,C6:inactive,C7:active-|C4:active,C6:active,C6:active-,C7:active" \
	"C6 is live again; the time it was gone is a version of its own (is_deleted)"
is "$(q "SELECT p.valid_from = d.valid_to AND p.valid_to = u.updated_at
	   FROM user_conversation_past_versions p, user_conversation_past_versions d, user_conversations u
	  WHERE p.user_sid = '$U2' AND p.conversation_sid = 'C6' AND p.is_deleted
	    AND d.user_sid = '$U2' AND d.conversation_sid = 'C6' AND NOT d.is_deleted
	    AND u.user_sid = '$U2' AND u.conversation_sid = 'C6'")" t \
	"from its deletion to its return"
is "$(events "$U2" | tr , '\n' | tail -n 1)" "C6:added:-:inactive" "its return is an added event"

# A user's first listing on several pages: no event, nothing deleted.
is "$(conv "$M" newbie true http://x/p2 N1,N2 active,active)|$(conv "$M" newbie false http://x/p3 N3,N1 active,closed)|$(conv "$M" newbie false - N4 active)" \
	"2|0|0|0|1|1|0|0|1|0|0|0" "a user's first listing on three pages: 4 conversations, N1 changed on page 2"
is "$(listed newbie)|$(events newbie)|$(past newbie)" "N1:closed,N2:active,N3:active,N4:active||N1:active" \
	"the first listing logs no event, even for a change between its pages"

# A listing that restarts from its first page replaces what the abandoned
# one's first page listed.
conv "$M" "$U2" true http://x/p2 C1,C2 active,active >/dev/null
is "$(conv "$M" "$U2" true http://x/p2 C3 active)|$(pages "$U2")" "0|0|1|0|1:-:1:C3" \
	"a first page again: page 1's row is replaced"
is "$(conv "$M" "$U2" false - C4,C5,C6 closed,active,inactive)" "0|0|3|2" \
	"its last page: C1 and C2, listed by the abandoned listing only, are deleted"

# --- the digest of a one-page listing ------------------------------------------------
is "$(conv "$M" dina true - G1,G2,G2 active,active,closed 1,2,3 dg-1)" "2|0|0|0" "a one-page listing with a digest"
is "$(cursor dina)|$(pages dina)" "$M|complete|-|1|t|dg-1|2|" \
	"the digest lands on the cursor, with the number of conversations; no page is stored"
before=$(writes $CONV_TABLES)
R2=$(run)
is "$(w "SELECT sync_listing_unchanged($R2, '$S', 'dina', '{dg-1}', 3, 1, 1, 0)")" 2 \
	"sync_listing_unchanged() with that digest: 2 unchanged"
is "$(cursor dina)|$(writes $CONV_TABLES)" "$R2|complete|-|1|t|dg-1|2|$before" \
	"only the cursor moves to the run; no conversation row written"
is "$(q "SELECT concat_ws('|', pages, users_ok, rows_received, rows_unchanged, rows_rejected) FROM sync_runs WHERE run_id = $R2")" \
	"1|1|4|2|1" "the run counts the page as unchanged"
is "$(w "SELECT coalesce(sync_listing_unchanged($R2, '$S', 'dina', '{dg-2}', 2, 0, 1, 0)::text, 'null')")" null \
	"another digest: NULL, nothing done (the page is sent)"
is "$(conv "$M" dina true http://x/p2 G1 active 1)|$(cursor dina)" "0|0|1|0|$M|running|http://x/p2|1|t|-|-" \
	"a listing of several pages keeps no digest on the cursor"
is "$(w "SELECT coalesce(sync_listing_unchanged($R2, '$S', 'dina', '{dg-1}', 2, 0, 1, 0)::text, 'null')")" null \
	"and the old digest no longer stands for the table"

# --- the pages of a listing on several pages ------------------------------------------
# state USER RUN: what a refused page or listing must leave alone: USER's
# conversations, past versions and events, its cursor and stored pages, and
# RUN's counters.
state() {
	q "SELECT concat_ws(' / ',
	          (SELECT string_agg(concat_ws(':', conversation_sid, conversation_state, updated_at, deleted_at),
	                             ',' ORDER BY conversation_sid) FROM user_conversations WHERE user_sid = '$1'),
	          (SELECT count(*) FROM user_conversation_past_versions WHERE user_sid = '$1'),
	          (SELECT count(*) FROM conversation_event_log WHERE user_sid = '$1'),
	          (SELECT c::text FROM sync_cursors c WHERE service_sid = '$S' AND user_sid = '$1'),
	          (SELECT string_agg(p::text, ',' ORDER BY page_no) FROM sync_listing_pages p
	            WHERE service_sid = '$S' AND user_sid = '$1'),
	          (SELECT r::text FROM sync_runs r WHERE run_id = $2))"
}
# unchanged RUN USER DIGESTS: sync_listing_unchanged() of USER's listing
# with the pages' DIGESTS (a text[] literal), 6 entries and 1 rejected, 3
# requests; null for NULL.
unchanged() {
	w "SELECT coalesce(sync_listing_unchanged($1, '$S', '$2', '$3', 6, 1, 3, 0)::text, 'null')"
}
R3=$(run)
conv "$R3" pia true http://x/pia/2 P1,P2 active,active "" dp-1 >/dev/null
conv "$R3" pia false http://x/pia/3 P3,P4 active,active "" dp-2 >/dev/null
is "$(conv "$R3" pia false - P5,P6 active,active "" dp-3)|$(pages pia)|$(cursor pia)" \
	"2|0|0|0|1:dp-1:2:P1 P2,2:dp-2:2:P3 P4,3:dp-3:2:P5 P6|$R3|complete|-|3|t|-|6" \
	"a listing of three pages: each page stored with its digest; the cursor complete with their 6 entries"

# The same listing again, not sent: sync_listing_unchanged() with the digests of its pages.
before=$(writes $CONV_TABLES)
R4=$(run)
is "$(unchanged "$R4" pia '{dp-1,dp-2,dp-3}')" 6 \
	"sync_listing_unchanged() with the digests of the three pages, as stored: 6 entries unchanged"
is "$(cursor pia)|$(pages pia)|$(writes $CONV_TABLES)" \
	"$R4|complete|-|3|t|-|6|1:dp-1:2:P1 P2,2:dp-2:2:P3 P4,3:dp-3:2:P5 P6|$before" \
	"only the cursor moves to the run; the pages stay; no conversation row written"
is "$(q "SELECT concat_ws('|', pages, users_ok, rows_received, rows_unchanged, rows_rejected, http_requests)
	   FROM sync_runs WHERE run_id = $R4")" "3|1|7|6|1|3" \
	"the run counts the three pages, every entry unchanged"
st=$(state pia "$R4")
got=
for d in '{dp-1,dp-X,dp-3}' '{dp-1,dp-2}' '{dp-1,dp-2,dp-3,dp-4}' '{dp-3}'; do
	got+="$(unchanged "$R4" pia "$d") "
done
is "$got|$(state pia "$R4")" "null null null null |$st" \
	"one digest different, a page fewer or more, or one digest as for a listing on one page: NULL each time, nothing done"

# The listing sent again, its first page skipped as unchanged, its second
# changed (P4 closed), its last without P6: P6 is deleted, and P1 and P2,
# listed by the skipped page as stored, are not.
R5=$(run)
is "$(PAGE=2 SKIPPED=1,2 conv "$R5" pia false http://x/pia/3 P3,P4 active,closed "" dp-2b)" "0|1|1|0" \
	"page 2 sent after page 1 was skipped (p_page 2, p_skipped_pages 1): P4 updated"
is "$(cursor pia)" "$R5|running|http://x/pia/3|2|t|-|-" "the cursor at page 2, running"
is "$(PAGE=3 EARLIER='{dp-1,NULL}' conv "$R5" pia false - P5 active "" dp-3b)" "0|0|1|1" \
	"the last page, with page 1's stored digest as the one skipped (p_earlier): P6 deleted, nothing else"
is "$(listed pia)|$(events pia)" "P1:active,P2:active,P3:active,P4:closed,P5:active,P6:active-|P4:state_changed:active:closed,P6:removed:active:-" \
	"P1 and P2, on the skipped page, are kept: its stored SIDs count as listed"
is "$(pages pia)|$(cursor pia)" "1:dp-1:2:P1 P2,2:dp-2b:2:P3 P4,3:dp-3b:1:P5|$R5|complete|-|3|t|-|5" \
	"page 1 as stored, pages 2 and 3 as sent; the cursor complete after 3 pages with 5 entries"
is "$(q "SELECT concat_ws('|', pages, users_ok, rows_received, rows_updated, rows_unchanged, rows_deleted)
	   FROM sync_runs WHERE run_id = $R5")" "3|1|5|1|4|1" \
	"the run counts the skipped page and its 2 entries, unchanged, with the pages sent"

# A page skipped by a digest that is no longer the stored one: an error, and nothing done.
R6=$(run)
st=$(state pia "$R6")
out=$(PAGE=3 EARLIER='{dp-1,dp-2}' SKIPPED=2,4 conv "$R6" pia false - P5 active "" dp-3b 2>&1) || out="failed: $out"
is "$(echo "$out" | grep -o '^failed\|pages skipped as unchanged are not the stored ones' | paste -sd' ')|$(state pia "$R6")" \
	"failed pages skipped as unchanged are not the stored ones|$st" \
	"a last page whose p_earlier names a digest page 2 no longer has: an exception, nothing changed"
is "$(PAGE=3 EARLIER='{dp-1,dp-2b}' SKIPPED=2,4 conv "$R6" pia false - P5 active "" dp-3b)|$(q "SELECT concat_ws('|', pages, rows_received, rows_unchanged) FROM sync_runs WHERE run_id = $R6")" \
	"0|0|1|0|3|5|5" "with the stored digests it is applied, the two skipped pages counted"

# A listing in progress: its pages' digests, even all as stored, do not say
# what the table holds.
R8=$(run)
conv "$R8" pia true http://x/pia/2 P1,P2 active,active "" dp-1 >/dev/null
st=$(state pia "$R8")
is "$(q "SELECT string_agg(digest, ',' ORDER BY page_no) FROM sync_listing_pages WHERE user_sid = 'pia'")|$(unchanged "$R8" pia '{dp-1,dp-2b,dp-3b}')|$(state pia "$R8")" \
	"dp-1,dp-2b,dp-3b|null|$st" \
	"mid-listing (its first page committed again), the digests of the pages as stored: NULL, nothing done"

# A last page whose earlier pages are not all stored: an error, and nothing
# done.  quin's listing was complete on one page (Q1, Q2, Q9); the next one
# has committed its first page (Q1, Q2).
R7=$(run)
conv "$R7" quin true - Q1,Q2,Q9 active,active,active >/dev/null
conv "$R7" quin true http://x/quin/2 Q1,Q2 active,active "" dq-1 >/dev/null
st=$(state quin "$R7")
out=$(PAGE=3 conv "$R7" quin false - Q3 active "" dq-3 2>&1) || out="failed: $out"
is "$(echo "$out" | grep -o '^failed\|page 3 ends a listing whose earlier pages are not all stored' | paste -sd' ')|$(state quin "$R7")" \
	"failed page 3 ends a listing whose earlier pages are not all stored|$st" \
	"a last page 3 when page 2's row is missing: an exception, nothing changed (Q9 not deleted, Q3 not added)"
q "DELETE FROM sync_listing_pages WHERE user_sid = 'quin' AND page_no = 1" >/dev/null
st=$(state quin "$R7")
out=$(conv "$R7" quin false - Q3 active "" dq-2 2>&1) || out="failed: $out"
is "$(echo "$out" | grep -o '^failed\|page 2 ends a listing whose earlier pages are not all stored' | paste -sd' ')|$(state quin "$R7")" \
	"failed page 2 ends a listing whose earlier pages are not all stored|$st" \
	"so is a last page numbered after the cursor's (no p_page) when page 1's row is gone"
conv "$R7" quin true http://x/quin/2 Q1,Q2 active,active "" dq-1 >/dev/null
is "$(conv "$R7" quin false - Q3 active "" dq-2)|$(listed quin)" "1|0|0|1|Q1:active,Q2:active,Q3:active,Q9:active-" \
	"with page 1 stored again, the last page is applied: Q3 added, Q9 deleted"

# --- the lease ------------------------------------------------------------------------
# lease USER INSTANCE TOKEN FOR: USER's cursor held by INSTANCE with TOKEN,
# live for FOR (an interval; negative: expired); - for no lease.
lease() {
	if [ "$2" = - ]; then
		q "UPDATE sync_cursors SET lease_instance = NULL, lease_token = NULL, lease_expires_at = NULL
		    WHERE service_sid = '$S' AND user_sid = '$1'"
	else
		q "UPDATE sync_cursors SET lease_instance = $2, lease_token = $3,
		          lease_expires_at = now() + interval '$4' WHERE service_sid = '$S' AND user_sid = '$1'"
	fi >/dev/null
}
# leased USER: instance:token:expiry (live, expired, or - for none) of USER's
# lease, - where NULL.
leased() {
	q "SELECT concat_ws(':', coalesce(lease_instance::text, '-'), coalesce(lease_token::text, '-'),
	                    CASE WHEN lease_expires_at > now() THEN 'live'
	                         WHEN lease_expires_at IS NOT NULL THEN 'expired' ELSE '-' END)
	     FROM sync_cursors WHERE service_sid = '$S' AND user_sid = '$1'"
}
stored() {
	q "SELECT (SELECT string_agg(concat_ws(':', user_sid, conversation_sid, conversation_state, updated_at,
	                                        deleted_at), ',' ORDER BY user_sid, conversation_sid)
	             FROM user_conversations),
	          (SELECT count(*) FROM user_conversation_past_versions), (SELECT count(*) FROM conversation_event_log),
	          (SELECT string_agg(concat_ws(':', user_sid, run_id, state, next_page_url, pages_done, updated_at,
	                                       lease_instance, lease_token, lease_expires_at), ',' ORDER BY user_sid)
	             FROM sync_cursors),
	          (SELECT string_agg(p::text, ',' ORDER BY user_sid, page_no) FROM sync_listing_pages p),
	          (SELECT sum(pages) FROM sync_runs)"
}
# Another instance (999) holds U2, with token 41, for an hour yet.
lease "$U2" 999 41 '1 hour'
is "$(leased "$U2")" "999:41:live" "another instance holds a live lease on U2, token 41"
before=$(stored)
for tok in 40 ""; do
	is "$(LEASE=$tok conv "$M" "$U2" true - C1,C9 closed,active)" "|||" \
		"a page with ${tok:+token }${tok:-no token}, the lease another's: NULL counts"
	is "$(stored)" "$before" \
		"nothing written: no conversation, version, event, cursor, lease, stored page or page counted"
done
is "$(LEASE=40 conv "$M" newcomer true http://x/2 C1 active)|$(stored)" "||||$before" \
	"a page with a token for a user with no cursor, so no lease: NULL counts, nothing written"
is "$(LEASE=41 conv "$M" "$U2" true http://x/p2 C3,C4 active,closed)|$(cursor "$U2")|$(leased "$U2")" \
	"0|0|2|0|$M|running|http://x/p2|1|t|-|-|999:41:live" \
	"with the lease's token (41): a first page is applied, the lease kept"
is "$(LEASE=41 conv "$M" "$U2" false - C5,C6 active,inactive)|$(cursor "$U2")|$(leased "$U2")" \
	"0|0|2|0|$M|complete|-|2|t|-|4|-:41:-" \
	"the last page too: the listing completes (the 4 entries of its 2 pages), and its lease ends"
lease "$U2" 999 42 '-1 minute'
is "$(conv "$M" "$U2" true - C3,C4,C5,C6 active,closed,active,inactive)|$(leased "$U2")" "0|0|4|0|-:42:-" \
	"another instance's lease expired: a page without a token is applied (a complete listing ends it)"
lease "$U2" -

# --- a user the users listing deletes ---------------------------------------------------
# users RUN SIDS IDENTITIES: a whole users listing on one page.
users() {
	w "SELECT * FROM sync_users_page($1, '$S', true, NULL, '{$2}', NULL, '{$3}', NULL,
	     NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 0)"
}
U4=$(sid 4) U5=$(sid 5) U6=$(sid 6)
users "$M" "$U4,$U5,$U6" "erin,dora,ed" >/dev/null
conv "$M" "$U4" true - E1,E2 active,closed 1,2 dg-e >/dev/null # complete: removals are events
conv "$M" dora true http://x/p2 O1 active "" dg-o >/dev/null   # a first listing in progress
conv "$M" ed true - X1 active >/dev/null # ed's identity: a user not deleted (U6) keeps it
is "$(users "$M" "$U6" ed)" "0|0|1|2" "the users listing no longer shows erin and dora: 2 users deleted"
is "$(listed "$U4")|$(listed dora)|$(listed ed)" "E1:active-,E2:closed-|O1:active-|X1:active" \
	"their conversations are deleted, under the User SID and under the identity; ed's are kept"
is "$(past "$U4")|$(past dora)" "E1:active,E2:closed|O1:active" "each one's version ends"
is "$(events "$U4")|$(events dora)" "E1:removed:active:-,E2:removed:closed:-|" \
	"removed events where the key's listing had completed, none for a first listing"
is "$(cursor "$U4")|$(pages dora)" "$M|complete|-|1|t|-|-|1:-:1:O1" \
	"the cursors keep no digest, nor the stored pages: the table no longer holds those listings"

# --- sync_merge_user -----------------------------------------------------------------------
HIST="conversation_sid, account_sid, participant_sid, conversation_state, notification_level,
	unread_messages_count, last_read_message_index, friendly_name, unique_name, created_by,
	date_created, date_updated, date_inactive, date_closed, url, conversation_url, participant_url,
	valid_from, valid_to, is_deleted"
snapshot() { # snapshot KEY: every row stored under KEY, without the key
	q "SELECT string_agg(r, ';' ORDER BY r) FROM (
	     SELECT 'c' || (conversation_sid, conversation_state, unread_messages_count, friendly_name, url,
	                    first_seen_at, updated_at, deleted_at)::text AS r
	       FROM user_conversations WHERE user_sid = '$1'
	     UNION ALL SELECT 'v' || ($HIST)::text FROM user_conversation_past_versions WHERE user_sid = '$1'
	     UNION ALL SELECT 'e' || (event_id, at, conversation_sid, event, old_state, new_state)::text
	       FROM conversation_event_log WHERE user_sid = '$1'
	     UNION ALL SELECT 'k' || (run_id, state, pages_done, last_complete_at, last_error)::text
	       FROM sync_cursors WHERE user_sid = '$1') s"
}
keyed() { # keyed KEY: KEY's conversations, past versions, events, cursors, stored pages
	q "SELECT concat_ws('|', (SELECT count(*) FROM user_conversations WHERE user_sid = '$1'),
	          (SELECT count(*) FROM user_conversation_past_versions WHERE user_sid = '$1'),
	          (SELECT count(*) FROM conversation_event_log WHERE user_sid = '$1'),
	          (SELECT count(*) FROM sync_cursors WHERE user_sid = '$1'),
	          (SELECT count(*) FROM sync_listing_pages WHERE user_sid = '$1'))"
}

# frank, configured by identity: a history of his own (F1 changed, F2
# removed), a complete one-page listing with its digest.
U7=$(sid 7)
conv "$M" frank true - F1,F2 active,active >/dev/null
conv "$M" frank true - F1,F2 inactive,active >/dev/null
conv "$M" frank true - F1 inactive "" dg-f >/dev/null
frank=$(snapshot frank)
is "$(keyed frank)|$(keyed "$U7")" "2|2|2|1|0|0|0|0|0|0" \
	"frank's identity holds 2 conversations, 2 past versions, 2 events, a cursor"
is "$(as "$expired" "SELECT coalesce(sync_merge_user('$S', 'frank', '$U7')::text, 'null')")|$(keyed frank)|$(keyed "$U7")" \
	"null|2|2|2|1|0|0|0|0|0|0" "sync_merge_user() on a session whose instance has expired: refused (NULL), nothing moved"
is "$(w "SELECT sync_merge_user('$S', 'frank', '$U7')")" 2 \
	"sync_merge_user(), only the identity has data: its 2 conversations are moved"
is "$(keyed frank)|$(keyed "$U7")" "0|0|0|0|0|2|2|2|1|0" "nothing is left under the identity"
is "$(snapshot "$U7")" "$frank" "the SID holds the same conversations, versions, events and cursor: no history lost"
is "$(cursor "$U7")" "$M|complete|-|1|t|-|-" "the cursor is rekeyed without its digest"

# gina, an identity in the middle of a listing, merged into a User SID that
# has nothing stored: the listing moves, and starts again from its first page.
U11=$(sid 11)
conv "$M" gina true http://x/gina/2 G1,G2 active,active "" dg-g >/dev/null
is "$(w "SELECT sync_merge_user('$S', 'gina', '$U11')")" 2 "an identity in the middle of a listing"
is "$(q "SELECT state || '|' || coalesce(next_page_url, '-') || '|' || pages_done
	   FROM sync_cursors WHERE user_sid = '$U11'")|$(keyed "$U11")|$(keyed gina)|$(pages "$U11")" \
	"running|-|0|2|0|0|1|1|0|0|0|0|0|1:-:2:G1 G2" \
	"its cursor restarts from the first page (no next page); its stored page moves with it, without its digest"

# hank, configured both ways: his identity and U8 both have data; the SID's
# listing is the later one and wins.
U8=$(sid 8)
conv "$M" hank true - H1,H2 active,active >/dev/null
conv "$M" hank true http://x/hank/2 H1 inactive "" dh-1 >/dev/null # H1: a past version and an event
conv "$M" hank false - H2 active "" dh-2 >/dev/null
conv "$M" "$U8" true http://x/u8/2 H1 closed "" d8-1 >/dev/null
conv "$M" "$U8" false - H3 active "" d8-2 >/dev/null
is "$(pages hank)|$(pages "$U8")" "1:dh-1:1:H1,2:dh-2:1:H2|1:d8-1:1:H1,2:d8-2:1:H3" \
	"the last listing of each key was on two pages, stored"
is "$(w "SELECT sync_merge_user('$S', 'hank', '$U8')")" 2 \
	"both keys have data, the SID's listing the later: H1 (both) dropped, H2 (identity only) moved"
is "$(keyed hank)" "0|0|0|0|0" "nothing is left under the identity: its pages went with its cursor"
is "$(pages "$U8")" "1:-:1:H1,2:-:1:H3" "the SID's pages stay, without their digests: none will be skipped"
is "$(listed "$U8")" "H1:closed,H2:active,H3:active" \
	"one row per conversation: the SID's own H1 and H3, the identity's H2"
is "$(q "SELECT string_agg(conversation_state || ':' || (valid_to = (SELECT updated_at FROM user_conversations
	            WHERE user_sid = '$U8' AND conversation_sid = 'H1')), ',' ORDER BY valid_from)
	   FROM user_conversation_past_versions WHERE user_sid = '$U8'")|$(events "$U8")" \
	"active:false,inactive:true|H1:state_changed:active:inactive" \
	"the identity's history of H1 from before the SID first saw it stays: its version, the current one archived up to then, its event"
is "$(q "SELECT first_seen_at = (SELECT min(valid_from) FROM user_conversation_past_versions
	                                 WHERE user_sid = '$U8' AND conversation_sid = 'H1')
	   FROM user_conversations WHERE user_sid = '$U8' AND conversation_sid = 'H1'")" t \
	"H1's first_seen_at is the identity's, the earlier"
is "$(q "SELECT run_id || state FROM sync_cursors WHERE user_sid = '$U8'")" "${M}complete" "the SID keeps its own cursor"
u8=$(snapshot "$U8")
is "$(w "SELECT sync_merge_user('$S', 'hank', '$U8')")|$(snapshot "$U8")" "0|$u8" \
	"sync_merge_user() again, only the SID has data: nothing to do"

# ned, configured both ways at once: the two listings take turns, the SID's
# last.  Of the identity's history, what comes after the SID first saw the
# conversation goes: its version cut there, its later version and event dropped.
U12=$(sid 12)
conv "$M" ned true - Q1 active >/dev/null
conv "$M" "$U12" true - Q1 active >/dev/null
conv "$M" ned true - Q1 inactive >/dev/null
conv "$M" "$U12" true - Q1 closed >/dev/null
is "$(w "SELECT sync_merge_user('$S', 'ned', '$U12')")|$(keyed ned)" "1|0|0|0|0|0" \
	"both keys listed in turns, the SID last: the identity's Q1 dropped, nothing left under it"
is "$(listed "$U12")|$(past "$U12")|$(events "$U12")" "Q1:closed|Q1:active,Q1:active|Q1:state_changed:active:closed" \
	"the SID's Q1 stays; the identity's first version before it; the identity's later change and its event are gone"
is "$(q "SELECT count(*) FROM (SELECT valid_to, lead(valid_from) OVER (ORDER BY valid_from) AS next_from
	     FROM user_conversation_past_versions WHERE user_sid = '$U12') v
	  WHERE next_from IS NOT NULL AND valid_to <> next_from")" 0 \
	"the identity's version is cut where the SID's first begins"

# lena, first configured by SID, later by identity: the identity's listing is
# the later one and wins; the SID's older version of L1 stays as history.
L=$(sid 45)
conv "$M" "$L" true - L1 inactive >/dev/null
conv "$M" lena true - L1,L2 active,active >/dev/null
is "$(w "SELECT sync_merge_user('$S', 'lena', '$L')")" 3 \
	"the identity's listing the later: the SID's L1 dropped, the identity's two moved"
is "$(listed "$L")|$(past "$L")" "L1:active,L2:active|L1:inactive" \
	"the identity's conversations are current; the SID's L1 is L1's earlier version"
is "$(q "SELECT count(*) FROM sync_cursors WHERE user_sid IN ('lena', '$L')")|$(keyed lena)" "1|0|0|0|0|0" \
	"one cursor, under the SID; nothing under the identity"

# ivy, by identity, resolved by sync_resolve_users().
U9=$(sid 9)
users "$M" "$U6,$U9" "ed,ivy" >/dev/null
conv "$M" ivy true - V1 active >/dev/null
is "$(w "SELECT user_key FROM sync_resolve_users('$S', '{ivy}', false)")|$(keyed ivy)|$(keyed "$U9")" \
	"$U9|0|0|0|0|0|1|0|0|1|0" "sync_resolve_users(): an identity with conversations is merged into its SID"
U10=$(sid 10)
users "$M" "$U6,$U9,$U10" "ed,ivy,jo" >/dev/null
conv "$M" jo true - J1 active >/dev/null
q "DELETE FROM sync_cursors WHERE user_sid = 'jo'" >/dev/null
is "$(w "SELECT user_key FROM sync_resolve_users('$S', '{jo}', false)")|$(keyed jo)|$(keyed "$U10")" \
	"$U10|0|0|0|0|0|1|0|0|0|0" "and so is one whose conversations are all it has (no cursor)"

is "$(breaks)|$(overlaps)" "0|0" \
	"the versions of every conversation neither overlap nor leave a gap, from first seen to now, merges included"

# --- retention -----------------------------------------------------------------------------
q "UPDATE user_conversation_past_versions SET valid_from = valid_from - interval '100 days',
	                                          valid_to = valid_to - interval '100 days'
    WHERE user_sid = '$U2';
   UPDATE conversation_event_log SET at = at - interval '100 days' WHERE user_sid = '$U2'" >/dev/null
old=$(q "SELECT (SELECT count(*) FROM user_conversation_past_versions WHERE user_sid = '$U2')
	        + (SELECT count(*) FROM conversation_event_log WHERE user_sid = '$U2')")
kept=$(q "SELECT (SELECT count(*) FROM user_conversation_past_versions WHERE user_sid <> '$U2') || '|'
	         || (SELECT count(*) FROM conversation_event_log WHERE user_sid <> '$U2')")
is "$(w "SELECT sync_prune(30, 2)")" 4 "sync_prune(): up to a batch from the conversations' versions, and from their events"
n=4
while p=$(w "SELECT sync_prune(30, 2)") && [ "$p" != 0 ]; do n=$((n + p)); done
is "$n" "$old" "until it returns 0: every version and event older than the retention"
is "$(keyed "$U2" | cut -d'|' -f2,3)|$(q "SELECT (SELECT count(*) FROM user_conversation_past_versions WHERE user_sid <> '$U2') || '|'
	  || (SELECT count(*) FROM conversation_event_log WHERE user_sid <> '$U2')")" "0|0|$kept" \
	"those of the user whose history is old are gone, the rest kept"

# --- a page's plans: on the indexes ------------------------------------------------------
# sync_conversations_page() and sync_page(), their deletions and the
# bookkeeping they call (sync_listing_begin(), sync_listing_advance(), the
# lease check, the run's counters) keep their plans for the session; a plan
# kept while the tables are small must not scan them sequentially as they
# grow.  auto_explain shows every plan of seven new users' listings of three
# pages, through each API, in one session, on tables analyzed while they hold
# a few rows each (where a sequential scan is the cheaper plan).  Each
# statement runs more than five times, so that plans kept for the session
# are among them (plan_cache_mode auto plans the first five afresh): page 1
# goes in with its plain INSERT, page 2 lists page 1's second key again
# (closed, or invited, now: its INSERT fails on the key, and it is compared), and page 3
# ends the listing (the deletions).
plans() { # plans QUERY: the plans of the statements QUERY runs, nested ones too
	PGOPTIONS="-c client_min_messages=notice -c search_path=chatsync -c chatsync.instance=$instance" \
		psql -X -q -A -t -v ON_ERROR_STOP=1 -c "LOAD 'auto_explain'" \
		-c "SET auto_explain.log_min_duration = 0" -c "SET auto_explain.log_nested_statements = on" \
		-c "SET auto_explain.log_level = notice" -c "$1" 2>&1 >/dev/null
}
q "ANALYZE user_conversations, user_channels, sync_cursors, sync_listing_pages, sync_runs"
pages_sql=
for u in 1 2 3 4 5 6 7; do
	for n in 1 2 3; do
		case $n in
		1) sids="PL${u}a,PL${u}b" states=active,active mstates=joined,joined next="'http://x/pl$u/p2'" ;;
		2) sids="PL${u}b,PL${u}c" states=closed,active mstates=invited,joined next="'http://x/pl$u/p3'" ;;
		3) sids="PL${u}d" states=active mstates=joined next=NULL ;;
		esac
		pages_sql+="SELECT * FROM sync_conversations_page($M, '$S', 'planner$u', $([ "$n" = 1 ] && echo true || echo false),
		  $next, '{$sids}', NULL, NULL, '{$states}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		  NULL, NULL, NULL, NULL, NULL, 0, 1, 0, 'dg-pl$u-$n');"
		pages_sql+="SELECT * FROM sync_page($M, '$S', 'mplanner$u', $([ "$n" = 1 ] && echo true || echo false),
		  $next, '{${sids//PL/ML}}', NULL, NULL, '{$mstates}', NULL, NULL, NULL, NULL,
		  0, 1, 0, 'dg-ml$u-$n');"
	done
done
out=$(plans "$pages_sql")
is "$(echo "$out" | grep -cE 'Seq Scan on (user_conversations|user_channels|sync_cursors|sync_listing_pages|sync_runs)( |$)')|$(echo "$out" | grep -cE 'Index (Only )?Scan.* on (sync_cursors|sync_listing_pages|sync_runs)\b' | awk '{ print ($1 >= 42) }')|$(echo "$out" | grep -cE 'Index (Only )?Scan.* on user_conversations\b' | awk '{ print ($1 >= 14) }')|$(echo "$out" | grep -cE 'Index (Only )?Scan.* on user_channels\b' | awk '{ print ($1 >= 14) }')" \
	"0|1|1|1" "no plan of a page, its rows, deletions or bookkeeping, those kept for the session included, scans a table sequentially; each uses an index"
is "$(echo "$out" | grep -cE '(Index Cond|Filter): .*(user_sid|conversation_sid|channel_sid) = \$[0-9]+' | awk '{ print ($1 > 0) }')" 1 \
	"(kept plans are among them: their conditions compare with parameters, not with the values of one call)"
is "$(listed planner7)|$(q "SELECT string_agg(channel_sid || ':' || status, ',' ORDER BY channel_sid) FROM user_channels WHERE user_sid = 'mplanner7'")|$(q "SELECT count(*) FILTER (WHERE state = 'complete') FROM sync_cursors WHERE user_sid LIKE '%planner_'")" \
	"PL7a:active,PL7b:closed,PL7c:active,PL7d:active|ML7a:joined,ML7b:invited,ML7c:joined,ML7d:joined|14" \
	"(the 42 pages were applied, page 2 compared, and the 14 listings completed)"

# --- documentation and the reader -------------------------------------------------------------
is "$(q "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           WHERE c.relnamespace = 'chatsync'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
             AND c.relname IN ('user_conversations', 'user_conversation_past_versions', 'conversation_event_log')
             AND col_description(c.oid, a.attnum) IS NULL")|$(q "SELECT count(*) FROM pg_class c
           WHERE c.relnamespace = 'chatsync'::regnamespace
             AND c.relname IN ('user_conversations', 'user_conversation_past_versions', 'conversation_event_log')
             AND obj_description(c.oid, 'pg_class') IS NOT NULL")" "0|3" \
	"every column of the new tables has a comment, and every table a description"
sql "CREATE ROLE conv_reader LOGIN IN ROLE chatsync_reader" >/dev/null
is "$(psql -X -q -A -t -U conv_reader -c "SELECT (SELECT count(*) FROM chatsync.user_conversations) > 0,
	(SELECT count(*) FROM chatsync.user_conversation_past_versions) > 0,
	(SELECT count(*) FROM chatsync.conversation_event_log) > 0" 2>&1)" "t|t|t" "chatsync_reader reads the new tables"
out=$(psql -X -q -A -t -U conv_reader -c "DELETE FROM chatsync.user_conversations" 2>&1)
ok $((!$?)) "and may not write them ($(echo "$out" | head -n 1 | cut -c1-60))"

done_testing

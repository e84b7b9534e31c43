#!/usr/bin/env bash
# The leases of several instances on one schema, at the SQL level
# (sql/functions/sync_leases.sql): sync_run_join() opens one sweep for all;
# sync_lease_claim() hands each user to one instance, in the order given,
# skipping users another holds (live lease, or a cursor row locked by a page
# being applied) and those done in the sweep; sync_lease_renew() says which
# leases were taken over; a write carries its token and is refused once it
# is not the cursor's; sync_lease_release() and sync_instance_gone() free
# leases at once; sync_fence_stale() refuses a session whose instance is no
# longer live.
. "$(dirname "$0")/lib.sh"
need_tools
pg_start || exit 1

S=$SERVICE_SID
FAKE_URL=http://127.0.0.1:9 write_config "$TEST_TMP/c.conf" alice # --migrate makes no request
TWILIO_AUTH_TOKEN=x "$CHATSYNCD" -c "$TEST_TMP/c.conf" --migrate 2>>"$TEST_TMP/err"
is "$?" 0 "chatsyncd --migrate creates the schema"

q() { sql "SET search_path TO chatsync; $1"; }
register() { q "SELECT sync_instance_register('$1', 'host-$1', 1, now(), ${2:-60})"; }
# claim RUN INSTANCE LIMIT USER...: "user:outcome" of each user, in order.
claim() {
	local run=$1 inst=$2 limit=$3
	shift 3
	local list
	list=$(printf '"%s",' "$@")
	q "SELECT string_agg(u.u || ':' || c.outcome, ' ' ORDER BY c.ord)
	     FROM sync_lease_claim($run, $inst, 60, '$S', '{${list%,}}', $limit) c
	     JOIN unnest('{${list%,}}'::text[]) WITH ORDINALITY AS u(u, ord) ON u.ord = c.ord"
}
token() { q "SELECT lease_token FROM sync_cursors WHERE service_sid = '$S' AND user_sid = '$1'"; }
holder() { q "SELECT coalesce(lease_instance::text, '-') FROM sync_cursors WHERE user_sid = '$1'"; }
# hold_row USER: another session locks USER's cursor row for 3 s, as a page
# being applied does; sets locker to its pid, and returns once it holds it.
hold_row() {
	psql -X -q -c "BEGIN" -c "SELECT 1 FROM chatsync.sync_cursors WHERE user_sid = '$1' FOR NO KEY UPDATE" \
		-c "SELECT pg_sleep(3)" -c "COMMIT" >/dev/null &
	locker=$!
	for _ in $(seq 50); do
		[ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)'")" = 1 ] && break
		sleep 0.1
	done
}
# page USER TOKEN: an empty last page of USER's listing, with TOKEN ('NULL': none).
page() {
	q "SELECT coalesce(deleted::text, 'refused') FROM sync_page($RUN, '$S', '$1', true, NULL,
	     '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', 0, 1, 0, NULL, NULL, $2)"
}

# --- one sweep for all --------------------------------------------------------
A=$(register a)
B=$(register b)
is "$(q "SELECT run_id IS NOT NULL, resumed, wait_seconds FROM sync_run_join($A, 300, false)" | tr '|' ' ')" \
	"t f 0" "the first instance to join opens a sweep"
RUN=$(q "SELECT max(run_id) FROM sync_runs")
is "$(q "SELECT run_id, resumed FROM sync_run_join($B, 300, false)" | tr '|' ' ')" "$RUN t" \
	"the second joins the same sweep"
is "$(q "SELECT string_agg(run_id::text, ',' ORDER BY instance_id) FROM sync_instances")" "$RUN,$RUN" \
	"sync_instances says which sweep each works on"
q "UPDATE sync_runs SET finished_at = now() WHERE run_id = $RUN"
is "$(q "SELECT coalesce(run_id::text, 'none'), wait_seconds BETWEEN 290 AND 300 FROM sync_run_join($A, 300, false)" | tr '|' ' ')" \
	"none t" "once it is finished, no new sweep before sync.interval has passed since it began"
is "$(q "SELECT run_id > $RUN, resumed FROM sync_run_join($A, 300, true)" | tr '|' ' ')" "t f" \
	"unless forced (--once)"
RUN=$(q "SELECT max(run_id) FROM sync_runs")

# --- claims -------------------------------------------------------------------
is "$(claim "$RUN" "$A" 2 u1 u2 u3 u4)" "u1:claimed u2:claimed u3:pending u4:pending" \
	"A claims up to its limit, in the order given; the rest is left for later"
is "$(q "SELECT count(*) FROM sync_cursors WHERE state = 'running' AND pages_done = 0 AND next_page_url IS NULL")" 4 \
	"users never listed get their cursor, as not started"
is "$(claim "$RUN" "$B" 10 u1 u2 u3 u4)" "u1:pending u2:pending u3:claimed u4:claimed" \
	"B never gets a user A holds"
is "$(holder u1)$(holder u3)" "$A$B" "each holds its own"
t1=$(token u1)
is "$(claim "$RUN" "$A" 10 u1)" "u1:claimed" "an instance may claim its own user again (a listing it dropped)"
ok $([ "$(token u1)" -gt "$t1" ] && echo 0 || echo 1) "with a new token"
is "$(page u1 "$t1")" "refused" "a page with the old token is refused"
t1=$(token u1)

# A cursor locked by a page being applied is skipped, not waited for.
q "INSERT INTO sync_cursors (service_sid, user_sid, run_id, state) VALUES ('$S', 'u5', $RUN, 'running')"
hold_row u5
t0=$(date +%s%N)
is "$(claim "$RUN" "$B" 10 u5 u6)" "u5:pending u6:claimed" "a user whose cursor row is locked is skipped"
ok $(( ($(date +%s%N) - t0) / 1000000 < 2000 ? 0 : 1 )) "without waiting for the lock"
wait $locker

# --- writes carry the token ---------------------------------------------------
is "$(page u3 "$t1")" "refused" "A's token does not write B's user"
is "$(page u3 NULL)" "refused" "nor does a write without a token while B's lease is live"
is "$(page u3 "$(token u3)")" "0" "B's own token does"
is "$(holder u3)|$(q "SELECT state FROM sync_cursors WHERE user_sid = 'u3'")" "-|complete" \
	"and the completed listing ends the lease"
is "$(claim "$RUN" "$A" 10 u3)" "u3:done" "a user done in this sweep is not claimed again"
is "$(q "SELECT sync_user_failed($RUN, '$S', 'u4', 'boom', 1, 0, 'transport', 1, $t1)")|$(q "SELECT state FROM sync_cursors WHERE user_sid = 'u4'")" \
	"f|running" "a failure recorded with another's token is refused"
is "$(q "SELECT sync_user_failed($RUN, '$S', 'u4', 'boom', 1, 0, 'transport', 1, $(token u4))")|$(q "SELECT state || ' ' || (lease_instance IS NULL) FROM sync_cursors WHERE user_sid = 'u4'")" \
	"t|failed true" "with its own it is recorded, and the lease ends"

# --- renewal, expiry, takeover ------------------------------------------------
# A held u1 and u2; u2's lease expires and B takes it over.
t2=$(token u2)
q "UPDATE sync_cursors SET lease_expires_at = now() - interval '1 second' WHERE user_sid = 'u2'"
is "$(claim "$RUN" "$B" 10 u2)" "u2:claimed" "an expired lease is taken over"
is "$(q "SELECT string_agg(ord::text, ',') FROM sync_lease_renew($A, 60, '{$S,$S}', '{u1,u2}', '{$t1,$t2}', '{f,f}')")" \
	"2" "A's renewal keeps u1 and says u2 was taken over"
is "$(q "SELECT lease_expires_at > now() + interval '50 seconds' FROM sync_cursors WHERE user_sid = 'u1'")" t \
	"u1's lease runs for another lease_seconds"
hold_row u1
t0=$(date +%s%N)
is "$(q "SELECT count(*) FROM sync_lease_renew($A, 60, '{$S}', '{u1}', '{$t1}', '{f}')")" 0 \
	"a lease whose cursor a page has locked is kept, not reported lost"
ok $(( ($(date +%s%N) - t0) / 1000000 < 2000 ? 0 : 1 )) "and the renewal does not wait for the lock"
wait $locker

# --- release, instances gone, the fence of merges -----------------------------
q "SELECT sync_lease_release($A, '{$S}', '{u1}', '{$t1}', '{f}')"
is "$(holder u1)" "-" "a stop releases the lease"
is "$(claim "$RUN" "$B" 10 u1)" "u1:claimed" "and another claims the user at once"
C=$(register c)
is "$(claim "$RUN" "$C" 10 u7 u8)" "u7:claimed u8:claimed" "an instance C claims two users"
q "SELECT sync_instance_gone($C)"
is "$(claim "$RUN" "$A" 10 u7 u8)" "u7:claimed u8:claimed" "once C is known gone its leases are free at once"
is "$(q "SELECT sync_instance_heartbeat($A, 60)")" 2 "A's heartbeat counts two live instances (A and B; C gone)"
is "$(q "SELECT sync_instance_heartbeat($B, 60, true)")" 2 "B's stop is counted with it"
is "$(q "SELECT sync_instance_heartbeat($A, 60)")" 1 "after which A is alone"
is "$(PGOPTIONS="-c chatsync.instance=$A" q "SELECT sync_fence_stale()")" f "A's sessions are not fenced"
q "UPDATE sync_instances SET expires_at = now() - interval '1 second' WHERE instance_id = $A"
is "$(PGOPTIONS="-c chatsync.instance=$A" q "SELECT sync_fence_stale()")|$(q "SELECT sync_fence_stale()")" "t|f" \
	"an instance not heard of within its lease is fenced; a session naming none is not"

# --- the dimension listings ---------------------------------------------------
D=$(register d)
is "$(q "SELECT outcome FROM sync_dimension_claim($RUN, $D, 60, '$S', 'users')")" claimed "D claims the users listing"
is "$(q "SELECT outcome FROM sync_dimension_claim($RUN, $B, 60, '$S', 'users')")" pending "B may not"
dt=$(q "SELECT lease_token FROM sync_dimension_cursors WHERE listing = 'users'")
is "$(q "SELECT coalesce(inserted::text, 'refused') FROM sync_users_page($RUN, '$S', true, NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', 1, 0, NULL, $((dt + 1000)))")" \
	refused "a users page with another token is refused"
is "$(q "SELECT inserted FROM sync_users_page($RUN, '$S', true, NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', 1, 0, NULL, $dt)")|$(q "SELECT state || ' ' || (lease_instance IS NULL) FROM sync_dimension_cursors WHERE listing = 'users'")" \
	"0|complete true" "with D's it is applied, and the listing's lease ends"
is "$(q "SELECT outcome FROM sync_dimension_claim($RUN, $B, 60, '$S', 'users')")" done "then it is done for everyone"

done_testing

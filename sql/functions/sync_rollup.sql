-- The state kept as the sweeps go (migration 009): when each membership was
-- first invited and first joined, and each channel's and each service's
-- totals hour by hour.

-- sync_rollup_mark_stale(): something changed memberships outside a page of
-- a user's listing (a user deleted from the users listing, an identity
-- merged into its User SID), which the sweeps' counters do not show: the
-- next sync_channel_rollup() adds them up again.
CREATE OR REPLACE FUNCTION sync_rollup_mark_stale()
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT
AS $fn$
    UPDATE sync_kept_state SET stale = true WHERE NOT stale;
$fn$;

-- sync_service_users(): the users of each service with a live membership
-- (keys that stand for one User SID count once).
CREATE OR REPLACE FUNCTION sync_service_users()
RETURNS TABLE (service_sid text, users integer)
LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $fn$
    SELECT k.service_sid, count(DISTINCT k.user_sid)::integer
      FROM sync_user_keys k
     WHERE EXISTS (SELECT FROM user_channels uc
                    WHERE uc.service_sid = k.service_sid AND uc.user_sid = k.configured
                      AND uc.deleted_at IS NULL)
     GROUP BY k.service_sid;
$fn$;

-- sync_channel_rollup(): after sweep p_run_id, each channel's live
-- memberships and unread total into channel_hourly for the current hour,
-- and each service's into service_hourly.
-- Only rows that differ are written; nothing is added up when the hour has
-- its rows already and no sweep since the last rollup changed a membership.
-- Returns the rows written (NULL for a fenced-out writer).
CREATE OR REPLACE FUNCTION sync_channel_rollup(p_run_id bigint)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    v_hour    timestamptz := date_trunc('hour', now());
    v_state   sync_kept_state;
    v_written integer;
BEGIN
    IF sync_fence_stale() THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext('channel_hourly'));
    SELECT * INTO v_state FROM sync_kept_state;
    IF NOT v_state.stale
       AND EXISTS (SELECT FROM channel_hourly WHERE hour = v_hour)
       AND NOT EXISTS (SELECT FROM sync_runs r
                        WHERE r.run_id > coalesce(v_state.run_id, 0) AND r.run_id <= p_run_id
                          AND r.rows_inserted + r.rows_updated + r.rows_deleted > 0) THEN
        UPDATE sync_kept_state
           SET run_id = greatest(run_id, p_run_id), rolled_at = now();
        RETURN 0;
    END IF;

    WITH totals AS (
        SELECT service_sid, channel_sid, count(*)::integer AS members,
               sum(unread_messages_count) AS unread
          FROM user_channels
         WHERE deleted_at IS NULL
         GROUP BY service_sid, channel_sid
    ), written AS (
        INSERT INTO channel_hourly AS h (hour, service_sid, channel_sid, members, unread)
        SELECT v_hour, t.service_sid, t.channel_sid, t.members, t.unread
          FROM totals t
         WHERE NOT EXISTS (SELECT FROM channel_hourly o
                            WHERE o.hour = v_hour AND o.service_sid = t.service_sid
                              AND o.channel_sid = t.channel_sid
                              AND (o.members, o.unread) IS NOT DISTINCT FROM (t.members, t.unread))
        ON CONFLICT (hour, service_sid, channel_sid)
        DO UPDATE SET members = EXCLUDED.members, unread = EXCLUDED.unread
        RETURNING 1
    ), emptied AS (
        DELETE FROM channel_hourly h
         WHERE h.hour = v_hour
           AND NOT EXISTS (SELECT FROM totals t
                            WHERE t.service_sid = h.service_sid AND t.channel_sid = h.channel_sid)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM written) + (SELECT count(*) FROM emptied) INTO v_written;

    WITH totals AS (
        SELECT h.service_sid, p.users, count(*)::integer AS channels,
               sum(h.members)::bigint AS memberships, sum(h.unread) AS unread
          FROM channel_hourly h
          LEFT JOIN sync_service_users() p ON p.service_sid = h.service_sid
         WHERE h.hour = v_hour
         GROUP BY h.service_sid, p.users
    ), written AS (
        INSERT INTO service_hourly AS s (hour, service_sid, users, channels, memberships, unread)
        SELECT v_hour, t.service_sid, t.users, t.channels, t.memberships, t.unread
          FROM totals t
         WHERE NOT EXISTS (SELECT FROM service_hourly o
                            WHERE o.hour = v_hour AND o.service_sid = t.service_sid
                              AND (o.users, o.channels, o.memberships, o.unread)
                                  IS NOT DISTINCT FROM (t.users, t.channels, t.memberships, t.unread))
        ON CONFLICT (hour, service_sid)
        DO UPDATE SET users = EXCLUDED.users, channels = EXCLUDED.channels,
                      memberships = EXCLUDED.memberships, unread = EXCLUDED.unread
        RETURNING 1
    ), emptied AS (
        DELETE FROM service_hourly s
         WHERE s.hour = v_hour
           AND NOT EXISTS (SELECT FROM totals t WHERE t.service_sid = s.service_sid)
        RETURNING 1
    )
    SELECT v_written + (SELECT count(*) FROM written) + (SELECT count(*) FROM emptied)
      INTO v_written;
    UPDATE sync_kept_state
       SET run_id = greatest(run_id, p_run_id), stale = false, rolled_at = now();
    RETURN v_written;
END
$fn$;

-- sync_rebuild_kept_state(): the kept state again from what the schema holds:
-- every key of sync_user_keys, the first invitation and join of every
-- membership from the history, and channel_hourly for every
-- hour from the first membership seen to the current one, each hour as
-- the versions stood at its end (the current hour: now).  chatsyncd runs it
-- once, after migration 009, for the history kept before it; it can be run
-- again at any time.  Versions pruned by history.retention_days are not
-- there to count: the hours before the retention period count less than
-- they held (and are pruned themselves).
CREATE OR REPLACE FUNCTION sync_rebuild_kept_state()
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    v_now timestamptz := date_trunc('hour', now());
BEGIN
    PERFORM sync_user_keys_refresh_service(NULL);
    PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext('channel_hourly'));
    CREATE TEMPORARY TABLE sync_rollup_versions ON COMMIT DROP AS
    SELECT service_sid, user_sid, channel_sid, status, unread_messages_count AS unread,
           valid_from, valid_to
      FROM user_channel_past_versions
     WHERE NOT is_deleted
    UNION ALL
    SELECT service_sid, user_sid, channel_sid, status, unread_messages_count, updated_at, NULL
      FROM user_channels
     WHERE deleted_at IS NULL;

    UPDATE user_channels uc
       SET first_invited_at = f.invited, first_joined_at = f.joined
      FROM (SELECT service_sid, user_sid, channel_sid,
                   min(valid_from) FILTER (WHERE status = 'invited') AS invited,
                   min(valid_from) FILTER (WHERE status = 'joined') AS joined
              FROM sync_rollup_versions
             GROUP BY service_sid, user_sid, channel_sid) f
     WHERE uc.service_sid = f.service_sid AND uc.user_sid = f.user_sid
       AND uc.channel_sid = f.channel_sid
       AND (uc.first_invited_at, uc.first_joined_at) IS DISTINCT FROM (f.invited, f.joined);

    -- A version counts at the end of each hour from the first that ends at
    -- or after its start to the last that ends before its end: +1 at the
    -- hour of its start, -1 at the hour of its end, added up per channel and
    -- hour, then carried forward to the next hour with a change.
    DELETE FROM channel_hourly;
    INSERT INTO channel_hourly (hour, service_sid, channel_sid, members, unread)
    SELECT h, t.service_sid, t.channel_sid, t.members, CASE WHEN t.counted > 0 THEN t.unread END
      FROM (SELECT v.service_sid, v.channel_sid, c.hour,
                   sum(sum(c.d_members)) OVER w AS members,
                   sum(sum(c.d_counted)) OVER w AS counted,
                   sum(sum(c.d_unread)) OVER w AS unread, lead(c.hour) OVER w AS next_hour
              FROM sync_rollup_versions v,
                   LATERAL (VALUES (date_trunc('hour', v.valid_from - interval '1 microsecond'),
                                    1, (v.unread IS NOT NULL)::integer, v.unread),
                                   (date_trunc('hour', v.valid_to - interval '1 microsecond'),
                                    -1, -(v.unread IS NOT NULL)::integer, -v.unread))
                           AS c(hour, d_members, d_counted, d_unread)
             WHERE c.hour IS NOT NULL AND c.hour <= v_now
             GROUP BY v.service_sid, v.channel_sid, c.hour
            WINDOW w AS (PARTITION BY v.service_sid, v.channel_sid ORDER BY c.hour)) t,
           generate_series(t.hour, coalesce(t.next_hour - interval '1 hour', v_now),
                           interval '1 hour') AS h
     WHERE t.members > 0
     ORDER BY 1, 2, 3;
    -- Each service's totals per hour from its channels'; its users, for the
    -- current hour only (the history does not say it cheaply).
    DELETE FROM service_hourly;
    INSERT INTO service_hourly (hour, service_sid, users, channels, memberships, unread)
    SELECT h.hour, h.service_sid, CASE WHEN h.hour = v_now THEN coalesce(p.users, 0) END,
           count(*), sum(h.members), sum(h.unread)
      FROM channel_hourly h
      LEFT JOIN sync_service_users() p ON p.service_sid = h.service_sid
     GROUP BY h.hour, h.service_sid, p.users
     ORDER BY 1, 2;

    UPDATE sync_kept_state
       SET rebuilt = true, stale = false, rolled_at = now(),
           run_id = (SELECT max(run_id) FROM sync_runs);
    DROP TABLE sync_rollup_versions;
END
$fn$;

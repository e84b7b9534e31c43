-- The ten questions analysts ask most, each one short statement over the
-- views of chatsync(7).  Run them with search_path set to chatsync's schema
-- (SET search_path TO chatsync), as the read-only role chatsync_reader.
-- tests/analyst.sh runs every one of them against data synced from the fake
-- API and checks its result.

-- Q1: unread messages per user, now.
SELECT user_sid, identity, sum(unread_messages_count) AS unread, count(*) AS channels
  FROM memberships
 GROUP BY user_sid, identity
 ORDER BY unread DESC;

-- Q2: users with more than 10 unread messages in a channel, unchanged for over
-- 24 hours.
SELECT user_sid, identity, channel_sid, unread_messages_count, now() - updated_at AS unread_for
  FROM memberships
 WHERE unread_messages_count > 10 AND updated_at < now() - interval '24 hours'
 ORDER BY unread_for DESC;

-- Q3: channel member counts by status.  (Counted first, then named: the
-- name is looked up once per channel rather than once per membership.)
SELECT m.channel_sid, c.friendly_name AS channel_name, m.status, m.members
  FROM (SELECT service_sid, channel_sid, status, count(*) AS members
          FROM memberships
         GROUP BY service_sid, channel_sid, status) m
  LEFT JOIN channels c USING (service_sid, channel_sid)
 ORDER BY m.channel_sid, m.status;

-- Q4: pending invitations, and how long they have been pending.
SELECT user_sid, identity, channel_sid, now() - updated_at AS pending_for
  FROM memberships
 WHERE status = 'invited'
 ORDER BY pending_for DESC;

-- Q5: memberships gained and lost per day.
SELECT date_trunc('day', at) AS day,
       count(*) FILTER (WHERE event = 'added') AS gained,
       count(*) FILTER (WHERE event = 'removed') AS lost
  FROM membership_events
 GROUP BY day
 ORDER BY day;

-- Q6: unread messages per channel over time: hour by hour over the last
-- week, for the ten channels with the most unread messages now.  (Any
-- channel: the same with its channel_sid.)
SELECT channel_sid, hour, unread_messages_count AS unread
  FROM channel_unread_hourly
 WHERE channel_sid = ANY (ARRAY(SELECT channel_sid FROM memberships GROUP BY channel_sid
                                 ORDER BY sum(unread_messages_count) DESC NULLS LAST
                                 LIMIT 10))
   AND hour >= date_trunc('hour', now() - interval '7 days')
 ORDER BY channel_sid, hour;

-- Q7: stale users: never synced, or not within twice the sync interval.
SELECT service_sid, "user", state, last_complete_at, lag, last_error
  FROM sync_health
 WHERE is_stale
 ORDER BY lag DESC NULLS FIRST;

-- Q8: per-service totals: users (one per person, configured or discovered),
-- memberships, invitations pending and unread messages.
SELECT m.service_sid, s.friendly_name AS service_name,
       (SELECT count(DISTINCT h.user_sid) FROM sync_health h
         WHERE h.service_sid = m.service_sid) AS users,
       m.memberships, m.invited, m.unread
  FROM (SELECT service_sid, count(*) AS memberships,
               count(*) FILTER (WHERE status = 'invited') AS invited,
               sum(unread_messages_count) AS unread
          FROM memberships
         GROUP BY service_sid) m
  LEFT JOIN services s USING (service_sid)
 ORDER BY m.service_sid;

-- Q9: users who never joined a channel they were invited to.
SELECT service_sid, user_sid, identity, channel_sid
  FROM membership_invitations
 WHERE joined_at IS NULL
 ORDER BY service_sid, user_sid, channel_sid;

-- Q10: sync health over time: sweeps, their duration, retries and errors by
-- kind, per day.
WITH runs AS (
    SELECT date_trunc('day', started_at) AS day, count(*) AS sweeps,
           avg(finished_at - started_at) AS avg_duration, sum(http_retries) AS retries,
           sum(users_failed) AS users_failed
      FROM sync_runs GROUP BY 1
), errors AS (
    SELECT day, jsonb_object_agg(kind, n) AS errors
      FROM (SELECT date_trunc('day', at) AS day, kind, count(*) AS n
              FROM sync_errors GROUP BY 1, 2) k
     GROUP BY day
)
SELECT * FROM runs FULL JOIN errors USING (day) ORDER BY day;

-- sync_rebuild_kept_state(): what migration 009 keeps, again from what the
-- schema holds: every key of sync_user_keys, and the first invitation and
-- join of every membership from its history (as far back as
-- history.retention_days left it).  chatsyncd runs it once, after migration
-- 009, for a database migrated from an earlier version; it can be run again
-- at any time.
CREATE OR REPLACE FUNCTION sync_rebuild_kept_state()
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
BEGIN
    PERFORM sync_user_keys_refresh_service(NULL);
    UPDATE user_channels uc
       SET first_invited_at = f.invited, first_joined_at = f.joined
      FROM (SELECT service_sid, user_sid, channel_sid,
                   min(valid_from) FILTER (WHERE status = 'invited') AS invited,
                   min(valid_from) FILTER (WHERE status = 'joined') AS joined
              FROM (SELECT service_sid, user_sid, channel_sid, status, valid_from
                      FROM user_channel_past_versions
                     WHERE NOT is_deleted
                    UNION ALL
                    SELECT service_sid, user_sid, channel_sid, status, updated_at
                      FROM user_channels
                     WHERE deleted_at IS NULL) v
             GROUP BY service_sid, user_sid, channel_sid) f
     WHERE uc.service_sid = f.service_sid AND uc.user_sid = f.user_sid
       AND uc.channel_sid = f.channel_sid
       AND (uc.first_invited_at, uc.first_joined_at) IS DISTINCT FROM (f.invited, f.joined);
    UPDATE sync_kept_state SET rebuilt = true;
END
$fn$;

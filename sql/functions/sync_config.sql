-- sync_record_config(): the interval and the users chatsyncd sweeps, as
-- configured, recorded at the start of each sweep for sync_health.
CREATE OR REPLACE FUNCTION sync_record_config(
    p_interval integer, p_services text[], p_users text[])
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $fn$
    INSERT INTO sync_config (interval_seconds, recorded_at) VALUES (p_interval, now())
    ON CONFLICT (only_row) DO UPDATE
       SET interval_seconds = EXCLUDED.interval_seconds, recorded_at = EXCLUDED.recorded_at;
    DELETE FROM sync_configured_users
     WHERE (service_sid, "user") NOT IN (SELECT * FROM unnest(p_services, p_users));
    INSERT INTO sync_configured_users (service_sid, "user")
    SELECT * FROM unnest(p_services, p_users)
    ON CONFLICT DO NOTHING;
$fn$;

-- sync_prune(): deletes up to p_batch rows older than p_days days from each
-- of the past versions and the events of memberships and of conversations,
-- and from the errors; returns how many.  chatsyncd calls it after a sweep
-- until it returns 0, each call its own short transaction
-- (history.retention_days).
CREATE OR REPLACE FUNCTION sync_prune(p_days integer, p_batch integer)
RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    v_before timestamptz := now() - make_interval(days => p_days);
    v_versions bigint;
    v_events bigint;
    v_conversation_versions bigint;
    v_conversation_events bigint;
    v_errors bigint;
BEGIN
    DELETE FROM user_channel_past_versions
     WHERE history_id IN (SELECT history_id FROM user_channel_past_versions
                           WHERE valid_to < v_before LIMIT p_batch);
    GET DIAGNOSTICS v_versions = ROW_COUNT;
    DELETE FROM membership_event_log
     WHERE event_id IN (SELECT event_id FROM membership_event_log
                         WHERE at < v_before LIMIT p_batch);
    GET DIAGNOSTICS v_events = ROW_COUNT;
    DELETE FROM user_conversation_past_versions
     WHERE history_id IN (SELECT history_id FROM user_conversation_past_versions
                           WHERE valid_to < v_before LIMIT p_batch);
    GET DIAGNOSTICS v_conversation_versions = ROW_COUNT;
    DELETE FROM conversation_event_log
     WHERE event_id IN (SELECT event_id FROM conversation_event_log
                         WHERE at < v_before LIMIT p_batch);
    GET DIAGNOSTICS v_conversation_events = ROW_COUNT;
    DELETE FROM sync_errors
     WHERE error_id IN (SELECT error_id FROM sync_errors WHERE at < v_before LIMIT p_batch);
    GET DIAGNOSTICS v_errors = ROW_COUNT;
    RETURN v_versions + v_events + v_conversation_versions + v_conversation_events + v_errors;
END
$fn$;

-- sync_user_keys (migration 009): each user key with a cursor, with the User
-- SID, identity and name it stands for.  A key is a User SID or an identity
-- (as configured, or as discovered).  A User SID the users listing knows is
-- itself; an identity it knows is that user's SID (sync_identity_user():
-- of several users with that identity, the one not deleted, else the last
-- updated, then the greatest SID); a key it does not know stands for
-- itself, an identity keeping itself as the identity.
--
-- Triggers keep it: a cursor added, moved (a merge) or deleted refreshes its
-- key; users added, changed or deleted refresh the keys of their SIDs and
-- identities.  Two transactions that change a user and its cursor at once
-- could each miss the other's change; chatsyncd never does (a service's
-- users listing is committed before its users' listings start), and
-- sync_user_keys_refresh_service() sets every key of a service right.

-- sync_user_keys_refresh_key(): the row of key p_key of service p_service,
-- as the cursors and the users listing now have it (written only if it
-- differs, deleted if the key has no cursor): what the trigger on
-- sync_cursors runs for each cursor a first sweep adds.  Its statements
-- look rows up by their keys only, so their plans are kept (plan_cache_mode
-- auto, whatever the setting of the session or function that adds the
-- cursor).
CREATE OR REPLACE FUNCTION sync_user_keys_refresh_key(p_service text, p_key text)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT SET plan_cache_mode = auto
AS $fn$
DECLARE
    v_sid text; -- the User SID the key stands for, if the users listing knows it
BEGIN
    IF p_service IS NULL OR p_key IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM sync_cursors c
                    WHERE c.service_sid = p_service AND c.user_sid = p_key) THEN
        DELETE FROM sync_user_keys x WHERE x.service_sid = p_service AND x.configured = p_key;
        RETURN;
    END IF;
    v_sid := CASE WHEN EXISTS (SELECT FROM users b
                                WHERE b.service_sid = p_service AND b.user_sid = p_key)
                  THEN p_key
                  ELSE sync_identity_user(p_service, p_key) END;
    INSERT INTO sync_user_keys AS x (service_sid, configured, user_sid, identity, user_name)
    SELECT p_service, p_key, coalesce(u.user_sid, p_key),
           coalesce(u.identity, CASE WHEN p_key !~ '^US[0-9a-fA-F]{32}$' THEN p_key END),
           u.friendly_name
      FROM (SELECT) one
      LEFT JOIN users u ON u.service_sid = p_service AND u.user_sid = v_sid
    ON CONFLICT (service_sid, configured) DO UPDATE
       SET user_sid = EXCLUDED.user_sid, identity = EXCLUDED.identity,
           user_name = EXCLUDED.user_name
     WHERE (x.user_sid, x.identity, x.user_name)
           IS DISTINCT FROM (EXCLUDED.user_sid, EXCLUDED.identity, EXCLUDED.user_name);
END
$fn$;

-- sync_user_keys_refresh(): the rows of the keys p_keys[i] of services
-- p_services[i] as the cursors and the users listing now have them, each
-- as sync_user_keys_refresh_key() makes it.
CREATE OR REPLACE FUNCTION sync_user_keys_refresh(p_services text[], p_keys text[])
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    k record;
BEGIN
    FOR k IN SELECT DISTINCT t.service_sid, t.key
               FROM unnest(p_services, p_keys) AS t(service_sid, key)
    LOOP
        PERFORM sync_user_keys_refresh_key(k.service_sid, k.key);
    END LOOP;
END
$fn$;

-- sync_user_keys_refresh_service(): every key of service p_service (NULL:
-- of every service), those with a cursor and those still in the table.
CREATE OR REPLACE FUNCTION sync_user_keys_refresh_service(p_service text)
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT
AS $fn$
    SELECT sync_user_keys_refresh(array_agg(service_sid), array_agg(key))
      FROM (SELECT service_sid, user_sid AS key FROM sync_cursors
             WHERE p_service IS NULL OR service_sid = p_service
            UNION
            SELECT service_sid, configured FROM sync_user_keys
             WHERE p_service IS NULL OR service_sid = p_service) k;
$fn$;

CREATE OR REPLACE FUNCTION sync_user_keys_cursor_changed()
RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM sync_user_keys_refresh_key(OLD.service_sid, OLD.user_sid);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM sync_user_keys_refresh_key(NEW.service_sid, NEW.user_sid);
    END IF;
    RETURN NULL;
END
$fn$;

-- Once per statement, with the rows it changed: a users listing writes a
-- page in one statement.
CREATE OR REPLACE FUNCTION sync_user_keys_users_changed()
RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM sync_user_keys_refresh(array_agg(k.service_sid), array_agg(k.key))
           FROM new_users n,
                LATERAL (VALUES (n.service_sid, n.user_sid), (n.service_sid, n.identity)) k(service_sid, key);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM sync_user_keys_refresh(array_agg(k.service_sid), array_agg(k.key))
           FROM old_users o,
                LATERAL (VALUES (o.service_sid, o.user_sid), (o.service_sid, o.identity)) k(service_sid, key);
    ELSE
        PERFORM sync_user_keys_refresh(array_agg(k.service_sid), array_agg(k.key))
           FROM (SELECT service_sid, user_sid, identity FROM old_users
                 UNION ALL
                 SELECT service_sid, user_sid, identity FROM new_users) r,
                LATERAL (VALUES (r.service_sid, r.user_sid), (r.service_sid, r.identity)) k(service_sid, key);
    END IF;
    RETURN NULL;
END
$fn$;

-- The triggers, where they are missing: creating a trigger locks its table
-- against writes, which a start of chatsyncd must not do to the sweeps of
-- another.
DO $triggers$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger
                    WHERE tgrelid = 'sync_cursors'::regclass AND tgname = 'sync_user_keys_cursor') THEN
        CREATE TRIGGER sync_user_keys_cursor
            AFTER INSERT OR DELETE OR UPDATE OF service_sid, user_sid ON sync_cursors
            FOR EACH ROW EXECUTE FUNCTION sync_user_keys_cursor_changed();
    END IF;
    IF NOT EXISTS (SELECT FROM pg_trigger
                    WHERE tgrelid = 'users'::regclass AND tgname = 'sync_user_keys_users_added') THEN
        CREATE TRIGGER sync_user_keys_users_added
            AFTER INSERT ON users REFERENCING NEW TABLE AS new_users
            FOR EACH STATEMENT EXECUTE FUNCTION sync_user_keys_users_changed();
        CREATE TRIGGER sync_user_keys_users_changed
            AFTER UPDATE ON users REFERENCING OLD TABLE AS old_users NEW TABLE AS new_users
            FOR EACH STATEMENT EXECUTE FUNCTION sync_user_keys_users_changed();
        CREATE TRIGGER sync_user_keys_users_deleted
            AFTER DELETE ON users REFERENCING OLD TABLE AS old_users
            FOR EACH STATEMENT EXECUTE FUNCTION sync_user_keys_users_changed();
    END IF;
END
$triggers$;

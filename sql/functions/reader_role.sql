-- chatsync_reader: the read-only group role for analysts and BI tools.
-- Created here when the role applying the migrations may create roles
-- (otherwise a superuser creates it, and the next start grants it); it may
-- read every table and view of the schema, and what later migrations add
-- (default privileges), and write nothing.  Grant it to a login role:
-- GRANT chatsync_reader TO alice;
DO $reader$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chatsync_reader') THEN
        BEGIN
            CREATE ROLE chatsync_reader NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'chatsync_reader not created: this role may not create roles';
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'chatsync_reader') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO chatsync_reader', current_schema());
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO chatsync_reader',
                       current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES '
                       'TO chatsync_reader', current_schema());
    END IF;
END
$reader$;

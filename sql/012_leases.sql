-- 012_leases: several chatsyncd on one schema.
--
-- Every chatsyncd that points at a schema takes part in its sweeps.  Each
-- registers in sync_instances, and claims the users it lists with a lease
-- on their cursors: an owner (lease_instance), an expiry (lease_expires_at)
-- and a fencing token (lease_token, from sync_lease_tokens, new at each
-- claim).  Each write of a listing (a page, the unchanged-listing shortcut,
-- a failure) is applied only while its token is the cursor's, read under
-- the cursor's row lock (see functions/sync_leases.sql).  The dimension
-- listings of a service are leased the same way on sync_dimension_cursors.
--
-- The single writer of 005_writer_fence goes: its schema lock and epoch are
-- replaced by the leases, and sync_writer with them.

-- The chatsyncd processes that work, or worked, on this schema.
CREATE TABLE sync_instances (
    instance_id  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL,   -- sync.instance_name, or host:pid:start
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,   -- live until then, unless stopped
    run_id       bigint,                 -- the sweep it works on, or last worked on
    stopped_at   timestamptz             -- set by a clean stop
);

CREATE SEQUENCE sync_lease_tokens;

ALTER TABLE sync_cursors
    ADD COLUMN lease_instance   bigint,       -- the instance holding the user (NULL: none)
    ADD COLUMN lease_token      bigint,       -- the fencing token of the last lease
    ADD COLUMN lease_expires_at timestamptz;  -- the lease is another's to take after this
ALTER TABLE sync_dimension_cursors
    ADD COLUMN lease_instance   bigint,
    ADD COLUMN lease_token      bigint,
    ADD COLUMN lease_expires_at timestamptz;

-- The functions whose arguments gain the caller's lease token.
DROP FUNCTION IF EXISTS sync_listing_begin(text, text, boolean, text);
DROP FUNCTION IF EXISTS sync_page(bigint, text, text, boolean, text, text[], text[], text[],
                                  text[], bigint[], bigint[], text[], text[], integer, integer,
                                  integer, text, text[]);
DROP FUNCTION IF EXISTS sync_conversations_page(
    bigint, text, text, boolean, text, text[], text[], text[], text[], text[], bigint[],
    bigint[], text[], text[], text[], timestamptz[], timestamptz[], timestamptz[],
    timestamptz[], text[], text[], text[], integer, integer, integer, text);
DROP FUNCTION IF EXISTS sync_listing_unchanged(bigint, text, text, text, integer, integer,
                                               integer, integer);
DROP FUNCTION IF EXISTS sync_user_error(bigint, text, text, text, text, integer);
DROP FUNCTION IF EXISTS sync_user_failed(bigint, text, text, text, integer, integer, text,
                                         integer);
DROP FUNCTION IF EXISTS sync_dimension_begin(text, text);
DROP FUNCTION IF EXISTS sync_service_row(bigint, text, text, text, timestamptz, timestamptz,
                                         integer, integer);
DROP FUNCTION IF EXISTS sync_dimension_page(bigint, text, text, boolean, text, anyarray, text,
                                            integer, integer, integer);
DROP FUNCTION IF EXISTS sync_users_page(bigint, text, boolean, text, text[], text[], text[],
                                        text[], text[], integer[], boolean[], boolean[],
                                        text[], timestamptz[], timestamptz[], integer, integer,
                                        text);
DROP FUNCTION IF EXISTS sync_channels_page(bigint, text, boolean, text, text[], text[], text[],
                                           text[], text[], integer[], integer[], text[],
                                           timestamptz[], timestamptz[], integer, integer, text);
DROP FUNCTION IF EXISTS sync_dimension_failed(bigint, text, text, text, text, integer, integer,
                                              integer);
DROP FUNCTION IF EXISTS sync_fence_take();
DROP TABLE sync_writer;

-- 008_dimension_sync: where the dimension listings of each service stand.
--
-- At the start of a sweep chatsyncd lists, for each service, the service
-- itself, its users and its channels into services, users and channels
-- (functions/sync_dimensions.sql).  Each listing has a cursor, as a user's
-- listing of memberships has in sync_cursors, and a listing of several
-- pages keeps the SIDs it has shown so far, as sync_seen does, so that its
-- last page can tell which users or channels are gone.
--
-- users gets account_sid, which the users listing sends (as services has).

ALTER TABLE users ADD COLUMN account_sid text;

-- Where each dimension listing of a service stands: 'service' (the service
-- itself, one object), 'users' or 'channels'.  The columns of sync_cursors,
-- the listing in place of the user, without the digest of a one-page
-- listing (a dimension listing is always sent whole).
CREATE TABLE sync_dimension_cursors (LIKE sync_cursors INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE sync_dimension_cursors RENAME COLUMN user_sid TO listing;
ALTER TABLE sync_dimension_cursors
    RENAME CONSTRAINT sync_cursors_state_check TO sync_dimension_cursors_state_check;
ALTER TABLE sync_dimension_cursors
    DROP COLUMN listing_digest,
    DROP COLUMN listing_rows,
    ADD CHECK (listing IN ('service', 'users', 'channels')),
    ADD PRIMARY KEY (service_sid, listing),
    ADD FOREIGN KEY (run_id) REFERENCES sync_runs;

-- The User or Channel SIDs listed so far by a dimension listing that spans
-- several pages.
CREATE TABLE sync_dimension_seen (
    service_sid text NOT NULL,
    listing     text NOT NULL CHECK (listing IN ('users', 'channels')),
    sid         text NOT NULL,
    PRIMARY KEY (service_sid, listing, sid)
);

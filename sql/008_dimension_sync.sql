-- 008_dimension_sync: where the dimension listings of each service stand.
--
-- At the start of a sweep chatsyncd lists, for each service, the service
-- itself, its users and its channels into services, users and channels
-- (functions/sync_dimensions.sql).  Each listing has a cursor, as a user's
-- listing of memberships has in sync_cursors, and each page as it was
-- last listed (its digest and SIDs), so that an unchanged page costs no
-- write and the last page can tell which users or channels are gone.
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

-- Each page of a users or channels listing as it was last listed: its
-- digest, so that a page the same as last time costs no comparing and no
-- write, and its SIDs, so that the last page can tell which are gone.
CREATE TABLE sync_dimension_pages (
    service_sid text    NOT NULL,
    listing     text    NOT NULL CHECK (listing IN ('users', 'channels')),
    page        integer NOT NULL CHECK (page >= 1),
    digest      text,
    sids        text[]  NOT NULL,
    PRIMARY KEY (service_sid, listing, page)
);

-- 013_listing_pages: a digest for each page of a listing on several pages.
--
-- A listing on one page keeps its digest on the cursor (002); one on
-- several pages now keeps one row per page in sync_listing_pages: the
-- page's digest and the SIDs it listed.  A page whose digest is the stored
-- one is not sent again (chatsyncd skips it), and an unchanged listing
-- costs one update of its cursor, as a one-page one does
-- (sync_listing_unchanged()).  The SIDs of the pages replace sync_seen: at
-- a listing's last page, what its earlier pages listed is read from them.
--
-- A listing in progress keeps what it has seen: the SIDs sync_seen held
-- for it go to the row of its first page, and its other committed pages
-- get rows listing nothing; none has a digest, so none is skipped.

CREATE TABLE sync_listing_pages (
    service_sid text    NOT NULL,
    user_sid    text    NOT NULL,
    page_no     integer NOT NULL CHECK (page_no >= 1),
    digest      text,              -- of the page's accepted entries; NULL: unknown
    entries     integer NOT NULL,  -- the entries it listed
    listed      text[]  NOT NULL,  -- their SIDs (channel or conversation)
    PRIMARY KEY (service_sid, user_sid, page_no),
    FOREIGN KEY (service_sid, user_sid) REFERENCES sync_cursors (service_sid, user_sid)
        ON DELETE CASCADE ON UPDATE CASCADE
);

INSERT INTO sync_listing_pages (service_sid, user_sid, page_no, digest, entries, listed)
SELECT c.service_sid, c.user_sid, g.n, NULL, 0,
       CASE WHEN g.n = 1 THEN
           coalesce((SELECT array_agg(s.channel_sid ORDER BY s.channel_sid)
                       FROM sync_seen s
                      WHERE s.service_sid = c.service_sid AND s.user_sid = c.user_sid),
                    '{}')
       ELSE '{}' END
  FROM sync_cursors c
 CROSS JOIN LATERAL generate_series(1, c.pages_done) AS g(n)
 WHERE c.state = 'running' AND c.next_page_url IS NOT NULL;

DROP TABLE sync_seen;

-- The functions whose arguments or results change.
DROP FUNCTION IF EXISTS sync_memberships_gone(text, text, text[], boolean, boolean);
DROP FUNCTION IF EXISTS sync_conversations_gone(text, text, text[], boolean, boolean);
DROP FUNCTION IF EXISTS sync_listing_begin(text, text, boolean, text, bigint);
DROP FUNCTION IF EXISTS sync_listing_advance(bigint, text, text, boolean, text, text[], text,
                                             integer, integer, integer, integer, integer,
                                             integer, integer, integer);
DROP FUNCTION IF EXISTS sync_page(bigint, text, text, boolean, text, text[], text[], text[],
                                  text[], bigint[], bigint[], text[], text[], integer, integer,
                                  integer, text, text[], bigint);
DROP FUNCTION IF EXISTS sync_conversations_page(
    bigint, text, text, boolean, text, text[], text[], text[], text[], text[], bigint[],
    bigint[], text[], text[], text[], timestamptz[], timestamptz[], timestamptz[],
    timestamptz[], text[], text[], text[], integer, integer, integer, text, bigint);
DROP FUNCTION IF EXISTS sync_listing_unchanged(bigint, text, text, text, integer, integer,
                                               integer, integer, bigint);
DROP FUNCTION IF EXISTS sync_lease_claim(bigint, bigint, integer, text, text[], integer);

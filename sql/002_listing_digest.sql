-- 002_listing_digest: a one-page listing that has not changed since it was
-- last applied costs one cursor update instead of a comparison of every row.
--
-- The writer sends a digest of the page's rows; sync_cursors keeps the digest
-- of the last one-page listing applied for each user (NULL after a listing of
-- several pages, whose deletions the digest would not describe).

ALTER TABLE sync_cursors ADD COLUMN listing_digest text;

-- sync_page() takes the digest as a new last argument.  The version without
-- it, created by 001_initial before functions had a file of their own, is
-- dropped here, once; sql/functions/sync_page.sql creates the current one.
DROP FUNCTION IF EXISTS sync_page(bigint, text, text, boolean, text, text[], text[], text[],
                                  text[], bigint[], bigint[], text[], text[], integer, integer,
                                  integer);

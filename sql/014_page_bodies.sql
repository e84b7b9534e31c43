-- 014_page_bodies: an unchanged page is known by its bytes, before it is
-- parsed.
--
-- A page's digest (sync_listing_pages.digest, and a one-page listing's
-- sync_cursors.listing_digest) is that of its accepted entries, and may
-- now be followed by a colon and the digest of the page's body as it was
-- received.  A page whose body is, byte for byte, the one stored is not
-- parsed again: its entries are those its row counts, and its next page is
-- the one it named then, which sync_listing_pages now keeps.  Digests
-- stored before have no body part: those pages are parsed once more and
-- compared by their entries, as before.

ALTER TABLE sync_listing_pages ADD COLUMN next_page_url text;  -- the page's next_page_url

-- The function whose result changes.
DROP FUNCTION IF EXISTS sync_lease_claim(bigint, bigint, integer, text, text[], integer);

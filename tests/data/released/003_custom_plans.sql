-- 003_custom_plans: sync_page() plans its statements afresh on every call.
--
-- PL/pgSQL caches a generic plan for each statement of a function.  A sweep
-- into empty tables would cache plans made for empty tables (sequential
-- scans) and keep them while the tables grow, so each page cost more than
-- the one before.  Planning with the tables as they are costs a fraction of
-- a millisecond per page.

ALTER FUNCTION sync_page(bigint, text, text, boolean, text, text[], text[], text[], text[],
                         bigint[], bigint[], text[], text[], integer, integer, integer, text)
    SET plan_cache_mode = force_custom_plan;

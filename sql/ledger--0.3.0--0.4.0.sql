-- ledger 0.3.0 -> 0.4.0: the SQL surface is unchanged. The library makes history ledgers of
-- history-tracked tables without the version id column (vid) of 0.3.0: their primary key is (key,
-- seq), which also finds a chain's head, so each version costs one index entry and no random uuid
-- fewer. Histories made by 0.3.0 keep their vid column (it is hashed in their records) and verify as
-- before. Nothing stored changes.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.4.0'" to load this file. \quit

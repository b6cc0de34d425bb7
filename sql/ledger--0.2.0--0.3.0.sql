-- ledger 0.2.0 -> 0.3.0: the export header carries the ledger's registered definition, so an offline
-- verifier can check a digest's definition line and report a changed definition as ledger.verify does.
-- Nothing stored changes: every record, checkpoint, proof and digest of 0.2.0 verifies as before.

\echo Use "ALTER EXTENSION ledger UPDATE TO '0.3.0'" to load this file. \quit

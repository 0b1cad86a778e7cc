-- V0015 The Batch Settlement Run's balances: no per-row foreign-key checks on holdings, and
-- room on every page for each balance's next version.
--
-- * holdings: the foreign keys to stock_accounts and securities ran two trigger queries per
--   inserted row. A run inserts a row for every receiver that did not hold the security
--   yet (95 k of them in `ccass bench settlement --instructions 1000000`), and those checks
--   were most of its balance write (1.22 s with them, 0.27 s without, measured in psql on
--   the bench's day). Every writer names accounts and securities that are already checked:
--   the run takes them from stored instructions (which keep their foreign keys), the
--   reference-data seed validates its own. `ccass audit` checks the rest: a stored holding
--   must equal the balance its journal implies, and every journal row must name a known
--   account and security, so a non-zero holding of an unknown account or security is
--   reported.
--   The journals never had foreign keys for the same reason (V0001).
ALTER TABLE holdings DROP CONSTRAINT holdings_account_id_fkey;
ALTER TABLE holdings DROP CONSTRAINT holdings_isin_fkey;

-- * fillfactor 45 (was 70, V0013): a run updates every balance it touches once, and such an
--   update stays on its page (HOT: no new primary-key entry) only if the page has room for
--   the row's new version. At 70 a page of holdings (83 rows of ~72 bytes) had room for
--   about a third of its rows: on the bench's day 45 % of the 148 k updates were HOT and the
--   UPDATE took 2.4 s; at 45 (53 rows a page) all were HOT and it took 0.97 s (psql, same
--   rows). The dead versions are pruned from the page by later accesses, so each run finds
--   the room again. Applies to pages written from now on (existing ones until a rewrite).
ALTER TABLE holdings SET (fillfactor = 45);
ALTER TABLE cash_balances SET (fillfactor = 45);

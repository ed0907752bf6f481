-- The usage service's connectivity batches update most SIMs they name
-- (connectivity_seq and the current network, none of them indexed), and the
-- table has eleven indexes, two of them GIN. A new row version that fits on
-- its page is a HOT update and touches no index; on a full page it writes an
-- entry into every index. Keep a fifth of each page free for that. Applies
-- to pages written from now on (existing ones gain room as rows move).
ALTER TABLE sims SET (fillfactor = 80);

-- Every connectivity batch updates the state row of each SIM it names;
-- most updates change only last_seen and the signal, which no index holds,
-- so they can be HOT updates (no index entry) when the page has room. Keep
-- half of each page free, as for the rollups (0003). Applies to pages
-- written from now on.
ALTER TABLE sim_connectivity_state SET (fillfactor = 50);

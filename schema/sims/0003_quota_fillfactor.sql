-- Every usage batch updates the quotas of its SIMs. None of the columns it
-- changes is indexed, so the new row version can stay on its page (a HOT
-- update, no index entry) when the page has room: keep half of each page
-- free for that. Applies to pages written from now on.
ALTER TABLE sim_quotas SET (fillfactor = 50);

-- Login backoff per username *and* client address (as the gateway signs it
-- into the principal): failures from one address no longer lock the user
-- out from everywhere else. '' stands for an unknown address (a caller
-- that did not come through the gateway).
ALTER TABLE login_failures ADD COLUMN client_address text NOT NULL DEFAULT '';
ALTER TABLE login_failures DROP CONSTRAINT login_failures_pkey;
ALTER TABLE login_failures ADD PRIMARY KEY (username, client_address);

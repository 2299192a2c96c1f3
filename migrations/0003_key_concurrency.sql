-- Per-key concurrency caps (issue 20.2, 21.5): the most streams a key may have open and the
-- most requests it may have in flight at once. NULL: the server's settings
-- (`server.max_streams_per_key`, `server.max_requests_in_flight_per_key`), unset by default.

ALTER TABLE sy_keys ADD COLUMN max_streams BIGINT;
ALTER TABLE sy_keys ADD COLUMN max_requests_in_flight BIGINT;

-- Usage records in blocks: one row per batch of requests (src/store/usage_block.rs holds
-- the encoding). A row per request in sy_usage cost the batch writer ≈ 1.4 µs of CPU per
-- request; rows written before this migration stay in sy_usage and are still reported.
-- The daily roll-up (sy_spend_daily) stays the SQL view of spend per key and day.

CREATE TABLE sy_usage_blocks (
    first_ts  BIGINT NOT NULL,
    last_ts   BIGINT NOT NULL,
    records   BIGINT NOT NULL,
    data      BYTEA NOT NULL
);
CREATE INDEX sy_usage_blocks_last_ts ON sy_usage_blocks (last_ts);

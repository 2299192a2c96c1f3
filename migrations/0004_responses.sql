-- Stored answers of the Responses API (`store: true`, issue 16): what `previous_response_id`,
-- `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and `.../input_items` read. Scoped to
-- the key that created them (`owner`, the key id); rows past `expires_at` (the configured
-- retention) are never returned and are deleted in the background.

CREATE TABLE IF NOT EXISTS sy_responses (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    input_items TEXT NOT NULL,
    response    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sy_responses_expires ON sy_responses (expires_at);

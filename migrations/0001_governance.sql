-- Governance schema: keys, users (budgets), usage records, daily spend roll-up, audit events,
-- admin second factor. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Times are Unix epoch integers: seconds for keys/users, milliseconds for usage and audit.
-- Budgets are integer micro-dollars (nullable floats do not bind portably through sqlx's Any).

CREATE TABLE sy_keys (
    id          TEXT PRIMARY KEY,
    user_name   TEXT NOT NULL,
    key_sha256  TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    models      TEXT NOT NULL DEFAULT '',
    providers   TEXT NOT NULL DEFAULT '',
    budget_micro_usd BIGINT,
    period      TEXT,
    rpm         BIGINT,
    tpm         BIGINT,
    expires_at  BIGINT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX sy_keys_user ON sy_keys (user_name);
CREATE INDEX sy_keys_updated ON sy_keys (updated_at);

CREATE TABLE sy_users (
    name        TEXT PRIMARY KEY,
    budget_micro_usd BIGINT,
    period      TEXT,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE sy_usage (
    ts            BIGINT NOT NULL,
    request_id    TEXT NOT NULL,
    user_name     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    route         TEXT NOT NULL,
    status        INTEGER NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd      DOUBLE PRECISION NOT NULL
);
CREATE INDEX sy_usage_ts ON sy_usage (ts);

-- Spend per key and UTC day, maintained by the batch writer; budget checks read this.
CREATE TABLE sy_spend_daily (
    day        BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    user_name  TEXT NOT NULL,
    cost_usd   DOUBLE PRECISION NOT NULL,
    tokens     BIGINT NOT NULL,
    requests   BIGINT NOT NULL,
    PRIMARY KEY (day, key_id)
);

CREATE TABLE sy_audit (
    ts       BIGINT NOT NULL,
    event    TEXT NOT NULL,
    actor    TEXT NOT NULL,
    subject  TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX sy_audit_ts ON sy_audit (ts);

-- The admin API's TOTP secret and the last time step accepted (replay protection across
-- replicas: a step is accepted once, by an UPDATE that only succeeds when it is newer).
CREATE TABLE sy_admin_totp (
    id         TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    last_step  BIGINT NOT NULL
);

-- A counter bumped in the same transaction as every key or user change: replicas poll it
-- cheaply and reload their key cache only when it moved.
CREATE TABLE sy_meta (
    name     TEXT PRIMARY KEY,
    version  BIGINT NOT NULL
);
INSERT INTO sy_meta (name, version) VALUES ('keys', 0);

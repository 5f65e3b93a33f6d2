-- Keys of the HTTP API (`billing api`). Only a SHA-256 of each key is stored: a key is 256
-- random bits, so a fast hash is enough and lets a request find its key by an index lookup,
-- and a copy of this table (a backup, a replica) grants nothing.
CREATE TABLE IF NOT EXISTS api_keys (
    id          text        PRIMARY KEY,          -- public: shown by `billing keys list`, in logs
    key_hash    bytea       NOT NULL UNIQUE,
    scope       text        NOT NULL CHECK (scope IN ('ingest', 'read:all', 'read:account')),
    -- ingest: the accounts it may send for (empty: any); read:account: exactly one account.
    accounts    text[]      NOT NULL DEFAULT '{}',
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    CONSTRAINT api_keys_portal_one_account
        CHECK (scope <> 'read:account' OR cardinality(accounts) = 1)
);

-- 008-api-tokens: bearer tokens of the metrics HTTP API (`rmp api`).
-- A token stands for one database role: every request runs in a transaction
-- under `SET LOCAL ROLE <role>`, so row-level security and the tenant.*
-- views decide what it sees. Only the SHA-256 of a token is stored; the token
-- itself is shown once by `rmp api token create` and is never in the
-- database (nor in its statement log: the API sends the hash). prefix is the
-- first characters of the token, to tell tokens apart in `rmp api token list`.
-- The API's login reads this table only through tenancy.api_token_role()
-- (sql/idempotent/api.sql); nobody else is granted anything on it but admins.

create table tenancy.api_tokens (
    id            bigint generated always as identity primary key,
    token_sha256  text not null unique check (token_sha256 ~ '^[0-9a-f]{64}$'),
    prefix        text not null,
    role_name     name not null,
    label         text,
    created_by    name not null default session_user,
    created_at    timestamptz not null default now(),
    revoked_at    timestamptz
);
create index api_tokens_role_idx on tenancy.api_tokens (role_name);

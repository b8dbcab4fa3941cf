//! End-to-end tests: real HTTP against a real server, on SQLite by default and on
//! PostgreSQL (+ Redis) when TEST_DATABASE_URL (and TEST_REDIS_URL) are set.

mod bad_input;
mod cache_outage;
mod concurrency;
mod economics;
mod expiry;
mod holds;
mod holds_props;
mod idempotency;
mod ledger_props;
mod money;
mod multi_process;
mod oauth;
mod openapi;
mod operations;
mod partner_terms;
mod review_attacks;
mod review_attacks_two;
mod review_economics;
mod review_fixes;
mod review_holds_expiry;
mod rules;
mod story;
mod support;
mod tenancy;
mod tenancy_matrix;
mod tiers;

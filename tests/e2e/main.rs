//! End-to-end tests: real HTTP against a real server, on SQLite by default and on
//! PostgreSQL (+ Redis) when TEST_DATABASE_URL (and TEST_REDIS_URL) are set.

mod bad_input;
mod bank;
mod cache_outage;
mod campaigns;
mod chart;
mod clients;
mod concurrency;
mod deploy;
mod economics;
mod expiry;
mod holds;
mod holds_props;
mod idempotency;
mod ledger_props;
mod money;
mod multi_process;
mod oauth;
mod observability;
mod openapi;
mod operations;
mod partner_terms;
mod privacy;
mod review_attacks;
mod review_attacks_two;
mod review_economics;
mod review_fixes;
mod review_holds_expiry;
mod rules;
mod settlement;
mod story;
mod support;
mod tenancy;
mod tenancy_matrix;
mod tiers;
mod till;

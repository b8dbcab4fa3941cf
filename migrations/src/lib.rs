//! Schema of Coalition. Every change goes through a migration here, never by hand.
pub use sea_orm_migration::prelude::*;

mod m20261122_000001_ledger;
mod m20261124_000001_card_safety;
mod m20261124_000001_live_lots_index;
mod m20261125_000001_terms_and_outbox;
mod m20261125_000010_rules;
mod m20261125_000020_tiers;
mod m20261125_000030_lot_reminders;
mod m20261125_000040_holds;
mod m20261126_000100_campaigns;
mod m20261126_000200_settlements;
mod m20261126_000300_client_states;
mod m20261127_000100_closed_accounts;
mod m20261203_000100_bank;
mod m20261203_000200_webhooks;
mod m20261203_000300_analytics;
mod m20261203_000410_members_account_index;
mod m20261203_000500_portal;
mod m20261203_000600_oauth;
mod m20261204_000100_sign_in_sweep_indexes;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_ledger::Migration),
            Box::new(m20261124_000001_card_safety::Migration),
            Box::new(m20261124_000001_live_lots_index::Migration),
            Box::new(m20261125_000001_terms_and_outbox::Migration),
            Box::new(m20261125_000010_rules::Migration),
            Box::new(m20261125_000020_tiers::Migration),
            Box::new(m20261125_000030_lot_reminders::Migration),
            Box::new(m20261125_000040_holds::Migration),
            Box::new(m20261126_000100_campaigns::Migration),
            Box::new(m20261126_000200_settlements::Migration),
            Box::new(m20261126_000300_client_states::Migration),
            Box::new(m20261127_000100_closed_accounts::Migration),
            Box::new(m20261203_000100_bank::Migration),
            Box::new(m20261203_000200_webhooks::Migration),
            Box::new(m20261203_000300_analytics::Migration),
            Box::new(m20261203_000410_members_account_index::Migration),
            Box::new(m20261203_000500_portal::Migration),
            Box::new(m20261203_000600_oauth::Migration),
            Box::new(m20261204_000100_sign_in_sweep_indexes::Migration),
        ]
    }
}

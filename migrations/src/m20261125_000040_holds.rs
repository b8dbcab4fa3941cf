//! POS holds: points reserved at the till, then captured (spent) or voided, or left to
//! lapse. `point_accounts.held` is the sum of the points of the account's holds still in
//! status `held`; the points a member may spend are `balance - held`, and every guarded
//! UPDATE that takes points from an account compares against that difference, so a
//! reservation holds across server processes.
//!
//! A hold that lapsed (`expires_at` passed) still counts in `held` until something
//! releases it (the release job, or a refused spend on its account); the transition
//! `held -> expired` is a conditional UPDATE, so it happens once whoever runs it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointAccounts {
    Table,
    Held,
}

#[derive(DeriveIden)]
enum Holds {
    Table,
    Id,
    ProgrammeId,
    PartnerId,
    AccountId,
    CardNumber,
    Points,
    Status,
    ExpiresAt,
    PurchaseId,
    CreatedAt,
    ResolvedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .add_column(big_integer(PointAccounts::Held).default(0))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Holds::Table)
                .col(uuid(Holds::Id).primary_key())
                .col(uuid(Holds::ProgrammeId))
                .col(uuid(Holds::PartnerId))
                .col(uuid(Holds::AccountId))
                .col(string(Holds::CardNumber))
                .col(big_integer(Holds::Points))
                .col(string(Holds::Status))
                .col(timestamp_with_time_zone(Holds::ExpiresAt))
                .col(uuid_null(Holds::PurchaseId))
                .col(timestamp_with_time_zone(Holds::CreatedAt))
                .col(timestamp_with_time_zone_null(Holds::ResolvedAt))
                .to_owned(),
        )
        .await?;
        // A refused spend releases the lapsed holds of its account: (account, status).
        m.create_index(
            Index::create()
                .name("ix_holds_account_status")
                .table(Holds::Table)
                .col(Holds::AccountId)
                .col(Holds::Status)
                .to_owned(),
        )
        .await?;
        // The release job looks for live holds whose time has passed: (status, expiry).
        m.create_index(
            Index::create()
                .name("ix_holds_status_expiry")
                .table(Holds::Table)
                .col(Holds::Status)
                .col(Holds::ExpiresAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Holds::Table).to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .drop_column(PointAccounts::Held)
                .to_owned(),
        )
        .await
    }
}

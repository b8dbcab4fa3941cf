//! An index of the lots that still hold points, per account in consumption order.
//!
//! Spending and clawbacks read an account's soonest-expiring live lots, and a balance
//! read those inside the "expiring soon" window. Emptied lots are never deleted and pile
//! up exactly where those reads start (the soonest expiries): on `ix_lots_account_expiry`
//! every read would step over all of them. This index leaves them out, and holds `id`
//! too, so `ORDER BY expires_at, id LIMIT n` reads n entries and sorts nothing.
//! It replaces `ix_lots_account_expiry`: a registration moves only an account's live
//! lots (emptied ones stay behind, holding nothing), so no query reads every lot of an
//! account any more, and a purchase writes one lot index entry, not two.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointLots {
    Table,
    Id,
    AccountId,
    PointsRemaining,
    ExpiresAt,
}

const INDEX: &str = "ix_lots_live";
const REPLACED: &str = "ix_lots_account_expiry";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(INDEX)
                .table(PointLots::Table)
                .col(PointLots::AccountId)
                .col(PointLots::ExpiresAt)
                .col(PointLots::Id)
                .and_where(Expr::col(PointLots::PointsRemaining).gt(0))
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name(REPLACED)
                .table(PointLots::Table)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(REPLACED)
                .table(PointLots::Table)
                .col(PointLots::AccountId)
                .col(PointLots::ExpiresAt)
                .to_owned(),
        )
        .await?;
        m.drop_index(Index::drop().name(INDEX).table(PointLots::Table).to_owned())
            .await
    }
}

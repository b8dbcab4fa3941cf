//! Registering a bearer card merges its points account into the member's: the bearer
//! account records where it went, so a purchase or refund that raced the registration
//! finds out (its guarded UPDATE requires the account not to be merged) and follows the
//! card instead of crediting an account that no card reaches any more. Purchases move
//! with the account, found by `account_id`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointAccounts {
    Table,
    MergedIntoAccountId,
}
#[derive(DeriveIden)]
enum Purchases {
    Table,
    AccountId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .add_column(uuid_null(PointAccounts::MergedIntoAccountId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_purchases_account")
                .table(Purchases::Table)
                .col(Purchases::AccountId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_purchases_account").to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .drop_column(PointAccounts::MergedIntoAccountId)
                .to_owned(),
        )
        .await
    }
}

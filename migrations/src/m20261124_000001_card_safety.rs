//! Registering a bearer card merges its points account into the member's: the bearer
//! account records where it went, so a purchase or refund that raced the registration
//! finds out (its guarded UPDATE requires the account not to be merged) and follows the
//! card instead of crediting an account that no card reaches any more.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointAccounts {
    Table,
    MergedIntoAccountId,
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
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .drop_column(PointAccounts::MergedIntoAccountId)
                .to_owned(),
        )
        .await
    }
}

//! `point_accounts.closed_at`: set when the member's data is erased. Every statement
//! that credits a member account requires it empty, so a purchase, registration or
//! refund racing the erasure can never put points on an account that belongs to no
//! one (the guard sits in the same UPDATE as the balance, as the overdraft guard does).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointAccounts {
    Table,
    ClosedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .add_column(timestamp_with_time_zone_null(PointAccounts::ClosedAt))
                .to_owned(),
        )
        .await?;
        // Accounts of members erased before this column existed.
        m.get_connection()
            .execute_unprepared(
                "UPDATE point_accounts SET closed_at = \
                   (SELECT m.erased_at FROM members m WHERE m.account_id = point_accounts.id) \
                 WHERE id IN (SELECT account_id FROM members WHERE erased_at IS NOT NULL)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PointAccounts::Table)
                .drop_column(PointAccounts::ClosedAt)
                .to_owned(),
        )
        .await
    }
}

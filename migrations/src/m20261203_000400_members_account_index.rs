//! An index on `members (programme_id, account_id)`: the staff/store effectiveness report
//! joins a period's purchases to their members by account. Without it SQLite scans the
//! programme's members once per purchase (minutes at a million purchases).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    ProgrammeId,
    AccountId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_members_programme_account")
                .table(Members::Table)
                .col(Members::ProgrammeId)
                .col(Members::AccountId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_members_programme_account")
                .table(Members::Table)
                .to_owned(),
        )
        .await
    }
}

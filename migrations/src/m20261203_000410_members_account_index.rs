//! An index on `members.account_id`: the analytics join each account's purchase totals
//! to its member, and without it SQLite's planner may probe the programme's members once
//! per purchase (a million purchases took minutes).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    AccountId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_members_account")
                .table(Members::Table)
                .col(Members::AccountId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_members_account")
                .table(Members::Table)
                .to_owned(),
        )
        .await
    }
}

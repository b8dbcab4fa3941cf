//! Earning rules, their versions, and what each rule awarded.
//!
//! `rules` holds each rule's current definition (the domain's `Rule` as JSON text, plus
//! the columns a purchase filters on). A rule is never deleted: it is deactivated
//! (`active = false`) or ended (`valid_to`). `rule_versions` is append-only: every create
//! and every change writes the full definition again, so an award's breakdown, which
//! names the rule's id and version, can always be explained as the rule was then.
//!
//! `rule_awards` has one row per (rule, purchase) that gave points, written in the
//! purchase's transaction: caps per member per day and month are sums over it, read
//! under the member's account lock, so they hold across server processes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Rules {
    Table,
    Id,
    ProgrammeId,
    Version,
    Active,
    Definition,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RuleVersions {
    Table,
    RuleId,
    Version,
    ProgrammeId,
    Definition,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RuleAwards {
    Table,
    Id,
    ProgrammeId,
    RuleId,
    RuleVersion,
    AccountId,
    EntryId,
    Points,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Rules::Table)
                .col(uuid(Rules::Id).primary_key())
                .col(uuid(Rules::ProgrammeId))
                .col(integer(Rules::Version))
                .col(boolean(Rules::Active))
                .col(text(Rules::Definition))
                .col(timestamp_with_time_zone(Rules::CreatedAt))
                .col(timestamp_with_time_zone(Rules::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_rules_programme")
                .table(Rules::Table)
                .col(Rules::ProgrammeId)
                .col(Rules::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(RuleVersions::Table)
                .col(uuid(RuleVersions::RuleId))
                .col(integer(RuleVersions::Version))
                .col(uuid(RuleVersions::ProgrammeId))
                .col(text(RuleVersions::Definition))
                .col(timestamp_with_time_zone(RuleVersions::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(RuleVersions::RuleId)
                        .col(RuleVersions::Version),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(RuleAwards::Table)
                .col(uuid(RuleAwards::Id).primary_key())
                .col(uuid(RuleAwards::ProgrammeId))
                .col(uuid(RuleAwards::RuleId))
                .col(integer(RuleAwards::RuleVersion))
                .col(uuid(RuleAwards::AccountId))
                .col(uuid(RuleAwards::EntryId))
                .col(big_integer(RuleAwards::Points))
                .col(timestamp_with_time_zone(RuleAwards::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_rule_awards_account_rule_created")
                .table(RuleAwards::Table)
                .col(RuleAwards::AccountId)
                .col(RuleAwards::RuleId)
                .col(RuleAwards::CreatedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RuleAwards::Table.into_iden(),
            RuleVersions::Table.into_iden(),
            Rules::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

//! Campaigns and who each one targets (`app::campaigns`).
//!
//! `campaigns` keeps the campaign's segment, reward and funder as JSON text
//! (`definition`) and the columns purchases and jobs filter or guard on. `budget_used`
//! is the budget's guarded counter: a purchase adds what it awards in its own
//! transaction, under the campaign row's lock and with `budget_used + n <= budget_points`
//! in the UPDATE, so the budget holds across processes.
//!
//! `campaign_members` records each targeted member's group (treatment or control) once:
//! the primary key (campaign_id, member_id) makes a second assignment of the same member
//! a no-op, whichever process evaluates the segment; a win-back reminder is written only
//! for rows that insert actually wrote, so a member hears once per campaign. A purchase
//! reads its member's assignment through the primary key; `ix_campaign_members_group`
//! pages a group's members for `GET /v1/campaigns/{id}/members`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Campaigns {
    Table,
    Id,
    ProgrammeId,
    Name,
    Definition,
    StartsAt,
    EndsAt,
    HoldoutBasisPoints,
    BudgetPoints,
    BudgetUsed,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum CampaignMembers {
    Table,
    CampaignId,
    MemberId,
    ProgrammeId,
    Group,
    AssignedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Campaigns::Table)
                .col(uuid(Campaigns::Id).primary_key())
                .col(uuid(Campaigns::ProgrammeId))
                .col(text(Campaigns::Name))
                .col(text(Campaigns::Definition))
                .col(timestamp_with_time_zone(Campaigns::StartsAt))
                .col(timestamp_with_time_zone(Campaigns::EndsAt))
                .col(integer(Campaigns::HoldoutBasisPoints))
                .col(big_integer(Campaigns::BudgetPoints))
                .col(big_integer(Campaigns::BudgetUsed).default(0))
                .col(timestamp_with_time_zone(Campaigns::CreatedAt))
                .col(timestamp_with_time_zone(Campaigns::UpdatedAt))
                .check(Expr::col(Campaigns::BudgetUsed).gte(0))
                .check(Expr::col(Campaigns::BudgetUsed).lte(Expr::col(Campaigns::BudgetPoints)))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_campaigns_programme_ends")
                .table(Campaigns::Table)
                .col(Campaigns::ProgrammeId)
                .col(Campaigns::EndsAt)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(CampaignMembers::Table)
                .col(uuid(CampaignMembers::CampaignId))
                .col(uuid(CampaignMembers::MemberId))
                .col(uuid(CampaignMembers::ProgrammeId))
                .col(string_len(CampaignMembers::Group, 16))
                .col(timestamp_with_time_zone(CampaignMembers::AssignedAt))
                .primary_key(
                    Index::create()
                        .col(CampaignMembers::CampaignId)
                        .col(CampaignMembers::MemberId),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_campaign_members_group")
                .table(CampaignMembers::Table)
                .col(CampaignMembers::CampaignId)
                .col(CampaignMembers::Group)
                .col(CampaignMembers::MemberId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(CampaignMembers::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Campaigns::Table).to_owned())
            .await
    }
}

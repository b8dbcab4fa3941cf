//! Tiers: a ladder per programme, each member's place on it, its history, and the spend
//! that qualifies members for it.
//!
//! - `tiers`: the ladder. `rank` orders it (higher is better) and is unique per
//!   programme; `qualifying_spend` is in the programme currency's minor units (an integer:
//!   exact, and comparable in SQL); the discount and multiplier are decimal text like every
//!   rate (SQLite REAL would lose digits).
//! - `members.tier_id` is the tier the member qualified for by spend (NULL: none, which is
//!   the ladder's entry tier when one needs no spend); `members.floor_*` is a tier an
//!   operator set by hand until `floor_ends_at`. The effective tier is the higher of the
//!   two while the floor lives (see `app::tiers`).
//! - `tier_history`: every change, newest last, for `GET /v1/members/{id}/tiers`.
//! - `tier_spend_days`: spend per member per UTC day in minor units, net of refunds,
//!   upserted by purchases and refunds. The rolling 12-month spend is a sum over at most
//!   366 rows found by the primary key, on both backends.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tiers {
    Table,
    Id,
    ProgrammeId,
    Name,
    Rank,
    QualifyingSpend,
    DiscountPercent,
    EarnMultiplier,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    TierId,
    FloorTierId,
    FloorReason,
    FloorEndsAt,
}

#[derive(DeriveIden)]
enum TierHistory {
    Table,
    Id,
    ProgrammeId,
    MemberId,
    Kind,
    FromTierId,
    ToTierId,
    EffectiveTierId,
    Reason,
    EndsAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum TierSpendDays {
    Table,
    MemberId,
    Day,
    ProgrammeId,
    Amount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tiers::Table)
                .col(uuid(Tiers::Id).primary_key())
                .col(uuid(Tiers::ProgrammeId))
                .col(string(Tiers::Name))
                .col(integer(Tiers::Rank))
                .col(big_integer(Tiers::QualifyingSpend))
                .col(string(Tiers::DiscountPercent))
                .col(string(Tiers::EarnMultiplier))
                .col(timestamp_with_time_zone(Tiers::CreatedAt))
                .col(timestamp_with_time_zone(Tiers::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_tiers_programme_rank")
                .table(Tiers::Table)
                .col(Tiers::ProgrammeId)
                .col(Tiers::Rank)
                .unique()
                .to_owned(),
        )
        .await?;
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            uuid_null(Members::TierId),
            uuid_null(Members::FloorTierId),
            text_null(Members::FloorReason),
            timestamp_with_time_zone_null(Members::FloorEndsAt),
        ] {
            m.alter_table(
                Table::alter()
                    .table(Members::Table)
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(
            Table::create()
                .table(TierHistory::Table)
                .col(uuid(TierHistory::Id).primary_key())
                .col(uuid(TierHistory::ProgrammeId))
                .col(uuid(TierHistory::MemberId))
                .col(string(TierHistory::Kind))
                .col(uuid_null(TierHistory::FromTierId))
                .col(uuid_null(TierHistory::ToTierId))
                .col(uuid_null(TierHistory::EffectiveTierId))
                .col(text_null(TierHistory::Reason))
                .col(timestamp_with_time_zone_null(TierHistory::EndsAt))
                .col(timestamp_with_time_zone(TierHistory::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_tier_history_member")
                .table(TierHistory::Table)
                .col(TierHistory::MemberId)
                .col(TierHistory::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(TierSpendDays::Table)
                .col(uuid(TierSpendDays::MemberId))
                .col(date(TierSpendDays::Day))
                .col(uuid(TierSpendDays::ProgrammeId))
                .col(big_integer(TierSpendDays::Amount))
                .primary_key(
                    Index::create()
                        .col(TierSpendDays::MemberId)
                        .col(TierSpendDays::Day),
                )
                .to_owned(),
        )
        .await?;
        // Requalification sums a programme's window in one pass.
        m.create_index(
            Index::create()
                .name("ix_tier_spend_days_programme_day")
                .table(TierSpendDays::Table)
                .col(TierSpendDays::ProgrammeId)
                .col(TierSpendDays::Day)
                .to_owned(),
        )
        .await?;
        // Requalification visits the members who hold a tier.
        m.create_index(
            Index::create()
                .name("ix_members_tier")
                .table(Members::Table)
                .col(Members::TierId)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_members_tier")
                .table(Members::Table)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(TierSpendDays::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(TierHistory::Table).to_owned())
            .await?;
        for column in [
            Members::TierId,
            Members::FloorTierId,
            Members::FloorReason,
            Members::FloorEndsAt,
        ] {
            m.alter_table(
                Table::alter()
                    .table(Members::Table)
                    .drop_column(column)
                    .to_owned(),
            )
            .await?;
        }
        m.drop_table(Table::drop().table(Tiers::Table).to_owned())
            .await
    }
}

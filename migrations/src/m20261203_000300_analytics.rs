//! Retention analytics: historical imports and fitted customer-base models.
//!
//! - `members.external_ref`: the partner's or legacy system's customer number, unique per
//!   programme (NULL for members enrolled over the API); imports find or create members
//!   by it.
//! - `purchases.occurred_at`: when an imported purchase really happened (its historical
//!   day); NULL for purchases recorded live, which happened at `created_at`. Analytics
//!   read `COALESCE(occurred_at, created_at)`; settlement and everything else in the
//!   ledger keep reading `created_at`, the moment the row was written.
//! - `clv_models`: BG/NBD and Gamma-Gamma parameters fitted on a programme's (or one
//!   partner's) purchases up to a calibration end day.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    ProgrammeId,
    ExternalRef,
}

#[derive(DeriveIden)]
enum Purchases {
    Table,
    ProgrammeId,
    AccountId,
    OccurredAt,
}

#[derive(DeriveIden)]
enum ClvModels {
    Table,
    Id,
    ProgrammeId,
    PartnerId,
    CalibrationEnd,
    Currency,
    R,
    Alpha,
    A,
    B,
    BgnbdLogLikelihood,
    P,
    Q,
    Gamma,
    GammaGammaLogLikelihood,
    Members,
    RepeatMembers,
    FitMillis,
    FittedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Members::Table)
                .add_column(string_len_null(Members::ExternalRef, 128))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_members_programme_external_ref")
                .table(Members::Table)
                .col(Members::ProgrammeId)
                .col(Members::ExternalRef)
                .unique()
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Purchases::Table)
                .add_column(timestamp_with_time_zone_null(Purchases::OccurredAt))
                .to_owned(),
        )
        .await?;
        // The analytics read a programme's purchases per member.
        m.create_index(
            Index::create()
                .name("ix_purchases_programme_account")
                .table(Purchases::Table)
                .col(Purchases::ProgrammeId)
                .col(Purchases::AccountId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ClvModels::Table)
                .col(uuid(ClvModels::Id).primary_key())
                .col(uuid(ClvModels::ProgrammeId))
                .col(uuid_null(ClvModels::PartnerId))
                .col(date(ClvModels::CalibrationEnd))
                .col(string_len(ClvModels::Currency, 3))
                .col(double(ClvModels::R))
                .col(double(ClvModels::Alpha))
                .col(double(ClvModels::A))
                .col(double(ClvModels::B))
                .col(double(ClvModels::BgnbdLogLikelihood))
                .col(double_null(ClvModels::P))
                .col(double_null(ClvModels::Q))
                .col(double_null(ClvModels::Gamma))
                .col(double_null(ClvModels::GammaGammaLogLikelihood))
                .col(big_integer(ClvModels::Members))
                .col(big_integer(ClvModels::RepeatMembers))
                .col(big_integer(ClvModels::FitMillis))
                .col(timestamp_with_time_zone(ClvModels::FittedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_clv_models_programme")
                .table(ClvModels::Table)
                .col(ClvModels::ProgrammeId)
                .col(ClvModels::Id)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ClvModels::Table).to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("ix_purchases_programme_account")
                .table(Purchases::Table)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Purchases::Table)
                .drop_column(Purchases::OccurredAt)
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name("ux_members_programme_external_ref")
                .table(Members::Table)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Members::Table)
                .drop_column(Members::ExternalRef)
                .to_owned(),
        )
        .await
    }
}

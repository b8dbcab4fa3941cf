//! Two things the economics stand on.
//!
//! `programmes.terms_version` counts changes to what every purchase reads (partner
//! terms, rules, tiers). A change bumps it in the same transaction; every server process
//! keeps those terms in memory and polls this number, so a change made through one
//! process is seen by all within a second.
//!
//! `outbox_events` holds what others must hear about (points about to expire, expired,
//! a tier change…), written in the same transaction as the change that caused it, so
//! nothing is announced that did not happen and nothing that happened is lost. Delivery
//! (webhooks) reads it later; `delivered_at` stays empty until then.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Programmes {
    Table,
    TermsVersion,
}

#[derive(DeriveIden)]
enum OutboxEvents {
    Table,
    Id,
    ProgrammeId,
    EventType,
    Payload,
    CreatedAt,
    DeliveredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Programmes::Table)
                .add_column(big_integer(Programmes::TermsVersion).default(0))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OutboxEvents::Table)
                .col(uuid(OutboxEvents::Id).primary_key())
                .col(uuid(OutboxEvents::ProgrammeId))
                .col(string(OutboxEvents::EventType))
                .col(text(OutboxEvents::Payload))
                .col(timestamp_with_time_zone(OutboxEvents::CreatedAt))
                .col(timestamp_with_time_zone_null(OutboxEvents::DeliveredAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_outbox_programme_created")
                .table(OutboxEvents::Table)
                .col(OutboxEvents::ProgrammeId)
                .col(OutboxEvents::CreatedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OutboxEvents::Table).to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(Programmes::Table)
                .drop_column(Programmes::TermsVersion)
                .to_owned(),
        )
        .await
    }
}

//! Settlement: the price history of partners (a settlement prices points at the price in
//! force when they were posted), stored settlements, and an index that lets a period's
//! postings be read without scanning the whole table.
//!
//! `partner_prices` gets a row whenever a partner is created or its prices change, in the
//! same transaction; existing partners are backfilled with their current prices from
//! their creation (the row's id is the partner's). Prices are canonical decimal text, as
//! everywhere. A settlement is stored whole (its statement as JSON), so reading it again
//! answers the same figures whatever changed since.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PartnerPrices {
    Table,
    Id,
    ProgrammeId,
    PartnerId,
    ValidFrom,
    IssuePricePerPoint,
    RedemptionValuePerPoint,
}

#[derive(DeriveIden)]
enum Settlements {
    Table,
    Id,
    ProgrammeId,
    PeriodStart,
    PeriodEnd,
    Currency,
    Document,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(PartnerPrices::Table)
                .col(uuid(PartnerPrices::Id).primary_key())
                .col(uuid(PartnerPrices::ProgrammeId))
                .col(uuid(PartnerPrices::PartnerId))
                .col(timestamp_with_time_zone(PartnerPrices::ValidFrom))
                .col(string(PartnerPrices::IssuePricePerPoint))
                .col(string(PartnerPrices::RedemptionValuePerPoint))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_partner_prices_programme")
                .table(PartnerPrices::Table)
                .col(PartnerPrices::ProgrammeId)
                .col(PartnerPrices::PartnerId)
                .col(PartnerPrices::ValidFrom)
                .to_owned(),
        )
        .await?;
        m.get_connection()
            .execute_unprepared(
                "INSERT INTO partner_prices \
                   (id, programme_id, partner_id, valid_from, issue_price_per_point, redemption_value_per_point) \
                 SELECT id, programme_id, id, created_at, issue_price_per_point, redemption_value_per_point \
                 FROM partners",
            )
            .await?;
        m.create_table(
            Table::create()
                .table(Settlements::Table)
                .col(uuid(Settlements::Id).primary_key())
                .col(uuid(Settlements::ProgrammeId))
                .col(timestamp_with_time_zone(Settlements::PeriodStart))
                .col(timestamp_with_time_zone(Settlements::PeriodEnd))
                .col(string_len(Settlements::Currency, 3))
                .col(text(Settlements::Document))
                .col(timestamp_with_time_zone(Settlements::CreatedAt))
                .to_owned(),
        )
        .await?;
        // One settlement per start: with the overlap check under the programme's lock,
        // the database itself refuses a second settlement of the same period.
        m.create_index(
            Index::create()
                .name("ux_settlements_programme_start")
                .table(Settlements::Table)
                .col(Settlements::ProgrammeId)
                .col(Settlements::PeriodStart)
                .unique()
                .to_owned(),
        )
        .await?;
        // PostgreSQL: a BRIN index on the posting time is a few pages for millions of
        // rows and nearly free on insert (postings arrive in time order), and lets a
        // period be read as a range of blocks. SQLite has no BRIN: a B-tree there.
        let index = match m.get_database_backend() {
            DatabaseBackend::Postgres => {
                "CREATE INDEX ix_postings_created_brin ON postings USING brin (created_at)"
            }
            _ => {
                "CREATE INDEX ix_postings_programme_created ON postings (programme_id, created_at)"
            }
        };
        m.get_connection().execute_unprepared(index).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let index = match m.get_database_backend() {
            DatabaseBackend::Postgres => "DROP INDEX IF EXISTS ix_postings_created_brin",
            _ => "DROP INDEX IF EXISTS ix_postings_programme_created",
        };
        m.get_connection().execute_unprepared(index).await?;
        m.drop_table(Table::drop().table(Settlements::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(PartnerPrices::Table).to_owned())
            .await
    }
}

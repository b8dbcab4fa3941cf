//! Expiry and its reminders (`app::jobs`).
//!
//! `point_lots.reminder_stage` says which "your points expire on D" reminders a lot has
//! had: 0 none, 1 the 30-day one, 2 the 7-day one. The reminder job raises it with a
//! guarded UPDATE (`... WHERE reminder_stage < n`), so a lot is announced once per stage
//! however many processes run the job at the same moment.
//!
//! `ix_lots_due (reminder_stage, expires_at) WHERE points_remaining > 0` is how both jobs
//! find their work without reading every lot: the expiry job asks for live lots with
//! `reminder_stage IN (0, 1, 2) AND expires_at <= now` (three short ranges), the reminder
//! job for `reminder_stage < n AND expires_at` in the next 30 or 7 days. A lot leaves it
//! when it is emptied (spent or expired), like `ix_lots_live`. It costs one index entry
//! per lot written (BENCHMARKS.md, "Expiry").

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointLots {
    Table,
    ReminderStage,
    PointsRemaining,
    ExpiresAt,
}

const INDEX: &str = "ix_lots_due";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PointLots::Table)
                .add_column(integer(PointLots::ReminderStage).default(0))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name(INDEX)
                .table(PointLots::Table)
                .col(PointLots::ReminderStage)
                .col(PointLots::ExpiresAt)
                .and_where(Expr::col(PointLots::PointsRemaining).gt(0))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name(INDEX).table(PointLots::Table).to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table(PointLots::Table)
                .drop_column(PointLots::ReminderStage)
                .to_owned(),
        )
        .await
    }
}

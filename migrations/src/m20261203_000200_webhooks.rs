//! Outbound webhooks (`app::webhooks`).
//!
//! `webhook_endpoints`: a subscriber's URL, the event types it wants and its signing
//! secret (`whsec_…`; kept as is, since signing needs it, and never shown again after
//! creation or rotation). `partner_id` is empty for the operator's endpoints. During a
//! rotation's overlap the previous secret signs too.
//!
//! `webhook_deliveries`: one row per message and endpoint, written when an outbox event
//! is fanned out; the unique (endpoint_id, message_id) makes a second fan-out of the
//! same event a no-op, whichever process does it. `message_id` is the outbox event's id
//! and the `webhook-id` header, the same on every attempt. `next_attempt_at` is when the
//! message is due (while a worker sends it, the end of its lease); the partial index
//! `ix_webhook_deliveries_due` is how workers find due messages. `lease_token` is set by
//! the claim a worker sends under and cleared when it records the answer (or a
//! redelivery resets the message): the answer is recorded only under the same token.
//!
//! `outbox_events.delivered_at` now means "fanned out to the deliveries": the partial
//! index `ix_outbox_pending` finds the events not yet handed over.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    ProgrammeId,
    PartnerId,
    Url,
    Events,
    Secret,
    PreviousSecret,
    PreviousSecretExpiresAt,
    Status,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    ProgrammeId,
    EndpointId,
    MessageId,
    EventType,
    Status,
    Attempts,
    NextAttemptAt,
    LastAttemptAt,
    LastStatusCode,
    LastError,
    LeaseToken,
    DeliveredAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OutboxEvents {
    Table,
    CreatedAt,
    DeliveredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(WebhookEndpoints::Table)
                .col(uuid(WebhookEndpoints::Id).primary_key())
                .col(uuid(WebhookEndpoints::ProgrammeId))
                .col(uuid_null(WebhookEndpoints::PartnerId))
                .col(text(WebhookEndpoints::Url))
                .col(text(WebhookEndpoints::Events))
                .col(text(WebhookEndpoints::Secret))
                .col(text_null(WebhookEndpoints::PreviousSecret))
                .col(timestamp_with_time_zone_null(
                    WebhookEndpoints::PreviousSecretExpiresAt,
                ))
                .col(string_len(WebhookEndpoints::Status, 16))
                .col(text_null(WebhookEndpoints::DisabledReason))
                .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_endpoints_programme")
                .table(WebhookEndpoints::Table)
                .col(WebhookEndpoints::ProgrammeId)
                .col(WebhookEndpoints::Id)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(WebhookDeliveries::Table)
                .col(uuid(WebhookDeliveries::Id).primary_key())
                .col(uuid(WebhookDeliveries::ProgrammeId))
                .col(uuid(WebhookDeliveries::EndpointId))
                .col(uuid(WebhookDeliveries::MessageId))
                .col(string(WebhookDeliveries::EventType))
                .col(string_len(WebhookDeliveries::Status, 16))
                .col(integer(WebhookDeliveries::Attempts).default(0))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::NextAttemptAt,
                ))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::LastAttemptAt,
                ))
                .col(integer_null(WebhookDeliveries::LastStatusCode))
                .col(text_null(WebhookDeliveries::LastError))
                .col(uuid_null(WebhookDeliveries::LeaseToken))
                .col(timestamp_with_time_zone_null(
                    WebhookDeliveries::DeliveredAt,
                ))
                .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_webhook_deliveries_message")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::EndpointId)
                .col(WebhookDeliveries::MessageId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_deliveries_endpoint")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::EndpointId)
                .col(WebhookDeliveries::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_webhook_deliveries_due")
                .table(WebhookDeliveries::Table)
                .col(WebhookDeliveries::NextAttemptAt)
                .and_where(Expr::col(WebhookDeliveries::Status).eq("pending"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_outbox_pending")
                .table(OutboxEvents::Table)
                .col(OutboxEvents::CreatedAt)
                .and_where(Expr::col(OutboxEvents::DeliveredAt).is_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_outbox_pending")
                .table(OutboxEvents::Table)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(WebhookEndpoints::Table).to_owned())
            .await
    }
}

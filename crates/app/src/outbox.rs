//! The outbox: what others must hear about, written in the same transaction as the
//! change that caused it (see the migration `m20261125_000001_terms_and_outbox`).
//! Webhooks (`crate::webhooks`) hand each event to the endpoints that hear it and then
//! set `delivered_at`: "handed over to delivery", not "received".

use crate::error::{AppError, AppResult};
use coalition_store::entities::outbox_event;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use uuid::Uuid;

/// The event types, as webhook subscribers will see them.
pub mod events {
    pub const POINTS_EXPIRING: &str = "points.expiring";
    pub const POINTS_EXPIRED: &str = "points.expired";
    pub const TIER_CHANGED: &str = "tier.changed";
    /// Win-back: "we miss you", once per treated member of a lapsed-segment campaign.
    pub const CAMPAIGN_REMINDER: &str = "campaign.reminder";
    /// What a bank card event did (`bank::process_event`'s answer, with the bank).
    pub const BANK_EVENT_PROCESSED: &str = "bank_event.processed";
}

/// Appends an event; call it with the transaction that makes the change.
pub async fn append(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    event_type: &str,
    data: serde_json::Value,
) -> AppResult<Uuid> {
    let id = Uuid::now_v7();
    let payload = serde_json::to_string(&data).map_err(|e| AppError::Internal(e.to_string()))?;
    outbox_event::Entity::insert(outbox_event::ActiveModel {
        id: Set(id),
        programme_id: Set(programme_id),
        event_type: Set(event_type.to_owned()),
        payload: Set(payload),
        created_at: Set(chrono::Utc::now()),
        delivered_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(id)
}

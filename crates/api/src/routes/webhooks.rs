//! Outbound webhooks (admin, partner, bank: each its own endpoints). Messages are signed
//! as Standard Webhooks; see `coalition_app::webhooks` for delivery and
//! `coalition_domain::webhooks` for who hears what.

use super::*;
use crate::extract::{
    list_params, path_id, Auth, JsonBody, ListParams, OptionalJsonBody, PathText,
};
use crate::problem::Problem;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use chrono::{DateTime, Utc};
use coalition_app::webhooks::{self, Endpoint};
use coalition_app::App;
use coalition_store::entities::webhook_delivery;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Subscribe an endpoint to events. The signing secret (`whsec_…`) is shown once.
/// Purchases and refunds reach a new subscription within a second (every server process
/// learns of it through the terms snapshot).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), request_body = NewWebhookRequest,
    responses((status = 201, body = NewWebhookResponse, headers(("Location" = String, description = "/v1/webhooks/{id}"))),
        (status = 422, body = Problem, content_type = "application/problem+json",
         description = "validation_failed: `url` (not https, a private address, credentials in it) or `events` (unknown, or an operator-only event asked by a partner)")))]
pub async fn create_webhook(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewWebhookRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let made = webhooks::create(&app, &caller, &b.url, &b.events).await?;
    let body = NewWebhookResponse {
        webhook: response(&made.endpoint),
        secret: made.secret,
    };
    let mut answer = created(format!("/v1/webhooks/{}", made.endpoint.id), body);
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}

/// The caller's endpoints, oldest first (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = WebhookList),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_webhooks(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<WebhookList>> {
    let page = webhooks::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(WebhookList {
        data: page.data.iter().map(response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One of the caller's endpoints (another subscriber's is a 404).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = WebhookResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_webhook(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<WebhookResponse>> {
    let e = webhooks::get(&app, &caller, path_id(&id, "webhook")?).await?;
    Ok(Json(response(&e)))
}

/// Delete an endpoint and its delivery log; messages on their way to it stop.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_webhook(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<StatusCode> {
    webhooks::delete(&app, &caller, path_id(&id, "webhook")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown once. The previous one keeps signing beside it (a second
/// signature in `webhook-signature`) for `overlap_seconds` (default 3600; 0: at once).
/// The body is optional: none at all is `{}`.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    request_body(content = RotateWebhookSecretRequest, description = "Optional: no body is `{}`."),
    responses((status = 200, body = NewWebhookResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_webhook_secret(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    OptionalJsonBody(body): OptionalJsonBody<RotateWebhookSecretRequest>,
) -> ApiResult<Response> {
    let id = path_id(&id, "webhook")?;
    let made = webhooks::rotate_secret(&app, &caller, id, body.value.overlap_seconds).await?;
    let mut answer = Json(NewWebhookResponse {
        webhook: response(&made.endpoint),
        secret: made.secret,
    })
    .into_response();
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}

/// Stop sending to an endpoint; its messages wait (and new events are not queued for it)
/// until it is enabled again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/disable", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = WebhookResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn disable_webhook(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<WebhookResponse>> {
    let e = webhooks::set_enabled(&app, &caller, path_id(&id, "webhook")?, false).await?;
    Ok(Json(response(&e)))
}

/// Send to an endpoint again (after its owner or a failure disabled it): its pending
/// messages resume on their schedule.
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = WebhookResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn enable_webhook(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<WebhookResponse>> {
    let e = webhooks::set_enabled(&app, &caller, path_id(&id, "webhook")?, true).await?;
    Ok(Json(response(&e)))
}

/// The endpoint's delivery log, newest first: one entry per message.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), ListParams),
    responses((status = 200, body = DeliveryList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_deliveries(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<DeliveryList>> {
    let id = path_id(&id, "webhook")?;
    let page = webhooks::deliveries(&app, &caller, id, list_params(query.as_deref())?).await?;
    Ok(Json(DeliveryList {
        data: page.data.iter().map(delivery).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Send a message again now, with the same `webhook-id` and a fresh retry schedule
/// (`attempts` starts over). An endpoint that is disabled gets it once enabled. A message
/// being sent right now cannot be reset under its sender (409 `delivery_in_flight`): its
/// attempt ends within the delivery timeout, and `next_attempt_at` says when the sender's
/// lease runs out at the latest.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = DeliveryResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "delivery_in_flight: a delivery worker is sending this message right now (its lease has not run out); look at the log again in a moment")))]
pub async fn redeliver(
    State(app): State<App>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    let not_found = || crate::problem::ApiError::App(coalition_app::AppError::NotFound("delivery"));
    let Path((id, delivery_id)) = path.map_err(|_| not_found())?;
    let id = path_id(&id, "webhook")?;
    let delivery_id = path_id(&delivery_id, "delivery")?;
    let d = webhooks::redeliver(&app, &caller, id, delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery(&d))).into_response())
}

fn response(e: &Endpoint) -> WebhookResponse {
    WebhookResponse {
        id: e.id,
        url: e.url.clone(),
        events: e.events.clone(),
        status: e.status.clone(),
        disabled_reason: e.disabled_reason.clone(),
        previous_secret_valid_until: e.previous_secret_expires_at,
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

fn delivery(d: &webhook_delivery::Model) -> DeliveryResponse {
    DeliveryResponse {
        id: d.id,
        message_id: d.message_id,
        event: d.event_type.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        next_attempt_at: d.next_attempt_at.filter(|_| d.status == "pending"),
        last_attempt_at: d.last_attempt_at,
        delivered_at: d.delivered_at,
        created_at: d.created_at,
    }
}

/// A subscription: where to send which events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookRequest {
    #[schema(schema_with = crate::fields::webhook_url)]
    pub url: String,
    #[schema(schema_with = crate::fields::webhook_events)]
    pub events: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateWebhookSecretRequest {
    /// Seconds the previous secret keeps signing beside the new one, 0–604800 (default 3600).
    #[schema(minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Why it is disabled: by its owner, a `410 Gone`, or a message that failed every attempt.
    pub disabled_reason: Option<String>,
    /// While a rotated-out secret still signs: until when.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewWebhookResponse {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// `whsec_` + base64 of 32 random bytes: the HMAC-SHA256 key is the decoded bytes.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookResponse>,
    pub next_cursor: Option<String>,
}

/// One message to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// The delivery (for `…/deliveries/{delivery_id}/redeliver`).
    pub id: Uuid,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    pub message_id: Uuid,
    /// The event type.
    pub event: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// Attempts made (since the last redelivery).
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    /// A short excerpt of the last failure: the answer's body or the connection error.
    pub last_error: Option<String>,
    /// When it is tried next (pending only); while a worker is sending it, when that
    /// worker's lease runs out.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryResponse>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(disable_webhook))
        .routes(routes!(enable_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

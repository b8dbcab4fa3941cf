//! POS holds at the till: reserve points, then capture (a reward, or the purchase they
//! pay for) or void them; an uncaptured hold lapses by itself.

use super::*;
use crate::extract::{idempotency_key, path_id, Auth, JsonBody, PathText};
use crate::problem::Problem;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::holds::{self, Held, HoldRow};
use coalition_app::App;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// A hold as answered. `status` is as of the answer: a hold whose time passed is
/// `expired` even before its points were released.
fn hold_response(h: &HoldRow, status: &str) -> HoldResponse {
    HoldResponse {
        id: h.id,
        status: status.to_owned(),
        points: h.points,
        card_number: coalition_app::cards::mask(&h.card_number),
        partner_id: h.partner_id,
        expires_at: h.expires_at,
        purchase_id: h.purchase_id,
        created_at: h.created_at,
        resolved_at: h.resolved_at,
        balance: None,
        held_points: None,
        available_points: None,
        purchase: None,
    }
}

/// The answer to a change: the hold, the account after it, and any purchase recorded.
fn changed_response(held: &Held) -> HoldResponse {
    let account = held.account;
    let mut body = hold_response(&held.hold, &held.hold.status);
    body.balance = Some(account.balance);
    body.held_points = Some(account.held);
    body.available_points = Some(account.balance - account.held);
    body.purchase = held.purchase.as_ref().map(|r| {
        let (p, priced) = (&r.purchase, &r.priced);
        HoldPurchaseResponse {
            id: p.id,
            external_ref: p.external_ref.clone(),
            amount: money(priced.amount.amount, &p.currency),
            discount: money(priced.outcome.discount, &p.currency),
            payable: money(priced.outcome.payable, &p.currency),
            points_earned: p.points_earned,
            points_redeemed: p.points_redeemed,
            breakdown: breakdown(&priced.outcome.breakdown),
        }
    });
    body
}

/// Reserve points on a card at the till (partner; Idempotency-Key required).
#[utoipa::path(post, path = "/v1/redemptions", tag = "redemptions", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header)), request_body = HoldRequest,
    responses((status = 201, body = HoldResponse), (status = 400, body = Problem), (status = 404, body = Problem, description = "unknown card"),
        (status = 409, body = Problem, description = "card_blocked, card_replaced, insufficient_points"),
        (status = 422, body = Problem, description = "validation_failed, idempotency_key_reused")))]
pub async fn create_hold(
    State(app): State<App>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: JsonBody<HoldRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&caller, &headers, "redemption", &body.canonical)?;
    let input = holds::NewHold {
        card_number: body.value.card_number,
        points: body.value.points,
    };
    let answer = holds::create(&app, &caller, input, &key, |held| {
        let location = format!("/v1/redemptions/{}", held.hold.id);
        stored(StatusCode::CREATED, &changed_response(held), Some(location))
    })
    .await?;
    Ok(replay(answer))
}

/// A hold (the partner that made it, or admin).
#[utoipa::path(get, path = "/v1/redemptions/{id}", tag = "redemptions", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = HoldResponse), (status = 404, body = Problem)))]
pub async fn get_hold(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<HoldResponse>> {
    let hold = holds::get(&app, &caller, path_id(&id, "hold")?).await?;
    let status = holds::status_at(&hold, Utc::now());
    Ok(Json(hold_response(&hold, status)))
}

/// Capture a hold: `{}` takes the points alone (a reward); `{"purchase": …}` records the
/// purchase they pay for, which earns on the remainder (the partner that made the hold;
/// Idempotency-Key required).
#[utoipa::path(post, path = "/v1/redemptions/{id}/capture", tag = "redemptions", security(("bearer" = [])),
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)), request_body = CaptureRequest,
    responses((status = 200, body = HoldResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "hold_not_held (captured or voided already), hold_expired, card_blocked, card_replaced, duplicate_external_ref"),
        (status = 422, body = Problem, description = "validation_failed, currency_mismatch, redemption_exceeds_amount, idempotency_key_reused")))]
pub async fn capture_hold(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    headers: HeaderMap,
    body: JsonBody<CaptureRequest>,
) -> ApiResult<Response> {
    let hold_id = path_id(&id, "hold")?;
    let operation = format!("capture {hold_id}");
    let key = idempotency_key(&caller, &headers, &operation, &body.canonical)?;
    let purchase = body.value.purchase.map(|p| holds::CapturePurchase {
        amount: p.amount.amount,
        currency: p.amount.currency,
        external_ref: p.external_ref,
        store_ref: p.store_ref,
        staff_ref: p.staff_ref,
        categories: p.categories,
    });
    let answer = holds::capture(&app, &caller, hold_id, purchase, &key, |held| {
        stored(StatusCode::OK, &changed_response(held), None)
    })
    .await?;
    Ok(replay(answer))
}

/// Void a hold: its points are free again (the partner that made it; Idempotency-Key
/// required; no body).
#[utoipa::path(post, path = "/v1/redemptions/{id}/void", tag = "redemptions", security(("bearer" = [])),
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 200, body = HoldResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "hold_not_held (captured or voided already), hold_expired"),
        (status = 422, body = Problem, description = "idempotency_key_reused")))]
pub async fn void_hold(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let hold_id = path_id(&id, "hold")?;
    let key = idempotency_key(&caller, &headers, &format!("void {hold_id}"), "")?;
    let answer = holds::void(&app, &caller, hold_id, &key, |held| {
        stored(StatusCode::OK, &changed_response(held), None)
    })
    .await?;
    Ok(replay(answer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    #[schema(schema_with = crate::fields::card_number)]
    pub card_number: String,
    /// Points to reserve; at most what the card's account can spend now.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub points: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// The purchase the held points pay for; absent to take the points alone (a reward).
    pub purchase: Option<CapturePurchaseRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePurchaseRequest {
    #[schema(schema_with = crate::fields::amount)]
    pub amount: MoneyDto,
    /// The partner's own reference (receipt number); unique per partner.
    #[schema(schema_with = crate::fields::reference)]
    pub external_ref: String,
    #[schema(schema_with = crate::fields::optional_reference)]
    pub store_ref: Option<String>,
    #[schema(schema_with = crate::fields::optional_reference)]
    pub staff_ref: Option<String>,
    /// Category tags of what was bought (at most 20, each 1 to 100 characters), for
    /// earning rules with `purchase_categories`.
    #[schema(max_items = 20)]
    pub categories: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldResponse {
    pub id: Uuid,
    /// `held`, `captured`, `voided` or `expired`.
    pub status: String,
    pub points: i64,
    /// The card's last four digits.
    pub card_number: String,
    /// The partner that made the hold.
    pub partner_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// The purchase a capture recorded.
    pub purchase_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// When the hold was captured, voided or released after it lapsed.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The member's points after this change (answers to create, capture and void).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// Points reserved by the account's live holds after this change (a lapsed hold reserves nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_points: Option<i64>,
    /// Points spendable after this change: `balance - held_points`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_points: Option<i64>,
    /// The purchase a capture recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase: Option<HoldPurchaseResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldPurchaseResponse {
    pub id: Uuid,
    pub external_ref: String,
    pub amount: MoneyDto,
    /// The value of the held points, taken off the bill.
    pub discount: MoneyDto,
    /// What the member still pays; points are earned on it.
    pub payable: MoneyDto,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub breakdown: Vec<BreakdownLineDto>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_hold))
        .routes(routes!(get_hold))
        .routes(routes!(capture_hold))
        .routes(routes!(void_hold))
}

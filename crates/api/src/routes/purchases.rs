//! Purchases at the till: quote, record, look up, refund.

use super::*;
use crate::extract::{idempotency_key, path_id, Auth, JsonBody, PathText};
use crate::problem::Problem;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::App;
use coalition_app::{purchases, refunds};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

fn new_purchase(b: PurchaseRequest) -> purchases::NewPurchase {
    purchases::NewPurchase {
        card_number: b.card_number,
        amount: b.amount.amount,
        currency: b.amount.currency,
        external_ref: b.external_ref,
        redeem_points: b.redeem_points,
        store_ref: b.store_ref,
        staff_ref: b.staff_ref,
        categories: b.categories,
    }
}

/// The money a priced purchase takes off the bill, in the answer's shape.
fn bill(o: &coalition_domain::earning::PurchaseOutcome, currency: &str) -> Bill {
    Bill {
        tier_discount: money(o.tier_discount, currency),
        points_discount: money(o.points_discount, currency),
        discount: money(o.discount, currency),
        payable: money(o.payable, currency),
    }
}

/// What `POST /v1/purchases` would do, without doing it (partner).
#[utoipa::path(post, path = "/v1/purchases/quote", tag = "purchases", security(("bearer" = [])), request_body = PurchaseRequest,
    responses((status = 200, body = QuoteResponse), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn quote_purchase(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<PurchaseRequest>,
) -> ApiResult<Json<QuoteResponse>> {
    let p = purchases::quote(&app, &caller, new_purchase(body.value)).await?;
    let currency = p.amount.currency.to_string();
    Ok(Json(QuoteResponse {
        card_number: p.card.number.clone(),
        amount: money(p.amount.amount, &currency),
        bill: bill(&p.outcome, &currency),
        points_earned: p.outcome.points_earned,
        points_redeemed: p.outcome.points_redeemed,
        breakdown: breakdown(&p.outcome.breakdown),
        balance: p.balance,
        held_points: p.held,
        available_points: p.balance - p.held,
    }))
}

/// Record a purchase by card number (partner; Idempotency-Key required).
#[utoipa::path(post, path = "/v1/purchases", tag = "purchases", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header)), request_body = PurchaseRequest,
    responses((status = 201, body = PurchaseResponse), (status = 400, body = Problem), (status = 404, body = Problem, description = "unknown card"),
        (status = 409, body = Problem, description = "card_blocked, card_replaced, insufficient_points, duplicate_external_ref"),
        (status = 413, body = Problem), (status = 422, body = Problem, description = "validation_failed, currency_mismatch, redemption_exceeds_amount, idempotency_key_reused")))]
pub async fn record_purchase(
    State(app): State<App>,
    Auth(caller): Auth,
    headers: HeaderMap,
    body: JsonBody<PurchaseRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&caller, &headers, "purchase", &body.canonical)?;
    let answer = purchases::record(&app, &caller, new_purchase(body.value), &key, |r| {
        let (p, priced) = (&r.purchase, &r.priced);
        let body = PurchaseResponse {
            id: p.id,
            partner_id: p.partner_id,
            card_number: p.card_number.clone(),
            member_id: priced.card.member_id,
            external_ref: p.external_ref.clone(),
            amount: money(priced.amount.amount, &p.currency),
            bill: bill(&priced.outcome, &p.currency),
            points_earned: p.points_earned,
            points_redeemed: p.points_redeemed,
            breakdown: breakdown(&priced.outcome.breakdown),
            balance: priced.balance,
            held_points: priced.held,
            available_points: priced.balance - priced.held,
            created_at: p.created_at,
        };
        stored(
            StatusCode::CREATED,
            &body,
            Some(format!("/v1/purchases/{}", p.id)),
        )
    })
    .await?;
    Ok(replay(answer))
}

fn refund_response(
    r: &coalition_app::refunds::RefundRow,
    currency: &str,
    balance: Option<i64>,
) -> RefundResponse {
    RefundResponse {
        id: r.id,
        purchase_id: r.purchase_id,
        amount: stored_money(&r.amount, currency),
        points_clawed_back: r.points_clawed_back,
        points_returned: r.points_returned,
        points_shortfall: r.points_shortfall,
        balance,
        created_at: r.created_at,
    }
}

/// A purchase and its refunds (the recording partner, or admin).
#[utoipa::path(get, path = "/v1/purchases/{id}", tag = "purchases", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PurchaseDetail), (status = 404, body = Problem)))]
pub async fn get_purchase(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<PurchaseDetail>> {
    let (p, refund_rows) = purchases::get(&app, &caller, path_id(&id, "purchase")?).await?;
    let c = p.currency.as_str();
    Ok(Json(PurchaseDetail {
        id: p.id,
        partner_id: p.partner_id,
        card_number: p.card_number.clone(),
        external_ref: p.external_ref.clone(),
        store_ref: p.store_ref.clone(),
        staff_ref: p.staff_ref.clone(),
        amount: stored_money(&p.amount, c),
        discount: stored_money(&p.discount, c),
        refunded: stored_money(&p.refunded_amount, c),
        points_earned: p.points_earned,
        points_redeemed: p.points_redeemed,
        points_clawed_back: p.points_clawed_back,
        points_returned: p.points_returned,
        refunds: refund_rows
            .iter()
            .map(|r| refund_response(r, c, None))
            .collect(),
        created_at: p.created_at,
    }))
}

/// Refund a purchase fully or in part (the recording partner; Idempotency-Key required).
#[utoipa::path(post, path = "/v1/purchases/{id}/refunds", tag = "purchases", security(("bearer" = [])),
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)), request_body = RefundRequest,
    responses((status = 201, body = RefundResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "refund_exceeds_remaining"), (status = 422, body = Problem)))]
pub async fn refund_purchase(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    headers: HeaderMap,
    body: JsonBody<RefundRequest>,
) -> ApiResult<Response> {
    let purchase_id = path_id(&id, "purchase")?;
    let key = idempotency_key(
        &caller,
        &headers,
        &format!("refund {purchase_id}"),
        &body.canonical,
    )?;
    let m = body.value.amount;
    let answer = refunds::refund(
        &app,
        &caller,
        purchase_id,
        m.amount,
        m.currency,
        &key,
        |r| {
            let location = format!("/v1/purchases/{}", r.refund.purchase_id);
            stored(
                StatusCode::CREATED,
                &refund_response(&r.refund, &r.currency, Some(r.balance)),
                Some(location),
            )
        },
    )
    .await?;
    Ok(replay(answer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    #[schema(schema_with = crate::fields::card_number)]
    pub card_number: String,
    #[schema(schema_with = crate::fields::amount)]
    pub amount: MoneyDto,
    /// The partner's own reference (receipt number); unique per partner.
    #[schema(schema_with = crate::fields::reference)]
    pub external_ref: String,
    /// Points to pay with; they are worth the programme's point value each, and together
    /// must be worth a whole number of the currency's minor unit.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub redeem_points: Option<i64>,
    #[schema(schema_with = crate::fields::optional_reference)]
    pub store_ref: Option<String>,
    #[schema(schema_with = crate::fields::optional_reference)]
    pub staff_ref: Option<String>,
    /// Category tags of what was bought (at most 20, each 1 to 100 characters), for
    /// earning rules with `purchase_categories`.
    #[schema(schema_with = crate::fields::purchase_categories)]
    pub categories: Option<Vec<String>>,
}

/// What comes off the bill. `tier_discount`: the member's tier's percent of the amount,
/// rounded half away from zero to the currency's minor unit; `points_discount`: what the
/// redeemed points are worth; `discount`: their sum; `payable`: amount − discount, what
/// the member pays and what earns points.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bill {
    pub tier_discount: MoneyDto,
    pub points_discount: MoneyDto,
    pub discount: MoneyDto,
    pub payable: MoneyDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteResponse {
    pub card_number: String,
    pub amount: MoneyDto,
    #[serde(flatten)]
    pub bill: Bill,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub breakdown: Vec<BreakdownLineDto>,
    /// The member's points after the purchase.
    pub balance: i64,
    /// Of those, the points reserved by live POS holds.
    pub held_points: i64,
    /// Spendable after the purchase: `balance - held_points`.
    pub available_points: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseResponse {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub card_number: String,
    pub member_id: Option<Uuid>,
    pub external_ref: String,
    pub amount: MoneyDto,
    #[serde(flatten)]
    pub bill: Bill,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub breakdown: Vec<BreakdownLineDto>,
    /// The member's points after the purchase.
    pub balance: i64,
    /// Of those, the points reserved by live POS holds. `balance`, `held_points` and
    /// `available_points` stay together in this order (PostgreSQL fills them in).
    pub held_points: i64,
    /// Spendable after the purchase: `balance - held_points`.
    pub available_points: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseDetail {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub card_number: String,
    pub external_ref: String,
    pub store_ref: Option<String>,
    pub staff_ref: Option<String>,
    pub amount: MoneyDto,
    pub discount: MoneyDto,
    pub refunded: MoneyDto,
    pub points_earned: i64,
    pub points_redeemed: i64,
    pub points_clawed_back: i64,
    pub points_returned: i64,
    pub refunds: Vec<RefundResponse>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The part of the purchase amount refunded (at most what is left).
    #[schema(schema_with = crate::fields::amount)]
    pub amount: MoneyDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundResponse {
    pub id: Uuid,
    pub purchase_id: Uuid,
    pub amount: MoneyDto,
    /// Earned points taken back.
    pub points_clawed_back: i64,
    /// Spent points given back.
    pub points_returned: i64,
    /// Earned points that could not be taken back because the member had spent them.
    pub points_shortfall: i64,
    /// The member's points after the refund (absent when listed on a purchase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    pub created_at: DateTime<Utc>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(quote_purchase))
        .routes(routes!(record_purchase))
        .routes(routes!(get_purchase))
        .routes(routes!(refund_purchase))
}

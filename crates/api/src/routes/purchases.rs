//! Purchases at the till: quote, record, look up, refund.

use super::*;
use crate::extract::{
    form_urldecode, idempotency_key, list_params, path_id, Auth, JsonBody, ListParams, PathText,
};
use crate::problem::{validation, Problem};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::{purchases, refunds};
use coalition_app::{App, FieldError};
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

/// Purchases with their refunds, oldest first: a partner's own, or (admin) the
/// programme's, of one partner with `partner_id`. A till that lost an answer finds its
/// purchase with `external_ref`.
#[utoipa::path(get, path = "/v1/purchases", tag = "purchases", security(("bearer" = [])), params(PurchaseListParams, ListParams),
    responses((status = 200, body = PurchaseList), (status = 422, body = Problem)))]
pub async fn list_purchases(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<PurchaseList>> {
    let page = list_params(query.as_deref())?;
    let filter = purchase_filter(query.as_deref())?;
    let page = purchases::list(&app, &caller, filter, page).await?;
    Ok(Json(PurchaseList {
        data: page
            .data
            .into_iter()
            .map(|(p, refunds)| purchase_detail(&p, &refunds))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `external_ref` and `partner_id` from a query string (form-urldecoded, as `limit`).
fn purchase_filter(query: Option<&str>) -> ApiResult<purchases::PurchaseFilter> {
    let mut filter = purchases::PurchaseFilter::default();
    let mut errors = vec![];
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (
            form_urldecode(name.as_bytes()),
            form_urldecode(value.as_bytes()),
        );
        match (name.as_deref(), value) {
            (Some("external_ref"), Some(v))
                if !v.trim().is_empty()
                    && v.chars().count() <= 128
                    && !v.chars().any(char::is_control) =>
            {
                filter.external_ref = Some(v.trim().to_owned())
            }
            (Some("external_ref"), _) => errors.push(FieldError::new(
                "external_ref",
                "must be 1 to 128 characters, not all white space, no control characters",
            )),
            (Some("partner_id"), v) => match v.as_deref().map(Uuid::parse_str) {
                Some(Ok(id)) => filter.partner_id = Some(id),
                _ => errors.push(FieldError::new("partner_id", "must be a partner id")),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(validation(errors))
    }
}

fn purchase_detail(
    p: &purchases::PurchaseRow,
    refund_rows: &[purchases::RefundRow],
) -> PurchaseDetail {
    let c = p.currency.as_str();
    PurchaseDetail {
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
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurchaseListParams {
    /// Only the purchase(s) recorded with this reference.
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1F\x7F-\x9F]*[^\x00-\x1F\x7F-\x9F\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00-\x1F\x7F-\x9F]*$"
    )]
    pub external_ref: Option<String>,
    /// Admin: only this partner's purchases. A partner sees its own only.
    pub partner_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseList {
    pub data: Vec<PurchaseDetail>,
    pub next_cursor: Option<String>,
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
    Ok(Json(purchase_detail(&p, &refund_rows)))
}

/// Refund a purchase fully or in part (the recording partner; Idempotency-Key required).
#[utoipa::path(post, path = "/v1/purchases/{id}/refunds", tag = "purchases", security(("bearer" = [])),
    params(("id" = String, Path), ("Idempotency-Key" = String, Header)), request_body = RefundRequest,
    responses((status = 201, body = RefundResponse), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "refund_exceeds_remaining: more than is left to refund; imported_purchase_not_refundable: the purchase was imported from history (no card), it cannot be refunded"), (status = 422, body = Problem)))]
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
        .routes(routes!(record_purchase, list_purchases))
        .routes(routes!(get_purchase))
        .routes(routes!(refund_purchase))
}

//! Cards: issue, look up, register, block, replace.

use super::*;
use crate::extract::{idempotency_key, Auth, JsonBody, PathText};
use crate::problem::Problem;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::App;
use coalition_app::{balances, cards};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// A card number from a path. Digits that cannot be a card number (a typo the check
/// digit catches, a digit too many) are a validation error naming `number`; anything
/// else in the path names no card at all (404, as any unknown path segment).
fn card_path(number: String) -> ApiResult<String> {
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        cards::valid_number("number", &number)?;
    }
    Ok(number)
}

fn card_response(c: &cards::CardRow) -> CardResponse {
    CardResponse {
        id: c.id,
        number: c.number.clone(),
        kind: c.kind.clone(),
        status: c.status.clone(),
        member_id: c.member_id,
        created_at: c.created_at,
    }
}

/// Issue a card (admin, partner): registered with `member_id`, bearer without.
#[utoipa::path(post, path = "/v1/cards", tag = "cards", security(("bearer" = [])), request_body = NewCardRequest,
    responses((status = 201, body = CardResponse), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn issue_card(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewCardRequest>,
) -> ApiResult<Response> {
    let card = cards::issue(&app, &caller, body.value.member_id).await?;
    Ok(created(
        format!("/v1/cards/{}", card.number),
        card_response(&card),
    ))
}

/// One card by its number (admin, partner).
#[utoipa::path(get, path = "/v1/cards/{number}", tag = "cards", security(("bearer" = [])), params(("number" = String, Path)),
    responses((status = 200, body = CardResponse), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn get_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(number): PathText,
) -> ApiResult<Json<CardResponse>> {
    let number = card_path(number)?;
    Ok(Json(card_response(
        &cards::get(&app, &caller, &number).await?,
    )))
}

/// The till's balance inquiry (any partner of the programme, admin): the points behind a
/// card and their value. The card is the credential: nothing says whose card it is.
#[utoipa::path(get, path = "/v1/cards/{number}/balance", tag = "cards", security(("bearer" = [])), params(("number" = String, Path)),
    responses((status = 200, body = CardBalanceResponse), (status = 404, body = Problem), (status = 422, body = Problem),
        (status = 409, body = Problem, description = "card_blocked, card_replaced")))]
pub async fn card_balance(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(number): PathText,
) -> ApiResult<Json<CardBalanceResponse>> {
    let number = card_path(number)?;
    let view = balances::card_balance(&app, &caller, &number).await?;
    Ok(Json(CardBalanceResponse {
        points: view.points,
        held_points: view.held_points,
        available_points: view.available_points,
        value: MoneyDto::new(view.value, &view.currency),
        pending_points: view.pending_points,
        expiring_soon: super::members::expiring_soon(view.expiring_soon),
    }))
}

/// Register a bearer card to a member; its points move with it (Idempotency-Key required).
#[utoipa::path(post, path = "/v1/cards/{number}/register", tag = "cards", security(("bearer" = [])),
    params(("number" = String, Path), ("Idempotency-Key" = String, Header)), request_body = RegisterCardRequest,
    responses((status = 200, body = RegisteredCardResponse), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn register_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(number): PathText,
    headers: HeaderMap,
    body: JsonBody<RegisterCardRequest>,
) -> ApiResult<Response> {
    let number = card_path(number)?;
    let key = idempotency_key(
        &caller,
        &headers,
        &format!("register {number}"),
        &body.canonical,
    )?;
    let answer = cards::register(&app, &caller, &number, body.value.member_id, &key, |r| {
        let body = RegisteredCardResponse {
            card: card_response(&r.card),
            points_moved: r.points_moved,
            balance: r.balance,
        };
        stored(StatusCode::OK, &body, None)
    })
    .await?;
    Ok(replay(answer))
}

/// Block a card: it can no longer earn or spend.
#[utoipa::path(post, path = "/v1/cards/{number}/block", tag = "cards", security(("bearer" = [])), params(("number" = String, Path)),
    responses((status = 200, body = CardResponse), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn block_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(number): PathText,
) -> ApiResult<Json<CardResponse>> {
    let number = card_path(number)?;
    Ok(Json(card_response(
        &cards::block(&app, &caller, &number).await?,
    )))
}

/// Unblock a blocked card (admin): it can earn and spend again. A replaced or retired
/// card cannot be unblocked.
#[utoipa::path(post, path = "/v1/cards/{number}/unblock", tag = "cards", security(("bearer" = [])), params(("number" = String, Path)),
    responses((status = 200, body = CardResponse), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "card_replaced, card_retired"), (status = 422, body = Problem)))]
pub async fn unblock_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(number): PathText,
) -> ApiResult<Json<CardResponse>> {
    let number = card_path(number)?;
    Ok(Json(card_response(
        &cards::unblock(&app, &caller, &number).await?,
    )))
}

/// Replace a card: a new number that keeps the balance; the old card is retired
/// (Idempotency-Key required).
#[utoipa::path(post, path = "/v1/cards/{number}/replace", tag = "cards", security(("bearer" = [])),
    params(("number" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = CardResponse), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn replace_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(number): PathText,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let number = card_path(number)?;
    let key = idempotency_key(&caller, &headers, &format!("replace {number}"), "")?;
    let answer = cards::replace(&app, &caller, &number, &key, |new| {
        stored(
            StatusCode::CREATED,
            &card_response(new),
            Some(format!("/v1/cards/{}", new.number)),
        )
    })
    .await?;
    Ok(replay(answer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCardRequest {
    /// The member for a registered card; omit for a bearer card.
    pub member_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCardRequest {
    pub member_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CardResponse {
    pub id: Uuid,
    pub number: String,
    /// `registered` or `bearer`.
    pub kind: String,
    /// `active`, `blocked`, `replaced` or `retired` (its member was erased). A replaced
    /// card never names its replacement.
    pub status: String,
    /// The card's member, when the caller may see that member.
    pub member_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CardBalanceResponse {
    pub points: i64,
    /// Points reserved by live POS holds (`POST /v1/redemptions`).
    pub held_points: i64,
    /// Points that can be spent now: `points - held_points`.
    pub available_points: i64,
    /// Money value of the points at the programme's point value.
    pub value: MoneyDto,
    /// Points shown but not yet spendable: co-branded card authorizations not cleared yet.
    pub pending_points: i64,
    /// Lots expiring within 30 days, soonest first.
    pub expiring_soon: Vec<super::members::ExpiringPoints>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredCardResponse {
    pub card: CardResponse,
    /// Points that moved from the bearer card to the member.
    pub points_moved: i64,
    /// The member's points after the move.
    pub balance: i64,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(issue_card))
        .routes(routes!(get_card))
        .routes(routes!(card_balance))
        .routes(routes!(register_card))
        .routes(routes!(block_card))
        .routes(routes!(unblock_card))
        .routes(routes!(replace_card))
}

//! The bank (a `bank`-scope client of a `kind: "bank"` partner; every other token is 403
//! `insufficient_scope`): co-branded cards, the secrets that sign its events, and the
//! signed card events themselves.

use super::*;
use crate::extract::{
    form_urldecode, list_params, parse_json, path_id, Auth, JsonBody, PathText, RawJson,
};
use crate::problem::{validation, Problem};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::bank::{self, EventOutcome};
use coalition_app::error::FieldError;
use coalition_app::App;
use coalition_store::entities::{bank_card, bank_signing_secret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

const FORBIDDEN: &str =
    "insufficient_scope: only a bank-scope client of a bank partner may call this route";

/// Issue a co-branded card (bank) to a member the bank enrolled or is linked to: the
/// bank's token, BIN and last four — never the card number. A PAN anywhere in any
/// request is `422 pan_not_allowed`.
#[utoipa::path(post, path = "/v1/bank/cards", tag = "bank", security(("bearer" = [])), request_body = NewBankCardRequest,
    responses((status = 201, body = BankCardResponse, headers(("Location" = String, description = "/v1/bank/cards/{id}"))),
        (status = 403, body = Problem, description = FORBIDDEN),
        (status = 404, body = Problem, description = "not_found: the member is unknown or not the bank's"),
        (status = 409, body = Problem, description = "card_token_taken, member_erased"),
        (status = 422, body = Problem, description = "validation_failed, pan_not_allowed")))]
pub async fn issue_card(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewBankCardRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let card = bank::issue_card(
        &app,
        &caller,
        bank::NewBankCard {
            member_id: b.member_id,
            card_token: b.card_token,
            bin: b.bin,
            last4: b.last4,
            expiry_month: b.expiry_month,
        },
    )
    .await?;
    Ok(created(
        format!("/v1/bank/cards/{}", card.id),
        card_response(card),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BankCardListParams {
    /// Only this member's cards.
    pub member_id: Option<Uuid>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// The bank's cards, oldest first; `member_id` lists one member's (bank).
#[utoipa::path(get, path = "/v1/bank/cards", tag = "bank", security(("bearer" = [])), params(BankCardListParams),
    responses((status = 200, body = BankCardList), (status = 403, body = Problem, description = FORBIDDEN),
        (status = 422, body = Problem)))]
pub async fn list_cards(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<BankCardList>> {
    let page = list_params(query.as_deref())?;
    let member_id = member_param(query.as_deref())?;
    let page = bank::list_cards(&app, &caller, member_id, page).await?;
    Ok(Json(BankCardList {
        data: page.data.into_iter().map(card_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn member_param(query: Option<&str>) -> ApiResult<Option<Uuid>> {
    let bad = || validation(vec![FieldError::new("member_id", "must be a UUID")]);
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_urldecode(k.as_bytes()).as_deref() == Some("member_id") {
            let value = form_urldecode(v.as_bytes()).ok_or_else(bad)?;
            return Uuid::parse_str(&value).map(Some).map_err(|_| bad());
        }
    }
    Ok(None)
}

/// One of the bank's cards (bank).
#[utoipa::path(get, path = "/v1/bank/cards/{id}", tag = "bank", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = BankCardResponse), (status = 403, body = Problem, description = FORBIDDEN),
        (status = 404, body = Problem)))]
pub async fn get_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<BankCardResponse>> {
    // Scope first: a caller that is not a bank hears 403 whatever the id.
    bank::bank_of(&app, &caller).await?;
    let card = bank::get_card(&app, &caller, path_id(&id, "bank card")?).await?;
    Ok(Json(card_response(card)))
}

/// Block a card (bank). It starts no new transaction (`card_blocked`); the follow-ups
/// of transactions it began (clearing, reversal, refund) still count.
#[utoipa::path(post, path = "/v1/bank/cards/{id}/block", tag = "bank", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = BankCardResponse), (status = 403, body = Problem, description = FORBIDDEN),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "card_replaced, card_retired (its member was erased)")))]
pub async fn block_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<BankCardResponse>> {
    // Scope first: a caller that is not a bank hears 403 whatever the id.
    bank::bank_of(&app, &caller).await?;
    let card = bank::block_card(&app, &caller, path_id(&id, "bank card")?).await?;
    Ok(Json(card_response(card)))
}

/// Replace a card (bank): a new card (token, BIN, last four, expiry) for the same member
/// and points account; the old one is `replaced`.
#[utoipa::path(post, path = "/v1/bank/cards/{id}/replace", tag = "bank", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = ReplaceBankCardRequest,
    responses((status = 201, body = BankCardResponse, headers(("Location" = String, description = "/v1/bank/cards/{id}"))),
        (status = 403, body = Problem, description = FORBIDDEN), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "card_replaced, card_retired (its member was erased), card_token_taken"),
        (status = 422, body = Problem, description = "validation_failed, pan_not_allowed")))]
pub async fn replace_card(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<ReplaceBankCardRequest>,
) -> ApiResult<Response> {
    bank::bank_of(&app, &caller).await?;
    let b = body.value;
    let card = bank::replace_card(
        &app,
        &caller,
        path_id(&id, "bank card")?,
        bank::Replacement {
            card_token: b.card_token,
            bin: b.bin,
            last4: b.last4,
            expiry_month: b.expiry_month,
        },
    )
    .await?;
    Ok(created(
        format!("/v1/bank/cards/{}", card.id),
        card_response(card),
    ))
}

/// A new secret for signing events (bank): `whsec_…`, shown this once. Several may be
/// active at once, for rotation: sign with the new one, then delete the old one.
#[utoipa::path(post, path = "/v1/bank/signing-secrets", tag = "bank", security(("bearer" = [])),
    responses((status = 201, body = NewSigningSecretResponse, headers(("Location" = String, description = "/v1/bank/signing-secrets/{id}"))),
        (status = 403, body = Problem, description = FORBIDDEN)))]
pub async fn create_secret(State(app): State<App>, Auth(caller): Auth) -> ApiResult<Response> {
    let row = bank::create_secret(&app, &caller).await?;
    let mut response = created(
        format!("/v1/bank/signing-secrets/{}", row.id),
        NewSigningSecretResponse {
            id: row.id,
            secret: row.secret.clone(),
            created_at: row.created_at,
        },
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The bank's active signing secrets (bank): ids and dates, never the secrets.
#[utoipa::path(get, path = "/v1/bank/signing-secrets", tag = "bank", security(("bearer" = [])),
    responses((status = 200, body = SigningSecretList), (status = 403, body = Problem, description = FORBIDDEN)))]
pub async fn list_secrets(
    State(app): State<App>,
    Auth(caller): Auth,
) -> ApiResult<Json<SigningSecretList>> {
    let rows = bank::list_secrets(&app, &caller).await?;
    Ok(Json(SigningSecretList {
        data: rows.into_iter().map(secret_response).collect(),
    }))
}

/// Delete a signing secret (bank): events signed only with it are refused from now on.
#[utoipa::path(delete, path = "/v1/bank/signing-secrets/{id}", tag = "bank", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = Problem, description = FORBIDDEN),
        (status = 404, body = Problem)))]
pub async fn delete_secret(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<StatusCode> {
    // Scope first: a caller that is not a bank hears 403 whatever the id.
    bank::bank_of(&app, &caller).await?;
    bank::revoke_secret(&app, &caller, path_id(&id, "signing secret")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A card event (bank token **and** a Standard Webhooks signature over the body with an
/// active signing secret: `webhook-id`, `webhook-timestamp` within 5 minutes,
/// `webhook-signature` `v1,<base64>` — several space-separated for rotation).
/// Idempotent by the event's `id`: a second delivery answers `status: duplicate` with
/// the first answer's figures and moves nothing. Events of one `transaction_id` may come
/// in any order and end in the same state.
#[utoipa::path(post, path = "/v1/bank/events", tag = "bank", security(("bearer" = [])),
    params(("webhook-id" = String, Header, description = "the delivery's id (signed)"),
        ("webhook-timestamp" = String, Header, description = "Unix seconds (signed)"),
        ("webhook-signature" = String, Header, description = "`v1,<base64 HMAC-SHA256>`, space-separated when several")),
    request_body = BankEventRequest,
    responses((status = 200, body = BankEventResponse),
        (status = 401, body = Problem, description = "unauthorized (token), invalid_signature (missing header, old or future timestamp, no matching signature)"),
        (status = 403, body = Problem, description = FORBIDDEN),
        (status = 404, body = Problem, description = "not_found: no card of this bank has the card_token"),
        (status = 409, body = Problem, description = "card_blocked, card_replaced (an authorization or clearing that would begin a transaction on a blocked or replaced card; its follow-ups still apply), card_retired (the card's member was erased: no event); nothing moved"),
        (status = 422, body = Problem, description = "validation_failed, currency_mismatch, pan_not_allowed, event_id_reused (the id came before with another body)")))]
pub async fn post_event(
    State(app): State<App>,
    Auth(caller): Auth,
    headers: HeaderMap,
    RawJson(bytes): RawJson,
) -> ApiResult<Json<BankEventResponse>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = bank::Signature {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    // The signature covers the bytes as sent: checked before the body is parsed.
    let bank_partner = bank::verify_signature(&app, &caller, signature, &bytes).await?;
    let body: JsonBody<BankEventRequest> = parse_json(&bytes)?;
    let b = body.value;
    let input = bank::NewEvent {
        id: b.id,
        event_type: b.event_type,
        transaction_id: b.transaction_id,
        card_token: b.card_token,
        amount: b.amount.amount,
        currency: b.amount.currency,
        merchant_id: b.merchant.id,
        merchant_name: b.merchant.name,
        merchant_category_code: b.merchant.category_code,
        occurred_at: b.occurred_at,
        canonical: body.canonical,
    };
    let outcome = bank::process_event(&app, &caller, &bank_partner, input).await?;
    Ok(Json(event_response(outcome)))
}

fn card_response(c: bank_card::Model) -> BankCardResponse {
    BankCardResponse {
        id: c.id,
        member_id: c.member_id,
        last4: c.last4,
        bin: c.bin,
        expiry_month: c.expiry_month,
        status: c.status,
        replaced_by_id: c.replaced_by_id,
        created_at: c.created_at,
    }
}

fn secret_response(s: bank_signing_secret::Model) -> SigningSecretResponse {
    SigningSecretResponse {
        id: s.id,
        created_at: s.created_at,
    }
}

fn event_response(o: EventOutcome) -> BankEventResponse {
    BankEventResponse {
        event_id: o.event_id,
        status: o.status,
        event_type: o.event_type,
        transaction_id: o.transaction_id,
        card_id: o.card_id,
        member_id: o.member_id,
        partner_id: o.partner_id,
        points_pending: o.points_pending,
        points_posted: o.points_posted,
        points_reversed: o.points_reversed,
        points_clawed_back: o.points_clawed_back,
        points_shortfall: o.points_shortfall,
        breakdown: breakdown(&o.breakdown),
        balance: o.balance,
        pending_points: o.pending_points,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBankCardRequest {
    pub member_id: Uuid,
    /// The bank's token for the card (never its number).
    #[schema(schema_with = crate::fields::card_token)]
    pub card_token: String,
    /// The first 6 to 8 digits of the card number.
    #[schema(pattern = "^[0-9]{6,8}$")]
    pub bin: String,
    #[schema(pattern = "^[0-9]{4}$")]
    pub last4: String,
    /// `YYYY-MM`.
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    pub expiry_month: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceBankCardRequest {
    #[schema(schema_with = crate::fields::card_token)]
    pub card_token: String,
    #[schema(pattern = "^[0-9]{6,8}$")]
    pub bin: String,
    #[schema(pattern = "^[0-9]{4}$")]
    pub last4: String,
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$")]
    pub expiry_month: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BankCardResponse {
    pub id: Uuid,
    pub member_id: Uuid,
    pub last4: String,
    pub bin: String,
    pub expiry_month: String,
    /// `active`, `blocked`, `replaced` or `retired` (its member was erased).
    pub status: String,
    /// The card that replaced this one.
    pub replaced_by_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BankCardList {
    pub data: Vec<BankCardResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewSigningSecretResponse {
    pub id: Uuid,
    /// `whsec_` and the base64 of the key bytes: shown this once.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecretResponse {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecretList {
    pub data: Vec<SigningSecretResponse>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantDto {
    /// The merchant id (MID): matched against partners' `merchant_ids`.
    #[schema(min_length = 1, max_length = 64)]
    pub id: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The merchant category code (MCC).
    #[schema(max_length = 8)]
    pub category_code: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BankEventRequest {
    /// The event's id: a second delivery of it moves nothing.
    #[schema(min_length = 1, max_length = 255)]
    pub id: String,
    /// `authorization`, `clearing`, `reversal` or `refund`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(authorization|clearing|reversal|refund)$")]
    pub event_type: String,
    /// Links the events of one card transaction.
    #[schema(min_length = 1, max_length = 255)]
    pub transaction_id: String,
    #[schema(schema_with = crate::fields::card_token)]
    pub card_token: String,
    /// Authorized, cleared, reversed or refunded amount.
    #[schema(schema_with = crate::fields::amount)]
    pub amount: MoneyDto,
    pub merchant: MerchantDto,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BankEventResponse {
    pub event_id: String,
    /// `applied`, or `duplicate` (a second delivery: nothing moved now; the figures are
    /// what the first delivery did).
    pub status: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub transaction_id: String,
    pub card_id: Uuid,
    pub member_id: Uuid,
    /// The coalition partner the merchant id matched; null: not a partner, the bank's
    /// own base rate applied (funded by the bank).
    pub partner_id: Option<Uuid>,
    /// Points that became pending (an authorization).
    pub points_pending: i64,
    /// Points posted (a clearing).
    pub points_posted: i64,
    /// Pending points removed without posting (a reversal).
    pub points_reversed: i64,
    /// Earned points taken back (a refund).
    pub points_clawed_back: i64,
    /// What a refund could not take back because the member spent it.
    pub points_shortfall: i64,
    /// Why these points: the lines the authorization or clearing was priced with.
    pub breakdown: Vec<BreakdownLineDto>,
    /// The member's points after the event.
    pub balance: i64,
    /// The member's pending points after the event.
    pub pending_points: i64,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(issue_card, list_cards))
        .routes(routes!(get_card))
        .routes(routes!(block_card))
        .routes(routes!(replace_card))
        .routes(routes!(create_secret, list_secrets))
        .routes(routes!(delete_secret))
        .routes(routes!(post_event))
}

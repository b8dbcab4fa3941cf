//! Thin handlers: extract, call one use case, map the result.

use crate::dto::*;
use crate::extract::{idempotency_key, list_params, path_id, Auth, JsonBody, ListParams};
use crate::problem::{ApiError, Problem};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coalition_app::idempotency::StoredResponse;
use coalition_app::{
    balances, cards, clients, members, partners, purchases, refunds, App, AppError,
};
use coalition_domain::money::{format_amount, Currency};
use rust_decimal::Decimal;
use serde::Serialize;

type ApiResult<T> = Result<T, ApiError>;

fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Renders an answer so it can be stored for idempotent replays.
fn stored<T: Serialize>(status: StatusCode, body: &T, location: Option<String>) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        body: serde_json::to_string(body).unwrap_or_default(),
        location,
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        stored.body,
    )
        .into_response();
    if let Some(value) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn money(amount: Decimal, currency: &str) -> MoneyDto {
    let shown = Currency::parse(currency)
        .map(|c| format_amount(amount, &c))
        .unwrap_or_else(|_| amount.to_string());
    MoneyDto::new(shown, currency)
}

fn stored_money(text: &str, currency: &str) -> MoneyDto {
    money(text.parse().unwrap_or_default(), currency)
}

fn breakdown(lines: &[coalition_domain::earning::BreakdownLine]) -> Vec<BreakdownLineDto> {
    lines
        .iter()
        .map(|l| BreakdownLineDto {
            rule: l.rule.clone(),
            description: l.description.clone(),
            points: l.points,
        })
        .collect()
}

pub async fn not_found() -> ApiError {
    ApiError::App(AppError::NotFound("resource"))
}

// ---- auth ----

#[derive(Debug, serde::Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(OAuthError {
            error: error.into(),
            error_description: description.into(),
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"coalition\""),
        );
    }
    response
}

/// `client_secret_basic`: credentials in the Authorization header (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((percent_decode(id), percent_decode(secret)))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// OAuth2 token endpoint (client credentials grant).
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "grant_type=client_credentials, optional scope; client_id and client_secret in the body or HTTP Basic"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = OAuthError, description = "invalid_request, unsupported_grant_type or invalid_scope"),
        (status = 401, body = OAuthError, description = "invalid_client"),
    ))]
pub async fn token(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<axum::Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send a form-encoded body",
        );
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        let error = if form.grant_type.is_none() {
            "invalid_request"
        } else {
            "unsupported_grant_type"
        };
        return oauth_error(
            StatusCode::BAD_REQUEST,
            error,
            "only grant_type=client_credentials is supported",
        );
    }
    let credentials = match (
        basic_credentials(&headers),
        form.client_id,
        form.client_secret,
    ) {
        (Some(basic), None, None) => basic,
        (None, Some(id), Some(secret)) => (id, secret),
        (Some(_), _, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method",
            )
        }
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client credentials are missing",
            )
        }
    };
    match coalition_app::auth::client_credentials_grant(
        &app,
        &credentials.0,
        &credentials.1,
        form.scope.as_deref(),
    )
    .await
    {
        Ok(t) => {
            let body = TokenResponse {
                access_token: t.access_token,
                token_type: "Bearer".into(),
                expires_in: t.expires_in,
                scope: t.scope,
            };
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        Err(AppError::InvalidClient) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ),
        Err(AppError::InvalidScope) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is not granted to this client",
        ),
        Err(other) => ApiError::App(other).into_response(),
    }
}

// ---- partners and clients ----

fn partner_response(p: partners::Partner) -> PartnerResponse {
    PartnerResponse {
        id: p.id,
        name: p.name,
        kind: p.kind.as_str().into(),
        category: p.category,
        earn_points_per_unit: p.earn_points_per_unit.to_string(),
        issue_price_per_point: p.issue_price_per_point.to_string(),
        redemption_value_per_point: p.redemption_value_per_point.to_string(),
        created_at: p.created_at,
    }
}

/// Add a partner (admin).
#[utoipa::path(post, path = "/v1/partners", tag = "partners", security(("bearer" = [])), request_body = NewPartnerRequest,
    responses((status = 201, body = PartnerResponse), (status = 422, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn create_partner(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewPartnerRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let input = partners::NewPartner {
        name: b.name,
        kind: b.kind,
        category: b.category,
        earn_points_per_unit: b.earn_points_per_unit,
        issue_price_per_point: b.issue_price_per_point,
        redemption_value_per_point: b.redemption_value_per_point,
    };
    let partner = partners::create(&app, &caller, input).await?;
    Ok(created(
        format!("/v1/partners/{}", partner.id),
        partner_response(partner),
    ))
}

/// List the programme's partners (admin).
#[utoipa::path(get, path = "/v1/partners", tag = "partners", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = PartnerList), (status = 422, body = Problem)))]
pub async fn list_partners(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<PartnerList>> {
    let page = partners::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(PartnerList {
        data: page.data.into_iter().map(partner_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One partner (admin; a partner may read itself).
#[utoipa::path(get, path = "/v1/partners/{id}", tag = "partners", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PartnerResponse), (status = 404, body = Problem)))]
pub async fn get_partner(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<PartnerResponse>> {
    let partner = partners::get(&app, &caller, path_id(&id, "partner")?).await?;
    Ok(Json(partner_response(partner)))
}

/// Create an API client (admin). The secret is shown once.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", security(("bearer" = [])), request_body = NewClientRequest,
    responses((status = 201, body = ClientResponse), (status = 404, body = Problem, description = "unknown partner"), (status = 422, body = Problem)))]
pub async fn create_client(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewClientRequest>,
) -> ApiResult<Response> {
    let input = clients::NewClient {
        name: body.value.name,
        partner_id: body.value.partner_id,
    };
    let c = clients::create(&app, &caller, input).await?;
    let location = format!("/v1/clients/{}", c.id);
    let body = ClientResponse {
        id: c.id,
        client_id: c.client_id,
        client_secret: c.client_secret,
        name: c.name,
        partner_id: c.partner_id,
        scope: c.scope.as_str().into(),
    };
    let mut response = created(location, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ---- members ----

fn member_response(m: members::Member) -> MemberResponse {
    let row = m.row;
    MemberResponse {
        id: row.id,
        name: row.name,
        email: row.email,
        phone: row.phone,
        consent_marketing: row.consent_marketing,
        consent_data_sharing: row.consent_data_sharing,
        tier: None,
        points: m.points,
        erased: row.erased_at.is_some(),
        created_at: row.created_at,
    }
}

/// Enrol a member (admin, partner).
#[utoipa::path(post, path = "/v1/members", tag = "members", security(("bearer" = [])), request_body = NewMemberRequest,
    responses((status = 201, body = MemberResponse), (status = 409, body = Problem, description = "email_taken"), (status = 422, body = Problem)))]
pub async fn enrol_member(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewMemberRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let input = members::NewMember {
        name: b.name,
        email: b.email,
        phone: b.phone,
        consent_marketing: b.consent_marketing,
        consent_data_sharing: b.consent_data_sharing,
    };
    let member = members::enrol(&app, &caller, input).await?;
    Ok(created(
        format!("/v1/members/{}", member.row.id),
        member_response(member),
    ))
}

/// A member's profile and points (admin, partner).
#[utoipa::path(get, path = "/v1/members/{id}", tag = "members", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = MemberResponse), (status = 404, body = Problem)))]
pub async fn get_member(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<MemberResponse>> {
    Ok(Json(member_response(
        members::get(&app, &caller, path_id(&id, "member")?).await?,
    )))
}

/// Erase a member's personal data (admin, GDPR). The ledger keeps its numbers.
#[utoipa::path(delete, path = "/v1/members/{id}", tag = "members", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "erased"), (status = 404, body = Problem)))]
pub async fn erase_member(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    members::erase(&app, &caller, path_id(&id, "member")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member's points, their money value and the points expiring soon (admin, partner).
#[utoipa::path(get, path = "/v1/members/{id}/balance", tag = "members", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = BalanceResponse), (status = 404, body = Problem)))]
pub async fn member_balance(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<BalanceResponse>> {
    let view = balances::balance(&app, &caller, path_id(&id, "member")?).await?;
    Ok(Json(BalanceResponse {
        member_id: view.member_id,
        points: view.points,
        value: MoneyDto::new(view.value, &view.currency),
        expiring_soon: view
            .expiring_soon
            .into_iter()
            .map(|l| ExpiringPoints {
                points: l.points,
                expires_at: l.expires_at,
            })
            .collect(),
    }))
}

/// A member's ledger history, newest first (admin, partner).
#[utoipa::path(get, path = "/v1/members/{id}/transactions", tag = "members", security(("bearer" = [])), params(("id" = String, Path), ListParams),
    responses((status = 200, body = TransactionList), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn member_transactions(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TransactionList>> {
    let page = balances::history(
        &app,
        &caller,
        path_id(&id, "member")?,
        list_params(query.as_deref())?,
    )
    .await?;
    let data = page
        .data
        .into_iter()
        .map(|i| TransactionResponse {
            entry_id: i.entry_id,
            kind: i.kind.into(),
            points: i.points,
            reason: i.reason,
            partner_id: i.partner_id,
            purchase_id: i.purchase_id,
            refund_id: i.refund_id,
            breakdown: breakdown(&i.breakdown),
            created_at: i.created_at,
        })
        .collect();
    Ok(Json(TransactionList {
        data,
        next_cursor: page.next_cursor,
    }))
}

// ---- cards ----

fn card_response(c: &cards::CardRow) -> CardResponse {
    CardResponse {
        id: c.id,
        number: c.number.clone(),
        kind: c.kind.clone(),
        status: c.status.clone(),
        member_id: c.member_id,
        replaced_by: c.replaced_by_number.clone(),
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
    responses((status = 200, body = CardResponse), (status = 404, body = Problem)))]
pub async fn get_card(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(number): Path<String>,
) -> ApiResult<Json<CardResponse>> {
    Ok(Json(card_response(
        &cards::get(&app, &caller, &number).await?,
    )))
}

/// Register a bearer card to a member; its points move with it (Idempotency-Key required).
#[utoipa::path(post, path = "/v1/cards/{number}/register", tag = "cards", security(("bearer" = [])),
    params(("number" = String, Path), ("Idempotency-Key" = String, Header)), request_body = RegisterCardRequest,
    responses((status = 200, body = RegisteredCardResponse), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn register_card(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: JsonBody<RegisterCardRequest>,
) -> ApiResult<Response> {
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
    responses((status = 200, body = CardResponse), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn block_card(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(number): Path<String>,
) -> ApiResult<Json<CardResponse>> {
    Ok(Json(card_response(
        &cards::block(&app, &caller, &number).await?,
    )))
}

/// Replace a card: a new number that keeps the balance; the old card is retired
/// (Idempotency-Key required).
#[utoipa::path(post, path = "/v1/cards/{number}/replace", tag = "cards", security(("bearer" = [])),
    params(("number" = String, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = CardResponse), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn replace_card(
    State(app): State<App>,
    Auth(caller): Auth,
    Path(number): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
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

// ---- purchases ----

fn new_purchase(b: PurchaseRequest) -> purchases::NewPurchase {
    purchases::NewPurchase {
        card_number: b.card_number,
        amount: b.amount.amount,
        currency: b.amount.currency,
        external_ref: b.external_ref,
        redeem_points: b.redeem_points,
        store_ref: b.store_ref,
        staff_ref: b.staff_ref,
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
        member_id: p.card.member_id,
        amount: money(p.amount.amount, &currency),
        discount: money(p.outcome.discount, &currency),
        payable: money(p.outcome.payable, &currency),
        points_earned: p.outcome.points_earned,
        points_redeemed: p.outcome.points_redeemed,
        breakdown: breakdown(&p.outcome.breakdown),
        balance: p.balance,
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
            discount: money(priced.outcome.discount, &p.currency),
            payable: money(priced.outcome.payable, &p.currency),
            points_earned: p.points_earned,
            points_redeemed: p.points_redeemed,
            breakdown: breakdown(&priced.outcome.breakdown),
            balance: priced.balance,
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
    Path(id): Path<String>,
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
    Path(id): Path<String>,
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

// ---- service ----

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "service", responses((status = 200, description = "alive")))]
pub async fn health_live() -> &'static str {
    "ok"
}

/// The database (and Redis, when configured) answer. A Redis outage is `degraded`, not
/// down: balances are then served from the database.
#[utoipa::path(get, path = "/health/ready", tag = "service", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health_ready(State(app): State<App>) -> Response {
    let database_ok = app.db.ping().await.is_ok();
    let cache = match app.cache.healthy().await {
        None => "not_configured",
        Some(true) => "ok",
        Some(false) => "degraded",
    };
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if !database_ok {
            "unavailable"
        } else if cache == "degraded" {
            "degraded"
        } else {
            "ok"
        }
        .into(),
        database: if database_ok { "ok" } else { "unavailable" }.into(),
        cache: cache.into(),
    };
    (status, Json(body)).into_response()
}

/// Cache counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(app): State<App>) -> Response {
    let in_use = app.cache.healthy().await.unwrap_or(true);
    let text = crate::metrics::render(app.cache.backend(), app.cache.stats(), in_use);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

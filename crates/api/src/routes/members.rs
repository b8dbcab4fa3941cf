//! Members: enrolment, profile, erasure, balance and history.

use super::*;
use crate::extract::{list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::App;
use coalition_app::{balances, members};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

fn member_response(m: members::Member) -> MemberResponse {
    let row = m.row;
    MemberResponse {
        id: row.id,
        name: row.name,
        email: row.email,
        phone: row.phone,
        consent_marketing: row.consent_marketing,
        consent_data_sharing: row.consent_data_sharing,
        tier: m
            .tier
            .effective
            .as_ref()
            .map(|(t, _)| super::tiers::summary(t)),
        tier_status: super::tiers::status_response(&m.tier),
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
    PathText(id): PathText,
) -> ApiResult<Json<MemberResponse>> {
    Ok(Json(member_response(
        members::get(&app, &caller, path_id(&id, "member")?).await?,
    )))
}

/// Change a member's profile and consents (admin; the partner that enrolled her).
/// Absent fields stay as they are; an empty `phone` removes it.
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = MemberChangeRequest,
    responses((status = 200, body = MemberResponse), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "email_taken, member_erased"), (status = 422, body = Problem)))]
pub async fn update_member(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<MemberChangeRequest>,
) -> ApiResult<Json<MemberResponse>> {
    let id = path_id(&id, "member")?;
    let b = body.value;
    let change = members::MemberChange {
        name: b.name,
        email: b.email,
        phone: b.phone,
        consent_marketing: b.consent_marketing,
        consent_data_sharing: b.consent_data_sharing,
    };
    Ok(Json(member_response(
        members::update(&app, &caller, id, change).await?,
    )))
}

/// A member's cards, oldest first (admin; a partner that may see the member). A
/// partner that neither issued a card nor enrolled the member sees only its last four
/// digits (`number_masked`).
#[utoipa::path(get, path = "/v1/members/{id}/cards", tag = "members", security(("bearer" = [])), params(("id" = String, Path), ListParams),
    responses((status = 200, body = MemberCardList), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn member_cards(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<MemberCardList>> {
    let id = path_id(&id, "member")?;
    let page = members::cards(&app, &caller, id, list_params(query.as_deref())?).await?;
    let data = page
        .data
        .into_iter()
        .map(|c| MemberCardResponse {
            id: c.row.id,
            number: c.row.number,
            number_masked: c.masked,
            kind: c.row.kind,
            status: c.row.status,
            created_at: c.row.created_at,
        })
        .collect();
    Ok(Json(MemberCardList {
        data,
        next_cursor: page.next_cursor,
    }))
}

/// Erase a member (admin, GDPR): her personal data goes, her cards — co-branded bank
/// cards included — are retired (`card_retired` from then on), holds on her points are voided and her remaining
/// points are forfeited to the operator's breakage in one `erasure` journal entry.
/// Her id still answers, with `erased: true` and no personal data.
#[utoipa::path(delete, path = "/v1/members/{id}", tag = "members", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "erased"), (status = 404, body = Problem)))]
pub async fn erase_member(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
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
    PathText(id): PathText,
) -> ApiResult<Json<BalanceResponse>> {
    let member_id = path_id(&id, "member")?;
    let view = balances::balance(&app, &caller, member_id).await?;
    Ok(Json(BalanceResponse {
        member_id,
        points: view.points,
        held_points: view.held_points,
        available_points: view.available_points,
        pending_points: view.pending_points,
        value: MoneyDto::new(view.value, &view.currency),
        expiring_soon: expiring_soon(view.expiring_soon),
    }))
}

pub(crate) fn expiring_soon(lots: Vec<balances::ExpiringLot>) -> Vec<ExpiringPoints> {
    lots.into_iter()
        .map(|l| ExpiringPoints {
            points: l.points,
            expires_at: l.expires_at,
        })
        .collect()
}

/// A member's ledger history, newest first (admin, partner).
#[utoipa::path(get, path = "/v1/members/{id}/transactions", tag = "members", security(("bearer" = [])), params(("id" = String, Path), ListParams),
    responses((status = 200, body = TransactionList), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn member_transactions(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TransactionList>> {
    let page = balances::history(
        &app,
        &caller,
        path_id(&id, "member")?,
        list_params(query.as_deref())?,
    )
    .await?;
    Ok(Json(transaction_list(page)))
}

/// A page of ledger history as the members' and `/v1/me` routes answer it.
pub(crate) fn transaction_list(
    page: coalition_app::pagination::Page<balances::HistoryItem>,
) -> TransactionList {
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
    TransactionList {
        data,
        next_cursor: page.next_cursor,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMemberRequest {
    #[schema(schema_with = crate::fields::name)]
    pub name: String,
    #[schema(schema_with = crate::fields::email)]
    pub email: String,
    #[schema(schema_with = crate::fields::optional_phone)]
    pub phone: Option<String>,
    #[serde(default)]
    pub consent_marketing: bool,
    #[serde(default)]
    pub consent_data_sharing: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberChangeRequest {
    #[schema(schema_with = crate::fields::optional_name)]
    pub name: Option<String>,
    #[schema(schema_with = crate::fields::optional_email)]
    pub email: Option<String>,
    /// A phone number; an empty string removes it.
    #[schema(schema_with = crate::fields::optional_phone)]
    pub phone: Option<String>,
    pub consent_marketing: Option<bool>,
    pub consent_data_sharing: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberCardResponse {
    pub id: Uuid,
    /// The number, or `…` and its last four digits when `number_masked`.
    pub number: String,
    pub number_masked: bool,
    /// `registered` or `bearer`.
    pub kind: String,
    /// `active`, `blocked`, `replaced` or `retired`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberCardList {
    pub data: Vec<MemberCardResponse>,
    pub next_cursor: Option<String>,
}

/// Contact data is absent (`null`) when the member was erased, or when a partner other
/// than the one that enrolled her asks and she did not consent to data sharing.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberResponse {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent_marketing: bool,
    pub consent_data_sharing: bool,
    /// The member's effective tier (none when the ladder has none for them).
    pub tier: Option<super::tiers::TierSummary>,
    /// How the tier came about and what the next one takes.
    pub tier_status: super::tiers::TierStatus,
    pub points: i64,
    pub erased: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExpiringPoints {
    pub points: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    pub member_id: Uuid,
    pub points: i64,
    /// Points reserved by live POS holds (`POST /v1/redemptions`).
    pub held_points: i64,
    /// Points that can be spent now: `points - held_points`.
    pub available_points: i64,
    /// Points shown but not yet spendable: co-branded card authorizations not cleared
    /// yet (not part of `points`).
    pub pending_points: i64,
    /// Money value of the points at the programme's point value.
    pub value: MoneyDto,
    /// Lots expiring within 30 days, soonest first.
    pub expiring_soon: Vec<ExpiringPoints>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionResponse {
    pub entry_id: Uuid,
    /// `earned`, `redeemed`, `returned`, `clawed_back`, `card_transfer_in`, `card_transfer_out`,
    /// `expired` (what was left of lots past their expiry, moved to the operator's breakage).
    pub kind: String,
    /// Signed change of the member's points.
    pub points: i64,
    pub reason: String,
    pub partner_id: Option<Uuid>,
    pub purchase_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
    pub breakdown: Vec<BreakdownLineDto>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionList {
    pub data: Vec<TransactionResponse>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(enrol_member))
        .routes(routes!(get_member, update_member, erase_member))
        .routes(routes!(member_cards))
        .routes(routes!(member_balance))
        .routes(routes!(member_transactions))
}

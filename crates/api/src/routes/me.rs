//! `/v1/me/...`: one member's own data, for a member access token (scope `member`, from
//! the authorization code + PKCE flow). The JSON behind every portal page. The member is
//! the token's; ids in paths are looked up among her own things only.

use super::members::{expiring_soon, transaction_list, BalanceResponse, TransactionList};
use super::tiers::{status_response, TierStatus};
use super::*;
use crate::extract::{list_params, path_id, JsonBody, ListParams, MemberAuth, PathText};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::{me, App};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The signed-in member: contact data, consents, points and tier.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent_marketing: bool,
    pub consent_data_sharing: bool,
    pub points: i64,
    /// Money value of the points at the programme's point value.
    pub value: MoneyDto,
    pub tier: Option<super::tiers::TierSummary>,
    pub created_at: DateTime<Utc>,
}

/// The member's own profile, points and tier.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn get_me(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
) -> ApiResult<Json<MeResponse>> {
    let o = me::overview(&app, &principal).await?;
    Ok(Json(me_response(o)))
}

fn me_response(o: me::Overview) -> MeResponse {
    MeResponse {
        id: o.profile.member_id,
        name: o.profile.name,
        email: o.profile.email,
        phone: o.profile.phone,
        consent_marketing: o.profile.consent_marketing,
        consent_data_sharing: o.profile.consent_data_sharing,
        points: o.balance.points,
        value: MoneyDto::new(o.balance.value, &o.balance.currency),
        tier: o
            .tier
            .effective
            .as_ref()
            .map(|(t, _)| super::tiers::summary(t)),
        created_at: o.profile.member_since,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeChangeRequest {
    /// Marketing messages on (`true`) or off.
    pub consent_marketing: bool,
}

/// Turn marketing consent on or off.
#[utoipa::path(patch, path = "/v1/me", tag = "me", security(("bearer" = [])), request_body = MeChangeRequest,
    responses((status = 200, body = MeResponse), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn update_me(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
    body: JsonBody<MeChangeRequest>,
) -> ApiResult<Json<MeResponse>> {
    me::set_marketing_consent(&app, &principal, body.value.consent_marketing).await?;
    let o = me::overview(&app, &principal).await?;
    Ok(Json(me_response(o)))
}

/// The member's points, their value, and what expires in the next 30 days.
#[utoipa::path(get, path = "/v1/me/balance", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = BalanceResponse), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn my_balance(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
) -> ApiResult<Json<BalanceResponse>> {
    let view = me::balance(&app, &principal).await?;
    Ok(Json(BalanceResponse {
        member_id: principal.member_id,
        points: view.points,
        held_points: view.held_points,
        available_points: view.available_points,
        pending_points: view.pending_points,
        value: MoneyDto::new(view.value, &view.currency),
        expiring_soon: expiring_soon(view.expiring_soon),
    }))
}

/// Every movement of the member's points, newest first; awards carry their rule and
/// campaign breakdown, refunds the purchase they undo.
#[utoipa::path(get, path = "/v1/me/transactions", tag = "me", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = TransactionList), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn my_transactions(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TransactionList>> {
    let page = me::history(&app, &principal, list_params(query.as_deref())?).await?;
    Ok(Json(transaction_list(page)))
}

/// The member's tier, the spend of the rolling 12 months and what the next tier needs.
#[utoipa::path(get, path = "/v1/me/tier", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = TierStatus), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn my_tier(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
) -> ApiResult<Json<TierStatus>> {
    let standing = me::tier(&app, &principal).await?;
    Ok(Json(status_response(&standing)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferResponse {
    pub campaign_id: Uuid,
    pub name: String,
    /// `multiplier` (× the base points) or `bonus` (points per purchase).
    pub reward_kind: String,
    /// Decimal string.
    pub reward_value: String,
    /// The partners it applies at; `null`: every partner.
    pub partner_ids: Option<Vec<Uuid>>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferList {
    pub data: Vec<OfferResponse>,
}

/// The campaigns running or coming for this member (only those she is treated in).
#[utoipa::path(get, path = "/v1/me/offers", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = OfferList), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn my_offers(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
) -> ApiResult<Json<OfferList>> {
    let offers = me::offers(&app, &principal).await?;
    let data = offers
        .into_iter()
        .map(|o| OfferResponse {
            campaign_id: o.campaign_id,
            name: o.name,
            reward_kind: o.reward_kind,
            reward_value: o.reward_value.normalize().to_string(),
            partner_ids: o.partner_ids,
            starts_at: o.starts_at,
            ends_at: o.ends_at,
        })
        .collect();
    Ok(Json(OfferList { data }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyCardResponse {
    pub id: Uuid,
    /// `loyalty` (the programme's card) or `co_branded` (a bank's payment card).
    pub kind: String,
    /// The last four digits; the full number is never shown here.
    pub last4: String,
    /// `active`, `blocked`, `replaced` or `retired`.
    pub status: String,
    /// The partner that issued it (the bank, for a co-branded card).
    pub issuer_partner_id: Option<Uuid>,
    /// `YYYY-MM`, co-branded cards only.
    pub expiry_month: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyCardList {
    pub data: Vec<MyCardResponse>,
}

fn card_response(c: me::MemberCard) -> MyCardResponse {
    MyCardResponse {
        id: c.id,
        kind: c.kind.into(),
        last4: c.last4,
        status: c.status,
        issuer_partner_id: c.issuer_partner_id,
        expiry_month: c.expiry_month,
        created_at: c.created_at,
    }
}

/// The member's cards, loyalty then co-branded, oldest first.
#[utoipa::path(get, path = "/v1/me/cards", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = MyCardList), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn my_cards(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
) -> ApiResult<Json<MyCardList>> {
    let cards = me::cards(&app, &principal).await?;
    Ok(Json(MyCardList {
        data: cards.into_iter().map(card_response).collect(),
    }))
}

/// Block a lost or stolen card of the member's. Blocking a blocked card answers it as
/// it is; a replaced or retired card is refused (409).
#[utoipa::path(post, path = "/v1/me/cards/{id}/block", tag = "me", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = MyCardResponse), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn block_my_card(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
    PathText(id): PathText,
) -> ApiResult<Json<MyCardResponse>> {
    let card = me::block_card(&app, &principal, path_id(&id, "card")?).await?;
    Ok(Json(card_response(card)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerRatesResponse {
    pub id: Uuid,
    pub name: String,
    /// `merchant` or `bank`.
    pub kind: String,
    pub category: String,
    /// Points earned per unit of currency spent there (before rules, tiers, campaigns).
    pub earn_points_per_unit: String,
    /// What one point is worth when spent there, in the programme's currency.
    pub redemption_value_per_point: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerRatesList {
    pub data: Vec<PartnerRatesResponse>,
}

/// Where to earn and where to spend, with the rates.
#[utoipa::path(get, path = "/v1/me/partners", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = PartnerRatesList), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn my_partners(
    State(app): State<App>,
    MemberAuth(principal): MemberAuth,
) -> ApiResult<Json<PartnerRatesList>> {
    let partners = me::partners(&app, &principal).await?;
    let data = partners
        .into_iter()
        .map(|p| PartnerRatesResponse {
            id: p.id,
            name: p.name,
            kind: p.kind.as_str().into(),
            category: p.category,
            earn_points_per_unit: p.earn_points_per_unit.to_string(),
            redemption_value_per_point: p.redemption_value_per_point.to_string(),
        })
        .collect();
    Ok(Json(PartnerRatesList { data }))
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me))
        .routes(routes!(my_balance))
        .routes(routes!(my_transactions))
        .routes(routes!(my_tier))
        .routes(routes!(my_offers))
        .routes(routes!(my_cards))
        .routes(routes!(block_my_card))
        .routes(routes!(my_partners))
}

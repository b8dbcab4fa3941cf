//! Tiers: the ladder (admin), and each member's tier — its history, and a floor an
//! operator sets by hand.

use super::*;
use crate::extract::{list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use coalition_app::tiers::{self, Standing, TierRow};
use coalition_app::App;
use coalition_domain::tiers::{Source, TierTerms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

fn tier_response(t: TierRow) -> TierResponse {
    let terms = &t.tier.terms;
    TierResponse {
        id: terms.id,
        name: terms.name.clone(),
        rank: terms.rank,
        qualifying_spend: money(t.qualifying_spend(), t.currency.code()),
        discount_percent: terms.discount_percent.to_string(),
        earn_multiplier: terms.earn_multiplier.to_string(),
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}

pub(crate) fn summary(t: &TierTerms) -> TierSummary {
    TierSummary {
        id: t.id,
        name: t.name.clone(),
        rank: t.rank,
        discount_percent: t.discount_percent.to_string(),
        earn_multiplier: t.earn_multiplier.to_string(),
    }
}

pub(crate) fn status_response(s: &Standing) -> TierStatus {
    let currency = s.currency.code();
    TierStatus {
        tier: s.effective.as_ref().map(|(t, _)| summary(t)),
        source: s.effective.as_ref().map(|(_, source)| {
            match source {
                Source::Qualified => "qualified",
                Source::Floor => "floor",
            }
            .to_owned()
        }),
        qualified_tier: s.qualified.as_ref().map(summary),
        floor: s.floor.as_ref().map(|f| FloorResponse {
            tier: summary(&f.tier),
            reason: f.reason.clone(),
            ends_at: f.ends_at,
        }),
        qualifying_spend: money(s.qualifying_spend, currency),
        window_start: s.window_start,
        next_tier: s.next.as_ref().map(|(t, _)| summary(t)),
        spend_to_next_tier: s.next.as_ref().map(|(_, needed)| money(*needed, currency)),
    }
}

/// Add a tier to the ladder (admin).
#[utoipa::path(post, path = "/v1/tiers", tag = "tiers", security(("bearer" = [])), request_body = NewTierRequest,
    responses((status = 201, body = TierResponse), (status = 409, body = Problem, description = "tier_rank_taken: the programme has a tier of this rank"),
        (status = 422, body = Problem, description = "validation_failed, currency_mismatch")))]
pub async fn create_tier(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewTierRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let input = tiers::NewTier {
        name: b.name,
        rank: b.rank,
        qualifying_spend: (b.qualifying_spend.amount, b.qualifying_spend.currency),
        discount_percent: b.discount_percent,
        earn_multiplier: b.earn_multiplier,
    };
    let tier = tiers::create(&app, &caller, input).await?;
    Ok(created(
        format!("/v1/tiers/{}", tier.tier.terms.id),
        tier_response(tier),
    ))
}

/// The tier ladder, lowest rank first (admin).
#[utoipa::path(get, path = "/v1/tiers", tag = "tiers", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = TierList), (status = 422, body = Problem)))]
pub async fn list_tiers(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TierList>> {
    let page = tiers::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(TierList {
        data: page.data.into_iter().map(tier_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One tier (admin).
#[utoipa::path(get, path = "/v1/tiers/{id}", tag = "tiers", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = TierResponse), (status = 404, body = Problem)))]
pub async fn get_tier(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<TierResponse>> {
    let tier = tiers::get(&app, &caller, path_id(&id, "tier")?).await?;
    Ok(Json(tier_response(tier)))
}

/// Change a tier (admin). Members move at their next purchase (up) or the next
/// requalification (up or down).
#[utoipa::path(patch, path = "/v1/tiers/{id}", tag = "tiers", security(("bearer" = [])), params(("id" = String, Path)), request_body = TierPatchRequest,
    responses((status = 200, body = TierResponse), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "tier_rank_taken: the programme has a tier of this rank"), (status = 422, body = Problem, description = "validation_failed, currency_mismatch")))]
pub async fn update_tier(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<TierPatchRequest>,
) -> ApiResult<Json<TierResponse>> {
    let id = path_id(&id, "tier")?;
    let b = body.value;
    let patch = tiers::TierPatch {
        name: b.name,
        rank: b.rank,
        qualifying_spend: b.qualifying_spend.map(|m| (m.amount, m.currency)),
        discount_percent: b.discount_percent,
        earn_multiplier: b.earn_multiplier,
    };
    Ok(Json(tier_response(
        tiers::update(&app, &caller, id, patch).await?,
    )))
}

/// A member's tier changes, newest first (admin; a partner that may see the member).
#[utoipa::path(get, path = "/v1/members/{id}/tiers", tag = "tiers", security(("bearer" = [])), params(("id" = String, Path), ListParams),
    responses((status = 200, body = TierHistoryList), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn member_tier_history(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<TierHistoryList>> {
    let member_id = path_id(&id, "member")?;
    let page = tiers::history(&app, &caller, member_id, list_params(query.as_deref())?).await?;
    let data = page
        .data
        .into_iter()
        .map(|i| TierHistoryItem {
            id: i.row.id,
            kind: i.row.kind,
            from_tier: i.from.as_ref().map(summary),
            to_tier: i.to.as_ref().map(summary),
            effective_tier: i.effective.as_ref().map(summary),
            reason: i.row.reason,
            ends_at: i.row.ends_at,
            created_at: i.row.created_at,
        })
        .collect();
    Ok(Json(TierHistoryList {
        data,
        next_cursor: page.next_cursor,
    }))
}

/// Set a member's tier by hand until `ends_at` (admin): a floor, not a permanent
/// override — the member has the higher of it and the tier their spend qualifies for,
/// and falls back to the qualified tier when it ends.
#[utoipa::path(post, path = "/v1/members/{id}/tier", tag = "tiers", security(("bearer" = [])), params(("id" = String, Path)), request_body = SetTierRequest,
    responses((status = 200, body = TierStatus), (status = 404, body = Problem, description = "unknown member, or a tier not on the programme's ladder"), (status = 422, body = Problem)))]
pub async fn set_member_tier(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<SetTierRequest>,
) -> ApiResult<Json<TierStatus>> {
    let member_id = path_id(&id, "member")?;
    let b = body.value;
    let input = tiers::NewFloor {
        tier_id: b.tier_id,
        reason: b.reason,
        ends_at: b.ends_at,
    };
    let standing = tiers::set_floor(&app, &caller, member_id, input).await?;
    Ok(Json(status_response(&standing)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTierRequest {
    #[schema(schema_with = crate::fields::name)]
    pub name: String,
    /// Higher is better; unique within the programme.
    #[schema(minimum = 0, maximum = 10000)]
    pub rank: i64,
    /// Spend over a rolling 12 months across the coalition, net of refunds, that
    /// qualifies. A tier that needs 0 is the entry tier every member has.
    #[schema(schema_with = crate::fields::spend)]
    pub qualifying_spend: MoneyDto,
    /// Percent taken off the bill.
    #[schema(schema_with = crate::fields::percent)]
    pub discount_percent: String,
    /// Multiplies the points of the partner's base rate.
    #[schema(schema_with = crate::fields::multiplier)]
    pub earn_multiplier: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierPatchRequest {
    #[schema(schema_with = crate::fields::optional_name)]
    pub name: Option<String>,
    #[schema(minimum = 0, maximum = 10000)]
    pub rank: Option<i64>,
    #[schema(schema_with = crate::fields::optional_spend)]
    pub qualifying_spend: Option<MoneyDto>,
    #[schema(schema_with = crate::fields::optional_percent)]
    pub discount_percent: Option<String>,
    #[schema(schema_with = crate::fields::optional_multiplier)]
    pub earn_multiplier: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTierRequest {
    /// A tier of the programme's ladder.
    pub tier_id: Uuid,
    #[schema(schema_with = crate::fields::reason)]
    pub reason: String,
    /// When the floor ends (RFC 3339): in the future, at most 1830 days ahead.
    #[schema(example = "2030-01-01T00:00:00Z")]
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierResponse {
    pub id: Uuid,
    pub name: String,
    pub rank: i32,
    pub qualifying_spend: MoneyDto,
    pub discount_percent: String,
    pub earn_multiplier: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierList {
    pub data: Vec<TierResponse>,
    pub next_cursor: Option<String>,
}

/// A tier as a member's records name it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierSummary {
    pub id: Uuid,
    pub name: String,
    pub rank: i32,
    pub discount_percent: String,
    pub earn_multiplier: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FloorResponse {
    pub tier: TierSummary,
    pub reason: Option<String>,
    pub ends_at: DateTime<Utc>,
}

/// A member's place on the ladder.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierStatus {
    /// The effective tier: the higher of the qualified tier and a live floor.
    pub tier: Option<TierSummary>,
    /// Where the effective tier comes from: `qualified` or `floor`.
    pub source: Option<String>,
    /// The tier the member's spend qualified for (at the last purchase or requalification).
    pub qualified_tier: Option<TierSummary>,
    /// A tier set by hand, while it lasts.
    pub floor: Option<FloorResponse>,
    /// Spend from `window_start` to today (UTC days), net of refunds.
    pub qualifying_spend: MoneyDto,
    pub window_start: NaiveDate,
    /// The next tier above the effective one.
    pub next_tier: Option<TierSummary>,
    /// Spend still needed to qualify for `next_tier` (0 when reached: the member moves at
    /// the next purchase or requalification).
    pub spend_to_next_tier: Option<MoneyDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierHistoryItem {
    pub id: Uuid,
    /// `qualified` (a purchase crossed a threshold: from/to are the qualified tier),
    /// `requalified` (the requalification job moved it), `manual` (an operator set a
    /// floor: from is the effective tier before, to the floor), `floor_ended` (from is
    /// the floor, to the qualified tier).
    pub kind: String,
    pub from_tier: Option<TierSummary>,
    pub to_tier: Option<TierSummary>,
    /// The effective tier after the change.
    pub effective_tier: Option<TierSummary>,
    pub reason: Option<String>,
    pub ends_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierHistoryList {
    pub data: Vec<TierHistoryItem>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_tier, list_tiers))
        .routes(routes!(get_tier, update_tier))
        .routes(routes!(member_tier_history))
        .routes(routes!(set_member_tier))
}

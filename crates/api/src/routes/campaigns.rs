//! Campaigns (admin): a reward for a segment of members, paid by a funder, within a
//! budget and a window, with a holdout; and the recorded assignment of its members.

use super::rules::FunderDto;
use super::*;
use crate::extract::{form_urldecode, list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::{validation, Problem};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::campaign_results::{self, GroupFigures, WindowResults};
use coalition_app::campaigns::{self, Campaign, CampaignFields, RewardFields, SegmentFields};
use coalition_app::error::FieldError;
use coalition_app::rules::FunderFields;
use coalition_app::App;
use coalition_domain::campaigns::Group;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Create a campaign (admin). When `starts_at` has come (default: now), the segment's
/// members are assigned to treatment or control at once.
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", security(("bearer" = [])), request_body = NewCampaignRequest,
    responses((status = 201, body = CampaignResponse, headers(("Location" = String, description = "/v1/campaigns/{id}"))),
        (status = 422, body = Problem, content_type = "application/problem+json",
         description = "validation_failed: errors[] names each field (unknown partners, tiers or members, a funder that is not a bank, ends_at not after starts_at, p_alive_below outside 0–1, unknown RFM segments)"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "no_clv_model: an at_risk segment needs a fitted CLV model")))]
pub async fn create_campaign(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewCampaignRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let fields = CampaignFields {
        name: Some(b.name),
        segment: Some(segment_fields(b.segment)),
        reward: Some(reward_fields(b.reward)),
        funder: Some(funder_fields(b.funder)),
        budget_points: Some(b.budget_points),
        starts_at: b.starts_at,
        ends_at: Some(b.ends_at),
        holdout_percent: b.holdout_percent,
        reminder: b.reminder,
    };
    let c = campaigns::create(&app, &caller, fields).await?;
    Ok(created(format!("/v1/campaigns/{}", c.id), response(&c)))
}

/// List the programme's campaigns, oldest first (admin).
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = CampaignList),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_campaigns(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<CampaignList>> {
    let page = campaigns::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(CampaignList {
        data: page.data.iter().map(response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One campaign, with the budget used so far (admin).
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = CampaignResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_campaign(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<CampaignResponse>> {
    let c = campaigns::get(&app, &caller, path_id(&id, "campaign")?).await?;
    Ok(Json(response(&c)))
}

/// Change a campaign that has not started (admin): the fields sent replace theirs.
#[utoipa::path(patch, path = "/v1/campaigns/{id}", tag = "campaigns", security(("bearer" = [])), params(("id" = String, Path)), request_body = CampaignPatch,
    responses((status = 200, body = CampaignResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "campaign_started: only ending it is possible now; no_clv_model: an at_risk segment needs a fitted CLV model"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed")))]
pub async fn update_campaign(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<CampaignPatch>,
) -> ApiResult<Json<CampaignResponse>> {
    let id = path_id(&id, "campaign")?;
    let b = body.value;
    let fields = CampaignFields {
        name: b.name,
        segment: b.segment.map(segment_fields),
        reward: b.reward.map(reward_fields),
        funder: b.funder.map(funder_fields),
        budget_points: b.budget_points,
        starts_at: b.starts_at,
        ends_at: b.ends_at,
        holdout_percent: b.holdout_percent,
        reminder: b.reminder,
    };
    let c = campaigns::update(&app, &caller, id, fields).await?;
    Ok(Json(response(&c)))
}

/// End a campaign now (admin); ending an ended campaign changes nothing.
#[utoipa::path(post, path = "/v1/campaigns/{id}/end", tag = "campaigns", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = CampaignResponse),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn end_campaign(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<CampaignResponse>> {
    let c = campaigns::end(&app, &caller, path_id(&id, "campaign")?).await?;
    Ok(Json(response(&c)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberListParams {
    /// Only this group (default: both).
    #[param(schema_with = crate::fields::campaign_group)]
    pub group: Option<String>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// The campaign's recorded assignment: each targeted member's group and when it was
/// recorded, by member id (admin).
#[utoipa::path(get, path = "/v1/campaigns/{id}/members", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path), MemberListParams),
    responses((status = 200, body = CampaignMemberList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn list_campaign_members(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<CampaignMemberList>> {
    let id = path_id(&id, "campaign")?;
    let page = list_params(query.as_deref())?;
    let group = group_param(query.as_deref())?;
    let page = campaigns::members(&app, &caller, id, group, page).await?;
    Ok(Json(CampaignMemberList {
        data: page
            .data
            .into_iter()
            .map(|m| CampaignMemberResponse {
                member_id: m.member_id,
                group: m.group,
                assigned_at: m.assigned_at,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ResultsParams {
    /// Also measure the `after_days` days after the campaign's end (1–3650), to see
    /// whether the effect lasted.
    #[param(minimum = 1, maximum = 3650)]
    pub after_days: Option<i64>,
}

/// What the campaign really earned: its treatment group against its holdout (admin).
///
/// - **Window**: `starts_at` to `ends_at` (`window`), or to now while the campaign runs.
///   With `after_days`, `after` holds the same figures for the `after_days` days from
///   `ends_at` (up to now); `after` is null while the campaign has not ended.
/// - **Revenue** of a member: purchases in the window, net of refunds, on the purchase's
///   day (an imported purchase's historical day) — at the reward's `partner_ids` when
///   the reward is limited to partners (`revenue_at` `reward_partners`), else anywhere
///   in the programme (`programme`). Members who bought nothing count as 0. Every
///   member recorded in the group counts (`GET /v1/campaigns/{id}/members`), erased ones
///   included. `buyers`: members with at least one purchase counted.
/// - **`uplift_per_member`**: mean revenue per member, treatment − control, with a 95 %
///   Welch interval (Welch–Satterthwaite degrees of freedom, Student-t quantile). It is
///   null — and so are `incremental_revenue` and `net_effect`, and the verdict is
///   `inconclusive` — when either group has fewer than two members (no control group,
///   e.g. `holdout_percent` 0: the uplift cannot be estimated).
/// - **`incremental_revenue`** = uplift × treatment members. **`points_cost`**: the
///   points the campaign awarded (`points_given`, its ledger lines; a refund's clawback
///   is not deducted, as for the budget), each valued at its funder's issue price per point in force when posted (a
///   partner's or bank's price, the operator's point value), as settlement prices
///   them; in `after` it is zero (the campaign gives nothing after its end).
///   **`net_effect`** = incremental revenue − points cost, with its 95 % interval
///   (`net_effect_ci_low`, `net_effect_ci_high`).
/// - **`verdict`**: `gain` when the net effect's interval lies above zero, `loss` when
///   below, `inconclusive` otherwise.
///
/// Money is rounded to the currency's minor unit. Standing earning rules
/// (`/v1/rules`) have no holdout, hence no control group and no results.
#[utoipa::path(get, path = "/v1/campaigns/{id}/results", tag = "campaigns", security(("bearer" = [])),
    params(("id" = String, Path), ResultsParams),
    responses((status = 200, body = CampaignResultsResponse),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "forbidden: an admin token is needed"),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "not_found: no such campaign in the caller's programme"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed: `after_days` is not a whole number from 1 to 3650")))]
pub async fn campaign_results(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<CampaignResultsResponse>> {
    let id = path_id(&id, "campaign")?;
    let after_days = after_days_param(query.as_deref())?;
    let r = campaign_results::results(&app, &caller, id, after_days).await?;
    let c = r.currency.as_str();
    let w = window_results(&r.window, c);
    Ok(Json(CampaignResultsResponse {
        campaign_id: r.campaign_id,
        status: r.status.to_owned(),
        revenue_at: if r.revenue_partner_ids.is_some() {
            "reward_partners"
        } else {
            "programme"
        }
        .to_owned(),
        partner_ids: r.revenue_partner_ids,
        window: w.window,
        treatment: w.treatment,
        control: w.control,
        uplift_per_member: w.uplift_per_member,
        incremental_revenue: w.incremental_revenue,
        points_given: w.points_given,
        points_cost: w.points_cost,
        net_effect: w.net_effect,
        net_effect_ci_low: w.net_effect_ci_low,
        net_effect_ci_high: w.net_effect_ci_high,
        verdict: w.verdict,
        after: r.after.map(|a| window_results(&a, c)),
    }))
}

fn after_days_param(query: Option<&str>) -> ApiResult<Option<i64>> {
    let bad = || {
        validation(vec![FieldError::new(
            "after_days",
            "must be a whole number from 1 to 3650",
        )])
    };
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_urldecode(k.as_bytes()).as_deref() == Some("after_days") {
            let value = form_urldecode(v.as_bytes()).ok_or_else(bad)?;
            let days: i64 = value.parse().map_err(|_| bad())?;
            if !(1..=campaign_results::MAX_AFTER_DAYS).contains(&days) {
                return Err(bad());
            }
            return Ok(Some(days));
        }
    }
    Ok(None)
}

fn group_results(g: &GroupFigures, currency: &str) -> GroupResults {
    GroupResults {
        members: g.members,
        buyers: g.buyers,
        revenue_per_member: g.revenue_per_member.map(|m| money(m, currency)),
    }
}

fn window_results(w: &WindowResults, c: &str) -> WindowResultsResponse {
    WindowResultsResponse {
        window: ResultsWindow {
            from: w.from,
            to: w.to,
        },
        treatment: group_results(&w.treatment, c),
        control: group_results(&w.control, c),
        uplift_per_member: w.uplift.as_ref().map(|u| UpliftResponse {
            estimate: money(u.estimate, c),
            ci_low: money(u.ci_low, c),
            ci_high: money(u.ci_high, c),
            degrees_of_freedom: if u.degrees_of_freedom.is_finite() {
                Some(u.degrees_of_freedom)
            } else {
                None
            },
        }),
        incremental_revenue: w.incremental_revenue.map(|m| money(m, c)),
        points_given: w.points_given,
        points_cost: money(w.points_cost, c),
        net_effect: w.net_effect.map(|m| money(m, c)),
        net_effect_ci_low: w.net_effect_ci.map(|(low, _)| money(low, c)),
        net_effect_ci_high: w.net_effect_ci.map(|(_, high)| money(high, c)),
        verdict: w.verdict.as_str().to_owned(),
    }
}

fn group_param(query: Option<&str>) -> ApiResult<Option<Group>> {
    let bad = || {
        validation(vec![FieldError::new(
            "group",
            "must be treatment or control",
        )])
    };
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_urldecode(k.as_bytes()).as_deref() == Some("group") {
            let value = form_urldecode(v.as_bytes()).ok_or_else(bad)?;
            return Group::parse(&value).map(Some).ok_or_else(bad);
        }
    }
    Ok(None)
}

fn segment_fields(s: SegmentDto) -> SegmentFields {
    SegmentFields {
        kind: s.kind,
        days: s.days,
        tier_id: s.tier_id,
        buys_at: s.buys_at,
        never_at: s.never_at,
        window_days: s.window_days,
        min_spend: s.min_spend.map(|m| (m.amount, m.currency)),
        max_spend: s.max_spend.map(|m| (m.amount, m.currency)),
        partner_id: s.partner_id,
        member_ids: s.member_ids,
        p_alive_below: s.p_alive_below,
        segments: s.segments,
    }
}

fn reward_fields(r: RewardDto) -> RewardFields {
    RewardFields {
        kind: r.kind,
        value: r.value,
        partner_ids: r.partner_ids,
    }
}

fn funder_fields(f: FunderDto) -> FunderFields {
    FunderFields {
        kind: f.kind,
        partner_id: f.partner_id,
    }
}

fn response(c: &Campaign) -> CampaignResponse {
    let s = c.definition.segment.fields(&c.currency);
    let money_of = |m: Option<(String, String)>| {
        m.map(|(amount, currency)| money(amount.parse().unwrap_or_default(), &currency))
    };
    let r = &c.definition.reward;
    CampaignResponse {
        id: c.id,
        name: c.name.clone(),
        segment: SegmentDto {
            kind: s.kind,
            days: s.days,
            tier_id: s.tier_id,
            buys_at: s.buys_at,
            never_at: s.never_at,
            window_days: s.window_days,
            min_spend: money_of(s.min_spend),
            max_spend: money_of(s.max_spend),
            partner_id: s.partner_id,
            member_ids: s.member_ids,
            p_alive_below: s.p_alive_below,
            segments: s.segments,
        },
        reward: RewardDto {
            kind: r.kind.clone(),
            value: r.value.normalize().to_string(),
            partner_ids: r.partner_ids.clone(),
        },
        funder: super::rules::funder_dto(&c.definition.funder),
        budget_points: c.budget_points,
        budget_used: c.budget_used,
        starts_at: c.starts_at,
        ends_at: c.ends_at,
        holdout_percent: i64::from(c.holdout_basis_points / 100),
        reminder: c.definition.reminder,
        status: c.status(Utc::now()).into(),
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

/// Who the campaign targets: `kind` and the fields it needs. `lapsed` + `days`: bought
/// before, nowhere in the last `days` days; `tier` + `tier_id`: the member's effective
/// tier; `cross_sell` + `buys_at` + `never_at`: bought at one partner, never at the
/// other; `spend_band` + `window_days` + `min_spend` (+ `max_spend`): spent that much,
/// net of refunds, in the last `window_days` days (UTC days, today included);
/// `partner_members` + `partner_id`: linked to the partner; `members` + `member_ids`:
/// exactly these; `at_risk` + `p_alive_below` (0–1, exclusive): P(alive) below it under
/// the programme's latest CLV model (409 `no_clv_model` when none is fitted);
/// `rfm` + `segments`: in one of these RFM segments (`GET /v1/analytics/rfm`) as of the
/// day members are assigned. Erased members are never targeted.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentDto {
    #[schema(schema_with = crate::fields::segment_kind)]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buys_at: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub never_at: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 3650)]
    pub window_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::fields::amount)]
    pub min_spend: Option<MoneyDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::fields::amount)]
    pub max_spend: Option<MoneyDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 1000)]
    pub member_ids: Option<Vec<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub p_alive_below: Option<f64>,
    /// RFM segment names: champions, loyal, potential_loyalists, new, promising,
    /// need_attention, about_to_sleep, at_risk, cannot_lose, hibernating, lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 11)]
    pub segments: Option<Vec<String>>,
}

/// What a treated member earns: `multiplier` (value − 1) × the partner's base points
/// (1 < value ≤ 1000), or `bonus` value points per purchase (whole, > 0); at the
/// `partner_ids` only, when given.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewardDto {
    #[schema(schema_with = crate::fields::reward_kind)]
    pub kind: String,
    /// Decimal string.
    #[schema(schema_with = crate::fields::rate)]
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 100)]
    pub partner_ids: Option<Vec<Uuid>>,
}

/// A new campaign. `starts_at` defaults to now; `holdout_percent` (whole percent, 0–100)
/// to 0; `reminder` (win-back, lapsed segments only) to false.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaignRequest {
    #[schema(schema_with = crate::fields::name)]
    pub name: String,
    pub segment: SegmentDto,
    pub reward: RewardDto,
    /// Who pays for the points (as for rules): `partner` (without `partner_id`, the one
    /// where the purchase happens), `bank` (a bank partner) or `operator`.
    pub funder: FunderDto,
    /// The most points the campaign awards, in all; never exceeded.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub budget_points: i64,
    pub starts_at: Option<DateTime<Utc>>,
    /// After `starts_at`, in the future; exclusive.
    pub ends_at: DateTime<Utc>,
    /// The share of the segment held out as control (gets nothing), whole percent.
    #[schema(minimum = 0, maximum = 100)]
    pub holdout_percent: Option<i64>,
    /// Win-back: queue one `campaign.reminder` per treated member (lapsed segments).
    pub reminder: Option<bool>,
}

/// A change to a campaign that has not started: only the fields sent change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    #[schema(schema_with = crate::fields::optional_name)]
    pub name: Option<String>,
    pub segment: Option<SegmentDto>,
    pub reward: Option<RewardDto>,
    pub funder: Option<FunderDto>,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub budget_points: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    #[schema(minimum = 0, maximum = 100)]
    pub holdout_percent: Option<i64>,
    pub reminder: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignResponse {
    pub id: Uuid,
    pub name: String,
    pub segment: SegmentDto,
    pub reward: RewardDto,
    pub funder: FunderDto,
    pub budget_points: i64,
    /// Points awarded so far (refunds do not give budget back).
    pub budget_used: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub holdout_percent: i64,
    pub reminder: bool,
    /// `scheduled`, `running` or `ended`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub data: Vec<CampaignResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignMemberResponse {
    pub member_id: Uuid,
    /// `treatment` or `control`.
    pub group: String,
    pub assigned_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignMemberList {
    pub data: Vec<CampaignMemberResponse>,
    pub next_cursor: Option<String>,
}

/// One group's figures in a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupResults {
    pub members: i64,
    /// Members with at least one purchase counted in the window.
    pub buyers: i64,
    /// The group's revenue ÷ its members (null without members).
    pub revenue_per_member: Option<MoneyDto>,
}

/// Mean revenue per member, treatment − control, with its 95 % Welch interval.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpliftResponse {
    pub estimate: MoneyDto,
    pub ci_low: MoneyDto,
    pub ci_high: MoneyDto,
    /// Welch–Satterthwaite degrees of freedom of the interval (null when neither group
    /// varies: the interval is the estimate).
    pub degrees_of_freedom: Option<f64>,
}

/// The measured period: from `from` (included) to `to` (excluded).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultsWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The after-window's figures (as the campaign's own).
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowResultsResponse {
    pub window: ResultsWindow,
    pub treatment: GroupResults,
    pub control: GroupResults,
    pub uplift_per_member: Option<UpliftResponse>,
    pub incremental_revenue: Option<MoneyDto>,
    pub points_given: i64,
    pub points_cost: MoneyDto,
    pub net_effect: Option<MoneyDto>,
    pub net_effect_ci_low: Option<MoneyDto>,
    pub net_effect_ci_high: Option<MoneyDto>,
    /// `gain`, `loss` or `inconclusive`.
    #[schema(schema_with = crate::fields::campaign_verdict)]
    pub verdict: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignResultsResponse {
    pub campaign_id: Uuid,
    /// The campaign's status when measured: `scheduled`, `running` or `ended`.
    #[schema(schema_with = crate::fields::campaign_status)]
    pub status: String,
    /// Where revenue is counted: `reward_partners` (the reward's `partner_ids`) or
    /// `programme` (every partner).
    #[schema(schema_with = crate::fields::revenue_at)]
    pub revenue_at: String,
    /// The reward's partners, when revenue is counted there only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_ids: Option<Vec<Uuid>>,
    /// The campaign's window as measured (to now while it runs).
    pub window: ResultsWindow,
    pub treatment: GroupResults,
    pub control: GroupResults,
    /// Null when either group has fewer than two members.
    pub uplift_per_member: Option<UpliftResponse>,
    /// `uplift_per_member.estimate` × treatment members.
    pub incremental_revenue: Option<MoneyDto>,
    /// The points the campaign gave (its ledger lines).
    pub points_given: i64,
    /// `points_given` valued at each funder's issue price per point.
    pub points_cost: MoneyDto,
    /// `incremental_revenue` − `points_cost`.
    pub net_effect: Option<MoneyDto>,
    /// The net effect's 95 % interval.
    pub net_effect_ci_low: Option<MoneyDto>,
    pub net_effect_ci_high: Option<MoneyDto>,
    /// `gain` (the net effect's interval above zero), `loss` (below) or `inconclusive`.
    #[schema(schema_with = crate::fields::campaign_verdict)]
    pub verdict: String,
    /// With `after_days`, the same figures for the days after the campaign's end; null
    /// without `after_days` or before the campaign has ended.
    pub after: Option<WindowResultsResponse>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, update_campaign))
        .routes(routes!(end_campaign))
        .routes(routes!(list_campaign_members))
        .routes(routes!(campaign_results))
}

//! Earning rules (admin). No DELETE: a rule that may have awarded points is deactivated
//! (`active: false`) or ended (`valid_to`); every change is kept as a version.

use super::*;
use crate::extract::{list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::Problem;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::rules::{self, ConditionFields, EffectFields, FunderFields, RuleFields};
use coalition_app::App;
use coalition_domain::rules::{Caps, Funder, Hours, Rule};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// A field that may be sent as `null` to clear it: absent → `None`, null → `Some(None)`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Create a rule (admin).
#[utoipa::path(post, path = "/v1/rules", tag = "rules", security(("bearer" = [])), request_body = NewRuleRequest,
    responses((status = 201, body = RuleResponse, headers(("Location" = String, description = "/v1/rules/{id}"))),
        (status = 422, body = Problem, description = "validation_failed: errors[] names each field (unknown partners, bad values, valid_to not after valid_from)")))]
pub async fn create_rule(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewRuleRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let fields = RuleFields {
        name: Some(b.name),
        priority: b.priority,
        active: b.active,
        valid_from: b.valid_from,
        valid_to: b.valid_to.map(Some),
        conditions: b.conditions.map(condition_fields),
        effect: Some(effect_fields(b.effect)),
        caps: b.caps.map(caps),
        stackable: b.stackable,
        funder: b.funder.map(funder_fields),
    };
    let stored = rules::create(&app, &caller, fields).await?;
    Ok(created(
        format!("/v1/rules/{}", stored.rule.id),
        rule_response(&stored),
    ))
}

/// List the programme's rules, oldest first (admin).
#[utoipa::path(get, path = "/v1/rules", tag = "rules", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = RuleList), (status = 422, body = Problem)))]
pub async fn list_rules(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<RuleList>> {
    let page = rules::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(RuleList {
        data: page.data.iter().map(rule_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One rule, as it is now (admin).
#[utoipa::path(get, path = "/v1/rules/{id}", tag = "rules", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RuleResponse), (status = 404, body = Problem)))]
pub async fn get_rule(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<RuleResponse>> {
    let stored = rules::get(&app, &caller, path_id(&id, "rule")?).await?;
    Ok(Json(rule_response(&stored)))
}

/// Change a rule (admin): the fields sent replace theirs (an object sent replaces the
/// whole object; `valid_to: null` makes the rule run forever) and the rule gets its next
/// version. To retire a rule, set `active: false` or `valid_to`.
#[utoipa::path(patch, path = "/v1/rules/{id}", tag = "rules", security(("bearer" = [])), params(("id" = String, Path)), request_body = RulePatch,
    responses((status = 200, body = RuleResponse), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update_rule(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    body: JsonBody<RulePatch>,
) -> ApiResult<Json<RuleResponse>> {
    let id = path_id(&id, "rule")?;
    let b = body.value;
    let fields = RuleFields {
        name: b.name,
        priority: b.priority,
        active: b.active,
        valid_from: b.valid_from,
        valid_to: b.valid_to,
        conditions: b.conditions.map(condition_fields),
        effect: b.effect.map(effect_fields),
        caps: b.caps.map(caps),
        stackable: b.stackable,
        funder: b.funder.map(funder_fields),
    };
    let stored = rules::update(&app, &caller, id, fields).await?;
    Ok(Json(rule_response(&stored)))
}

/// A rule as it was at one version: what a breakdown line's `rule_id` and
/// `rule_version` name (admin).
#[utoipa::path(get, path = "/v1/rules/{id}/versions/{version}", tag = "rules", security(("bearer" = [])),
    params(("id" = String, Path), ("version" = i32, Path, minimum = 1)),
    responses((status = 200, body = RuleResponse), (status = 404, body = Problem)))]
pub async fn get_rule_version(
    State(app): State<App>,
    Auth(caller): Auth,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Json<RuleResponse>> {
    let not_found = || ApiError::App(coalition_app::AppError::NotFound("rule version"));
    let Path((id, version)) = path.map_err(|_| not_found())?;
    let id = path_id(&id, "rule")?;
    let version: i32 = version.parse().map_err(|_| not_found())?;
    let (rule, currency, at) = rules::version(&app, &caller, id, version).await?;
    Ok(Json(response_of(&rule, &currency, at, at)))
}

fn condition_fields(c: ConditionsDto) -> ConditionFields {
    ConditionFields {
        partner_ids: c.partner_ids,
        partner_categories: c.partner_categories,
        min_amount: c.min_amount.map(|m| (m.amount, m.currency)),
        tier_ids: c.tier_ids,
        first_purchase_at_partner: c.first_purchase_at_partner,
        days_of_week: c.days_of_week,
        hours: c.hours.map(|h| (h.from, h.to)),
        purchase_categories: c.purchase_categories,
    }
}

fn effect_fields(e: EffectDto) -> EffectFields {
    EffectFields {
        kind: e.kind,
        value: e.value,
    }
}

fn caps(c: CapsDto) -> Caps {
    Caps {
        per_purchase: c.per_purchase,
        per_member_day: c.per_member_day,
        per_member_month: c.per_member_month,
    }
}

fn funder_fields(f: FunderDto) -> FunderFields {
    FunderFields {
        kind: f.kind,
        partner_id: f.partner_id,
    }
}

pub(crate) fn funder_dto(f: &Funder) -> FunderDto {
    let (kind, partner_id) = match f {
        Funder::SellingPartner => ("partner", None),
        Funder::Partner(id) => ("partner", Some(*id)),
        Funder::Bank(id) => ("bank", Some(*id)),
        Funder::Operator => ("operator", None),
    };
    FunderDto {
        kind: kind.into(),
        partner_id,
    }
}

fn rule_response(s: &rules::StoredRule) -> RuleResponse {
    response_of(&s.rule, &s.currency, s.created_at, s.updated_at)
}

fn response_of(
    r: &Rule,
    currency: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> RuleResponse {
    let c = &r.conditions;
    RuleResponse {
        id: r.id,
        version: r.version,
        name: r.name.clone(),
        priority: r.priority,
        active: r.active,
        valid_from: r.valid_from,
        valid_to: r.valid_to,
        conditions: ConditionsDto {
            partner_ids: c.partner_ids.clone(),
            partner_categories: c.partner_categories.clone(),
            min_amount: c.min_amount.map(|m| money(m, currency)),
            tier_ids: c.tier_ids.clone(),
            first_purchase_at_partner: c.first_purchase_at_partner,
            days_of_week: c
                .days_of_week
                .as_ref()
                .map(|d| d.iter().map(|d| i64::from(*d)).collect()),
            hours: c.hours.map(|h| HoursDto {
                from: Hours::format_time(h.from_minute),
                to: Hours::format_time(h.to_minute),
            }),
            purchase_categories: c.purchase_categories.clone(),
        },
        effect: EffectDto {
            kind: r.effect.kind.as_str().into(),
            value: r.effect.value.normalize().to_string(),
        },
        caps: CapsDto {
            per_purchase: r.caps.per_purchase,
            per_member_day: r.caps.per_member_day,
            per_member_month: r.caps.per_member_month,
        },
        stackable: r.stackable,
        funder: funder_dto(&r.funder),
        created_at,
        updated_at,
    }
}

/// A new rule. Absent fields default: `priority` 0, `active` true, `valid_from` now,
/// no `valid_to`, no conditions, no caps, `stackable` true, `funder` the partner where
/// the purchase happens.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuleRequest {
    #[schema(schema_with = crate::fields::name)]
    pub name: String,
    /// Higher applies first; ties by id. Between -1000000 and 1000000.
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i32>,
    pub active: Option<bool>,
    /// RFC 3339; the rule applies from then on (default: now).
    pub valid_from: Option<DateTime<Utc>>,
    /// RFC 3339, after `valid_from`; the rule applies until then (exclusive).
    pub valid_to: Option<DateTime<Utc>>,
    pub conditions: Option<ConditionsDto>,
    pub effect: EffectDto,
    pub caps: Option<CapsDto>,
    /// Applies together with other matching stackable rules (default true). An exclusive
    /// rule applies alone when it is the first match by priority, and is skipped when a
    /// stackable rule comes first.
    pub stackable: Option<bool>,
    pub funder: Option<FunderDto>,
}

/// A change: only the fields sent change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    #[schema(schema_with = crate::fields::optional_name)]
    pub name: Option<String>,
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i32>,
    pub active: Option<bool>,
    pub valid_from: Option<DateTime<Utc>>,
    /// `null` clears it: the rule runs forever.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub valid_to: Option<Option<DateTime<Utc>>>,
    pub conditions: Option<ConditionsDto>,
    pub effect: Option<EffectDto>,
    pub caps: Option<CapsDto>,
    pub stackable: Option<bool>,
    pub funder: Option<FunderDto>,
}

/// All optional; every condition given must hold. Times are UTC.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionsDto {
    /// The purchase happens at one of these partners.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 100)]
    pub partner_ids: Option<Vec<Uuid>>,
    /// The selling partner's category is one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::fields::condition_categories)]
    pub partner_categories: Option<Vec<String>>,
    /// The purchase amount (before discounts) is at least this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_amount: Option<MoneyDto>,
    /// The member's tier is one of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 100)]
    pub tier_ids: Option<Vec<Uuid>>,
    /// `true`: only the member's first purchase at the selling partner (the
    /// cross-shopping bonus). `false` sets no condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_purchase_at_partner: Option<bool>,
    /// ISO days, 1 = Monday … 7 = Sunday (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::fields::days_of_week)]
    pub days_of_week: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<HoursDto>,
    /// At least one of these is among the purchase's `categories`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::fields::condition_categories)]
    pub purchase_categories: Option<Vec<String>>,
}

/// A UTC time window `[from, to)`; `from` after `to` wraps past midnight.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursDto {
    #[schema(example = "09:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub from: String,
    #[schema(example = "17:00", pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub to: String,
}

/// What the rule gives. `points_per_unit`: value points per unit paid; `cashback_percent`:
/// value percent of what is paid, as points at the programme's point value (0 < v ≤ 100);
/// `bonus_points`: value points (whole); `multiplier`: (value − 1) × the partner's base
/// points (1 < v ≤ 1000).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EffectDto {
    #[schema(schema_with = crate::fields::effect_kind)]
    pub kind: String,
    /// Decimal string.
    #[schema(schema_with = crate::fields::rate)]
    pub value: String,
}

/// Upper bounds on the rule's points: per purchase, per member per UTC day, per member
/// per UTC calendar month.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapsDto {
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub per_purchase: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub per_member_day: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub per_member_month: Option<i64>,
}

/// Who pays for the points: `partner` (a merchant partner; without `partner_id`, the one
/// where the purchase happens), `bank` (a bank partner) or `operator`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunderDto {
    #[schema(schema_with = crate::fields::funder_kind)]
    pub kind: String,
    pub partner_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleResponse {
    pub id: Uuid,
    /// 1 when created; each change adds one.
    pub version: i32,
    pub name: String,
    pub priority: i32,
    pub active: bool,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub conditions: ConditionsDto,
    pub effect: EffectDto,
    pub caps: CapsDto,
    pub stackable: bool,
    pub funder: FunderDto,
    pub created_at: DateTime<Utc>,
    /// When this version was made.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub data: Vec<RuleResponse>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_rule, list_rules))
        .routes(routes!(get_rule, update_rule))
        .routes(routes!(get_rule_version))
}

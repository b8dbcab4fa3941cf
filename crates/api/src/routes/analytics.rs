//! Customer-base models (`coalition_app::analytics`): fit BG/NBD and Gamma-Gamma on the
//! programme's purchases, read a member's value, list the valuable members slipping away.

use super::*;
use crate::extract::{form_urldecode, list_params, path_id, Auth, JsonBody, PathText};
use crate::problem::{validation, Problem};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use coalition_app::analytics::{self, ClvModel, MemberValue};
use coalition_app::{App, FieldError};
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClvModelRequest {
    /// Last day of the calibration period, included (YYYY-MM-DD, UTC); not in the future.
    #[schema(value_type = String, format = Date, example = "1997-09-30")]
    pub calibration_end: NaiveDate,
    /// Fit on this partner's purchases only (default: the whole programme's).
    pub partner_id: Option<Uuid>,
}

/// Fitted parameters. Time is in weeks; a purchase day is one transaction.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClvModelResponse {
    pub id: Uuid,
    pub partner_id: Option<Uuid>,
    #[schema(value_type = String, format = Date)]
    pub calibration_end: NaiveDate,
    pub currency: String,
    /// BG/NBD (Fader, Hardie & Lee 2005): purchase rate ~ Gamma(r, alpha), dropout
    /// probability ~ Beta(a, b).
    pub bgnbd: BgNbdParams,
    /// Gamma-Gamma spend model (absent when no member bought on two days).
    pub gamma_gamma: Option<GammaGammaParams>,
    /// Members with a purchase on or before `calibration_end`.
    pub members: i64,
    /// Of those, members with a repeat day and a positive spend (Gamma-Gamma's data).
    pub repeat_members: i64,
    /// Time the fits took, in milliseconds.
    pub fit_millis: i64,
    pub fitted_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BgNbdParams {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    /// Total log-likelihood at the maximum.
    pub log_likelihood: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GammaGammaParams {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
    pub log_likelihood: f64,
}

fn model_response(m: ClvModel) -> ClvModelResponse {
    let gamma_gamma = match (m.p, m.q, m.gamma, m.gamma_gamma_log_likelihood) {
        (Some(p), Some(q), Some(gamma), Some(log_likelihood)) => Some(GammaGammaParams {
            p,
            q,
            gamma,
            log_likelihood,
        }),
        _ => None,
    };
    ClvModelResponse {
        id: m.id,
        partner_id: m.partner_id,
        calibration_end: m.calibration_end,
        currency: m.currency,
        bgnbd: BgNbdParams {
            r: m.r,
            alpha: m.alpha,
            a: m.a,
            b: m.b,
            log_likelihood: m.bgnbd_log_likelihood,
        },
        gamma_gamma,
        members: m.members,
        repeat_members: m.repeat_members,
        fit_millis: m.fit_millis,
        fitted_at: m.fitted_at,
    }
}

/// Fit the BG/NBD and Gamma-Gamma models on the programme's (or one partner's)
/// purchases up to `calibration_end` and keep the parameters (admin). Conventions as
/// `lifetimes`' `summary_data_from_transaction_data`: purchases of one day (UTC) are one
/// transaction, net of refunds; weeks of 7 days; `x` repeat days; `t_x` and `T` from
/// the first purchase, the calibration end day included; Gamma-Gamma on the mean of the
/// repeat days' values.
#[utoipa::path(post, path = "/v1/analytics/clv-models", tag = "analytics", security(("bearer" = [])), request_body = NewClvModelRequest,
    responses((status = 201, body = ClvModelResponse, description = "fitted and stored"),
        (status = 404, body = Problem, description = "not_found: `partner_id` is not a partner of the programme"),
        (status = 422, body = Problem, description = "validation_failed: calibration_end in the future; not_enough_data: no purchase on or before calibration_end, or no maximum of the likelihood found")))]
pub async fn create_clv_model(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewClvModelRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let model = analytics::fit(&app, &caller, b.calibration_end, b.partner_id).await?;
    let answer = model_response(model);
    Ok(created(
        format!("/v1/analytics/clv-models/{}", answer.id),
        answer,
    ))
}

/// A fitted model (admin).
#[utoipa::path(get, path = "/v1/analytics/clv-models/{id}", tag = "analytics", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ClvModelResponse), (status = 404, body = Problem)))]
pub async fn get_clv_model(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<ClvModelResponse>> {
    let model = analytics::get(&app, &caller, path_id(&id, "CLV model")?).await?;
    Ok(Json(model_response(model)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ClvParams {
    /// The model (default: the programme's latest).
    pub model_id: Option<Uuid>,
    /// Weeks ahead for `expected_purchases` and `expected_spend`, 1–520 (default 52).
    #[param(minimum = 1, maximum = 520)]
    pub weeks: Option<u32>,
}

/// One member under a model, as of its calibration end.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberClvResponse {
    pub member_id: Uuid,
    /// The customer reference imports know the member by.
    pub external_ref: Option<String>,
    pub model_id: Uuid,
    #[schema(value_type = String, format = Date)]
    pub calibration_end: NaiveDate,
    /// `x`: repeat purchase days up to the calibration end.
    pub frequency: u32,
    /// `t_x`: weeks from the first to the last purchase day.
    pub recency_weeks: f64,
    /// `T`: weeks from the first purchase day to the calibration end.
    pub age_weeks: f64,
    #[schema(value_type = String, format = Date)]
    pub last_purchase_on: NaiveDate,
    /// What the member spent up to the calibration end.
    pub total_spend: MoneyDto,
    /// Probability the member is still a customer (BG/NBD).
    pub p_alive: f64,
    /// The horizon of `expected_purchases` and `expected_spend`.
    pub weeks: u32,
    /// Expected purchase days in the next `weeks` weeks.
    pub expected_purchases: f64,
    /// Gamma-Gamma's expected value of one purchase (absent without a spend model).
    pub expected_value_per_purchase: Option<MoneyDto>,
    /// `expected_purchases` × `expected_value_per_purchase`.
    pub expected_spend: Option<MoneyDto>,
    /// Customer lifetime value: the next 12 months' expected spend, each month
    /// discounted at 1 % (as `lifetimes`' `customer_lifetime_value` defaults).
    pub clv: Option<MoneyDto>,
}

fn estimate(value: f64, currency: &str) -> MoneyDto {
    money(
        rust_decimal::Decimal::from_f64(value).unwrap_or_default(),
        currency,
    )
}

fn member_response(model: &ClvModel, v: MemberValue, weeks: u32) -> MemberClvResponse {
    let c = model.currency.as_str();
    MemberClvResponse {
        member_id: v.member_id,
        external_ref: v.external_ref,
        model_id: model.id,
        calibration_end: model.calibration_end,
        frequency: v.summary.frequency,
        recency_weeks: v.summary.recency(),
        age_weeks: v.summary.age(),
        last_purchase_on: v.last_purchase_on,
        total_spend: estimate(v.total, c),
        p_alive: v.p_alive,
        weeks,
        expected_purchases: v.expected_purchases,
        expected_value_per_purchase: v.expected_value_per_purchase.map(|x| estimate(x, c)),
        expected_spend: v.expected_spend.map(|x| estimate(x, c)),
        clv: v.clv.map(|x| estimate(x, c)),
    }
}

/// All values of `name` in the query, each form-urldecoded (`None`: it did not decode).
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<Option<String>> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_urldecode(k.as_bytes()).as_deref() == Some(name))
                .then(|| form_urldecode(v.as_bytes()))
        })
}

pub(crate) fn parsed<T: std::str::FromStr>(
    query: Option<&str>,
    name: &str,
    ok: impl Fn(&T) -> bool,
    message: &str,
) -> ApiResult<Option<T>> {
    match query_value(query, name) {
        None => Ok(None),
        Some(text) => text
            .and_then(|t| t.parse::<T>().ok())
            .filter(|v| ok(v))
            .map(Some)
            .ok_or_else(|| validation(vec![FieldError::new(name, message)])),
    }
}

fn weeks_param(query: Option<&str>) -> ApiResult<u32> {
    Ok(parsed(
        query,
        "weeks",
        |w: &u32| (1..=analytics::MAX_WEEKS).contains(w),
        "must be a whole number from 1 to 520",
    )?
    .unwrap_or(52))
}

fn model_param(query: Option<&str>) -> ApiResult<Option<Uuid>> {
    parsed(query, "model_id", |_: &Uuid| true, "must be a UUID")
}

/// A member's P(alive), expected purchases and spend in the next `weeks` weeks, and CLV,
/// under a fitted model (admin).
#[utoipa::path(get, path = "/v1/members/{id}/clv", tag = "analytics", security(("bearer" = [])), params(("id" = String, Path), ClvParams),
    responses((status = 200, body = MemberClvResponse),
        (status = 404, body = Problem, description = "not_found: the member, or the model (no model fitted yet when `model_id` is left out)"),
        (status = 422, body = Problem, description = "validation_failed: `model_id` or `weeks` invalid; not_enough_data: the member bought nothing on or before the model's calibration end")))]
pub async fn member_clv(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<MemberClvResponse>> {
    let member_id = path_id(&id, "member")?;
    let q = query.as_deref();
    let (model_id, weeks) = (model_param(q)?, weeks_param(q)?);
    let (model, value) = analytics::member_value(&app, &caller, member_id, model_id, weeks).await?;
    Ok(Json(member_response(&model, value, weeks)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AtRiskParams {
    /// Members whose P(alive) is below this, 0–1 (default 0.3).
    #[param(minimum = 0, maximum = 1)]
    pub p_alive_below: Option<f64>,
    /// The model (default: the programme's latest).
    pub model_id: Option<Uuid>,
    /// Weeks ahead for each member's `expected_purchases`, 1–520 (default 52).
    #[param(minimum = 1, maximum = 520)]
    pub weeks: Option<u32>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AtRiskList {
    pub model_id: Uuid,
    pub p_alive_below: f64,
    pub data: Vec<MemberClvResponse>,
    pub next_cursor: Option<String>,
}

/// Valuable members who are probably leaving: P(alive) below `p_alive_below` under the
/// model, most valuable first (what they spent up to the calibration end), paged (admin).
/// Each member's own rhythm decides, not a fixed number of days: a weekly buyer silent
/// for two months is at risk, a twice-a-year buyer is not.
#[utoipa::path(get, path = "/v1/analytics/at-risk", tag = "analytics", security(("bearer" = [])), params(AtRiskParams),
    responses((status = 200, body = AtRiskList),
        (status = 404, body = Problem, description = "not_found: the model (no model fitted yet when `model_id` is left out)"),
        (status = 422, body = Problem, description = "validation_failed: `p_alive_below`, `model_id` or `weeks` invalid")))]
pub async fn at_risk(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<AtRiskList>> {
    let q = query.as_deref();
    let page = list_params(q)?;
    let below = parsed(
        q,
        "p_alive_below",
        |p: &f64| (0.0..=1.0).contains(p),
        "must be a number from 0 to 1",
    )?
    .unwrap_or(0.3);
    let (model_id, weeks) = (model_param(q)?, weeks_param(q)?);
    let (model, page) = analytics::at_risk(&app, &caller, model_id, below, weeks, page).await?;
    Ok(Json(AtRiskList {
        model_id: model.id,
        p_alive_below: below,
        data: page
            .data
            .into_iter()
            .map(|v| member_response(&model, v, weeks))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_clv_model))
        .routes(routes!(get_clv_model))
        .routes(routes!(member_clv))
        .routes(routes!(at_risk))
}

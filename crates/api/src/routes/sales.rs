//! Sales analytics (`coalition_app::sales`): the weekly sales forecast with its backtest,
//! and the effectiveness of staff and stores.

use super::*;
use crate::extract::Auth;
use crate::problem::Problem;
use crate::routes::analytics::parsed;
use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{Datelike, Duration, NaiveDate, Utc};
use coalition_app::sales::{self, Effectiveness, Ranking, WeekSales};
use coalition_app::App;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ForecastParams {
    /// Forecast this partner's sales only (default: the whole programme's).
    pub partner_id: Option<Uuid>,
    /// Weeks to forecast, 1–52 (default 12).
    #[param(minimum = 1, maximum = 52)]
    pub weeks: Option<u32>,
}

/// One week (Monday, UTC) and its net sales.
#[derive(Debug, Serialize, ToSchema)]
pub struct WeekSalesDto {
    /// The week's Monday (ISO week, UTC).
    #[schema(value_type = String, format = Date, example = "2025-06-02")]
    pub start: NaiveDate,
    /// Net sales (refunds deducted), a decimal string with the currency's minor-unit
    /// digits.
    #[schema(example = "1234.50")]
    pub sales: String,
}

/// The fitted smoothing parameters (those the method has).
#[derive(Debug, Serialize, ToSchema)]
pub struct SmoothingParameters {
    /// Level smoothing, 0–1.
    pub alpha: f64,
    /// Trend smoothing, 0–1 (Holt, Holt–Winters).
    pub beta: Option<f64>,
    /// Trend damping, 0.8–1 (Holt's damped trend; 1 is an undamped linear trend).
    pub phi: Option<f64>,
    /// Seasonal smoothing, 0–1 (Holt–Winters).
    pub gamma: Option<f64>,
}

/// How the method did when refitted without the history's last weeks and asked to
/// forecast them.
#[derive(Debug, Serialize, ToSchema)]
pub struct BacktestDto {
    /// Weeks the method was refitted on (the history less the held-out tail).
    pub training_weeks: usize,
    /// The held-out tail: min(`weeks`, a quarter of the history), at least 1.
    pub holdout_weeks: usize,
    /// Held-out weeks that counted in the MAPE.
    pub scored_weeks: usize,
    /// Held-out weeks with zero net sales: a percentage error of them is undefined, so
    /// they are left out of the MAPE.
    pub zero_weeks_excluded: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastResponse {
    pub partner_id: Option<Uuid>,
    pub currency: String,
    /// `simple_exponential_smoothing`, `holt_damped_trend` or `holt_winters_additive`
    /// (yearly season of 52 weeks).
    #[schema(example = "holt_damped_trend")]
    pub method: String,
    /// Why this method, in one sentence.
    pub reason: String,
    pub parameters: SmoothingParameters,
    /// Backtest mean absolute percentage error, in percent, as a decimal string with two
    /// decimals (`"12.34"` is 12.34 %); null when every held-out week sold nothing.
    #[schema(example = "8.25")]
    pub backtest_mape: Option<String>,
    pub backtest: BacktestDto,
    /// Every whole week from the first with a sale to the last with one, weeks without
    /// sales at "0.00". Weeks only partly covered are left out: the current week, and the
    /// first and last weeks of the programme's data when it starts after a Monday or ends
    /// before a Sunday (an imported history ending on a Tuesday).
    pub history: Vec<WeekSalesDto>,
    /// The forecast: the `weeks` weeks after the history, never negative.
    pub weeks: Vec<WeekSalesDto>,
}

fn week_dtos(weeks: Vec<WeekSales>, currency: &str) -> Vec<WeekSalesDto> {
    weeks
        .into_iter()
        .map(|w| WeekSalesDto {
            start: w.start,
            sales: money(w.sales, currency).amount,
        })
        .collect()
}

fn percent(value: f64) -> String {
    let mut d = rust_decimal::Decimal::from_f64(value)
        .unwrap_or_default()
        .round_dp(2);
    d.rescale(2);
    d.to_string()
}

/// Weekly net sales of the programme (or one partner) and their forecast for the next
/// `weeks` weeks by exponential smoothing, with a backtest (admin).
///
/// Weeks are ISO weeks (Monday, UTC) of each purchase's day (an imported purchase's
/// historical day), net of refunds, summed exactly. The method: additive Holt–Winters
/// with a yearly season when the history less the backtest's tail spans two years and
/// its one-step error beats the best non-seasonal model's; otherwise Holt's damped trend
/// or simple exponential smoothing, whichever has the lower AICc. Parameters minimise the
/// one-step-ahead squared error on a grid. The backtest refits the same method on the
/// history less its last min(`weeks`, 25 %) weeks and scores its forecasts of them by
/// MAPE, weeks without sales left out. Forecasts are estimates: they see the programme's
/// past sales only, not its new members or campaigns.
#[utoipa::path(get, path = "/v1/analytics/forecast", tag = "analytics", security(("bearer" = [])), params(ForecastParams),
    responses((status = 200, body = ForecastResponse),
        (status = 404, body = Problem, description = "not_found: `partner_id` is not a partner of the programme"),
        (status = 422, body = Problem, description = "validation_failed: `weeks` or `partner_id` invalid; not_enough_data: fewer than 8 weeks of sales history")))]
pub async fn forecast(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ForecastResponse>> {
    let q = query.as_deref();
    let partner_id = parsed(q, "partner_id", |_: &Uuid| true, "must be a UUID")?;
    let weeks = parsed(
        q,
        "weeks",
        |w: &u32| (1..=sales::MAX_FORECAST_WEEKS).contains(w),
        "must be a whole number from 1 to 52",
    )?
    .unwrap_or(12);
    let f = sales::forecast(&app, &caller, partner_id, weeks).await?;
    let backtest = f.backtest.clone();
    let c = f.currency.clone();
    Ok(Json(ForecastResponse {
        partner_id: f.partner_id,
        method: f.method.name().to_owned(),
        reason: f.reason,
        parameters: SmoothingParameters {
            alpha: f.alpha,
            beta: f.beta,
            phi: f.phi,
            gamma: f.gamma,
        },
        backtest_mape: backtest.as_ref().and_then(|b| b.mape).map(percent),
        backtest: match backtest {
            Some(b) => BacktestDto {
                training_weeks: b.training_weeks,
                holdout_weeks: b.holdout_weeks,
                scored_weeks: b.holdout_weeks - b.zero_weeks_excluded,
                zero_weeks_excluded: b.zero_weeks_excluded,
            },
            None => BacktestDto {
                training_weeks: 0,
                holdout_weeks: 0,
                scored_weeks: 0,
                zero_weeks_excluded: 0,
            },
        },
        history: week_dtos(f.history, &c),
        weeks: week_dtos(f.weeks, &c),
        currency: c,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct StaffParams {
    /// First day of the period (YYYY-MM-DD, UTC; default: 364 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<String>,
    /// Last day of the period, included (default: today, UTC).
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<String>,
    /// Rows of each list, 1–100 (default 100); `staff_total` and `stores_total` say how
    /// many there are.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// One staff member's (`staff_ref`) or store's (`store_ref`) figures over the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectivenessDto {
    /// The partner the reference belongs to: references are each partner's own (the
    /// shop's "S1" and the café's "S1" are two lines).
    pub partner_id: Uuid,
    /// The `staff_ref` or `store_ref` purchases carry.
    #[serde(rename = "ref")]
    #[schema(rename = "ref")]
    pub reference: String,
    /// Net sales of its purchases in the period (refunds deducted), a decimal string.
    pub sales: String,
    /// Its purchases in the period.
    pub purchases: i64,
    /// Distinct members it sold to in the period.
    pub members_served: i64,
    /// Members whose first purchase in the programme ever (by purchase time, then id) is
    /// one of its purchases in the period: the customers it brought in.
    pub members_enrolled: i64,
    /// Of `members_served`, those who bought again anywhere in the programme on a later
    /// day within 90 days after one of its purchases in the period.
    pub members_returned: i64,
    /// `members_returned / members_served`, a decimal string with four decimals
    /// (`"0.5000"`); null when it served no member. Purchases in the last 90 days of the
    /// data have had less time to be followed.
    pub returned_within_90_days: Option<String>,
    /// Its purchases in the period made by a member of a campaign's treatment group
    /// between the campaign's start and end (each purchase counted once).
    pub campaign_conversions: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffResponse {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    pub currency: String,
    /// Per partner and `staff_ref`, by sales (highest first), then by reference.
    pub staff: Vec<EffectivenessDto>,
    /// How many staff references sold in the period.
    pub staff_total: i64,
    /// Per partner and `store_ref`, by sales (highest first), then by reference.
    pub stores: Vec<EffectivenessDto>,
    /// How many store references sold in the period.
    pub stores_total: i64,
}

fn share(part: i64, whole: i64) -> Option<String> {
    (whole > 0).then(|| {
        let mut d =
            (rust_decimal::Decimal::from(part) / rust_decimal::Decimal::from(whole)).round_dp(4);
        d.rescale(4);
        d.to_string()
    })
}

fn rows(r: Ranking, currency: &str) -> (Vec<EffectivenessDto>, i64) {
    let dto = |e: Effectiveness| EffectivenessDto {
        returned_within_90_days: share(e.members_returned, e.members_served),
        partner_id: e.partner_id,
        reference: e.reference,
        sales: money(e.sales, currency).amount,
        purchases: e.purchases,
        members_served: e.members_served,
        members_enrolled: e.members_enrolled,
        members_returned: e.members_returned,
        campaign_conversions: e.campaign_conversions,
    };
    (r.rows.into_iter().map(dto).collect(), r.total)
}

/// Effectiveness of staff and stores over a period (admin): per `staff_ref` and per
/// `store_ref` that purchases carry (live or imported), net sales, purchases, members
/// served, members enrolled (first purchase in the programme ever), the share of served
/// members who came back within 90 days, and campaign conversions. Days are purchases'
/// analytics days (UTC), `to` included. Each list holds the first `limit` by sales, ties
/// by reference.
#[utoipa::path(get, path = "/v1/analytics/staff", tag = "analytics", security(("bearer" = [])), params(StaffParams),
    responses((status = 200, body = StaffResponse),
        (status = 422, body = Problem, description = "validation_failed: `from` or `to` not a date, `from` after `to`, or `limit` outside 1–100")))]
pub async fn staff(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<StaffResponse>> {
    let q = query.as_deref();
    let date = "must be a date (YYYY-MM-DD) in the years 0001 to 9999";
    let sane = |d: &NaiveDate| (1..=9999).contains(&d.year());
    let to = parsed(q, "to", sane, date)?.unwrap_or_else(|| Utc::now().date_naive());
    let from = parsed(q, "from", sane, date)?
        .unwrap_or_else(|| to.checked_sub_signed(Duration::days(364)).unwrap_or(to));
    let limit = parsed(
        q,
        "limit",
        |l: &u64| (1..=sales::MAX_ROWS).contains(l),
        "must be a whole number from 1 to 100",
    )?
    .unwrap_or(sales::MAX_ROWS);
    let report = sales::staff(&app, &caller, from, to, limit).await?;
    let (staff, staff_total) = rows(report.staff, &report.currency);
    let (stores, stores_total) = rows(report.stores, &report.currency);
    Ok(Json(StaffResponse {
        from: report.from,
        to: report.to,
        currency: report.currency,
        staff,
        staff_total,
        stores,
        stores_total,
    }))
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(forecast))
        .routes(routes!(staff))
}

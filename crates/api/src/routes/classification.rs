//! The classic customer classifications (`coalition_app::classics`): Pareto shares and
//! the Lorenz curve, the ABC/XYZ matrix and its members, RFM scores and segments.

use super::analytics::parsed;
use super::*;
use crate::extract::{list_params, Auth};
use crate::problem::{validation, Problem};
use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::NaiveDate;
use coalition_app::classics::{self, ClassifiedMember, Period, RfmMember};
use coalition_app::{App, FieldError};
use coalition_domain::classify::{parse_class, Abc, RfmSegment, Thresholds, Xyz};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

fn date(query: Option<&str>, name: &str) -> ApiResult<Option<NaiveDate>> {
    parsed(
        query,
        name,
        |d: &NaiveDate| d.format("%Y-%m-%d").to_string().len() == 10,
        "must be a date, YYYY-MM-DD",
    )
}

fn period(query: Option<&str>) -> ApiResult<Period> {
    let (from, to) = (date(query, "from")?, date(query, "to")?);
    Ok(Period::new(from, to)?)
}

fn shown(d: Decimal, places: usize) -> String {
    format!("{d:.places$}")
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ParetoParams {
    /// First day, included (YYYY-MM-DD, UTC; default: 364 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// Last day, included (default: today, UTC). At most 3660 days after `from`.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
    /// Only this partner's purchases (default: the whole programme's).
    pub partner_id: Option<Uuid>,
}

/// A point of the Lorenz curve.
#[derive(Debug, Serialize, ToSchema)]
pub struct LorenzPointDto {
    /// Share of the members, the smallest buyers first: "0.00", "0.05", … "1.00".
    #[schema(example = "0.80")]
    pub members_share: String,
    /// Share of the sales they made (4 decimal places).
    #[schema(example = "0.4213")]
    pub sales_share: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParetoResponse {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    pub partner_id: Option<Uuid>,
    /// Members who bought in the period (erased members left out).
    pub members: u64,
    /// Their purchases' total, net of refunds (exact).
    pub sales: MoneyDto,
    /// Share of `sales` made by the top 20 % of members by sales — `ceil(members / 5)`
    /// members (4 decimal places).
    #[schema(example = "0.6120")]
    pub top_20_share: String,
    /// The Lorenz curve: 21 points, every 5 % of members.
    pub curve: Vec<LorenzPointDto>,
}

/// Pareto (20/80) over a period (admin): how much of the sales the top 20 % of members
/// make, and the Lorenz curve. A purchase counts on its day (`occurred_at` for imported
/// purchases), net of refunds. The top 20 % of n members is `ceil(n / 5)` members (one of
/// four, two of six). The curve sorts members by sales, smallest first; at k × 5 % of
/// the members it is the share of sales of the `k·n/20` smallest buyers, a fraction of
/// a member counting as that fraction of her sales (the piecewise linear Lorenz curve).
/// Shares are rounded half away from zero to 4 places.
#[utoipa::path(get, path = "/v1/analytics/pareto", tag = "analytics", security(("bearer" = [])), params(ParetoParams),
    responses((status = 200, body = ParetoResponse),
        (status = 404, body = Problem, content_type = "application/problem+json", description = "not_found: `partner_id` is not a partner of the programme"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed: `from`, `to` or `partner_id` invalid, `from` after `to`, or a period over 3660 days")))]
pub async fn pareto(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ParetoResponse>> {
    let q = query.as_deref();
    let period = period(q)?;
    let partner_id = parsed(q, "partner_id", |_: &Uuid| true, "must be a UUID")?;
    let p = classics::pareto(&app, &caller, period, partner_id).await?;
    Ok(Json(ParetoResponse {
        from: p.period.from,
        to: p.period.to,
        partner_id: p.partner_id,
        members: p.members,
        sales: money(p.sales, &p.currency),
        top_20_share: shown(p.top_20_share, 4),
        curve: p
            .curve
            .iter()
            .map(|pt| LorenzPointDto {
                members_share: shown(pt.members_share, 2),
                sales_share: shown(pt.sales_share, 4),
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AbcXyzParams {
    /// First day, included (YYYY-MM-DD, UTC; default: 364 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// Last day, included (default: today, UTC). At most 3660 days after `from`.
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
    /// A while the cumulative share of sales before the member is below `a` % (default 80).
    #[param(exclusive_minimum = 0, exclusive_maximum = 100)]
    pub a: Option<f64>,
    /// B while it is below `b` % (default 95; above `a`); C from there on.
    #[param(exclusive_minimum = 0, exclusive_maximum = 100)]
    pub b: Option<f64>,
    /// X when the coefficient of variation of monthly spend is at most `x` % (default 10).
    #[param(exclusive_minimum = 0)]
    pub x: Option<f64>,
    /// Y when it is at most `y` % (default 25; above `x`); Z above.
    #[param(exclusive_minimum = 0)]
    pub y: Option<f64>,
}

fn thresholds(q: Option<&str>) -> ApiResult<Thresholds> {
    let mut t = Thresholds::default();
    let number = |name: &str| {
        parsed(
            q,
            name,
            |d: &Decimal| d.scale() <= 6,
            "must be a number (percent)",
        )
    };
    if let Some(a) = number("a")? {
        t.a = a;
    }
    if let Some(b) = number("b")? {
        t.b = b;
    }
    if let Some(x) = number("x")? {
        t.x = x;
    }
    if let Some(y) = number("y")? {
        t.y = y;
    }
    let bad = t.invalid_fields();
    if !bad.is_empty() {
        return Err(validation(
            bad.into_iter()
                .map(|(f, m)| FieldError::new(f, m))
                .collect(),
        ));
    }
    Ok(t)
}

fn percent(d: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    d.to_f64().unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThresholdsDto {
    pub a: f64,
    pub b: f64,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MatrixCellDto {
    pub members: u64,
    pub sales: MoneyDto,
}

/// The nine cells.
#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct MatrixDto {
    pub AX: MatrixCellDto,
    pub AY: MatrixCellDto,
    pub AZ: MatrixCellDto,
    pub BX: MatrixCellDto,
    pub BY: MatrixCellDto,
    pub BZ: MatrixCellDto,
    pub CX: MatrixCellDto,
    pub CY: MatrixCellDto,
    pub CZ: MatrixCellDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AbcXyzResponse {
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    /// Calendar months the period touches (the XYZ series' length).
    pub months: i64,
    pub thresholds: ThresholdsDto,
    /// Members who bought in the period.
    pub members: u64,
    pub sales: MoneyDto,
    pub matrix: MatrixDto,
}

/// The ABC/XYZ matrix over a period (admin). ABC: members sorted by sales, largest
/// first (ties by member id); a member is A while the cumulative share of the members
/// before her is below `a` % (the member who crosses `a` % is still A), B while it is
/// below `b` %, C from there on. XYZ: the coefficient of variation (population standard
/// deviation / mean) of the member's spend per calendar month of the period, months
/// without purchases counting as 0 (a partial first or last month is a whole month): X
/// at most `x` %, Y at most `y` %, Z above (or when the mean is not positive).
#[utoipa::path(get, path = "/v1/analytics/abc-xyz", tag = "analytics", security(("bearer" = [])), params(AbcXyzParams),
    responses((status = 200, body = AbcXyzResponse),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed: `from`, `to`, `a`, `b`, `x` or `y` invalid (0 < a < b < 100, 0 < x < y)")))]
pub async fn abc_xyz(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<AbcXyzResponse>> {
    let q = query.as_deref();
    let (period, t) = (period(q)?, thresholds(q)?);
    let r = classics::abc_xyz(&app, &caller, period, t).await?;
    let c = r.currency.as_str();
    let cell = |abc: Abc, xyz: Xyz| {
        let found = r
            .matrix
            .iter()
            .find(|(k, _)| *k == (abc, xyz))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        MatrixCellDto {
            members: found.members,
            sales: money(found.sales, c),
        }
    };
    use Abc::*;
    use Xyz::*;
    Ok(Json(AbcXyzResponse {
        from: r.period.from,
        to: r.period.to,
        months: r.months,
        thresholds: ThresholdsDto {
            a: percent(t.a),
            b: percent(t.b),
            x: percent(t.x),
            y: percent(t.y),
        },
        members: r.members,
        sales: money(r.sales, c),
        matrix: MatrixDto {
            AX: cell(A, X),
            AY: cell(A, Y),
            AZ: cell(A, Z),
            BX: cell(B, X),
            BY: cell(B, Y),
            BZ: cell(B, Z),
            CX: cell(C, X),
            CY: cell(C, Y),
            CZ: cell(C, Z),
        },
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AbcXyzMembersParams {
    /// First day, included (YYYY-MM-DD, UTC; default: 364 days before `to`).
    #[param(value_type = Option<String>, format = Date)]
    pub from: Option<NaiveDate>,
    /// Last day, included (default: today, UTC).
    #[param(value_type = Option<String>, format = Date)]
    pub to: Option<NaiveDate>,
    /// One cell, `AX` … `CZ` (default: every member).
    #[param(pattern = "^[ABC][XYZ]$")]
    pub class: Option<String>,
    /// As on `/v1/analytics/abc-xyz` (default 80).
    #[param(exclusive_minimum = 0, exclusive_maximum = 100)]
    pub a: Option<f64>,
    /// Default 95.
    #[param(exclusive_minimum = 0, exclusive_maximum = 100)]
    pub b: Option<f64>,
    /// Default 10.
    #[param(exclusive_minimum = 0)]
    pub x: Option<f64>,
    /// Default 25.
    #[param(exclusive_minimum = 0)]
    pub y: Option<f64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifiedMemberDto {
    pub member_id: Uuid,
    /// The customer reference imports know the member by.
    pub external_ref: Option<String>,
    /// Her purchases in the period, net of refunds.
    pub sales: MoneyDto,
    /// Her share of the period's sales (4 decimal places).
    #[schema(example = "0.0312")]
    pub share: String,
    /// Coefficient of variation of her monthly spend (absent when the mean is not
    /// positive).
    pub cv: Option<f64>,
    /// `A`, `B` or `C`.
    pub abc: String,
    /// `X`, `Y` or `Z`.
    pub xyz: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifiedMemberList {
    pub class: Option<String>,
    pub data: Vec<ClassifiedMemberDto>,
    pub next_cursor: Option<String>,
}

fn classified_dto(m: ClassifiedMember, currency: &str) -> ClassifiedMemberDto {
    ClassifiedMemberDto {
        member_id: m.member_id,
        external_ref: m.external_ref,
        sales: money(m.sales, currency),
        share: shown(m.share, 4),
        cv: m.cv,
        abc: m.abc.as_str().into(),
        xyz: m.xyz.as_str().into(),
    }
}

/// The members of an ABC/XYZ cell (or all), largest sales first, then by id; paged
/// (admin). Classes as `GET /v1/analytics/abc-xyz` with the same period and thresholds.
#[utoipa::path(get, path = "/v1/analytics/abc-xyz/members", tag = "analytics", security(("bearer" = [])), params(AbcXyzMembersParams),
    responses((status = 200, body = ClassifiedMemberList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed: `class`, `from`, `to`, a threshold, `limit` or `cursor` invalid")))]
pub async fn abc_xyz_members(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<ClassifiedMemberList>> {
    let q = query.as_deref();
    let page = list_params(q)?;
    let (period, t) = (period(q)?, thresholds(q)?);
    let class = match parsed(
        q,
        "class",
        |s: &String| parse_class(s).is_some(),
        "must be one of AX, AY, AZ, BX, BY, BZ, CX, CY, CZ",
    )? {
        Some(text) => parse_class(&text),
        None => None,
    };
    let (currency, page) = classics::abc_xyz_members(&app, &caller, period, t, class, page).await?;
    Ok(Json(ClassifiedMemberList {
        class: class.map(|(a, x)| format!("{}{}", a.as_str(), x.as_str())),
        data: page
            .data
            .into_iter()
            .map(|m| classified_dto(m, &currency))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RfmParams {
    /// The last day of the 365 days looked at, included (default: today, UTC).
    #[param(value_type = Option<String>, format = Date)]
    pub as_of: Option<NaiveDate>,
    /// Only this segment.
    #[param(schema_with = crate::fields::rfm_segment)]
    pub segment: Option<String>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RfmMemberDto {
    pub member_id: Uuid,
    pub external_ref: Option<String>,
    /// 1–5, 5 = the most recent last purchase.
    pub recency: u8,
    /// 1–5, 5 = the most purchase days.
    pub frequency: u8,
    /// 1–5, 5 = the most sales.
    pub monetary: u8,
    /// Days from the last purchase to `as_of`.
    pub recency_days: i64,
    /// Distinct purchase days in the 365 days.
    pub purchase_days: i64,
    /// Sales in the 365 days, net of refunds.
    pub sales: MoneyDto,
    #[schema(value_type = String, format = Date)]
    pub last_purchase_on: NaiveDate,
    #[schema(schema_with = crate::fields::rfm_segment)]
    pub segment: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RfmList {
    #[schema(value_type = String, format = Date)]
    pub as_of: NaiveDate,
    pub segment: Option<String>,
    pub data: Vec<RfmMemberDto>,
    pub next_cursor: Option<String>,
}

fn rfm_dto(m: RfmMember, currency: &str) -> RfmMemberDto {
    RfmMemberDto {
        member_id: m.member_id,
        external_ref: m.external_ref,
        recency: m.recency,
        frequency: m.frequency,
        monetary: m.monetary,
        recency_days: m.recency_days,
        purchase_days: m.purchase_days,
        sales: money(m.sales, currency),
        last_purchase_on: m.last_purchase_on,
        segment: m.segment.as_str().into(),
    }
}

/// RFM (admin): members who bought in the 365 days up to `as_of` (included), scored 1–5
/// by quintile (`NTILE(5)`, ties split by member id) on recency (last purchase day, 5 =
/// most recent), frequency (distinct purchase days) and monetary value (sales, net of
/// refunds), with their segment from the R × FM grid, FM = round-half-up((F + M) / 2):
/// R 5: FM 1 new, 2–3 potential_loyalists, 4–5 champions; R 4: FM 1 promising, 2–3
/// potential_loyalists, 4–5 loyal; R 3: FM 1–2 about_to_sleep, 3 need_attention, 4–5
/// loyal; R 1–2: FM 1–2 hibernating (R 1 FM 1: lost), 3–4 at_risk, 5 cannot_lose.
/// Largest sales first, then by id; paged.
#[utoipa::path(get, path = "/v1/analytics/rfm", tag = "analytics", security(("bearer" = [])), params(RfmParams),
    responses((status = 200, body = RfmList),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "validation_failed: `as_of`, `segment`, `limit` or `cursor` invalid")))]
pub async fn rfm(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<RfmList>> {
    let q = query.as_deref();
    let page = list_params(q)?;
    let as_of = date(q, "as_of")?.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let segment = parsed(
        q,
        "segment",
        |s: &String| RfmSegment::parse(s).is_some(),
        "must be an RFM segment: champions, loyal, potential_loyalists, new, promising, \
         need_attention, about_to_sleep, at_risk, cannot_lose, hibernating or lost",
    )?
    .and_then(|s| RfmSegment::parse(&s));
    let (currency, page) = classics::rfm(&app, &caller, as_of, segment, page).await?;
    Ok(Json(RfmList {
        as_of,
        segment: segment.map(|s| s.as_str().into()),
        data: page
            .data
            .into_iter()
            .map(|m| rfm_dto(m, &currency))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(pareto))
        .routes(routes!(abc_xyz))
        .routes(routes!(abc_xyz_members))
        .routes(routes!(rfm))
}

//! Settlements: clearing between partners for a closed period (admin runs them; a
//! partner or bank reads its own line), the CSV statement and the postings behind a line.

use super::*;
use crate::extract::{form_urldecode, list_params, path_id, Auth, JsonBody, ListParams, PathText};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use coalition_app::settlements::{self, Settlement};
use coalition_app::{App, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Run the settlement of the half-open period [`period_start`, `period_end`) (admin).
/// The same period again answers the settlement made the first time (200).
#[utoipa::path(post, path = "/v1/settlements", tag = "settlements", security(("bearer" = [])), request_body = NewSettlementRequest,
    responses((status = 201, body = SettlementResponse, description = "settled"),
        (status = 200, body = SettlementResponse, description = "this exact period was settled before: that settlement"),
        (status = 409, body = Problem, description = "settlement_overlaps: the period overlaps another settlement of the programme; settlement_period_open: transactions that began before period_end are still open (retry)"),
        (status = 422, body = Problem, description = "validation_failed: period_end not after period_start, or in the future")))]
pub async fn create_settlement(
    State(app): State<App>,
    Auth(caller): Auth,
    body: JsonBody<NewSettlementRequest>,
) -> ApiResult<Response> {
    let b = body.value;
    let settled = settlements::create(&app, &caller, b.period_start, b.period_end).await?;
    let answer = settlement_response(settled.settlement);
    if settled.created {
        Ok(created(format!("/v1/settlements/{}", answer.id), answer))
    } else {
        Ok(Json(answer).into_response())
    }
}

/// The programme's settlements, newest first (admin; a partner or bank sees its own
/// lines in each).
#[utoipa::path(get, path = "/v1/settlements", tag = "settlements", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = SettlementList), (status = 422, body = Problem)))]
pub async fn list_settlements(
    State(app): State<App>,
    Auth(caller): Auth,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<SettlementList>> {
    let page = settlements::list(&app, &caller, list_params(query.as_deref())?).await?;
    Ok(Json(SettlementList {
        data: page.data.into_iter().map(settlement_response).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One settlement (admin: every line; a partner or bank: its own line, payments and
/// liability, and no operator figures).
#[utoipa::path(get, path = "/v1/settlements/{id}", tag = "settlements", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = SettlementResponse), (status = 404, body = Problem)))]
pub async fn get_settlement(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Json<SettlementResponse>> {
    let s = settlements::get(&app, &caller, path_id(&id, "settlement")?).await?;
    Ok(Json(settlement_response(s)))
}

/// The statement as CSV: one row per line the caller may see, and the operator's row
/// for the operator. Amounts are decimal strings in the settlement's currency.
#[utoipa::path(get, path = "/v1/settlements/{id}/statement.csv", tag = "settlements", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, content_type = "text/csv", body = String), (status = 404, body = Problem)))]
pub async fn settlement_csv(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let admin = caller.scope == coalition_app::Scope::Admin;
    let s = settlements::get(&app, &caller, path_id(&id, "settlement")?).await?;
    let body = statement_csv(&s, admin);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PostingsParams {
    /// The partner whose line the postings make up (a partner or bank: its own, the
    /// default). The operator may leave it out to page through every posting settled.
    pub partner_id: Option<Uuid>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// The postings of the settled period behind a partner's line, oldest first, each with
/// the price it was settled at: a line's `points_issued` is minus the sum of its
/// `partner_issued` postings, its `amount_due` the sum of points × price rounded once.
#[utoipa::path(get, path = "/v1/settlements/{id}/postings", tag = "settlements", security(("bearer" = [])), params(("id" = String, Path), PostingsParams),
    responses((status = 200, body = SettledPostingList), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn settlement_postings(
    State(app): State<App>,
    Auth(caller): Auth,
    PathText(id): PathText,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<SettledPostingList>> {
    let id = path_id(&id, "settlement")?;
    let page = list_params(query.as_deref())?;
    let partner = partner_param(query.as_deref())?;
    let page = settlements::postings(&app, &caller, id, partner, page).await?;
    let currency = settlements::get(&app, &caller, id).await?.currency;
    Ok(Json(SettledPostingList {
        data: page
            .data
            .into_iter()
            .map(|p| SettledPostingResponse {
                seq: p.seq,
                entry_id: p.entry_id,
                entry_kind: p.entry_kind,
                account_kind: p.account_kind,
                account_id: p.account_id,
                points: p.points,
                price_per_point: p.price_per_point.map(|d| d.to_string()),
                currency: currency.clone(),
                created_at: p.created_at,
                priced_at: p.priced_at,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

fn partner_param(query: Option<&str>) -> ApiResult<Option<Uuid>> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_urldecode(k.as_bytes()).as_deref() == Some("partner_id"))
                .then(|| form_urldecode(v.as_bytes()))
        });
    match value {
        None => Ok(None),
        Some(text) => text
            .and_then(|t| Uuid::parse_str(&t).ok())
            .map(Some)
            .ok_or_else(|| {
                crate::problem::validation(vec![FieldError::new("partner_id", "must be a UUID")])
            }),
    }
}

fn statement_csv(s: &Settlement, with_operator: bool) -> String {
    let minor = coalition_domain::Currency::parse(&s.currency)
        .map(|c| c.minor_units())
        .unwrap_or(2);
    let amount = |d: rust_decimal::Decimal| {
        let mut d = d.round_dp(minor);
        d.rescale(minor);
        d.to_string()
    };
    let mut out = String::from(
        "settlement_id,period_start,period_end,currency,partner_id,points_issued,points_funded,points_redeemed,points_expired,amount_due,amount_owed,net\n",
    );
    let head = format!(
        "{},{},{},{}",
        s.id,
        s.period_start.to_rfc3339(),
        s.period_end.to_rfc3339(),
        s.currency
    );
    for l in &s.lines {
        out.push_str(&format!(
            "{head},{},{},{},{},{},{},{},{}\n",
            l.partner_id,
            l.points_issued,
            l.points_funded,
            l.points_redeemed,
            l.points_expired,
            amount(l.amount_due),
            amount(l.amount_owed),
            amount(l.net)
        ));
    }
    if with_operator {
        let o = &s.operator;
        out.push_str(&format!(
            "{head},operator,0,{},0,{},{zero},{zero},{}\n",
            o.points_funded,
            o.points_expired,
            amount(o.net),
            zero = amount(rust_decimal::Decimal::ZERO)
        ));
    }
    out
}

fn settlement_response(s: Settlement) -> SettlementResponse {
    let c = s.currency.clone();
    let party = |p: Option<Uuid>| p.map_or_else(|| "operator".to_owned(), |id| id.to_string());
    SettlementResponse {
        id: s.id,
        currency: s.currency.clone(),
        period_start: s.period_start,
        period_end: s.period_end,
        created_at: s.created_at,
        postings: s.postings,
        lines: s
            .lines
            .into_iter()
            .map(|l| SettlementLine {
                partner_id: l.partner_id,
                points_issued: l.points_issued,
                points_funded: l.points_funded,
                points_redeemed: l.points_redeemed,
                points_expired: l.points_expired,
                amount_due: money(l.amount_due, &c),
                amount_owed: money(l.amount_owed, &c),
                net: money(l.net, &c),
            })
            .collect(),
        operator: OperatorLine {
            points_expired: s.operator.points_expired,
            points_funded: s.operator.points_funded,
            margin: s.operator.margin.to_string(),
            rounding: s.operator.rounding.to_string(),
            net: money(s.operator.net, &c),
        },
        payments: s
            .payments
            .into_iter()
            .map(|p| PaymentInstruction {
                from: party(p.from),
                to: party(p.to),
                amount: money(p.amount, &c),
            })
            .collect(),
        liability: s
            .liability
            .into_iter()
            .map(|l| LiabilityLine {
                partner_id: l.partner_id,
                issuer: party(l.partner_id),
                opening_points: l.opening_points,
                issued: l.issued,
                redeemed: l.redeemed,
                expired: l.expired,
                closing_points: l.closing_points,
                closing_value: money(l.closing_value, &c),
            })
            .collect(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSettlementRequest {
    /// Start of the period, included (RFC 3339). Kept to the microsecond.
    pub period_start: DateTime<Utc>,
    /// End of the period, excluded (RFC 3339); not in the future.
    pub period_end: DateTime<Utc>,
}

/// A partner's line. Points issued include the points it funded for purchases at other
/// partners (campaigns, rules with a funder), all at its issue price in force when they
/// were posted; points redeemed are at its redemption value in force then.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementLine {
    pub partner_id: Uuid,
    /// Points it issued in the period, net of clawbacks.
    pub points_issued: i64,
    /// Of `points_issued`, those it funded for purchases at other partners.
    pub points_funded: i64,
    /// Points it honoured, net of returns.
    pub points_redeemed: i64,
    /// Points it issued that expired in the period (attributed as in `liability`); the
    /// breakage itself belongs to the operator.
    pub points_expired: i64,
    /// Σ issued points × issue price, rounded once (half away from zero).
    pub amount_due: MoneyDto,
    /// Σ redeemed points × redemption value, rounded once (half away from zero).
    pub amount_owed: MoneyDto,
    /// `amount_owed` − `amount_due`; positive: the partner receives.
    pub net: MoneyDto,
}

/// The operator's line: minus the sum of the partners' nets, so that all nets sum to
/// exactly zero. Shown to the operator only.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorLine {
    /// Breakage: points that expired in the period.
    pub points_expired: i64,
    /// Points the operator funded.
    pub points_funded: i64,
    /// The margin with exact amounts (decimal string, unrounded).
    pub margin: String,
    /// `net` − `margin`: what rounding the lines moved to the operator (decimal string).
    pub rounding: String,
    pub net: MoneyDto,
}

/// One transfer: `from` pays `to`. Parties are partner ids or `operator`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentInstruction {
    pub from: String,
    pub to: String,
    pub amount: MoneyDto,
}

/// Points-liability roll-forward of one issuer over the period.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiabilityLine {
    /// The issuing partner; null for points the operator funded.
    pub partner_id: Option<Uuid>,
    /// The partner id, or `operator`.
    pub issuer: String,
    pub opening_points: i64,
    pub issued: i64,
    /// Redemptions attributed pro rata to what each issuer had outstanding.
    pub redeemed: i64,
    /// Expiries attributed pro rata to what each issuer had left.
    pub expired: i64,
    pub closing_points: i64,
    /// Closing points × the issuer's issue price in force at the period's end (the
    /// operator's at the programme's point value).
    pub closing_value: MoneyDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementResponse {
    pub id: Uuid,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Postings of the period on partner and operator accounts that were summed; null
    /// for a partner's token (the count covers every partner).
    pub postings: Option<i64>,
    pub lines: Vec<SettlementLine>,
    pub operator: OperatorLine,
    /// At most n − 1 transfers that clear every net.
    pub payments: Vec<PaymentInstruction>,
    pub liability: Vec<LiabilityLine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementList {
    pub data: Vec<SettlementResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettledPostingResponse {
    pub seq: i64,
    pub entry_id: Uuid,
    /// The journal entry's kind: `purchase`, `refund`, `expiry`, `redemption`, ...
    pub entry_kind: String,
    /// `partner_issued`, `partner_redeemed`, `operator_breakage`, `operator_funding`.
    pub account_kind: String,
    pub account_id: Uuid,
    /// As posted: negative on `partner_issued` when points were issued.
    pub points: i64,
    /// The issue price (issued account) or redemption value (redeemed account) in force
    /// at `priced_at`; null on operator accounts.
    pub price_per_point: Option<String>,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    /// When the price was read: `created_at`, or for a refund's postings the time of the
    /// purchase it refunds (a reversal is priced as what it reverses).
    pub priced_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettledPostingList {
    pub data: Vec<SettledPostingResponse>,
    pub next_cursor: Option<String>,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_settlement, list_settlements))
        .routes(routes!(get_settlement))
        .routes(routes!(settlement_csv))
        .routes(routes!(settlement_postings))
}

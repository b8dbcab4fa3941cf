//! Sales analytics: the weekly sales forecast (`coalition_domain::forecast`) and the
//! effectiveness of staff and stores.
//!
//! The database aggregates, exactly: a purchase counts on its analytics day
//! `COALESCE(occurred_at, created_at)` (UTC; imported purchases carry their historical
//! day), net of `refunded_amount`. PostgreSQL sums `NUMERIC`; SQLite sums integer minor
//! units of the programme's currency (exact for any amount a purchase can carry), turned
//! back into a decimal here.

use crate::error::{AppError, AppResult, FieldError};
use crate::programmes;
use crate::{App, Caller, Scope};
use chrono::{Datelike, Duration, NaiveDate, Utc};
use coalition_domain::forecast::{self, Backtest, Fit, Method, Why};
use coalition_store::entities::partner;
use rust_decimal::prelude::FromPrimitive;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryResult, Statement,
    TransactionTrait, Value,
};
use uuid::Uuid;

/// The longest forecast horizon, in weeks.
pub const MAX_FORECAST_WEEKS: u32 = 52;

/// Exact net amount of one purchase, as SQL: `NUMERIC` on PostgreSQL, integer minor units
/// on SQLite.
fn net_amount(backend: DbBackend, minor_units: u32) -> String {
    match backend {
        DbBackend::Postgres => {
            "(CAST(p.amount AS NUMERIC) - CAST(p.refunded_amount AS NUMERIC))".to_owned()
        }
        _ => {
            let scale = 10i64.pow(minor_units);
            format!(
                "(CAST(ROUND(CAST(p.amount AS REAL) * {scale}) AS INTEGER) \
                 - CAST(ROUND(CAST(p.refunded_amount AS REAL) * {scale}) AS INTEGER))"
            )
        }
    }
}

/// A summed net amount as SQL the row reader understands (text on PostgreSQL, integer
/// minor units on SQLite).
fn sum_text(backend: DbBackend, expr: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("CAST(SUM({expr}) AS TEXT)"),
        _ => format!("SUM({expr})"),
    }
}

fn read_sum(
    backend: DbBackend,
    row: &QueryResult,
    column: &str,
    minor_units: u32,
) -> AppResult<Decimal> {
    match backend {
        DbBackend::Postgres => {
            let text: Option<String> = row.try_get("", column)?;
            match text {
                None => Ok(Decimal::ZERO),
                Some(t) => t
                    .parse::<Decimal>()
                    .map_err(|_| AppError::Internal(format!("sum '{t}' is not a decimal"))),
            }
        }
        _ => {
            let minor: Option<i64> = row.try_get("", column)?;
            Ok(Decimal::new(minor.unwrap_or(0), minor_units))
        }
    }
}

/// The analytics day of `p` as SQL: a `DATE` on PostgreSQL, `YYYY-MM-DD` text on SQLite.
fn day_expr(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            "CAST(COALESCE(p.occurred_at, p.created_at) AT TIME ZONE 'UTC' AS DATE)"
        }
        _ => "substr(COALESCE(p.occurred_at, p.created_at), 1, 10)",
    }
}

/// Numbered placeholder `n` (PostgreSQL `$n`, SQLite `?n`).
fn arg(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => format!("?{n}"),
    }
}

fn parse_day(text: &str) -> AppResult<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| AppError::Internal(format!("purchase day '{text}' is not a date")))
}

/// The Monday of `day`'s ISO week.
pub fn week_start(day: NaiveDate) -> NaiveDate {
    day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
}

async fn check_partner(app: &App, programme_id: Uuid, partner_id: Option<Uuid>) -> AppResult<()> {
    if let Some(partner_id) = partner_id {
        partner::Entity::find_by_id(partner_id)
            .filter(partner::Column::ProgrammeId.eq(programme_id))
            .one(&app.db)
            .await?
            .ok_or(AppError::NotFound("partner"))?;
    }
    Ok(())
}

/// Net sales per week (Monday, UTC) of the programme (or one partner), weeks before the
/// current one only, oldest first; weeks without sales are absent.
async fn weekly_sales(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    partner_id: Option<Uuid>,
    minor_units: u32,
    before: NaiveDate,
) -> AppResult<Vec<(NaiveDate, Decimal)>> {
    let backend = db.get_database_backend();
    let week = match backend {
        DbBackend::Postgres => "to_char(date_trunc('week', COALESCE(p.occurred_at, p.created_at) AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
        // 'weekday 0' moves to the coming Sunday (or stays on one): six days back is Monday.
        _ => "date(substr(COALESCE(p.occurred_at, p.created_at), 1, 10), 'weekday 0', '-6 days')",
    };
    let sales = sum_text(backend, &net_amount(backend, minor_units));
    let mut values: Vec<Value> = vec![programme_id.into()];
    let mut filter = String::new();
    if let Some(partner_id) = partner_id {
        values.push(partner_id.into());
        filter = format!(" AND p.partner_id = {}", arg(backend, 2));
    }
    let sql = format!(
        "SELECT {week} AS week, {sales} AS sales FROM purchases p \
         WHERE p.programme_id = {}{filter} GROUP BY 1 ORDER BY 1",
        arg(backend, 1)
    );
    let rows = db
        .query_all(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let start = parse_day(&r.try_get::<String>("", "week")?)?;
        if start < before {
            out.push((start, read_sum(backend, &r, "sales", minor_units)?));
        }
    }
    Ok(out)
}

/// The first and last purchase days of the programme.
async fn data_range(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
) -> AppResult<(Option<NaiveDate>, Option<NaiveDate>)> {
    let backend = db.get_database_backend();
    let (first, last) = match backend {
        DbBackend::Postgres => (
            "to_char(MIN(COALESCE(p.occurred_at, p.created_at)) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            "to_char(MAX(COALESCE(p.occurred_at, p.created_at)) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        ),
        _ => (
            "substr(MIN(COALESCE(p.occurred_at, p.created_at)), 1, 10)",
            "substr(MAX(COALESCE(p.occurred_at, p.created_at)), 1, 10)",
        ),
    };
    let sql = format!(
        "SELECT {first} AS first_day, {last} AS last_day FROM purchases p WHERE p.programme_id = {}",
        arg(backend, 1)
    );
    let row = db
        .query_one(Statement::from_sql_and_values(
            backend,
            sql,
            [programme_id.into()],
        ))
        .await?;
    let get = |name: &str| -> AppResult<Option<NaiveDate>> {
        match &row {
            None => Ok(None),
            Some(r) => r
                .try_get::<Option<String>>("", name)?
                .map(|t| parse_day(&t))
                .transpose(),
        }
    };
    Ok((get("first_day")?, get("last_day")?))
}

/// One week and its sales.
#[derive(Debug, Clone, PartialEq)]
pub struct WeekSales {
    pub start: NaiveDate,
    pub sales: Decimal,
}

/// A weekly sales forecast.
#[derive(Debug, Clone)]
pub struct Forecast {
    pub currency: String,
    pub partner_id: Option<Uuid>,
    /// Every whole week from the first with a sale to the last with one: weeks before the
    /// current one, within the programme's first and last purchase days.
    pub history: Vec<WeekSales>,
    /// The forecast, from the week after the history; rounded to the minor unit.
    pub weeks: Vec<WeekSales>,
    pub method: Method,
    pub alpha: f64,
    pub beta: Option<f64>,
    pub phi: Option<f64>,
    pub gamma: Option<f64>,
    pub reason: String,
    pub backtest: Option<Backtest>,
}

fn reason(fit: &Fit, why: &Why) -> String {
    let plain = match fit.method {
        Method::HoltDampedTrend => {
            "a damped trend lowered the one-step errors enough to pay for its three extra parameters (AICc) over a flat level"
        }
        _ => "a trend did not lower the one-step errors enough to pay for its three extra parameters (AICc), so the level is smoothed alone",
    };
    match why {
        Why::TooShortForSeason { weeks } => format!(
            "{weeks} weeks of history, less the backtest's tail, are under the two years a yearly seasonal model needs, and {plain}."
        ),
        Why::SeasonDidNotHelp { seasonal_rmse, rmse } => format!(
            "Two years of history allow a yearly season, but its one-step error (RMSE {seasonal_rmse:.2}) was no smaller than without it ({rmse:.2}), and {plain}."
        ),
        Why::SeasonHelped { seasonal_rmse, rmse } => format!(
            "Two years of history allow a yearly season, and additive Holt-Winters' one-step error (RMSE {seasonal_rmse:.2}) was smaller than the best model without one ({rmse:.2})."
        ),
    }
}

/// `GET /v1/analytics/forecast`: the next `weeks` weeks' sales of the programme (or one
/// partner), by the smoothing model `forecast::choose` picks, with its backtest.
pub async fn forecast(
    app: &App,
    caller: &Caller,
    partner_id: Option<Uuid>,
    weeks: u32,
) -> AppResult<Forecast> {
    caller.require(&[Scope::Admin])?;
    if !(1..=MAX_FORECAST_WEEKS).contains(&weeks) {
        return Err(AppError::Validation(vec![FieldError::new(
            "weeks",
            "must be a whole number from 1 to 52",
        )]));
    }
    let programme = programmes::load(app, caller.programme_id).await?;
    check_partner(app, caller.programme_id, partner_id).await?;
    let minor = programme.currency.minor_units();
    // Only whole weeks: before the current one, and within the programme's data — a
    // history imported from a Wednesday to a Tuesday leaves its first and last weeks
    // half-counted, and a half week would read as a collapse of sales.
    let this_week = week_start(Utc::now().date_naive());
    let (first_day, last_day) = data_range(&app.db, caller.programme_id).await?;
    let first_whole = match first_day {
        Some(d) if week_start(d) == d => d,
        Some(d) => week_start(d) + Duration::weeks(1),
        None => this_week,
    };
    let end = match last_day {
        Some(d) => this_week.min(week_start(d + Duration::days(1))),
        None => this_week,
    };
    let sparse: Vec<(NaiveDate, Decimal)> =
        weekly_sales(&app.db, caller.programme_id, partner_id, minor, end)
            .await?
            .into_iter()
            .filter(|(start, _)| *start >= first_whole)
            .collect();
    // Every week from the first to the last, those without sales at zero.
    let mut history: Vec<WeekSales> = vec![];
    for (start, sales) in sparse {
        while let Some(last) = history.last() {
            let next = last.start + Duration::weeks(1);
            if next >= start {
                break;
            }
            history.push(WeekSales {
                start: next,
                sales: Decimal::ZERO,
            });
        }
        history.push(WeekSales { start, sales });
    }
    // A partner that stopped selling has zero weeks up to the programme's last whole
    // week: its forecast starts where everyone's does, not at its last sale.
    while let Some(next) = history.last().map(|w| w.start + Duration::weeks(1)) {
        if next >= end {
            break;
        }
        history.push(WeekSales {
            start: next,
            sales: Decimal::ZERO,
        });
    }
    if history.len() < forecast::MIN_HISTORY {
        return Err(AppError::CannotFit(format!(
            "{} complete weeks of sales history; a forecast needs at least {}",
            history.len(),
            forecast::MIN_HISTORY
        )));
    }
    let y: Vec<f64> = history
        .iter()
        .map(|w| w.sales.to_f64().unwrap_or(0.0))
        .collect();
    let holdout = forecast::holdout_weeks(y.len(), weeks as usize);
    let (fit, why) = forecast::choose(&y, holdout)
        .ok_or_else(|| AppError::CannotFit("the history is too short to fit".into()))?;
    let backtest = forecast::backtest(fit.method, &y, holdout);
    let last = history.last().map(|w| w.start).unwrap_or(this_week);
    let predicted = forecast::clamp(fit.forecast(weeks as usize));
    let future = predicted
        .into_iter()
        .enumerate()
        .map(|(k, v)| WeekSales {
            start: last + Duration::weeks(k as i64 + 1),
            sales: Decimal::from_f64(v).unwrap_or_default().round_dp(minor),
        })
        .collect();
    Ok(Forecast {
        currency: programme.currency.code().to_owned(),
        partner_id,
        history,
        weeks: future,
        method: fit.method,
        alpha: fit.params.alpha,
        beta: fit.params.beta,
        phi: fit.params.phi,
        gamma: fit.params.gamma,
        reason: reason(&fit, &why),
        backtest,
    })
}

/// Whom a line of the effectiveness report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Staff,
    Store,
}

/// One staff member's or store's figures over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Effectiveness {
    /// The partner whose till sent the reference: references are the partners' own, so
    /// the shop's "S1" and the café's "S1" are two lines.
    pub partner_id: Uuid,
    /// The `staff_ref` or `store_ref`.
    pub reference: String,
    /// Net sales of its purchases in the period.
    pub sales: Decimal,
    pub purchases: i64,
    /// Distinct members it sold to in the period.
    pub members_served: i64,
    /// Members whose first purchase in the programme ever is one of its purchases in the
    /// period.
    pub members_enrolled: i64,
    /// Members served who bought again anywhere in the programme on a later day within
    /// 90 days of one of its purchases in the period.
    pub members_returned: i64,
    /// Its purchases in the period made by a member in a campaign's treatment group while
    /// that campaign ran.
    pub campaign_conversions: i64,
}

/// One list (staff or stores): the first `limit` by sales, and how many there are.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub total: i64,
    pub rows: Vec<Effectiveness>,
}

/// The effectiveness report.
#[derive(Debug, Clone)]
pub struct StaffReport {
    pub currency: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub staff: Ranking,
    pub stores: Ranking,
}

/// Days after a purchase within which a member's next purchase counts as a return.
pub const RETURN_DAYS: i64 = 90;
/// The most rows of each list.
pub const MAX_ROWS: u64 = 100;

/// Both lists of the effectiveness report, from one statement.
///
/// Only the period's purchases and the 90 days after it are read row by row, in one
/// window pass per account ordered by day: `k` (1: the account's first purchase from the
/// period's start on) and `later` (the account's purchases on the 90 days after the
/// row's day). A purchase is the account's first ever when `k` is 1 and the account has
/// no purchase before the period (a hash of the accounts that bought before it). Campaign
/// conversions are a hash join of the period's purchases to the treatment groups. The
/// period's purchases that carry a reference are then grouped per reference and member
/// (so "distinct members" are counted rows, not `COUNT(DISTINCT …)`), then per reference,
/// for both lists at once.
async fn rankings(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    minor_units: u32,
    limit: u64,
) -> AppResult<(Ranking, Ranking)> {
    let backend = db.get_database_backend();
    let net = net_amount(backend, minor_units);
    // The analytics day as a whole number of days since 2000-01-01, so that a window
    // frame can be a number of days on both backends.
    let day_number = match backend {
        DbBackend::Postgres => format!("({} - DATE '2000-01-01')", day_expr(backend)),
        _ => format!(
            "CAST(julianday({}) - 2451544.5 AS INTEGER)",
            day_expr(backend)
        ),
    };
    let sales = match backend {
        DbBackend::Postgres => "CAST(t.net AS TEXT)",
        _ => "t.net",
    };
    let ts = "COALESCE(p.occurred_at, p.created_at)";
    let (p, d_from, d_to, d_horizon) = (
        arg(backend, 1),
        arg(backend, 2),
        arg(backend, 3),
        arg(backend, 4),
    );
    let sql = format!(
        "WITH s AS MATERIALIZED ( \
           SELECT p.id, p.account_id, p.partner_id, p.staff_ref, p.store_ref, p.ts, p.dn, p.net, \
             ROW_NUMBER() OVER (PARTITION BY p.account_id ORDER BY p.dn, p.ts, p.id) AS k, \
             COUNT(*) OVER (PARTITION BY p.account_id ORDER BY p.dn \
               RANGE BETWEEN 1 FOLLOWING AND {RETURN_DAYS} FOLLOWING) AS later \
           FROM (SELECT p.id, p.account_id, p.partner_id, p.staff_ref, p.store_ref, {ts} AS ts, \
               {day_number} AS dn, {net} AS net \
             FROM purchases p WHERE p.programme_id = {p}) p \
           WHERE p.dn >= {d_from} AND p.dn <= {d_horizon}), \
         b AS ( \
           SELECT p.account_id FROM purchases p \
           WHERE p.programme_id = {p} AND {day_number} < {d_from} GROUP BY p.account_id), \
         cv AS ( \
           SELECT s.id, m.id AS mid FROM s \
           JOIN members m ON m.account_id = s.account_id AND m.programme_id = {p} \
           JOIN campaign_members cm ON cm.member_id = m.id AND cm.\"group\" = 'treatment' \
           JOIN campaigns c ON c.id = cm.campaign_id AND c.programme_id = {p} \
           WHERE s.dn <= {d_to} AND s.ts >= c.starts_at AND s.ts < c.ends_at \
           GROUP BY s.id, m.id), \
         r AS MATERIALIZED ( \
           SELECT s.account_id, s.partner_id, s.staff_ref, s.store_ref, s.net, m.id AS mid, \
             CASE WHEN s.k = 1 AND b.account_id IS NULL THEN 1 ELSE 0 END AS first, \
             CASE WHEN s.later > 0 THEN 1 ELSE 0 END AS ret, \
             CASE WHEN cv.id IS NULL THEN 0 ELSE 1 END AS conv \
           FROM s \
           LEFT JOIN members m ON m.account_id = s.account_id AND m.programme_id = {p} \
           LEFT JOIN b ON b.account_id = s.account_id \
           LEFT JOIN cv ON cv.id = s.id AND cv.mid = m.id \
           WHERE s.dn <= {d_to} AND (s.staff_ref IS NOT NULL OR s.store_ref IS NOT NULL)), \
         g AS ( \
           SELECT 1 AS kind, r.partner_id, r.staff_ref AS ref, r.mid, SUM(r.net) AS net, \
             COUNT(*) AS n, MAX(r.first) AS first, MAX(r.ret) AS ret, SUM(r.conv) AS conv \
           FROM r WHERE r.staff_ref IS NOT NULL \
           GROUP BY r.partner_id, r.staff_ref, r.account_id, r.mid \
           UNION ALL \
           SELECT 2, r.partner_id, r.store_ref, r.mid, SUM(r.net), COUNT(*), MAX(r.first), \
             MAX(r.ret), SUM(r.conv) \
           FROM r WHERE r.store_ref IS NOT NULL \
           GROUP BY r.partner_id, r.store_ref, r.account_id, r.mid), \
         t AS ( \
           SELECT g.kind, g.partner_id, g.ref, SUM(g.net) AS net, CAST(SUM(g.n) AS BIGINT) AS purchases, \
             COUNT(g.mid) AS served, \
             CAST(SUM(CASE WHEN g.mid IS NOT NULL THEN g.first ELSE 0 END) AS BIGINT) \
               AS enrolled, \
             CAST(SUM(CASE WHEN g.mid IS NOT NULL THEN g.ret ELSE 0 END) AS BIGINT) \
               AS returned, \
             CAST(SUM(g.conv) AS BIGINT) AS converted, \
             ROW_NUMBER() OVER (PARTITION BY g.kind \
               ORDER BY SUM(g.net) DESC, g.ref ASC, g.partner_id ASC) AS pos, \
             COUNT(*) OVER (PARTITION BY g.kind) AS refs \
           FROM g GROUP BY g.kind, g.partner_id, g.ref) \
         SELECT CAST(t.kind AS BIGINT) AS kind, t.partner_id, t.ref, {sales} AS sales, t.purchases, t.served, t.enrolled, \
           t.returned, t.converted, t.refs \
         FROM t WHERE t.pos <= {limit} ORDER BY t.kind, t.pos"
    );
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
    let number = |d: NaiveDate| Value::from((d - epoch).num_days());
    let values: Vec<Value> = vec![
        programme_id.into(),
        number(from),
        number(to),
        number(to + Duration::days(RETURN_DAYS)),
    ];
    let rows = db
        .query_all(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let mut staff = Ranking {
        total: 0,
        rows: Vec::new(),
    };
    let mut stores = Ranking {
        total: 0,
        rows: Vec::new(),
    };
    for r in rows {
        let kind = if r.try_get::<i64>("", "kind")? == 1 {
            Kind::Staff
        } else {
            Kind::Store
        };
        let list = match kind {
            Kind::Staff => &mut staff,
            Kind::Store => &mut stores,
        };
        list.total = r.try_get::<i64>("", "refs")?;
        list.rows.push(Effectiveness {
            partner_id: r.try_get("", "partner_id")?,
            reference: r.try_get("", "ref")?,
            sales: read_sum(backend, &r, "sales", minor_units)?,
            purchases: r.try_get("", "purchases")?,
            members_served: r.try_get("", "served")?,
            members_enrolled: r.try_get("", "enrolled")?,
            members_returned: r.try_get("", "returned")?,
            campaign_conversions: r.try_get("", "converted")?,
        });
    }
    Ok((staff, stores))
}

/// `GET /v1/analytics/staff`: sales, purchases, members enrolled and served, returns
/// within 90 days and campaign conversions per `staff_ref` and per `store_ref`, over the
/// days `from..=to`; each list sorted by sales (then reference), the first `limit`.
pub async fn staff(
    app: &App,
    caller: &Caller,
    from: NaiveDate,
    to: NaiveDate,
    limit: u64,
) -> AppResult<StaffReport> {
    caller.require(&[Scope::Admin])?;
    if from > to {
        return Err(AppError::Validation(vec![FieldError::new(
            "from",
            "must not be after `to`",
        )]));
    }
    let programme = programmes::load(app, caller.programme_id).await?;
    let minor = programme.currency.minor_units();
    let limit = limit.clamp(1, MAX_ROWS);
    // More memory for this statement's sorts and hashes than the default `work_mem`,
    // so that they do not spill to disk at a million purchases.
    let txn = app.db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SET LOCAL work_mem = '64MB'")
            .await?;
    }
    let (staff, stores) = rankings(&txn, caller.programme_id, from, to, minor, limit).await?;
    txn.commit().await?;
    Ok(StaffReport {
        currency: programme.currency.code().to_owned(),
        from,
        to,
        staff,
        stores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        let d = |y, m, dd| NaiveDate::from_ymd_opt(y, m, dd).unwrap();
        assert_eq!(week_start(d(2024, 1, 1)), d(2024, 1, 1)); // a Monday
        assert_eq!(week_start(d(2024, 1, 7)), d(2024, 1, 1)); // Sunday
        assert_eq!(week_start(d(1997, 1, 1)), d(1996, 12, 30)); // Wednesday
    }
}

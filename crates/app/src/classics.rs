//! The classic customer classifications over the programme's purchases: Pareto shares and
//! the Lorenz curve, ABC/XYZ, RFM (`coalition_domain::classify` holds the rules).
//!
//! The database aggregates — one row per member (and per member-month for XYZ, per
//! member-day for RFM) — and sums money exactly, in integer minor units of the
//! programme's currency: `CAST(amount AS NUMERIC)` on PostgreSQL, `REAL` rounded to the
//! minor unit on SQLite (exact for any realistic amount). A purchase counts on its
//! analytics day, `COALESCE(occurred_at, created_at)` in UTC, net of `refunded_amount`.
//! Erased members are left out, and so are members whose net sales in the period are not
//! positive (a customer who returned everything is no buyer): RFM counts only days with
//! a positive net. RFM's quintiles are `NTILE(5)` in SQL, and its lists
//! are filtered and paged there; Pareto and ABC/XYZ read one row per member and classify
//! in Rust with the domain's pure functions (so the rules have one definition).

use crate::error::{AppError, AppResult, FieldError};
use crate::pagination::{Page, PageRequest};
use crate::programmes;
use crate::{App, Caller, Scope};
use chrono::{Datelike, Duration, NaiveDate, Utc};
use coalition_domain::classify::{
    abc_classes, cv_from_sums, fm_score, lorenz_curve, rfm_segment, share, top_20_share, Abc,
    LorenzPoint, RfmSegment, Thresholds, Xyz,
};
use coalition_domain::tiers::from_minor;
use coalition_store::entities::partner;
use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, Value,
};
use uuid::Uuid;

/// The default period: the 365 days up to today, today included.
pub const DEFAULT_DAYS: i64 = 365;
/// The longest period, in days (ten years).
pub const MAX_PERIOD_DAYS: i64 = 3660;

/// A period of UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    /// `to` defaults to today, `from` to 364 days before `to` (365 days in all).
    pub fn new(from: Option<NaiveDate>, to: Option<NaiveDate>) -> AppResult<Period> {
        let to = to.unwrap_or_else(|| Utc::now().date_naive());
        let from = from.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
        if from > to {
            return Err(AppError::Validation(vec![FieldError::new(
                "from",
                "must not be after to",
            )]));
        }
        if (to - from).num_days() >= MAX_PERIOD_DAYS {
            return Err(AppError::Validation(vec![FieldError::new(
                "from",
                format!("the period may span at most {MAX_PERIOD_DAYS} days"),
            )]));
        }
        Ok(Period { from, to })
    }

    /// Calendar months the period touches (January 15 to March 10 is three).
    pub fn months(&self) -> i64 {
        let index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
        index(self.to) - index(self.from) + 1
    }
}

/// SQL pieces for one backend.
struct Sql {
    backend: DbBackend,
    /// The purchase's UTC day, `YYYY-MM-DD`.
    day: &'static str,
    /// The purchase's UTC month, `YYYY-MM`.
    month: &'static str,
    /// The purchase's net amount in minor units, an integer.
    net: String,
}

impl Sql {
    fn new(backend: DbBackend, minor_units: u32) -> Sql {
        let scale = 10i64.pow(minor_units);
        match backend {
            DbBackend::Postgres => Sql {
                backend,
                day: "to_char(COALESCE(p.occurred_at, p.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                month: "to_char(COALESCE(p.occurred_at, p.created_at) AT TIME ZONE 'UTC', 'YYYY-MM')",
                net: format!(
                    "(CAST(ROUND(CAST(p.amount AS NUMERIC) * {scale}) AS BIGINT) \
                     - CAST(ROUND(CAST(p.refunded_amount AS NUMERIC) * {scale}) AS BIGINT))"
                ),
            },
            _ => Sql {
                backend,
                day: "substr(COALESCE(p.occurred_at, p.created_at), 1, 10)",
                month: "substr(COALESCE(p.occurred_at, p.created_at), 1, 7)",
                net: format!(
                    "(CAST(ROUND(CAST(p.amount AS REAL) * {scale}) AS INTEGER) \
                     - CAST(ROUND(CAST(p.refunded_amount AS REAL) * {scale}) AS INTEGER))"
                ),
            },
        }
    }

    /// The next positional parameter after `values`.
    fn param(&self, values: &[Value]) -> String {
        match self.backend {
            DbBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_owned(),
        }
    }

    /// The programme's purchases (`p`) from `from` to `to`: `FROM … WHERE …`, its
    /// parameters pushed to `values`. Queries group them by account first and join the
    /// (far fewer) totals to `members` after, leaving erased members out there.
    fn purchases(
        &self,
        values: &mut Vec<Value>,
        programme_id: Uuid,
        from: NaiveDate,
        to: NaiveDate,
        partner_id: Option<Uuid>,
    ) -> String {
        let day = self.day;
        values.push(programme_id.into());
        let p1 = self.param(values);
        let mut sql = match self.backend {
            // Timestamps compared as timestamps: no per-row `to_char` to filter.
            DbBackend::Postgres => {
                let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
                values.push(midnight(from).into());
                let p2 = self.param(values);
                values.push(midnight(to + Duration::days(1)).into());
                let p3 = self.param(values);
                format!(
                    "FROM purchases p WHERE p.programme_id = {p1} \
                     AND COALESCE(p.occurred_at, p.created_at) >= {p2} \
                     AND COALESCE(p.occurred_at, p.created_at) < {p3}"
                )
            }
            _ => {
                values.push(from.format("%Y-%m-%d").to_string().into());
                let p2 = self.param(values);
                values.push(to.format("%Y-%m-%d").to_string().into());
                let p3 = self.param(values);
                format!(
                    "FROM purchases p WHERE p.programme_id = {p1} AND {day} >= {p2} AND {day} <= {p3}"
                )
            }
        };
        if let Some(partner_id) = partner_id {
            values.push(partner_id.into());
            sql.push_str(&format!(" AND p.partner_id = {}", self.param(values)));
        }
        sql
    }
}

async fn minor_units(app: &App, programme_id: Uuid) -> AppResult<(String, u32)> {
    let programme = programmes::load(app, programme_id).await?;
    Ok((
        programme.currency.code().to_owned(),
        programme.currency.minor_units(),
    ))
}

// ---------------------------------------------------------------------------------------
// Pareto.

#[derive(Debug, Clone)]
pub struct Pareto {
    pub period: Period,
    pub partner_id: Option<Uuid>,
    pub currency: String,
    /// Members who bought in the period.
    pub members: u64,
    /// Their sales, net of refunds.
    pub sales: Decimal,
    /// Share of `sales` made by the top 20 % of members (`ceil(members / 5)` members).
    pub top_20_share: Decimal,
    pub curve: Vec<LorenzPoint>,
}

/// `GET /v1/analytics/pareto`: how concentrated the period's sales are.
pub async fn pareto(
    app: &App,
    caller: &Caller,
    period: Period,
    partner_id: Option<Uuid>,
) -> AppResult<Pareto> {
    caller.require(&[Scope::Admin])?;
    if let Some(partner_id) = partner_id {
        partner::Entity::find_by_id(partner_id)
            .filter(partner::Column::ProgrammeId.eq(caller.programme_id))
            .one(&app.db)
            .await?
            .ok_or(AppError::NotFound("partner"))?;
    }
    let (currency, minor) = minor_units(app, caller.programme_id).await?;
    let sql = Sql::new(app.db.get_database_backend(), minor);
    let mut values = Vec::new();
    let from = sql.purchases(
        &mut values,
        caller.programme_id,
        period.from,
        period.to,
        partner_id,
    );
    let net = &sql.net;
    let statement = format!(
        "WITH a AS (SELECT p.account_id, SUM({net}) AS sales {from} GROUP BY p.account_id \
                    HAVING SUM({net}) > 0) \
         SELECT CAST(a.sales AS BIGINT) AS sales FROM a \
         JOIN members m ON m.account_id = a.account_id AND m.erased_at IS NULL"
    );
    let rows = app
        .db
        .query_all(Statement::from_sql_and_values(
            sql.backend,
            statement,
            values,
        ))
        .await?;
    let mut sales: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64>("", "sales"))
        .collect::<Result<_, _>>()?;
    sales.sort_unstable();
    let total: i64 = sales.iter().sum();
    Ok(Pareto {
        period,
        partner_id,
        currency,
        members: sales.len() as u64,
        sales: from_minor(total, minor),
        top_20_share: top_20_share(&sales),
        curve: lorenz_curve(&sales),
    })
}

// ---------------------------------------------------------------------------------------
// ABC/XYZ.

/// A member's ABC/XYZ classification over a period.
#[derive(Debug, Clone)]
pub struct ClassifiedMember {
    pub member_id: Uuid,
    pub external_ref: Option<String>,
    /// Minor units.
    pub sales_minor: i64,
    pub sales: Decimal,
    /// Her share of the period's sales.
    pub share: Decimal,
    /// Coefficient of variation of her monthly spend (none without a positive mean).
    pub cv: Option<f64>,
    pub abc: Abc,
    pub xyz: Xyz,
}

#[derive(Debug, Clone, Default)]
pub struct MatrixCell {
    pub members: u64,
    pub sales: Decimal,
}

#[derive(Debug, Clone)]
pub struct AbcXyz {
    pub period: Period,
    pub months: i64,
    pub currency: String,
    pub thresholds: Thresholds,
    pub members: u64,
    pub sales: Decimal,
    /// The nine cells, `AX`, `AY`, `AZ`, `BX`, … `CZ`.
    pub matrix: Vec<((Abc, Xyz), MatrixCell)>,
}

/// A sum of squares as the database wrote it: an integer (PostgreSQL's NUMERIC) or a
/// double (SQLite's `total`, e.g. `1.0e+22`).
fn sum_of_squares(text: &str) -> AppResult<i128> {
    let text = text.trim();
    if let Ok(exact) = text.parse::<i128>() {
        return Ok(exact);
    }
    match text.parse::<f64>() {
        // `as` saturates: beyond i128 (sums of 10^19 a month) the CV is off, never a panic.
        Ok(v) if v.is_finite() => Ok(v.round() as i128),
        _ => Err(AppError::Internal(format!(
            "sum of squares '{text}' is not a number"
        ))),
    }
}

/// Every member who bought in the period, classified, by sales (largest first), then id.
async fn classified(
    app: &App,
    programme_id: Uuid,
    period: Period,
    t: &Thresholds,
) -> AppResult<(String, Vec<ClassifiedMember>)> {
    let (currency, minor) = minor_units(app, programme_id).await?;
    let sql = Sql::new(app.db.get_database_backend(), minor);
    let mut values = Vec::new();
    let from = sql.purchases(&mut values, programme_id, period.from, period.to, None);
    let (net, month) = (&sql.net, sql.month);
    // The sum of squared monthly totals outgrows 64 bits from about 30 million a month:
    // exact NUMERIC on PostgreSQL; on SQLite (integers only up to 64 bits) a double,
    // exact up to 2^53 — read back as text either way.
    let sum_sq = match sql.backend {
        DbBackend::Postgres => "CAST(SUM(CAST(t AS NUMERIC) * t) AS TEXT)",
        _ => "CAST(total(CAST(t AS REAL) * t) AS TEXT)",
    };
    let statement = format!(
        "WITH mm AS (SELECT p.account_id, {month} AS month, SUM({net}) AS t {from} \
                     GROUP BY p.account_id, {month}), \
         a AS (SELECT account_id, SUM(t) AS sales, {sum_sq} AS sum_sq FROM mm GROUP BY account_id \
               HAVING SUM(t) > 0) \
         SELECT mx.id AS member_id, mx.external_ref, CAST(a.sales AS BIGINT) AS sales, \
                a.sum_sq \
         FROM a JOIN members mx ON mx.account_id = a.account_id AND mx.erased_at IS NULL"
    );
    let rows = app
        .db
        .query_all(Statement::from_sql_and_values(
            sql.backend,
            statement,
            values,
        ))
        .await?;
    let mut found: Vec<(Uuid, Option<String>, i64, i128)> = rows
        .iter()
        .map(|r| {
            let sum_sq: String = r.try_get("", "sum_sq")?;
            Ok((
                r.try_get("", "member_id")?,
                r.try_get("", "external_ref")?,
                r.try_get("", "sales")?,
                sum_of_squares(&sum_sq)?,
            ))
        })
        .collect::<AppResult<_>>()?;
    found.sort_by_key(|(id, _, sales, _)| (std::cmp::Reverse(*sales), *id));
    let sales: Vec<i64> = found.iter().map(|f| f.2).collect();
    let total: i128 = sales.iter().map(|&s| i128::from(s)).sum();
    let classes = abc_classes(&sales, t);
    let months = period.months();
    let members = found
        .into_iter()
        .zip(classes)
        .map(|((member_id, external_ref, sales, sum_sq), abc)| {
            let cv = cv_from_sums(sales, sum_sq, months);
            ClassifiedMember {
                member_id,
                external_ref,
                sales_minor: sales,
                sales: from_minor(sales, minor),
                share: share(i128::from(sales), total),
                cv,
                abc,
                xyz: t.xyz(cv),
            }
        })
        .collect();
    Ok((currency, members))
}

/// `GET /v1/analytics/abc-xyz`: the nine cells' members and sales.
pub async fn abc_xyz(
    app: &App,
    caller: &Caller,
    period: Period,
    t: Thresholds,
) -> AppResult<AbcXyz> {
    caller.require(&[Scope::Admin])?;
    let (currency, members) = classified(app, caller.programme_id, period, &t).await?;
    let mut matrix: Vec<((Abc, Xyz), MatrixCell)> = Abc::ALL
        .iter()
        .flat_map(|&a| {
            Xyz::ALL
                .iter()
                .map(move |&x| ((a, x), MatrixCell::default()))
        })
        .collect();
    let mut total = Decimal::ZERO;
    for m in &members {
        total += m.sales;
        if let Some((_, cell)) = matrix.iter_mut().find(|(k, _)| *k == (m.abc, m.xyz)) {
            cell.members += 1;
            cell.sales += m.sales;
        }
    }
    Ok(AbcXyz {
        period,
        months: period.months(),
        currency,
        thresholds: t,
        members: members.len() as u64,
        sales: total,
        matrix,
    })
}

/// `GET /v1/analytics/abc-xyz/members`: the members of a cell (or all), largest sales
/// first, then by id; paged.
pub async fn abc_xyz_members(
    app: &App,
    caller: &Caller,
    period: Period,
    t: Thresholds,
    class: Option<(Abc, Xyz)>,
    page: PageRequest,
) -> AppResult<(String, Page<ClassifiedMember>)> {
    caller.require(&[Scope::Admin])?;
    let after = page.decode_cursor(sales_cursor)?;
    let (currency, members) = classified(app, caller.programme_id, period, &t).await?;
    let key = |m: &ClassifiedMember| (std::cmp::Reverse(m.sales_minor), m.member_id);
    let rows: Vec<ClassifiedMember> = members
        .into_iter()
        .filter(|m| class.is_none_or(|c| c == (m.abc, m.xyz)))
        .filter(|m| after.is_none_or(|(s, id)| key(m) > (std::cmp::Reverse(s), id)))
        .take(page.limit as usize + 1)
        .collect();
    let page = page.page(
        rows,
        |m| format!("{}:{}", m.sales_minor, m.member_id),
        |m| m,
    );
    Ok((currency, page))
}

fn sales_cursor(c: &str) -> Option<(i64, Uuid)> {
    let (sales, id) = c.split_once(':')?;
    Some((sales.parse().ok()?, Uuid::parse_str(id).ok()?))
}

// ---------------------------------------------------------------------------------------
// RFM.

/// The days RFM looks back over, `as_of` included.
pub const RFM_DAYS: i64 = 365;

#[derive(Debug, Clone)]
pub struct RfmMember {
    pub member_id: Uuid,
    pub external_ref: Option<String>,
    pub last_purchase_on: NaiveDate,
    /// Days from the last purchase to `as_of`.
    pub recency_days: i64,
    /// Distinct purchase days.
    pub purchase_days: i64,
    pub sales: Decimal,
    sales_minor: i64,
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    pub segment: RfmSegment,
}

/// The SQL `CASE` of the domain's R × FM map.
fn segment_case() -> String {
    let mut case = String::from("CASE");
    for r in 1u8..=5 {
        for fm in 1u8..=5 {
            case.push_str(&format!(
                " WHEN r = {r} AND fm = {fm} THEN '{}'",
                rfm_segment(r, fm).as_str()
            ));
        }
    }
    case.push_str(" END");
    case
}

/// The scored members as of `as_of`, in `segments` (all when empty), by sales (largest
/// first) then id, after the cursor, at most `limit` (all when none).
async fn rfm_rows(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    minor: u32,
    as_of: NaiveDate,
    segments: &[RfmSegment],
    after: Option<(i64, Uuid)>,
    limit: Option<u64>,
) -> AppResult<Vec<RfmMember>> {
    let sql = Sql::new(db.get_database_backend(), minor);
    let mut values = Vec::new();
    let first = as_of - Duration::days(RFM_DAYS - 1);
    let from = sql.purchases(&mut values, programme_id, first, as_of, None);
    let (net, day) = (&sql.net, sql.day);
    let case = segment_case();
    let mut filters = Vec::new();
    if !segments.is_empty() {
        let mut names = Vec::new();
        for s in segments {
            values.push(s.as_str().into());
            names.push(sql.param(&values));
        }
        filters.push(format!("seg.segment IN ({})", names.join(", ")));
    }
    if let Some((sales, id)) = after {
        values.push(sales.into());
        let ps = sql.param(&values);
        values.push(sales.into());
        let ps2 = sql.param(&values);
        values.push(id.into());
        let pid = sql.param(&values);
        filters.push(format!(
            "(seg.sales < {ps} OR (seg.sales = {ps2} AND seg.member_id > {pid}))"
        ));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    let limit = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
    let statement = format!(
        "WITH d AS (SELECT p.account_id, {day} AS day, SUM({net}) AS t {from} GROUP BY p.account_id, {day} \
                    HAVING SUM({net}) > 0), \
         acc AS (SELECT account_id, MAX(day) AS last_day, COUNT(*) AS days, CAST(SUM(t) AS BIGINT) AS sales \
                 FROM d GROUP BY account_id), \
         agg AS (SELECT mx.id AS member_id, acc.last_day, acc.days, acc.sales FROM acc \
                 JOIN members mx ON mx.account_id = acc.account_id AND mx.erased_at IS NULL), \
         scored AS (SELECT member_id, last_day, days, sales, \
                    NTILE(5) OVER (ORDER BY last_day, member_id) AS r, \
                    NTILE(5) OVER (ORDER BY days, member_id) AS f, \
                    NTILE(5) OVER (ORDER BY sales, member_id) AS mo FROM agg), \
         fm AS (SELECT member_id, last_day, days, sales, r, f, mo, (f + mo + 1) / 2 AS fm FROM scored), \
         seg AS (SELECT member_id, last_day, days, sales, r, f, mo, {case} AS segment FROM fm) \
         SELECT seg.member_id, mx.external_ref, seg.last_day, seg.days, seg.sales, \
                CAST(seg.r AS BIGINT) AS r, CAST(seg.f AS BIGINT) AS f, CAST(seg.mo AS BIGINT) AS mo, seg.segment \
         FROM seg JOIN members mx ON mx.id = seg.member_id {filter} \
         ORDER BY seg.sales DESC, seg.member_id{limit}"
    );
    let rows = db
        .query_all(Statement::from_sql_and_values(
            sql.backend,
            statement,
            values,
        ))
        .await?;
    let score = |v: i64| -> AppResult<u8> {
        u8::try_from(v)
            .ok()
            .filter(|s| (1..=5).contains(s))
            .ok_or_else(|| AppError::Internal(format!("RFM score {v} out of 1–5")))
    };
    rows.iter()
        .map(|r| {
            let last: String = r.try_get("", "last_day")?;
            let last_purchase_on = NaiveDate::parse_from_str(&last, "%Y-%m-%d")
                .map_err(|_| AppError::Internal(format!("purchase day '{last}' is not a date")))?;
            let (recency, frequency, monetary) = (
                score(r.try_get("", "r")?)?,
                score(r.try_get("", "f")?)?,
                score(r.try_get("", "mo")?)?,
            );
            let sales_minor: i64 = r.try_get("", "sales")?;
            Ok(RfmMember {
                member_id: r.try_get("", "member_id")?,
                external_ref: r.try_get("", "external_ref")?,
                last_purchase_on,
                recency_days: (as_of - last_purchase_on).num_days(),
                purchase_days: r.try_get("", "days")?,
                sales: from_minor(sales_minor, minor),
                sales_minor,
                recency,
                frequency,
                monetary,
                segment: rfm_segment(recency, fm_score(frequency, monetary)),
            })
        })
        .collect()
}

/// `GET /v1/analytics/rfm`: members scored 1–5 on recency, frequency and monetary value
/// over the 365 days up to `as_of` (included), with their segment; largest sales first,
/// then by id; paged.
pub async fn rfm(
    app: &App,
    caller: &Caller,
    as_of: NaiveDate,
    segment: Option<RfmSegment>,
    page: PageRequest,
) -> AppResult<(String, Page<RfmMember>)> {
    caller.require(&[Scope::Admin])?;
    let after = page.decode_cursor(sales_cursor)?;
    let (currency, minor) = minor_units(app, caller.programme_id).await?;
    let segments: Vec<RfmSegment> = segment.into_iter().collect();
    let rows = rfm_rows(
        &app.db,
        caller.programme_id,
        minor,
        as_of,
        &segments,
        after,
        Some(page.limit + 1),
    )
    .await?;
    let page = page.page(
        rows,
        |m| format!("{}:{}", m.sales_minor, m.member_id),
        |m| m,
    );
    Ok((currency, page))
}

/// The ids of the members in `segments` as of `as_of` (campaign segments), in one query.
pub async fn rfm_member_ids(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    minor: u32,
    as_of: NaiveDate,
    segments: &[RfmSegment],
) -> AppResult<Vec<Uuid>> {
    let rows = rfm_rows(db, programme_id, minor, as_of, segments, None, None).await?;
    Ok(rows.into_iter().map(|m| m.member_id).collect())
}

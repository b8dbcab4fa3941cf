//! Customer-base models (`coalition_domain::clv`) on the programme's purchases.
//!
//! The database aggregates: one row per member-day (purchases of a day are one
//! transaction, net of refunds), then one row per member — distinct days, first and last
//! day, the first day's total and the total of all days. Rust turns those rows into
//! `lifetimes`-style summaries (x, t_x, T in weeks, mean repeat-day value), groups them
//! by (x, t_x, T) and fits BG/NBD and Gamma-Gamma by maximum likelihood.
//!
//! A purchase's day is `COALESCE(occurred_at, created_at)` in UTC: imported purchases
//! carry their historical day. Amounts are summed as floating point in SQL
//! (`CAST(amount AS NUMERIC)` on PostgreSQL, `REAL` on SQLite): they feed statistical
//! estimates, never the ledger; money in answers is rounded to the currency's minor unit.
//! Members' predictions are as of the model's calibration end, from their purchases up to
//! that day (later purchases are a holdout the model does not see).

use crate::error::{AppError, AppResult, FieldError};
use crate::pagination::{Page, PageRequest};
use crate::programmes;
use crate::{App, Caller, Scope};
use chrono::{NaiveDate, Utc};
use coalition_domain::clv::{
    customer_lifetime_value, group_by_rf, spend_observations, BgNbd, CustomerSummary, GammaGamma,
};
use coalition_store::entities::{clv_model, member, partner};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, Value,
};
use uuid::Uuid;

pub use clv_model::Model as ClvModel;

/// CLV horizon and discount, as `lifetimes`' `customer_lifetime_value` defaults.
pub const CLV_MONTHS: u32 = 12;
pub const CLV_MONTHLY_DISCOUNT: f64 = 0.01;

/// One member's purchase history as of a calibration end.
#[derive(Debug, Clone)]
pub struct MemberHistory {
    pub member_id: Uuid,
    pub external_ref: Option<String>,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// Distinct purchase days.
    pub days: i64,
    /// All days' totals.
    pub total: f64,
    /// The first day's total.
    pub first_total: f64,
}

impl MemberHistory {
    pub fn summary(&self, end: NaiveDate) -> CustomerSummary {
        let repeats = (self.days - 1).max(0) as u32;
        CustomerSummary {
            frequency: repeats,
            recency_days: (self.last_day - self.first_day).num_days(),
            age_days: (end - self.first_day).num_days(),
            monetary_value: if repeats == 0 {
                0.0
            } else {
                (self.total - self.first_total) / f64::from(repeats)
            },
        }
    }
}

/// The members' histories up to `end` (included), aggregated in SQL.
async fn histories(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    partner_id: Option<Uuid>,
    member_id: Option<Uuid>,
    end: NaiveDate,
) -> AppResult<Vec<MemberHistory>> {
    let backend = db.get_database_backend();
    let (day, amount) = match backend {
        DbBackend::Postgres => (
            "to_char(COALESCE(p.occurred_at, p.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            "(CAST(p.amount AS NUMERIC) - CAST(p.refunded_amount AS NUMERIC))::float8",
        ),
        _ => (
            "substr(COALESCE(p.occurred_at, p.created_at), 1, 10)",
            "(CAST(p.amount AS REAL) - CAST(p.refunded_amount AS REAL))",
        ),
    };
    let mut values: Vec<Value> = vec![
        programme_id.into(),
        end.format("%Y-%m-%d").to_string().into(),
    ];
    let param = |values: &Vec<Value>| match backend {
        DbBackend::Postgres => format!("${}", values.len()),
        _ => "?".to_owned(),
    };
    let (p1, p2) = match backend {
        DbBackend::Postgres => ("$1".to_owned(), "$2".to_owned()),
        _ => ("?".to_owned(), "?".to_owned()),
    };
    let mut filters = String::new();
    if let Some(partner_id) = partner_id {
        values.push(partner_id.into());
        filters.push_str(&format!(" AND p.partner_id = {}", param(&values)));
    }
    if let Some(member_id) = member_id {
        values.push(member_id.into());
        filters.push_str(&format!(" AND m.id = {}", param(&values)));
    }
    let sql = format!(
        "WITH days AS ( \
           SELECT m.id AS member_id, {day} AS day, SUM({amount}) AS total \
           FROM purchases p JOIN members m ON m.account_id = p.account_id AND m.programme_id = p.programme_id \
           WHERE p.programme_id = {p1} AND m.erased_at IS NULL AND {day} <= {p2}{filters} \
           GROUP BY m.id, {day}), \
         ranked AS ( \
           SELECT member_id, day, total, ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY day) AS k \
           FROM days), \
         members_days AS ( \
           SELECT member_id, MIN(day) AS first_day, MAX(day) AS last_day, COUNT(*) AS n, SUM(total) AS total, \
             SUM(CASE WHEN k = 1 THEN total ELSE 0 END) AS first_total \
           FROM ranked GROUP BY member_id) \
         SELECT md.member_id, mm.external_ref, md.first_day, md.last_day, md.n, md.total, md.first_total \
         FROM members_days md JOIN members mm ON mm.id = md.member_id"
    );
    let rows = db
        .query_all(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let day = |text: String| {
        NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|_| AppError::Internal(format!("purchase day '{text}' is not a date")))
    };
    rows.into_iter()
        .map(|r| {
            Ok(MemberHistory {
                member_id: r.try_get("", "member_id")?,
                external_ref: r.try_get("", "external_ref")?,
                first_day: day(r.try_get("", "first_day")?)?,
                last_day: day(r.try_get("", "last_day")?)?,
                days: r.try_get("", "n")?,
                total: r.try_get::<Option<f64>>("", "total")?.unwrap_or(0.0),
                first_total: r.try_get::<Option<f64>>("", "first_total")?.unwrap_or(0.0),
            })
        })
        .collect()
}

/// Fits BG/NBD and Gamma-Gamma on the programme's (or one partner's) purchases up to
/// `calibration_end` and stores the parameters.
pub async fn fit(
    app: &App,
    caller: &Caller,
    calibration_end: NaiveDate,
    partner_id: Option<Uuid>,
) -> AppResult<ClvModel> {
    caller.require(&[Scope::Admin])?;
    fit_for(app, caller.programme_id, calibration_end, partner_id).await
}

/// `fit` without a caller (the CLI and benchmarks).
pub async fn fit_for(
    app: &App,
    programme_id: Uuid,
    calibration_end: NaiveDate,
    partner_id: Option<Uuid>,
) -> AppResult<ClvModel> {
    if calibration_end > Utc::now().date_naive() {
        return Err(AppError::Validation(vec![FieldError::new(
            "calibration_end",
            "must not be in the future",
        )]));
    }
    let programme = programmes::load(app, programme_id).await?;
    if let Some(partner_id) = partner_id {
        partner::Entity::find_by_id(partner_id)
            .filter(partner::Column::ProgrammeId.eq(programme_id))
            .one(&app.db)
            .await?
            .ok_or(AppError::NotFound("partner"))?;
    }
    let histories = histories(&app.db, programme_id, partner_id, None, calibration_end).await?;
    if histories.is_empty() {
        return Err(AppError::CannotFit(
            "no member bought anything on or before calibration_end".into(),
        ));
    }
    let summaries: Vec<CustomerSummary> = histories
        .iter()
        .map(|h| h.summary(calibration_end))
        .collect();
    // With every first purchase on the calibration end day the likelihood is flat: a
    // "fit" would be the optimiser's starting point.
    if summaries.iter().all(|s| s.age_days == 0) {
        return Err(AppError::CannotFit(
            "every member's first purchase is on calibration_end: there is no history to fit yet"
                .into(),
        ));
    }
    let started = std::time::Instant::now();
    let groups = group_by_rf(&summaries);
    let bg = BgNbd::fit(&groups).map_err(|e| AppError::CannotFit(format!("BG/NBD: {e}")))?;
    let obs = spend_observations(&summaries);
    let gg = if obs.is_empty() {
        None
    } else {
        GammaGamma::fit(&obs).ok()
    };
    let fit_millis = started.elapsed().as_millis() as i64;
    let row = ClvModel {
        id: Uuid::now_v7(),
        programme_id,
        partner_id,
        calibration_end,
        currency: programme.currency.code().to_owned(),
        r: bg.params.r,
        alpha: bg.params.alpha,
        a: bg.params.a,
        b: bg.params.b,
        bgnbd_log_likelihood: bg.log_likelihood,
        p: gg.as_ref().map(|g| g.params.p),
        q: gg.as_ref().map(|g| g.params.q),
        gamma: gg.as_ref().map(|g| g.params.gamma),
        gamma_gamma_log_likelihood: gg.as_ref().map(|g| g.log_likelihood),
        members: summaries.len() as i64,
        repeat_members: obs.len() as i64,
        fit_millis,
        fitted_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
    };
    clv_model::Entity::insert(clv_model::ActiveModel::from(row.clone()))
        .exec_without_returning(&app.db)
        .await?;
    Ok(row)
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<ClvModel> {
    caller.require(&[Scope::Admin])?;
    clv_model::Entity::find_by_id(id)
        .filter(clv_model::Column::ProgrammeId.eq(caller.programme_id))
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("CLV model"))
}

fn models(m: &ClvModel) -> (BgNbd, Option<GammaGamma>) {
    let bg = BgNbd {
        r: m.r,
        alpha: m.alpha,
        a: m.a,
        b: m.b,
    };
    let gg = match (m.p, m.q, m.gamma) {
        (Some(p), Some(q), Some(gamma)) => Some(GammaGamma { p, q, gamma }),
        _ => None,
    };
    (bg, gg)
}

/// A member as a model sees her.
#[derive(Debug, Clone)]
pub struct MemberValue {
    pub member_id: Uuid,
    pub external_ref: Option<String>,
    pub summary: CustomerSummary,
    pub last_purchase_on: NaiveDate,
    /// Her purchases' total up to the calibration end.
    pub total: f64,
    pub p_alive: f64,
    /// Expected purchase days in the next `weeks` weeks.
    pub expected_purchases: f64,
    /// Gamma-Gamma's expected value of one purchase (none without a spend model).
    pub expected_value_per_purchase: Option<f64>,
    /// `expected_purchases` × `expected_value_per_purchase`.
    pub expected_spend: Option<f64>,
    /// Discounted value of the next [`CLV_MONTHS`] months.
    pub clv: Option<f64>,
}

fn value_of(model: &ClvModel, h: &MemberHistory, weeks: f64) -> MemberValue {
    let (bg, gg) = models(model);
    let s = h.summary(model.calibration_end);
    let (x, t_x, t) = (s.frequency, s.recency(), s.age());
    let p_alive = bg.probability_alive(x, t_x, t);
    let expected_purchases = bg.conditional_expected_purchases(weeks, x, t_x, t);
    let per = gg
        .as_ref()
        .map(|g| g.conditional_expected_average_value(x, s.monetary_value));
    let clv = gg
        .as_ref()
        .map(|g| customer_lifetime_value(&bg, g, &s, CLV_MONTHS, CLV_MONTHLY_DISCOUNT));
    MemberValue {
        member_id: h.member_id,
        external_ref: h.external_ref.clone(),
        last_purchase_on: h.last_day,
        total: h.total,
        p_alive,
        expected_purchases,
        expected_value_per_purchase: per,
        expected_spend: per.map(|v| v * expected_purchases),
        clv,
        summary: s,
    }
}

/// The most weeks a prediction looks ahead (ten years).
pub const MAX_WEEKS: u32 = 520;

/// `GET /v1/members/{id}/clv`: the member under the model (the programme's latest model
/// when none is named).
pub async fn member_value(
    app: &App,
    caller: &Caller,
    member_id: Uuid,
    model_id: Option<Uuid>,
    weeks: u32,
) -> AppResult<(ClvModel, MemberValue)> {
    caller.require(&[Scope::Admin])?;
    member::Entity::find_by_id(member_id)
        .filter(member::Column::ProgrammeId.eq(caller.programme_id))
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("member"))?;
    let model = model_or_latest(app, caller, model_id).await?;
    let found = histories(
        &app.db,
        caller.programme_id,
        model.partner_id,
        Some(member_id),
        model.calibration_end,
    )
    .await?;
    let Some(h) = found.first() else {
        return Err(AppError::CannotFit(
            "the member bought nothing on or before the model's calibration_end".into(),
        ));
    };
    let value = value_of(&model, h, f64::from(weeks));
    Ok((model, value))
}

async fn model_or_latest(
    app: &App,
    caller: &Caller,
    model_id: Option<Uuid>,
) -> AppResult<ClvModel> {
    match model_id {
        Some(id) => get(app, caller, id).await,
        None => {
            use sea_orm::QueryOrder;
            clv_model::Entity::find()
                .filter(clv_model::Column::ProgrammeId.eq(caller.programme_id))
                .order_by_desc(clv_model::Column::Id)
                .one(&app.db)
                .await?
                .ok_or(AppError::NotFound("CLV model"))
        }
    }
}

/// `GET /v1/analytics/at-risk`: members whose P(alive) is below `p_alive_below`, most
/// valuable first (by what they spent up to the calibration end, then by id).
pub async fn at_risk(
    app: &App,
    caller: &Caller,
    model_id: Option<Uuid>,
    p_alive_below: f64,
    weeks: u32,
    page: PageRequest,
) -> AppResult<(ClvModel, Page<MemberValue>)> {
    caller.require(&[Scope::Admin])?;
    let after = page.decode_cursor(|c| {
        let (bits, id) = c.split_once(':')?;
        Some((
            u64::from_str_radix(bits, 16).ok()?,
            Uuid::parse_str(id).ok()?,
        ))
    })?;
    let model = model_or_latest(app, caller, model_id).await?;
    let all = histories(
        &app.db,
        caller.programme_id,
        model.partner_id,
        None,
        model.calibration_end,
    )
    .await?;
    let mut risky: Vec<MemberValue> = all
        .iter()
        .map(|h| value_of(&model, h, f64::from(weeks)))
        .filter(|v| v.p_alive < p_alive_below)
        .collect();
    let key = |v: &MemberValue| (std::cmp::Reverse(ordered(v.total)), v.member_id);
    risky.sort_by_key(key);
    let start = match after {
        None => 0,
        Some((bits, id)) => {
            let cursor = (std::cmp::Reverse(bits), id);
            risky.partition_point(|v| key(v) <= cursor)
        }
    };
    let rows: Vec<MemberValue> = risky
        .into_iter()
        .skip(start)
        .take(page.limit as usize + 1)
        .collect();
    let page = page.page(
        rows,
        |v| format!("{:016x}:{}", ordered(v.total), v.member_id),
        |v| v,
    );
    Ok((model, page))
}

/// An order-preserving integer of a non-negative-or-not float (for sorting and cursors).
fn ordered(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The programme's latest model (any partner's), if one was fitted.
pub async fn latest_model(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
) -> AppResult<Option<ClvModel>> {
    use sea_orm::QueryOrder;
    Ok(clv_model::Entity::find()
        .filter(clv_model::Column::ProgrammeId.eq(programme_id))
        .order_by_desc(clv_model::Column::Id)
        .one(db)
        .await?)
}

/// The members whose P(alive) under the programme's latest model is below
/// `p_alive_below` on `as_of` (the `at_risk` campaign segment, judged on the day members
/// are assigned: the model's parameters describe the customer base, each member's
/// history runs to that day, so a member who bought last week is not at risk because
/// the model was calibrated months ago). One aggregation in SQL, P(alive) in Rust. None
/// when no model was fitted.
pub async fn at_risk_member_ids(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    p_alive_below: f64,
    as_of: NaiveDate,
) -> AppResult<Option<Vec<Uuid>>> {
    let Some(model) = latest_model(db, programme_id).await? else {
        return Ok(None);
    };
    let (bg, _) = models(&model);
    let as_of = as_of.max(model.calibration_end);
    let all = histories(db, programme_id, model.partner_id, None, as_of).await?;
    Ok(Some(
        all.iter()
            .filter(|h| {
                let s = h.summary(as_of);
                bg.probability_alive(s.frequency, s.recency(), s.age()) < p_alive_below
            })
            .map(|h| h.member_id)
            .collect(),
    ))
}

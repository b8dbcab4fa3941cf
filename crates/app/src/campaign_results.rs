//! What a campaign really earned: its treatment group against its holdout (control).
//!
//! - **Revenue** of a member: the member's purchases in the window, net of their
//!   `refunded_amount`, on the purchase's analytics day `COALESCE(occurred_at,
//!   created_at)`; at the reward's partners when the reward is limited to partners
//!   (`partner_ids`), else anywhere in the programme. A member who bought nothing there
//!   counts as 0. Every recorded member counts, erased ones included (the assignment is
//!   fixed when the campaign starts; dropping members afterwards would bias the groups).
//! - **Window**: `starts_at` up to `ends_at`, or up to now while the campaign runs. The
//!   optional after-window is the `after_days` days from `ends_at` (up to now at most);
//!   it has no figures before the campaign has ended.
//! - The database sums each member's revenue, then each group's count, buyers, total and
//!   squared deviations from the group mean: two rows come back, whatever the group
//!   sizes. Totals are exact (`NUMERIC` on PostgreSQL, integer minor units on SQLite);
//!   the squared deviations are floating point (they only feed the interval).
//! - **Uplift per member**: mean revenue of treatment − control, with Welch's 95 %
//!   interval (`coalition_domain::stats`); none without two members on each side (no
//!   variance to estimate), and then no incremental revenue, no net effect and the
//!   verdict `inconclusive`.
//! - **Points cost**: the campaign's own ledger lines (breakdown lines of kind
//!   `campaign` naming it), each valued at its funder's issue price per point in force
//!   when the entry was posted, as settlement prices issued points: a partner or bank
//!   at its `partner_prices`, the operator at the programme's point value. These are the
//!   points awarded: a refund's clawback is not deducted (the ledger reverses a refunded
//!   purchase per funder account, not per line), as the budget counts them. Every point
//!   the campaign gave counts in its window; the after-window costs nothing (the
//!   campaign gives no more points after its end).
//! - **Net effect** = incremental revenue (uplift × treated members) − points cost; its
//!   interval is the uplift's scaled the same way, and the verdict is `gain` when it lies
//!   above zero, `loss` when below, `inconclusive` otherwise.
//!
//! Standing earning rules (`rules`) have no holdout, so they have no results.

use crate::campaigns::{self, Campaign};
use crate::error::{AppError, AppResult, FieldError};
use crate::programmes::{self, Programme};
use crate::{App, Caller};
use chrono::{DateTime, Duration, Utc};
use coalition_domain::stats::{net_interval, welch_interval, Interval, Sample, Verdict};
use coalition_store::entities::partner_price;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, Statement, Value,
};
use uuid::Uuid;

/// The longest after-window, in days.
pub const MAX_AFTER_DAYS: i64 = 3650;
/// The confidence of the intervals.
pub const CONFIDENCE: f64 = 0.95;

/// One group's figures in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupFigures {
    pub members: i64,
    /// Members with at least one purchase counted in the window.
    pub buyers: i64,
    /// Their revenue, exact.
    pub revenue: Decimal,
    /// `revenue / members`, rounded to the currency's minor unit (`None`: no members).
    pub revenue_per_member: Option<Decimal>,
    pub sample: Sample,
}

/// The uplift per member with its interval, rounded to the minor unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplift {
    pub estimate: Decimal,
    pub ci_low: Decimal,
    pub ci_high: Decimal,
    pub degrees_of_freedom: f64,
}

/// A window's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResults {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub treatment: GroupFigures,
    pub control: GroupFigures,
    pub uplift: Option<Uplift>,
    pub incremental_revenue: Option<Decimal>,
    pub points_given: i64,
    pub points_cost: Decimal,
    pub net_effect: Option<Decimal>,
    /// The net effect's 95 % interval.
    pub net_effect_ci: Option<(Decimal, Decimal)>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CampaignResults {
    pub campaign_id: Uuid,
    /// The campaign's status when measured: `scheduled`, `running` or `ended`.
    pub status: &'static str,
    pub currency: String,
    /// The reward's partners, when revenue counts there only; `None`: the programme.
    pub revenue_partner_ids: Option<Vec<Uuid>>,
    pub window: WindowResults,
    /// `None` when no after-window was asked for, or it has not begun.
    pub after: Option<WindowResults>,
}

pub async fn results(
    app: &App,
    caller: &Caller,
    id: Uuid,
    after_days: Option<i64>,
) -> AppResult<CampaignResults> {
    if let Some(days) = after_days {
        if !(1..=MAX_AFTER_DAYS).contains(&days) {
            return Err(AppError::Validation(vec![FieldError::new(
                "after_days",
                "must be a whole number from 1 to 3650",
            )]));
        }
    }
    let campaign = campaigns::get(app, caller, id).await?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let now = Utc::now();
    let to = campaign.ends_at.min(now);
    let from = campaign.starts_at.min(to);
    let after_window = match after_days {
        Some(days) if campaign.ends_at < now => Some((
            campaign.ends_at,
            (campaign.ends_at + Duration::days(days)).min(now),
        )),
        _ => None,
    };
    // The statements are independent: run them side by side.
    let db = &app.db;
    let ((points_given, cost), during, after) = tokio::try_join!(
        points_cost(db, &programme, &campaign),
        groups(db, &programme, &campaign, from, to),
        async {
            match after_window {
                Some((from, to)) => Ok(Some(groups(db, &programme, &campaign, from, to).await?)),
                None => Ok(None),
            }
        },
    )?;
    let window = assess(&programme, from, to, during, points_given, cost)?;
    let after = match (after_window, after) {
        (Some((from, to)), Some(groups)) => {
            Some(assess(&programme, from, to, groups, 0, Decimal::ZERO)?)
        }
        _ => None,
    };
    Ok(CampaignResults {
        campaign_id: campaign.id,
        status: campaign.status(now),
        currency: programme.currency.code().to_owned(),
        revenue_partner_ids: campaign.definition.reward.partner_ids.clone(),
        window,
        after,
    })
}

/// The window's figures from its groups and the points' cost.
fn assess(
    programme: &Programme,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    (treatment, control): (GroupFigures, GroupFigures),
    points_given: i64,
    cost: Decimal,
) -> AppResult<WindowResults> {
    let minor = programme.currency.minor_units();
    let round =
        |d: Decimal| d.round_dp_with_strategy(minor, RoundingStrategy::MidpointAwayFromZero);
    let points_cost = round(cost);
    let interval: Option<Interval> = welch_interval(&treatment.sample, &control.sample, CONFIDENCE);
    let treated = treatment.members;
    let cost_f = points_cost.to_f64().unwrap_or(f64::NAN);
    let (mut uplift, mut incremental, mut net, mut net_ci) = (None, None, None, None);
    if let Some(i) = interval {
        // The estimate from the exact totals; the interval's half-widths from floats.
        let exact = treatment.revenue / Decimal::from(treatment.members)
            - control.revenue / Decimal::from(control.members);
        uplift = Some(Uplift {
            estimate: round(exact),
            ci_low: round(exact - decimal(i.estimate - i.low)?),
            ci_high: round(exact + decimal(i.high - i.estimate)?),
            degrees_of_freedom: i.df,
        });
        let inc = round(exact * Decimal::from(treated));
        incremental = Some(inc);
        net = Some(inc - points_cost);
        let (low, high) = net_interval(&i, treated as u64, cost_f);
        net_ci = Some((round(decimal(low)?), round(decimal(high)?)));
    }
    let verdict = Verdict::of(interval.map(|i| net_interval(&i, treated as u64, cost_f)));
    Ok(WindowResults {
        from,
        to,
        treatment,
        control,
        uplift,
        incremental_revenue: incremental,
        points_given,
        points_cost,
        net_effect: net,
        net_effect_ci: net_ci,
        verdict,
    })
}

fn decimal(x: f64) -> AppResult<Decimal> {
    Decimal::from_f64(x).ok_or_else(|| AppError::Internal(format!("{x} is not a decimal")))
}

/// `$n` placeholders as `?n` for SQLite (a `$` not followed by a digit stays).
fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek().is_some_and(|n| n.is_ascii_digit()) {
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// The treatment and control figures in `[from, to)`: per-member sums, then per-group
/// count, buyers, total and squared deviations, all in SQL.
async fn groups(
    db: &impl ConnectionTrait,
    programme: &Programme,
    campaign: &Campaign,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AppResult<(GroupFigures, GroupFigures)> {
    let backend = db.get_database_backend();
    let minor = programme.currency.minor_units();
    let scale = 10i64.pow(minor);
    let (net, float) = match backend {
        DbBackend::Postgres => (
            "CAST(p.amount AS NUMERIC) - CAST(p.refunded_amount AS NUMERIC)".to_owned(),
            "DOUBLE PRECISION",
        ),
        _ => (
            format!(
                "CAST(ROUND(CAST(p.amount AS REAL) * {scale}) AS INTEGER) \
                 - CAST(ROUND(CAST(p.refunded_amount AS REAL) * {scale}) AS INTEGER)"
            ),
            "REAL",
        ),
    };
    let mut values: Vec<Value> = vec![
        campaign.id.into(),
        programme.id.into(),
        from.into(),
        to.into(),
    ];
    let mut partners = String::new();
    if let Some(ids) = &campaign.definition.reward.partner_ids {
        let mut marks = vec![];
        for id in ids {
            values.push((*id).into());
            marks.push(format!("${}", values.len()));
        }
        partners = format!(" AND p.partner_id IN ({})", marks.join(", "));
    }
    let sql = format!(
        "WITH assigned AS ( \
           SELECT cm.\"group\" AS grp, cm.member_id, m.account_id \
           FROM campaign_members cm JOIN members m ON m.id = cm.member_id \
           WHERE cm.campaign_id = $1), \
         per_member AS ( \
           SELECT a.grp, a.member_id, COUNT(p.id) AS purchases, COALESCE(SUM({net}), 0) AS revenue \
           FROM assigned a LEFT JOIN purchases p ON p.programme_id = $2 AND p.account_id = a.account_id \
             AND COALESCE(p.occurred_at, p.created_at) >= $3 \
             AND COALESCE(p.occurred_at, p.created_at) < $4{partners} \
           GROUP BY a.grp, a.member_id), \
         per_group AS ( \
           SELECT grp, CAST(COUNT(*) AS BIGINT) AS members, \
             CAST(SUM(CASE WHEN purchases > 0 THEN 1 ELSE 0 END) AS BIGINT) AS buyers, \
             SUM(revenue) AS revenue, AVG(CAST(revenue AS {float})) AS mean \
           FROM per_member GROUP BY grp) \
         SELECT g.grp, g.members, g.buyers, CAST(g.revenue AS TEXT) AS revenue, g.mean, \
           SUM((CAST(pm.revenue AS {float}) - g.mean) * (CAST(pm.revenue AS {float}) - g.mean)) AS ss \
         FROM per_group g JOIN per_member pm ON pm.grp = g.grp \
         GROUP BY g.grp, g.members, g.buyers, g.revenue, g.mean"
    );
    let rows = db.query_all(statement(backend, &sql, values)).await?;
    let unit = match backend {
        DbBackend::Postgres => 1.0,
        _ => scale as f64,
    };
    let mut figures = [empty(), empty()];
    for r in rows {
        let grp: String = r.try_get("", "grp")?;
        let members: i64 = r.try_get("", "members")?;
        let text: String = r.try_get("", "revenue")?;
        let mut revenue: Decimal = text
            .parse()
            .map_err(|_| AppError::Internal(format!("revenue '{text}' is not a decimal")))?;
        if backend != DbBackend::Postgres {
            revenue /= Decimal::from(scale);
        }
        let mean: f64 = r.try_get("", "mean")?;
        let ss: f64 = r.try_get("", "ss")?;
        let slot = match grp.as_str() {
            "treatment" => 0,
            "control" => 1,
            other => return Err(AppError::Internal(format!("campaign group '{other}'"))),
        };
        figures[slot] = GroupFigures {
            members,
            buyers: r.try_get("", "buyers")?,
            revenue,
            revenue_per_member: (members > 0).then(|| {
                (revenue / Decimal::from(members))
                    .round_dp_with_strategy(minor, RoundingStrategy::MidpointAwayFromZero)
            }),
            sample: Sample {
                n: members.max(0) as u64,
                mean: mean / unit,
                squared_deviations: ss / (unit * unit),
            },
        };
    }
    let [treatment, control] = figures;
    Ok((treatment, control))
}

fn empty() -> GroupFigures {
    GroupFigures {
        members: 0,
        buyers: 0,
        revenue: Decimal::ZERO,
        revenue_per_member: None,
        sample: Sample {
            n: 0,
            mean: 0.0,
            squared_deviations: 0.0,
        },
    }
}

/// The points the campaign gave (its breakdown lines) and what they cost, exact: summed
/// in SQL per funder and price period (the number of the programme's price changes made
/// by the entry's time), each group valued at its funder's issue price in force then.
/// The entries are found by the campaign's id in their breakdown text, then parsed
/// (`jsonb_array_elements` on PostgreSQL, `json_each` on SQLite).
async fn points_cost(
    db: &impl ConnectionTrait,
    programme: &Programme,
    campaign: &Campaign,
) -> AppResult<(i64, Decimal)> {
    let backend = db.get_database_backend();
    let (lines, line, kind, funder_id, points) = match backend {
        DbBackend::Postgres => (
            "CROSS JOIN LATERAL jsonb_array_elements(CAST(e.breakdown AS jsonb)) AS l(value)",
            "l.value ->> 'campaign_id'",
            "l.value -> 'funder' ->> 'kind'",
            "l.value -> 'funder' ->> 'partner_id'",
            "CAST(l.value ->> 'points' AS BIGINT)",
        ),
        _ => (
            "CROSS JOIN json_each(e.breakdown) AS l",
            "json_extract(l.value, '$.campaign_id')",
            "json_extract(l.value, '$.funder.kind')",
            "json_extract(l.value, '$.funder.partner_id')",
            "CAST(json_extract(l.value, '$.points') AS BIGINT)",
        ),
    };
    // Every price change, in the order settlement reads them. A line's price period is
    // the number of changes made by its entry's time: those made by the campaign's start
    // precede every line; later ones (rare) become a CASE in the statement, so no line
    // needs a look-up of its own.
    let prices = partner_price::Entity::find()
        .filter(partner_price::Column::ProgrammeId.eq(programme.id))
        .order_by_asc(partner_price::Column::ValidFrom)
        .order_by_asc(partner_price::Column::Id)
        .all(db)
        .await?;
    let id = campaign.id.to_string();
    let mut values: Vec<Value> = vec![
        programme.id.into(),
        campaign.starts_at.into(),
        format!("%\"campaign_id\":\"{id}\"%").into(),
        id.into(),
    ];
    let before = prices
        .iter()
        .take_while(|p| p.valid_from <= campaign.starts_at)
        .count();
    let mut period = before.to_string();
    if before < prices.len() {
        period = String::from("CASE");
        for (k, p) in prices.iter().enumerate().skip(before).rev() {
            values.push(p.valid_from.into());
            period += &format!(" WHEN e.created_at >= ${} THEN {}", values.len(), k + 1);
        }
        period += &format!(" ELSE {before} END");
    }
    let sql = format!(
        "SELECT funder_kind, funder_id, entry_partner, period, CAST(SUM(points) AS BIGINT) AS points \
         FROM ( \
           SELECT {kind} AS funder_kind, {funder_id} AS funder_id, e.partner_id AS entry_partner, \
             CAST({period} AS BIGINT) AS period, {points} AS points \
           FROM journal_entries e {lines} \
           WHERE e.programme_id = $1 AND e.created_at >= $2 AND e.breakdown LIKE $3 \
             AND {line} = $4) x \
         GROUP BY funder_kind, funder_id, entry_partner, period"
    );
    let rows = db.query_all(statement(backend, &sql, values)).await?;
    let (mut given, mut cost) = (0i64, Decimal::ZERO);
    for r in rows {
        let kind: Option<String> = r.try_get("", "funder_kind")?;
        let funder: Option<String> = r.try_get("", "funder_id")?;
        let entry_partner: Option<Uuid> = r.try_get("", "entry_partner")?;
        let period: i64 = r.try_get("", "period")?;
        let points: i64 = r.try_get("", "points")?;
        let price = if kind.as_deref() == Some("operator") {
            programme.point_value
        } else {
            // A partner or bank funder; a line without one: the selling partner.
            let partner = funder
                .and_then(|f| Uuid::parse_str(&f).ok())
                .or(entry_partner)
                .ok_or_else(|| AppError::Internal("campaign line without a funder".into()))?;
            let in_force = prices[..(period.max(0) as usize).min(prices.len())]
                .iter()
                .rev()
                .find(|p| p.partner_id == partner)
                .ok_or_else(|| {
                    AppError::Internal(format!(
                        "partner {partner} has campaign points with no price in force"
                    ))
                })?;
            in_force.issue_price_per_point.parse().map_err(|_| {
                AppError::Internal(format!("partner {partner}'s issue price is corrupt"))
            })?
        };
        given += points;
        cost += Decimal::from(points) * price;
    }
    Ok((given, cost))
}

//! Settlement of a closed, half-open period [start, end): the period's postings on
//! partner and operator accounts, summed in SQL per account and price period, become
//! a statement (domain `settlement`), stored whole so reading it later answers the same
//! figures whatever prices do afterwards.
//!
//! Sign conventions of the postings (ARCHITECTURE.md): points leave `partner_issued`
//! when a partner or funder issues them and come back on clawbacks, so a partner's
//! issued points are minus the sum of its issued postings; points arrive on
//! `partner_redeemed` when it honours a redemption and leave on returns.

use crate::error::{AppError, AppResult, FieldError};
use crate::outbox;
use crate::pagination::{Page, PageRequest};
use crate::programmes::{self, Programme};
use crate::{App, Caller, Scope};
use chrono::{DateTime, SubsecRound, Utc};
use coalition_domain::settlement::{
    self as math, IssuerFlow, PartnerActivity, Party, PricedPoints,
};
use coalition_domain::{AccountKind, Points};
use coalition_store::entities::{partner_price, settlement};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

pub const SETTLEMENT_COMPLETED: &str = "settlement.completed";

/// A stored settlement, as every reader gets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Settlement {
    pub id: Uuid,
    pub programme_id: Uuid,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Postings of the period on partner and operator accounts that were summed; none
    /// in a partner's view (it counts every partner's postings).
    pub postings: Option<i64>,
    pub lines: Vec<Line>,
    pub operator: Operator,
    pub payments: Vec<Payment>,
    pub liability: Vec<Liability>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Line {
    pub partner_id: Uuid,
    pub points_issued: Points,
    pub points_funded: Points,
    pub points_redeemed: Points,
    pub points_expired: Points,
    pub amount_due: Decimal,
    pub amount_owed: Decimal,
    pub net: Decimal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Operator {
    pub points_expired: Points,
    pub points_funded: Points,
    pub margin: Decimal,
    pub rounding: Decimal,
    pub net: Decimal,
}

/// `from`/`to`: a partner id, or `None` for the operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payment {
    pub from: Option<Uuid>,
    pub to: Option<Uuid>,
    pub amount: Decimal,
}

/// `partner_id` `None`: the points the operator funded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Liability {
    pub partner_id: Option<Uuid>,
    pub opening_points: Points,
    pub issued: Points,
    pub redeemed: Points,
    pub expired: Points,
    pub closing_points: Points,
    pub closing_value: Decimal,
}

impl Settlement {
    /// What a partner (or bank) may read: its own line, payments and liability; the
    /// operator's line stays with the operator.
    fn seen_by(mut self, caller: &Caller) -> Self {
        let Some(partner) = caller.partner_id.filter(|_| caller.scope != Scope::Admin) else {
            return self;
        };
        self.lines.retain(|l| l.partner_id == partner);
        self.postings = None;
        self.payments
            .retain(|p| p.from == Some(partner) || p.to == Some(partner));
        self.liability.retain(|l| l.partner_id == Some(partner));
        self.operator = Operator {
            points_expired: 0,
            points_funded: 0,
            margin: Decimal::ZERO,
            rounding: Decimal::ZERO,
            net: Decimal::ZERO,
        };
        self
    }
}

/// A settlement run's answer: `created` false when the same period was settled before.
pub struct Settled {
    pub created: bool,
    pub settlement: Settlement,
}

/// The steps of a run, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Locked,
    Aggregated,
    History,
    Stored,
}

pub async fn create(
    app: &App,
    caller: &Caller,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
) -> AppResult<Settled> {
    caller.require(&[Scope::Admin])?;
    settle(app, caller.programme_id, period_start, period_end, |_| {}).await
}

/// Settles [start, end) for a programme (the CLI calls this directly).
pub async fn settle(
    app: &App,
    programme_id: Uuid,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    progress: impl Fn(Step),
) -> AppResult<Settled> {
    // Stored timestamps keep microseconds (PostgreSQL): a period is settled as stored.
    let (start, end) = (period_start.trunc_subsecs(6), period_end.trunc_subsecs(6));
    validate_period(start, end, Utc::now())?;
    let programme = programmes::load(app, programme_id).await?;
    // Before this run's own transaction: another run waits in its transaction for the
    // programme's lock only, never for this, so two runs cannot wait on each other.
    wait_for_open_transactions(&app.db, end).await?;
    let txn = app.db.begin().await?;
    lock_programme(&txn, programme_id).await?;
    progress(Step::Locked);
    if let Some(existing) = find_period(&txn, programme_id, start, end).await? {
        txn.commit().await?;
        return Ok(Settled {
            created: false,
            settlement: existing,
        });
    }
    if overlaps(&txn, programme_id, start, end).await? {
        return Err(AppError::SettlementOverlaps);
    }
    let settlement = compute(&txn, &programme, start, end, &progress).await?;
    store(&txn, &settlement).await?;
    let event = serde_json::json!({
        "settlement_id": settlement.id,
        "period_start": settlement.period_start,
        "period_end": settlement.period_end,
    });
    outbox::append(&txn, programme_id, SETTLEMENT_COMPLETED, event).await?;
    txn.commit().await?;
    progress(Step::Stored);
    Ok(Settled {
        created: true,
        settlement,
    })
}

fn validate_period(start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> AppResult<()> {
    let mut leap = crate::error::Validator::default();
    leap.instant("period_start", Some(start));
    leap.instant("period_end", Some(end));
    leap.finish()?;
    let mut errors = vec![];
    // Earlier years do not compare as text on SQLite; nothing was posted before 2000.
    let earliest = DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| AppError::Internal(e.to_string()))?;
    if start < earliest {
        errors.push(FieldError::new("period_start", "must be in 2000 or later"));
    }
    if start >= end {
        errors.push(FieldError::new("period_end", "must be after period_start"));
    }
    if end > now {
        errors.push(FieldError::new(
            "period_end",
            "must not be in the future: only a closed period is settled",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

/// Serialises settlement runs of a programme (on both databases: a write to the
/// programme's row that changes nothing), so the overlap check and the insert are one.
async fn lock_programme(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<()> {
    let sql = "UPDATE programmes SET terms_version = terms_version WHERE id = $1";
    db.execute(statement(db, sql, vec![programme_id.into()]))
        .await?;
    Ok(())
}

async fn find_period(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> AppResult<Option<Settlement>> {
    let row = settlement::Entity::find()
        .filter(settlement::Column::ProgrammeId.eq(programme_id))
        .filter(settlement::Column::PeriodStart.eq(start))
        .filter(settlement::Column::PeriodEnd.eq(end))
        .one(db)
        .await?;
    row.map(parse).transpose()
}

async fn overlaps(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> AppResult<bool> {
    let found = settlement::Entity::find()
        .filter(settlement::Column::ProgrammeId.eq(programme_id))
        .filter(settlement::Column::PeriodStart.lt(end))
        .filter(settlement::Column::PeriodEnd.gt(start))
        .one(db)
        .await?;
    Ok(found.is_some())
}

fn parse(row: settlement::Model) -> AppResult<Settlement> {
    serde_json::from_str(&row.document)
        .map_err(|e| AppError::Internal(format!("stored settlement {}: {e}", row.id)))
}

async fn store(db: &impl ConnectionTrait, s: &Settlement) -> AppResult<()> {
    let document = serde_json::to_string(s).map_err(|e| AppError::Internal(e.to_string()))?;
    settlement::Entity::insert(settlement::ActiveModel {
        id: Set(s.id),
        programme_id: Set(s.programme_id),
        period_start: Set(s.period_start),
        period_end: Set(s.period_end),
        currency: Set(s.currency.clone()),
        document: Set(document),
        created_at: Set(s.created_at),
    })
    .exec_without_returning(db)
    .await
    .map_err(|e| {
        // The overlap check ran under the programme's lock, so only a period that the
        // check cannot see (one of no length as stored) lands here: an overlap all the same.
        if coalition_store::is_unique_violation(&e) {
            AppError::SettlementOverlaps
        } else {
            e.into()
        }
    })?;
    Ok(())
}

/// How far the clocks of the servers that stamp postings may be from the database's.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(5);
/// How long a run waits for transactions still open in the period.
const OPEN_TRANSACTIONS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A posting is stamped before its transaction commits, so a period that ended a moment
/// ago may still gain postings after its settlement read the period: they would never
/// be settled. On PostgreSQL the run waits until the period has ended on the database's
/// clock and every other transaction of this database that began before `period_end`
/// (plus the clock skew allowed) has ended, and refuses to settle (409
/// `settlement_period_open`, retry) if they outlast the wait. Transactions stamp after
/// they begin, and the one-statement purchase no earlier than its statement began, so
/// what begins after the wait lands after the period (given server clocks not behind
/// the database's). The sessions of the app's own database role are visible in
/// `pg_stat_activity`. On SQLite the run's transaction holds the only connection, and
/// purchases stamp their postings inside theirs.
async fn wait_for_open_transactions(
    db: &impl ConnectionTrait,
    period_end: DateTime<Utc>,
) -> AppResult<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let sql = "SELECT CAST(COUNT(*) AS BIGINT) AS open, now() >= $2 AS ended \
               FROM pg_stat_activity \
               WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND xact_start IS NOT NULL AND xact_start < $1";
    let began_before = period_end + CLOCK_SKEW;
    let deadline = std::time::Instant::now() + OPEN_TRANSACTIONS_WAIT;
    loop {
        let values = vec![began_before.into(), period_end.into()];
        let row = db
            .query_one(statement(db, sql, values))
            .await?
            .ok_or_else(|| AppError::Internal("pg_stat_activity gave no row".into()))?;
        let open: i64 = row.try_get("", "open")?;
        // The period has ended on the database's clock too: a purchase statement that
        // begins after this stamps its rows no earlier than now (`earn_statement`).
        let ended: bool = row.try_get("", "ended")?;
        if open == 0 && ended {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(AppError::SettlementPeriodOpen { transactions: open });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Writes `$n` placeholders as `?n` for SQLite.
fn statement(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Each partner's prices with the moment they stopped being in force (NULL: still are).
const PRICES: &str = "prices AS ( \
    SELECT partner_id, valid_from, \
           LEAD(valid_from) OVER (PARTITION BY partner_id ORDER BY valid_from, id) AS valid_to, \
           issue_price_per_point AS issue, redemption_value_per_point AS redeem \
    FROM partner_prices WHERE programme_id = $1)";

/// The period's postings on partner and operator accounts, each with its journal entry
/// and the moment its points are priced at: when posted, except that a refund reverses
/// at the prices of the purchase it refunds (a price change in between must not turn a
/// reversal into a gain or a loss). The purchase is looked up for refund postings only,
/// through its primary key.
const PERIOD_POSTINGS: &str = "period AS ( \
    SELECT p.seq, p.entry_id, p.account_kind, p.account_id, p.amount, p.created_at, \
           e.kind AS entry_kind, e.partner_id AS entry_partner, \
           CASE WHEN e.kind = 'refund' AND e.purchase_id IS NOT NULL \
                THEN COALESCE((SELECT pu.created_at FROM purchases pu WHERE pu.id = e.purchase_id), p.created_at) \
                ELSE p.created_at END AS priced_at \
    FROM postings p JOIN journal_entries e ON e.id = p.entry_id \
    WHERE p.programme_id = $1 AND p.created_at >= $2 AND p.created_at < $3 \
      AND p.account_kind <> 'member')";

/// Joins a `period` posting `p` to the price period `pr` in force at its pricing time.
const PRICE_IN_FORCE: &str = "LEFT JOIN prices pr ON pr.partner_id = p.account_id \
    AND pr.valid_from <= p.priced_at AND (pr.valid_to IS NULL OR p.priced_at < pr.valid_to)";

/// The period's postings summed per account and price period; `elsewhere`: of a
/// partner's issued points, those for purchases at another partner (what it funded).
fn aggregate_sql() -> String {
    format!(
        "WITH {PRICES}, {PERIOD_POSTINGS} \
         SELECT p.account_kind, p.account_id, pr.issue, pr.redeem, \
                CAST(COUNT(*) AS BIGINT) AS postings, \
                CAST(SUM(p.amount) AS BIGINT) AS points, \
                CAST(SUM(CASE WHEN p.entry_partner = p.account_id THEN 0 ELSE p.amount END) AS BIGINT) AS elsewhere \
         FROM period p {PRICE_IN_FORCE} \
         GROUP BY p.account_kind, p.account_id, pr.valid_from, pr.issue, pr.redeem"
    )
}

struct Aggregate {
    kind: AccountKind,
    account_id: Uuid,
    issue: Option<String>,
    redeem: Option<String>,
    postings: i64,
    points: Points,
    elsewhere: Points,
}

async fn aggregates(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> AppResult<Vec<Aggregate>> {
    let values = vec![programme_id.into(), start.into(), end.into()];
    let rows = db
        .query_all(statement(db, &aggregate_sql(), values))
        .await?;
    rows.into_iter()
        .map(|r| {
            let kind: String = r.try_get("", "account_kind")?;
            Ok(Aggregate {
                kind: AccountKind::parse(&kind)
                    .ok_or_else(|| AppError::Internal(format!("account kind {kind}")))?,
                account_id: r.try_get("", "account_id")?,
                issue: r.try_get("", "issue")?,
                redeem: r.try_get("", "redeem")?,
                postings: r.try_get("", "postings")?,
                points: r.try_get("", "points")?,
                elsewhere: r.try_get("", "elsewhere")?,
            })
        })
        .collect()
}

fn price(text: Option<&String>, partner: Uuid) -> AppResult<Decimal> {
    text.and_then(|t| t.parse().ok()).ok_or_else(|| {
        AppError::Internal(format!(
            "partner {partner} has postings with no price in force"
        ))
    })
}

/// The period's flows: per-partner activity, breakage, operator-funded points.
#[derive(Default)]
struct Flows {
    partners: BTreeMap<Uuid, PartnerActivity>,
    breakage: Points,
    operator_funded: Points,
    postings: i64,
}

fn activity_of(f: &mut Flows, partner_id: Uuid) -> &mut PartnerActivity {
    f.partners
        .entry(partner_id)
        .or_insert_with(|| PartnerActivity {
            partner_id,
            issued: vec![],
            funded: 0,
            redeemed: vec![],
            expired: 0,
        })
}

fn flows(aggregates: Vec<Aggregate>) -> AppResult<Flows> {
    let mut f = Flows::default();
    for a in aggregates {
        f.postings += a.postings;
        match a.kind {
            AccountKind::PartnerIssued => {
                let price = price(a.issue.as_ref(), a.account_id)?;
                let line = activity_of(&mut f, a.account_id);
                line.issued.push(PricedPoints {
                    points: -a.points,
                    price,
                });
                line.funded -= a.elsewhere;
            }
            AccountKind::PartnerRedeemed => {
                let price = price(a.redeem.as_ref(), a.account_id)?;
                activity_of(&mut f, a.account_id)
                    .redeemed
                    .push(PricedPoints {
                        points: a.points,
                        price,
                    });
            }
            AccountKind::OperatorBreakage => f.breakage += a.points,
            AccountKind::OperatorFunding => f.operator_funded -= a.points,
            AccountKind::Member => {}
        }
    }
    Ok(f)
}

/// Points issued per issuer (operator: `None`) in the flows.
fn issued_by(f: &Flows) -> BTreeMap<Option<Uuid>, Points> {
    let mut issued: BTreeMap<Option<Uuid>, Points> = f
        .partners
        .values()
        .map(|a| (Some(a.partner_id), a.issued.iter().map(|p| p.points).sum()))
        .collect();
    *issued.entry(None).or_default() += f.operator_funded;
    issued
}

fn redeemed_total(f: &Flows) -> Points {
    f.partners
        .values()
        .flat_map(|a| a.redeemed.iter().map(|p| p.points))
        .sum()
}

async fn compute(
    db: &impl ConnectionTrait,
    programme: &Programme,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    progress: &impl Fn(Step),
) -> AppResult<Settlement> {
    let mut f = flows(aggregates(db, programme.id, start, end).await?)?;
    progress(Step::Aggregated);
    let opening = opening(db, programme.id, start).await?;
    progress(Step::History);
    let rows = liability_rows(&f, &opening);
    for row in &rows {
        if let Some(a) = row.issuer.and_then(|p| f.partners.get_mut(&p)) {
            a.expired = row.expired;
        }
    }
    let activity: Vec<PartnerActivity> = f.partners.values().cloned().collect();
    let minor = programme.currency.minor_units();
    let s = math::statement(&activity, f.breakage, f.operator_funded, minor);
    let closing_prices = issue_prices_at(db, programme, end).await?;
    Ok(Settlement {
        id: Uuid::now_v7(),
        programme_id: programme.id,
        currency: programme.currency.code().to_owned(),
        period_start: start,
        period_end: end,
        created_at: Utc::now(),
        postings: Some(f.postings),
        lines: s.lines.into_iter().map(line).collect(),
        operator: Operator {
            points_expired: s.operator.points_expired,
            points_funded: s.operator.points_funded,
            margin: s.operator.margin,
            rounding: s.operator.rounding,
            net: s.operator.net,
        },
        payments: s.payments.into_iter().map(payment).collect(),
        liability: rows
            .into_iter()
            .map(|r| liability(r, &closing_prices, minor))
            .collect(),
    })
}

fn liability_rows(f: &Flows, opening: &BTreeMap<Option<Uuid>, Points>) -> Vec<math::LiabilityRow> {
    let mut issuers = issued_by(f);
    for issuer in opening.keys() {
        issuers.entry(*issuer).or_default();
    }
    let flows: Vec<IssuerFlow> = issuers
        .into_iter()
        .map(|(issuer, issued)| IssuerFlow {
            issuer,
            opening: opening.get(&issuer).copied().unwrap_or(0),
            issued,
        })
        .filter(|f| f.opening != 0 || f.issued != 0 || f.issuer.is_some())
        .collect();
    math::roll_forward(&flows, redeemed_total(f), f.breakage)
}

/// Outstanding points per issuer at `start`: the closing of the settlement that ends
/// there, or else the roll-forward of all earlier postings taken as one period.
async fn opening(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    start: DateTime<Utc>,
) -> AppResult<BTreeMap<Option<Uuid>, Points>> {
    let previous = settlement::Entity::find()
        .filter(settlement::Column::ProgrammeId.eq(programme_id))
        .filter(settlement::Column::PeriodEnd.eq(start))
        .one(db)
        .await?;
    if let Some(previous) = previous {
        let previous = parse(previous)?;
        return Ok(previous
            .liability
            .iter()
            .map(|l| (l.partner_id, l.closing_points))
            .collect());
    }
    let sql = "SELECT account_kind, account_id, NULL AS issue, NULL AS redeem, \
                      CAST(COUNT(*) AS BIGINT) AS postings, \
                      CAST(SUM(amount) AS BIGINT) AS points, CAST(0 AS BIGINT) AS elsewhere \
               FROM postings WHERE programme_id = $1 AND created_at < $2 \
                 AND account_kind <> 'member' \
               GROUP BY account_kind, account_id";
    let rows = db
        .query_all(statement(db, sql, vec![programme_id.into(), start.into()]))
        .await?;
    let mut f = Flows::default();
    for r in rows {
        let kind: String = r.try_get("", "account_kind")?;
        let account_id: Uuid = r.try_get("", "account_id")?;
        let points: Points = r.try_get("", "points")?;
        // Prices do not matter for points: any price stands in.
        let priced = vec![PricedPoints {
            points: match AccountKind::parse(&kind) {
                Some(AccountKind::PartnerIssued) => -points,
                _ => points,
            },
            price: Decimal::ZERO,
        }];
        match AccountKind::parse(&kind) {
            Some(AccountKind::PartnerIssued) => {
                activity_of(&mut f, account_id).issued.extend(priced)
            }
            Some(AccountKind::PartnerRedeemed) => {
                activity_of(&mut f, account_id).redeemed.extend(priced)
            }
            Some(AccountKind::OperatorBreakage) => f.breakage += points,
            Some(AccountKind::OperatorFunding) => f.operator_funded -= points,
            _ => {}
        }
    }
    Ok(liability_rows(&f, &BTreeMap::new())
        .into_iter()
        .map(|r| (r.issuer, r.closing_points))
        .collect())
}

/// Each partner's issue price in force at `at` (outstanding points are valued at it;
/// points the operator funded at the programme's point value).
async fn issue_prices_at(
    db: &impl ConnectionTrait,
    programme: &Programme,
    at: DateTime<Utc>,
) -> AppResult<BTreeMap<Option<Uuid>, Decimal>> {
    let rows = partner_price::Entity::find()
        .filter(partner_price::Column::ProgrammeId.eq(programme.id))
        .filter(partner_price::Column::ValidFrom.lt(at))
        .order_by_asc(partner_price::Column::ValidFrom)
        .order_by_asc(partner_price::Column::Id)
        .all(db)
        .await?;
    let mut prices = BTreeMap::from([(None, programme.point_value)]);
    for row in rows {
        let price = price(Some(&row.issue_price_per_point), row.partner_id)?;
        prices.insert(Some(row.partner_id), price);
    }
    Ok(prices)
}

fn line(l: math::Line) -> Line {
    Line {
        partner_id: l.partner_id,
        points_issued: l.points_issued,
        points_funded: l.points_funded,
        points_redeemed: l.points_redeemed,
        points_expired: l.points_expired,
        amount_due: l.amount_due,
        amount_owed: l.amount_owed,
        net: l.net,
    }
}

fn party(p: Party) -> Option<Uuid> {
    match p {
        Party::Operator => None,
        Party::Partner(id) => Some(id),
    }
}

fn payment(p: math::Payment) -> Payment {
    Payment {
        from: party(p.from),
        to: party(p.to),
        amount: p.amount,
    }
}

fn liability(
    r: math::LiabilityRow,
    prices: &BTreeMap<Option<Uuid>, Decimal>,
    minor: u32,
) -> Liability {
    let price = prices.get(&r.issuer).copied().unwrap_or_default();
    Liability {
        partner_id: r.issuer,
        opening_points: r.opening_points,
        issued: r.issued,
        redeemed: r.redeemed,
        expired: r.expired,
        closing_points: r.closing_points,
        closing_value: math::round_money(Decimal::from(r.closing_points) * price, minor),
    }
}

// ---------------------------------------------------------------------------------------
// Reading.

fn readers() -> [Scope; 3] {
    [Scope::Admin, Scope::Partner, Scope::Bank]
}

/// A settlement of the caller's programme, as the caller may see it.
pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<Settlement> {
    caller.require(&readers())?;
    if caller.scope != Scope::Admin && caller.partner_id.is_none() {
        return Err(AppError::NotFound("settlement"));
    }
    let row = settlement::Entity::find_by_id(id)
        .filter(settlement::Column::ProgrammeId.eq(caller.programme_id))
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("settlement"))?;
    Ok(parse(row)?.seen_by(caller))
}

/// The programme's settlements, the most recently run first.
pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<Settlement>> {
    caller.require(&readers())?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query =
        settlement::Entity::find().filter(settlement::Column::ProgrammeId.eq(caller.programme_id));
    if let Some(after) = after {
        query = query.filter(settlement::Column::Id.lt(after));
    }
    let rows = query
        .order_by_desc(settlement::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let rows = rows
        .into_iter()
        .map(|r| parse(r).map(|s| s.seen_by(caller)))
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(rows, |s| s.id.to_string(), |s| s))
}

/// One posting behind a settlement line, with the price it was settled at.
#[derive(Debug, Clone)]
pub struct SettledPosting {
    pub seq: i64,
    pub entry_id: Uuid,
    pub entry_kind: String,
    pub account_kind: String,
    pub account_id: Uuid,
    /// As posted: negative on `partner_issued` when points were issued.
    pub points: Points,
    /// The issue price (issued account) or redemption value (redeemed account) in force;
    /// none on operator accounts.
    pub price_per_point: Option<Decimal>,
    pub created_at: DateTime<Utc>,
    /// When its price was read (a refund's postings: when the purchase was posted).
    pub priced_at: DateTime<Utc>,
}

/// The postings of the settlement's period that make up `partner`'s line (a partner:
/// its own only; the operator may leave `partner` out for every non-member posting).
pub async fn postings(
    app: &App,
    caller: &Caller,
    id: Uuid,
    partner: Option<Uuid>,
    page: PageRequest,
) -> AppResult<Page<SettledPosting>> {
    let s = get(app, caller, id).await?;
    let partner = match (caller.scope, caller.partner_id, partner) {
        (Scope::Admin, _, Some(wanted)) => {
            crate::partners::find(&app.db, caller.programme_id, wanted).await?;
            Some(wanted)
        }
        (Scope::Admin, _, None) => None,
        (_, Some(own), None) => Some(own),
        (_, Some(own), Some(wanted)) if own == wanted => Some(own),
        _ => return Err(AppError::NotFound("partner")),
    };
    let after = page.decode_cursor(|c| c.parse::<i64>().ok())?.unwrap_or(0);
    let mut values: Vec<Value> = vec![
        s.programme_id.into(),
        s.period_start.into(),
        s.period_end.into(),
        after.into(),
        ((page.limit + 1) as i64).into(),
    ];
    let which = match partner {
        Some(p) => {
            values.push(p.into());
            "p.account_kind IN ('partner_issued', 'partner_redeemed') AND p.account_id = $6"
        }
        None => "p.account_kind <> 'member'",
    };
    let sql = format!(
        "WITH {PRICES}, {PERIOD_POSTINGS} \
         SELECT p.seq, p.entry_id, p.entry_kind, p.account_kind, p.account_id, \
                p.amount, p.created_at, p.priced_at, \
                CASE WHEN p.account_kind = 'partner_issued' THEN pr.issue ELSE pr.redeem END AS price \
         FROM period p {PRICE_IN_FORCE} \
         WHERE p.seq > $4 AND {which} \
         ORDER BY p.seq LIMIT $5"
    );
    let rows = app.db.query_all(statement(&app.db, &sql, values)).await?;
    let rows = rows
        .into_iter()
        .map(|r| {
            let kind: String = r.try_get("", "account_kind")?;
            let price: Option<String> = r.try_get("", "price")?;
            Ok(SettledPosting {
                seq: r.try_get("", "seq")?,
                entry_id: r.try_get("", "entry_id")?,
                entry_kind: r.try_get("", "entry_kind")?,
                price_per_point: match kind.as_str() {
                    "partner_issued" | "partner_redeemed" => price.and_then(|p| p.parse().ok()),
                    _ => None,
                },
                account_kind: kind,
                account_id: r.try_get("", "account_id")?,
                points: r.try_get("", "amount")?,
                created_at: r.try_get("", "created_at")?,
                priced_at: r.try_get("", "priced_at")?,
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(rows, |p| p.seq.to_string(), |p| p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_must_be_closed_and_start_before_it_ends() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let now = t("2026-11-25T12:00:00Z");
        assert!(validate_period(t("2026-11-01T00:00:00Z"), now, now).is_ok());
        assert!(
            validate_period(t("2026-11-01T00:00:00Z"), t("2026-11-25T12:00:01Z"), now).is_err()
        );
        assert!(validate_period(now, now, now).is_err());
        assert!(validate_period(t("1999-12-31T23:59:59Z"), now, now).is_err());
    }
}

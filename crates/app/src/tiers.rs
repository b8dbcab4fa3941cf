//! Tiers: the ladder an operator manages, each member's place on it, and the spend that
//! moves members up and down (the rules themselves are pure: `coalition_domain::tiers`).
//!
//! How a member's tier moves:
//! - **Spend** is the purchase `amount` (the bill before any tier or points discount), in
//!   the currency's minor units, counted for the member whose points account the
//!   purchase was made on (a bearer card's purchases count for nobody, also after the
//!   card is registered). A refund takes its `amount` off the day of the purchase it
//!   refunds, so qualifying spend is "purchases in the window, net of their refunds".
//! - **Upgrade at once**: the purchase that lifts the rolling 12-month spend over a
//!   higher tier's threshold upgrades the member in its own transaction. That purchase
//!   is priced with the tier the member had before it (the bill is worked out before its
//!   spend counts); the new tier applies from the next purchase.
//! - **Downgrade only at requalification** (`requalify`, the `coalition jobs requalify`
//!   command and the in-server scheduler): refunds lower qualifying spend but never
//!   downgrade by themselves. Requalification also upgrades members whose spend already
//!   qualifies (a ladder changed by an operator, say).
//! - **Floors**: an operator sets a tier by hand with a reason and an end; until then the
//!   effective tier is the higher of the qualified tier and the floor; afterwards the
//!   member is back on the qualified tier (read live; requalification records the end).
//!
//! Every change to a member's tier takes the member row's lock (`FOR UPDATE`; SQLite
//! runs one writer at a time) and re-reads what it decides on under it, so a change
//! happens once however many replicas requalify at the same time. Purchases take their
//! account's lock first and the member's second; nothing here takes them the other way.
//!
//! History rows (`tier_history`) say what changed: for `qualified` and `requalified` the
//! qualified tier before and after; for `manual` the effective tier before and the floor
//! set; for `floor_ended` the floor and the effective tier after. Each also names the
//! effective tier after the change, and each is announced as `tier.changed` in the outbox,
//! in the same transaction.

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::pagination::{Page, PageRequest};
use crate::programmes::{self, Programme};
use crate::{members, outbox, terms, App, Caller, Scope};
use chrono::{DateTime, NaiveDate, Utc};
use coalition_domain::money::{parse_decimal, Currency};
use coalition_domain::tiers::{
    effective, from_minor, ranks_above, to_minor, window_start, Floor, Ladder, Source, Tier,
    TierTerms, MAX_EARN_MULTIPLIER, MAX_QUALIFYING_SPEND_UNITS, MAX_RANK, MAX_TERM_DECIMALS,
};
use coalition_store::entities::{member, tier, tier_history, tier_spend_day};
use coalition_store::is_unique_violation;
use rust_decimal::Decimal;
use sea_orm::sea_query::{Alias, Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use std::collections::HashMap;
use uuid::Uuid;

/// A tier as the operator manages it.
#[derive(Debug, Clone)]
pub struct TierRow {
    pub tier: Tier,
    pub currency: Currency,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TierRow {
    pub fn qualifying_spend(&self) -> Decimal {
        from_minor(self.tier.qualifying_spend, self.currency.minor_units())
    }
}

/// A new tier, as sent.
pub struct NewTier {
    pub name: String,
    pub rank: i64,
    pub qualifying_spend: (String, String),
    pub discount_percent: String,
    pub earn_multiplier: String,
}

/// A change to a tier, as sent: absent fields stay.
#[derive(Default)]
pub struct TierPatch {
    pub name: Option<String>,
    pub rank: Option<i64>,
    pub qualifying_spend: Option<(String, String)>,
    pub discount_percent: Option<String>,
    pub earn_multiplier: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A purchase crossed a threshold.
    Qualified,
    /// Requalification moved the qualified tier (down, or up).
    Requalified,
    /// An operator set a floor.
    Manual,
    /// A floor's end passed.
    FloorEnded,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Qualified => "qualified",
            ChangeKind::Requalified => "requalified",
            ChangeKind::Manual => "manual",
            ChangeKind::FloorEnded => "floor_ended",
        }
    }
}

/// A change of a member's tier, as recorded in the history and the outbox.
#[derive(Debug, Clone)]
pub struct TierChange {
    pub id: Uuid,
    pub member_id: Uuid,
    pub kind: ChangeKind,
    pub from: Option<TierTerms>,
    pub to: Option<TierTerms>,
    /// The member's effective tier after the change.
    pub effective: Option<TierTerms>,
    pub reason: Option<String>,
    pub ends_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

/// A member's place on the ladder, with what it takes to climb.
#[derive(Debug, Clone)]
pub struct Standing {
    pub effective: Option<(TierTerms, Source)>,
    pub qualified: Option<TierTerms>,
    /// A floor set by hand, while it lives.
    pub floor: Option<LiveFloor>,
    pub currency: Currency,
    /// Spend over the rolling window, net of refunds.
    pub qualifying_spend: Decimal,
    /// The first day of that window (UTC); it ends today.
    pub window_start: NaiveDate,
    /// The next tier above the effective one, and the spend still needed to qualify.
    pub next: Option<(TierTerms, Decimal)>,
}

#[derive(Debug, Clone)]
pub struct LiveFloor {
    pub tier: TierTerms,
    pub reason: Option<String>,
    pub ends_at: DateTime<Utc>,
}

/// A floor to set, as sent.
pub struct NewFloor {
    pub tier_id: Uuid,
    pub reason: String,
    pub ends_at: DateTime<Utc>,
}

/// What a requalification run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequalifyReport {
    pub programmes: u64,
    /// Members whose qualified tier looked out of date and were re-checked under lock.
    pub members_checked: u64,
    pub upgraded: u64,
    pub downgraded: u64,
    pub floors_ended: u64,
}

// ---------------------------------------------------------------- the ladder (admin)

fn to_tier(row: &tier::Model) -> AppResult<Tier> {
    let corrupt = |what: &str| AppError::Internal(format!("tier {} has a corrupt {what}", row.id));
    Ok(Tier {
        terms: TierTerms {
            id: row.id,
            name: row.name.clone(),
            rank: row.rank,
            discount_percent: row
                .discount_percent
                .parse()
                .map_err(|_| corrupt("discount"))?,
            earn_multiplier: row
                .earn_multiplier
                .parse()
                .map_err(|_| corrupt("multiplier"))?,
        },
        qualifying_spend: row.qualifying_spend,
    })
}

fn tier_row(row: tier::Model, currency: &Currency) -> AppResult<TierRow> {
    Ok(TierRow {
        tier: to_tier(&row)?,
        currency: currency.clone(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn check_rank(v: &mut Validator, rank: i64) -> i32 {
    v.require(
        "rank",
        (0..=i64::from(MAX_RANK)).contains(&rank),
        &format!("must be between 0 and {MAX_RANK}"),
    );
    rank.clamp(0, i64::from(MAX_RANK)) as i32
}

/// An unsigned decimal from `min` to `max` with at most `MAX_TERM_DECIMALS` places.
fn check_term(v: &mut Validator, field: &str, text: &str, min: i64, max: i64) -> Option<Decimal> {
    let value = v.check(field, parse_decimal(text))?;
    let ok = !text.starts_with('-')
        && value >= Decimal::from(min)
        && value <= Decimal::from(max)
        && value.normalize().scale() <= MAX_TERM_DECIMALS;
    v.require(
        field,
        ok,
        &format!("must be from {min} to {max} with at most {MAX_TERM_DECIMALS} decimals"),
    );
    ok.then(|| value.normalize())
}

/// A qualifying spend: an unsigned amount in the programme's currency, in minor units.
fn check_spend(
    v: &mut Validator,
    (amount, currency): &(String, String),
    programme: &Programme,
) -> Option<i64> {
    let field = "qualifying_spend.amount";
    v.check("qualifying_spend.currency", Currency::parse(currency));
    let value = v.check(field, parse_decimal(amount))?;
    let units = programme.currency.minor_units();
    let minor = to_minor(value, units);
    let ok = !amount.starts_with('-')
        && value <= Decimal::from(MAX_QUALIFYING_SPEND_UNITS)
        && minor.is_some();
    v.require(
        field,
        ok,
        &format!("must be from 0 to {MAX_QUALIFYING_SPEND_UNITS} with at most {units} decimals"),
    );
    if ok {
        minor
    } else {
        None
    }
}

/// Money is in the programme's currency: there is no conversion (`currency_mismatch`).
fn ensure_currency(currency: &str, programme: &Programme) -> AppResult<()> {
    if currency == programme.currency.code() {
        Ok(())
    } else {
        Err(AppError::CurrencyMismatch {
            expected: programme.currency.to_string(),
            got: currency.to_owned(),
        })
    }
}

fn rank_taken(err: sea_orm::DbErr, rank: i32) -> AppError {
    if is_unique_violation(&err) {
        AppError::TierRankTaken(rank)
    } else {
        err.into()
    }
}

pub async fn create(app: &App, caller: &Caller, input: NewTier) -> AppResult<TierRow> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let mut v = Validator::default();
    let name = text_field(&mut v, "name", &input.name, 200);
    let rank = check_rank(&mut v, input.rank);
    let spend = check_spend(&mut v, &input.qualifying_spend, &programme);
    let discount = check_term(&mut v, "discount_percent", &input.discount_percent, 0, 100);
    let multiplier = check_term(
        &mut v,
        "earn_multiplier",
        &input.earn_multiplier,
        1,
        MAX_EARN_MULTIPLIER,
    );
    v.finish()?;
    ensure_currency(&input.qualifying_spend.1, &programme)?;
    let now = Utc::now();
    let row = tier::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        name,
        rank,
        qualifying_spend: spend.expect("validated"),
        discount_percent: discount.expect("validated").to_string(),
        earn_multiplier: multiplier.expect("validated").to_string(),
        created_at: now,
        updated_at: now,
    };
    let txn = app.db.begin().await?;
    tier::Entity::insert(tier::ActiveModel::from(row.clone()))
        .exec_without_returning(&txn)
        .await
        .map_err(|e| rank_taken(e, rank))?;
    let version = terms::bump(&txn, caller.programme_id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    tier_row(row, &programme.currency)
}

async fn find(db: &impl ConnectionTrait, programme_id: Uuid, id: Uuid) -> AppResult<tier::Model> {
    tier::Entity::find_by_id(id)
        .filter(tier::Column::ProgrammeId.eq(programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("tier"))
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<TierRow> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    tier_row(
        find(&app.db, caller.programme_id, id).await?,
        &programme.currency,
    )
}

/// The ladder, lowest rank first.
pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<TierRow>> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let after = page.decode_cursor(|c| c.parse::<i32>().ok())?;
    let mut query = tier::Entity::find().filter(tier::Column::ProgrammeId.eq(caller.programme_id));
    if let Some(after) = after {
        query = query.filter(tier::Column::Rank.gt(after));
    }
    let rows = query
        .order_by_asc(tier::Column::Rank)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?
        .into_iter()
        .map(|r| tier_row(r, &programme.currency))
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(rows, |t| t.tier.terms.rank.to_string(), |t| t))
}

/// Changes a tier. Members keep their tiers until their next purchase (upgrades) or the
/// next requalification (both ways).
pub async fn update(app: &App, caller: &Caller, id: Uuid, patch: TierPatch) -> AppResult<TierRow> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let mut v = Validator::default();
    let name = patch.name.map(|n| text_field(&mut v, "name", &n, 200));
    let rank = patch.rank.map(|r| check_rank(&mut v, r));
    let patch_currency = patch.qualifying_spend.clone();
    let spend = patch
        .qualifying_spend
        .map(|s| check_spend(&mut v, &s, &programme));
    let discount = patch
        .discount_percent
        .map(|d| check_term(&mut v, "discount_percent", &d, 0, 100));
    let multiplier = patch
        .earn_multiplier
        .map(|m| check_term(&mut v, "earn_multiplier", &m, 1, MAX_EARN_MULTIPLIER));
    v.finish()?;
    if let Some((_, currency)) = &patch_currency {
        ensure_currency(currency, &programme)?;
    }
    let txn = app.db.begin().await?;
    let mut row = find(&txn, caller.programme_id, id).await?;
    row.name = name.unwrap_or(row.name);
    row.rank = rank.unwrap_or(row.rank);
    row.qualifying_spend = spend.flatten().unwrap_or(row.qualifying_spend);
    if let Some(d) = discount.flatten() {
        row.discount_percent = d.to_string();
    }
    if let Some(m) = multiplier.flatten() {
        row.earn_multiplier = m.to_string();
    }
    row.updated_at = Utc::now();
    let rank = row.rank;
    tier::Entity::update(tier::ActiveModel::from(row.clone()).reset_all())
        .exec(&txn)
        .await
        .map_err(|e| rank_taken(e, rank))?;
    let version = terms::bump(&txn, caller.programme_id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    tier_row(row, &programme.currency)
}

/// The programme's ladder, read from the database (purchases read it from the terms
/// snapshot, `terms::of_programme`, which loads it with this).
pub async fn ladder(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<Ladder> {
    let rows = tier::Entity::find()
        .filter(tier::Column::ProgrammeId.eq(programme_id))
        .order_by_asc(tier::Column::Rank)
        .all(db)
        .await?;
    let tiers = rows.iter().map(to_tier).collect::<AppResult<Vec<_>>>()?;
    Ok(Ladder::new(tiers))
}

/// Whether the programme has any tier (purchases then need the transactional path),
/// from the terms snapshot.
pub async fn has_ladder(app: &App, programme_id: Uuid) -> AppResult<bool> {
    let terms = terms::of_programme(app, &app.db, programme_id).await?;
    Ok(!terms.ladder.is_empty())
}

// ---------------------------------------------------------------- members' tiers

fn floor_of(row: &member::Model) -> Option<Floor> {
    Some(Floor {
        tier_id: row.floor_tier_id?,
        ends_at: row.floor_ends_at?,
    })
}

fn effective_of(ladder: &Ladder, row: &member::Model, now: DateTime<Utc>) -> Option<TierTerms> {
    effective(ladder, row.tier_id, floor_of(row), now).map(|(t, _)| t.terms.clone())
}

/// The member's effective tier, what pricing needs; a bearer card (no member) has none.
/// The ladder comes from the terms snapshot; `db` must be the transaction when called
/// inside one (SQLite has one connection).
pub async fn member_tier(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> AppResult<Option<TierTerms>> {
    let Some(member_id) = member_id else {
        return Ok(None);
    };
    let terms = terms::of_programme(app, db, programme_id).await?;
    let ladder = &terms.ladder;
    if ladder.is_empty() {
        return Ok(None);
    }
    let row = member::Entity::find_by_id(member_id)
        .filter(member::Column::ProgrammeId.eq(programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("member"))?;
    Ok(effective_of(ladder, &row, now))
}

/// Spend over the rolling window ending on `today`, net of refunds, in minor units,
/// never below zero: a refund of a purchase whose spend was never counted (made before
/// spend was recorded) takes its amount off all the same, and a member below zero would
/// qualify for no tier while "no tier" stands for the entry tier — requalification would
/// then "change" them on every run.
async fn rolling_spend(
    db: &impl ConnectionTrait,
    member_id: Uuid,
    today: NaiveDate,
) -> AppResult<i64> {
    let spend = tier_spend_day::Entity::find()
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(amount), 0) AS BIGINT)"),
            "spend",
        )
        .filter(tier_spend_day::Column::MemberId.eq(member_id))
        .filter(tier_spend_day::Column::Day.gte(window_start(today)))
        .filter(tier_spend_day::Column::Day.lte(today))
        .into_tuple::<i64>()
        .one(db)
        .await?;
    Ok(spend.unwrap_or(0).max(0))
}

/// Adds `delta` minor units to the member's spend on `day` (one upsert).
async fn add_spend(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Uuid,
    day: NaiveDate,
    delta: i64,
) -> AppResult<()> {
    let amount = tier_spend_day::Column::Amount;
    let summed = Expr::col((tier_spend_day::Entity, amount))
        .add(Expr::col((Alias::new("excluded"), amount)));
    tier_spend_day::Entity::insert(tier_spend_day::ActiveModel {
        member_id: Set(member_id),
        day: Set(day),
        programme_id: Set(programme_id),
        amount: Set(delta),
    })
    .on_conflict(
        OnConflict::columns([
            tier_spend_day::Column::MemberId,
            tier_spend_day::Column::Day,
        ])
        .value(amount, summed)
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A purchase's amount in minor units, as it counts towards qualifying spend.
pub fn spend_of(amount: &coalition_domain::Money) -> AppResult<i64> {
    to_minor(amount.amount, amount.currency.minor_units())
        .ok_or_else(|| AppError::Internal("a validated amount has no minor units".into()))
}

/// The member row, locked until the transaction ends (`FOR UPDATE` on PostgreSQL).
async fn lock_member(db: &impl ConnectionTrait, member_id: Uuid) -> AppResult<member::Model> {
    member::Entity::find_by_id(member_id)
        .lock_exclusive()
        .one(db)
        .await?
        .ok_or(AppError::NotFound("member"))
}

/// Records a purchase's spend (`delta_minor`, in the purchase's transaction, on today's
/// UTC day; negative takes spend off) and, when the ladder has a tier above the member's
/// qualified one that the rolling spend now reaches, upgrades the member at once: history
/// and `tier.changed` in the same transaction. Never downgrades.
pub async fn record_spend(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Uuid,
    delta_minor: i64,
    now: DateTime<Utc>,
) -> AppResult<Option<TierChange>> {
    add_spend(db, programme_id, member_id, now.date_naive(), delta_minor).await?;
    if delta_minor <= 0 {
        return Ok(None);
    }
    let terms = terms::of_programme(app, db, programme_id).await?;
    let ladder = &terms.ladder;
    if ladder.is_empty() {
        return Ok(None);
    }
    promote_locked(db, ladder, member_id, now).await
}

/// Upgrades the member when their rolling spend reaches a higher tier, deciding under
/// the member's row lock (so two purchases crossing at once upgrade once).
async fn promote_locked(
    db: &impl ConnectionTrait,
    ladder: &Ladder,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<Option<TierChange>> {
    let row = lock_member(db, member_id).await?;
    let spend = rolling_spend(db, member_id, now.date_naive()).await?;
    let target = ladder.qualified_for(spend);
    if !ranks_above(target, ladder.qualified(row.tier_id)) {
        return Ok(None);
    }
    let change = requalified(db, ladder, row, target, ChangeKind::Qualified, now).await?;
    Ok(Some(change))
}

/// After a purchase recorded in one statement (PostgreSQL, `earn_statement`), which
/// counted its spend: the upgrade it may have earned, in a transaction of its own right
/// after. The spend is read first without a lock, so a purchase that crosses nothing
/// (nearly all of them) costs one indexed read. Should this process stop between the
/// purchase and the upgrade, the member's next purchase or the requalification job
/// upgrades them.
pub async fn promote_after_purchase(
    app: &App,
    programme_id: Uuid,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<Option<TierChange>> {
    let terms = terms::of_programme(app, &app.db, programme_id).await?;
    let ladder = &terms.ladder;
    if ladder.is_empty() {
        return Ok(None);
    }
    let spend = rolling_spend(&app.db, member_id, now.date_naive()).await?;
    let qualified: Option<Uuid> = member::Entity::find_by_id(member_id)
        .select_only()
        .column(member::Column::TierId)
        .into_tuple()
        .one(&app.db)
        .await?
        .flatten();
    if !ranks_above(ladder.qualified_for(spend), ladder.qualified(qualified)) {
        return Ok(None);
    }
    let txn = app.db.begin().await?;
    let change = promote_locked(&txn, ladder, member_id, now).await?;
    txn.commit().await?;
    Ok(change)
}

/// A refund's share of spend comes off the day of the purchase it refunds; qualifying
/// spend goes down, the tier stays (only requalification downgrades).
pub async fn record_refund(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Uuid,
    refunded_minor: i64,
    purchased_at: DateTime<Utc>,
) -> AppResult<()> {
    let day = purchased_at.date_naive();
    add_spend(db, programme_id, member_id, day, -refunded_minor).await
}

fn terms_json(t: Option<&TierTerms>) -> serde_json::Value {
    match t {
        Some(t) => serde_json::json!({"id": t.id, "name": t.name, "rank": t.rank}),
        None => serde_json::Value::Null,
    }
}

/// Writes a change's history row and announces it, in the caller's transaction.
async fn remember(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    change: &TierChange,
) -> AppResult<()> {
    tier_history::Entity::insert(tier_history::ActiveModel {
        id: Set(change.id),
        programme_id: Set(programme_id),
        member_id: Set(change.member_id),
        kind: Set(change.kind.as_str().to_owned()),
        from_tier_id: Set(change.from.as_ref().map(|t| t.id)),
        to_tier_id: Set(change.to.as_ref().map(|t| t.id)),
        effective_tier_id: Set(change.effective.as_ref().map(|t| t.id)),
        reason: Set(change.reason.clone()),
        ends_at: Set(change.ends_at),
        created_at: Set(change.at),
    })
    .exec_without_returning(db)
    .await?;
    let data = serde_json::json!({
        "member_id": change.member_id,
        "kind": change.kind.as_str(),
        "from_tier": terms_json(change.from.as_ref()),
        "to_tier": terms_json(change.to.as_ref()),
        "effective_tier": terms_json(change.effective.as_ref()),
        "reason": change.reason,
        "ends_at": change.ends_at,
        "changed_at": change.at,
    });
    outbox::append(db, programme_id, outbox::events::TIER_CHANGED, data).await?;
    Ok(())
}

/// Moves a locked member's qualified tier to `target` and records it.
async fn requalified(
    db: &impl ConnectionTrait,
    ladder: &Ladder,
    row: member::Model,
    target: Option<&Tier>,
    kind: ChangeKind,
    now: DateTime<Utc>,
) -> AppResult<TierChange> {
    let from = ladder.qualified(row.tier_id).map(|t| t.terms.clone());
    let target_id = target.map(|t| t.terms.id);
    member::Entity::update_many()
        .col_expr(member::Column::TierId, Expr::value(target_id))
        .filter(member::Column::Id.eq(row.id))
        .exec(db)
        .await?;
    let after = member::Model {
        tier_id: target_id,
        ..row
    };
    let change = TierChange {
        id: Uuid::now_v7(),
        member_id: after.id,
        kind,
        from,
        to: target.map(|t| t.terms.clone()),
        effective: effective_of(ladder, &after, now),
        reason: None,
        ends_at: None,
        at: now,
    };
    remember(db, after.programme_id, &change).await?;
    Ok(change)
}

/// The member's standing for its profile.
pub async fn standing(
    db: &impl ConnectionTrait,
    ladder: &Ladder,
    programme: &Programme,
    row: &member::Model,
    now: DateTime<Utc>,
) -> AppResult<Standing> {
    let units = programme.currency.minor_units();
    let today = now.date_naive();
    let spend = if ladder.is_empty() {
        0
    } else {
        rolling_spend(db, row.id, today).await?
    };
    let effective = effective(ladder, row.tier_id, floor_of(row), now);
    let floor = floor_of(row)
        .filter(|f| f.live(now))
        .and_then(|f| ladder.get(f.tier_id))
        .map(|t| LiveFloor {
            tier: t.terms.clone(),
            reason: row.floor_reason.clone(),
            ends_at: row.floor_ends_at.expect("a floor has an end"),
        });
    let next = ladder
        .next_above(effective.map(|(t, _)| t.terms.rank))
        .map(|t| {
            let needed = (t.qualifying_spend - spend).max(0);
            (t.terms.clone(), from_minor(needed, units))
        });
    Ok(Standing {
        effective: effective.map(|(t, s)| (t.terms.clone(), s)),
        qualified: ladder.qualified(row.tier_id).map(|t| t.terms.clone()),
        floor,
        currency: programme.currency.clone(),
        qualifying_spend: from_minor(spend, units),
        window_start: window_start(today),
        next,
    })
}

/// Sets a floor: the member has at least `tier` until `ends_at` (admin).
pub async fn set_floor(
    app: &App,
    caller: &Caller,
    member_id: Uuid,
    input: NewFloor,
) -> AppResult<Standing> {
    caller.require(&[Scope::Admin])?;
    members::visible(&app.db, caller, member_id).await?;
    let now = Utc::now();
    let mut v = Validator::default();
    let reason = text_field(&mut v, "reason", &input.reason, 500);
    let latest = now + chrono::Duration::days(i64::from(MAX_FLOOR_DAYS));
    v.require(
        "ends_at",
        input.ends_at > now && input.ends_at <= latest,
        &format!("must be in the future, at most {MAX_FLOOR_DAYS} days ahead"),
    );
    v.finish()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let txn = app.db.begin().await?;
    let ladder = ladder(&txn, caller.programme_id).await?;
    let tier = ladder
        .get(input.tier_id)
        .ok_or(AppError::NotFound("tier"))?
        .terms
        .clone();
    let row = lock_member(&txn, member_id).await?;
    let before = effective_of(&ladder, &row, now);
    member::Entity::update_many()
        .col_expr(member::Column::FloorTierId, Expr::value(Some(tier.id)))
        .col_expr(
            member::Column::FloorReason,
            Expr::value(Some(reason.clone())),
        )
        .col_expr(
            member::Column::FloorEndsAt,
            Expr::value(Some(input.ends_at)),
        )
        .filter(member::Column::Id.eq(member_id))
        .exec(&txn)
        .await?;
    let after = member::Model {
        floor_tier_id: Some(tier.id),
        floor_reason: Some(reason.clone()),
        floor_ends_at: Some(input.ends_at),
        ..row
    };
    let change = TierChange {
        id: Uuid::now_v7(),
        member_id,
        kind: ChangeKind::Manual,
        from: before,
        to: Some(tier),
        effective: effective_of(&ladder, &after, now),
        reason: Some(reason),
        ends_at: Some(input.ends_at),
        at: now,
    };
    remember(&txn, caller.programme_id, &change).await?;
    let standing = standing(&txn, &ladder, &programme, &after, now).await?;
    txn.commit().await?;
    Ok(standing)
}

/// The longest a floor may last (about five years).
pub const MAX_FLOOR_DAYS: i32 = 1830;

/// One row of a member's tier history, with the tiers it names.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub row: tier_history::Model,
    pub from: Option<TierTerms>,
    pub to: Option<TierTerms>,
    pub effective: Option<TierTerms>,
}

/// A member's tier history, newest first (admin, and partners that may see the member).
pub async fn history(
    app: &App,
    caller: &Caller,
    member_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<HistoryItem>> {
    members::visible(&app.db, caller, member_id).await?;
    let before = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query = tier_history::Entity::find()
        .filter(tier_history::Column::MemberId.eq(member_id))
        .filter(tier_history::Column::ProgrammeId.eq(caller.programme_id));
    if let Some(before) = before {
        query = query.filter(tier_history::Column::Id.lt(before));
    }
    let rows = query
        .order_by_desc(tier_history::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let ladder = ladder(&app.db, caller.programme_id).await?;
    let named = |id: Option<Uuid>| id.and_then(|id| ladder.get(id)).map(|t| t.terms.clone());
    Ok(page.page(
        rows,
        |r| r.id.to_string(),
        |row| HistoryItem {
            from: named(row.from_tier_id),
            to: named(row.to_tier_id),
            effective: named(row.effective_tier_id),
            row,
        },
    ))
}

// ---------------------------------------------------------------- requalification

/// Brings every member's qualified tier in line with their rolling spend as of `now`
/// (down as well as up) and records floors that ended. Safe on several replicas at once:
/// each member is re-checked under its row lock, so each change happens once.
pub async fn requalify(
    db: &sea_orm::DatabaseConnection,
    now: DateTime<Utc>,
) -> AppResult<RequalifyReport> {
    let programmes: Vec<Uuid> = tier::Entity::find()
        .select_only()
        .column(tier::Column::ProgrammeId)
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    let mut report = RequalifyReport::default();
    for programme_id in programmes {
        report.programmes += 1;
        let ladder = ladder(db, programme_id).await?;
        end_floors(db, &ladder, programme_id, now, &mut report).await?;
        requalify_programme(db, &ladder, programme_id, now, &mut report).await?;
    }
    Ok(report)
}

/// Members whose qualified tier looks out of date, from one pass over the window's
/// spend and the members holding a tier.
async fn out_of_date(
    db: &impl ConnectionTrait,
    ladder: &Ladder,
    programme_id: Uuid,
    today: NaiveDate,
) -> AppResult<Vec<Uuid>> {
    let spends: Vec<(Uuid, i64)> = tier_spend_day::Entity::find()
        .select_only()
        .column(tier_spend_day::Column::MemberId)
        .column_as(Expr::cust("CAST(SUM(amount) AS BIGINT)"), "spend")
        .filter(tier_spend_day::Column::ProgrammeId.eq(programme_id))
        .filter(tier_spend_day::Column::Day.gte(window_start(today)))
        .filter(tier_spend_day::Column::Day.lte(today))
        .group_by(tier_spend_day::Column::MemberId)
        .into_tuple()
        .all(db)
        .await?;
    let holders: Vec<(Uuid, Option<Uuid>)> = member::Entity::find()
        .select_only()
        .column(member::Column::Id)
        .column(member::Column::TierId)
        .filter(member::Column::ProgrammeId.eq(programme_id))
        .filter(member::Column::TierId.is_not_null())
        .into_tuple()
        .all(db)
        .await?;
    let mut members: HashMap<Uuid, (Option<Uuid>, i64)> = HashMap::new();
    for (id, tier) in holders {
        members.insert(id, (tier, 0));
    }
    for (id, spend) in spends {
        // Never below zero, as `rolling_spend` decides it under the lock.
        members.entry(id).or_insert((None, 0)).1 = spend.max(0);
    }
    let mut stale: Vec<Uuid> = members
        .into_iter()
        .filter(|(_, (tier, spend))| {
            let target = ladder.qualified_for(*spend).map(|t| t.terms.id);
            target != ladder.qualified(*tier).map(|t| t.terms.id)
        })
        .map(|(id, _)| id)
        .collect();
    stale.sort();
    Ok(stale)
}

async fn requalify_programme(
    db: &sea_orm::DatabaseConnection,
    ladder: &Ladder,
    programme_id: Uuid,
    now: DateTime<Utc>,
    report: &mut RequalifyReport,
) -> AppResult<()> {
    let today = now.date_naive();
    for member_id in out_of_date(db, ladder, programme_id, today).await? {
        report.members_checked += 1;
        let txn = db.begin().await?;
        // Decided again under the lock: another replica may have done it meanwhile.
        let row = lock_member(&txn, member_id).await?;
        let spend = rolling_spend(&txn, member_id, today).await?;
        let target = ladder.qualified_for(spend);
        let current = ladder.qualified(row.tier_id);
        if target.map(|t| t.terms.id) == current.map(|t| t.terms.id) {
            txn.rollback().await?;
            continue;
        }
        let up = ranks_above(target, current);
        requalified(&txn, ladder, row, target, ChangeKind::Requalified, now).await?;
        txn.commit().await?;
        if up {
            report.upgraded += 1;
        } else {
            report.downgraded += 1;
        }
    }
    Ok(())
}

/// Records the floors whose end has passed and clears them.
async fn end_floors(
    db: &sea_orm::DatabaseConnection,
    ladder: &Ladder,
    programme_id: Uuid,
    now: DateTime<Utc>,
    report: &mut RequalifyReport,
) -> AppResult<()> {
    let ended: Vec<Uuid> = member::Entity::find()
        .select_only()
        .column(member::Column::Id)
        .filter(member::Column::ProgrammeId.eq(programme_id))
        .filter(member::Column::FloorTierId.is_not_null())
        .filter(member::Column::FloorEndsAt.lte(now))
        .into_tuple()
        .all(db)
        .await?;
    for member_id in ended {
        let txn = db.begin().await?;
        let row = lock_member(&txn, member_id).await?;
        let floor = floor_of(&row).filter(|f| !f.live(now));
        let Some(floor) = floor else {
            txn.rollback().await?; // another replica recorded it
            continue;
        };
        member::Entity::update_many()
            .col_expr(
                member::Column::FloorTierId,
                Expr::value(Option::<Uuid>::None),
            )
            .col_expr(
                member::Column::FloorReason,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                member::Column::FloorEndsAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(member::Column::Id.eq(member_id))
            .exec(&txn)
            .await?;
        let change = TierChange {
            id: Uuid::now_v7(),
            member_id,
            kind: ChangeKind::FloorEnded,
            from: ladder.get(floor.tier_id).map(|t| t.terms.clone()),
            to: ladder.qualified(row.tier_id).map(|t| t.terms.clone()),
            effective: ladder.qualified(row.tier_id).map(|t| t.terms.clone()),
            reason: row.floor_reason.clone(),
            ends_at: Some(floor.ends_at),
            at: now,
        };
        remember(&txn, programme_id, &change).await?;
        txn.commit().await?;
        report.floors_ended += 1;
    }
    Ok(())
}

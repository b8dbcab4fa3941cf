//! Earning rules of a programme (admin): create, list, read, change. A rule is never
//! deleted — it is deactivated (`active: false`) or ended (`valid_to`) — and every
//! create and change writes a new version row, so an award names the rule as it was.
//! A change bumps the programme's terms version: every server process prices with it
//! within a second (`terms.rs`).

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::pagination::{Page, PageRequest};
use crate::partners::PartnerKind;
use crate::programmes::{self, Programme};
use crate::terms;
use crate::{App, Caller, Scope};
use chrono::{DateTime, Utc};
use coalition_domain::limits::{self, MAX_POINTS_PER_ENTRY};
use coalition_domain::money::{parse_rate, Money};
use coalition_domain::rules::{Caps, Conditions, Effect, EffectKind, Funder, Hours, Rule};
use coalition_domain::Points;
use coalition_store::entities::{partner, programme, rule, rule_version, tier};
use rust_decimal::Decimal;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The most entries a condition's list may hold.
pub const MAX_LIST: usize = 100;
/// The longest category tag.
pub const MAX_CATEGORY_CHARS: usize = 100;
/// Priorities are between −this and this.
pub const MAX_PRIORITY: i32 = 1_000_000;

/// A rule's fields as sent; on create the absent ones take their defaults, on change
/// the absent ones keep their value (a given object replaces the whole object).
#[derive(Debug, Default, Clone)]
pub struct RuleFields {
    pub name: Option<String>,
    pub priority: Option<i32>,
    pub active: Option<bool>,
    pub valid_from: Option<DateTime<Utc>>,
    /// `Some(None)` clears it (the rule runs forever).
    pub valid_to: Option<Option<DateTime<Utc>>>,
    pub conditions: Option<ConditionFields>,
    pub effect: Option<EffectFields>,
    pub caps: Option<Caps>,
    pub stackable: Option<bool>,
    pub funder: Option<FunderFields>,
}

#[derive(Debug, Default, Clone)]
pub struct ConditionFields {
    pub partner_ids: Option<Vec<Uuid>>,
    pub partner_categories: Option<Vec<String>>,
    /// (amount, currency)
    pub min_amount: Option<(String, String)>,
    pub tier_ids: Option<Vec<Uuid>>,
    pub first_purchase_at_partner: Option<bool>,
    pub days_of_week: Option<Vec<i64>>,
    /// ("HH:MM", "HH:MM")
    pub hours: Option<(String, String)>,
    pub purchase_categories: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct EffectFields {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct FunderFields {
    pub kind: String,
    pub partner_id: Option<Uuid>,
}

/// A rule as stored, with when it was made and last changed.
#[derive(Debug, Clone)]
pub struct StoredRule {
    pub rule: Rule,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn create(app: &App, caller: &Caller, fields: RuleFields) -> AppResult<StoredRule> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let now = now();
    let mut v = Validator::default();
    v.require("name", fields.name.is_some(), "is required");
    v.require("effect", fields.effect.is_some(), "is required");
    let draft = Rule {
        id: Uuid::now_v7(),
        version: 1,
        name: String::new(),
        priority: 0,
        active: true,
        valid_from: now,
        valid_to: None,
        conditions: Conditions::default(),
        effect: Effect {
            kind: EffectKind::BonusPoints,
            value: Decimal::ZERO,
        },
        caps: Caps::default(),
        stackable: true,
        funder: Funder::SellingPartner,
        campaign: false,
    };
    let rule = apply(&app.db, &programme, draft, fields, v).await?;
    let txn = app.db.begin().await?;
    rule::Entity::insert(rule::ActiveModel {
        id: Set(rule.id),
        programme_id: Set(programme.id),
        version: Set(rule.version),
        active: Set(rule.active),
        definition: Set(definition(&rule)?),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    write_version(&txn, programme.id, &rule, now).await?;
    let version = terms::bump(&txn, programme.id).await?;
    txn.commit().await?;
    app.terms.changed(programme.id, version);
    Ok(StoredRule {
        rule,
        currency: programme.currency.to_string(),
        created_at: now,
        updated_at: now,
    })
}

/// Changes the given fields; the rule gets its next version.
pub async fn update(
    app: &App,
    caller: &Caller,
    id: Uuid,
    fields: RuleFields,
) -> AppResult<StoredRule> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let txn = app.db.begin().await?;
    // The row lock orders concurrent changes: each applies its fields to the version the
    // other wrote, and writes the next one.
    let locked = rule::Entity::find_by_id(id)
        .filter(rule::Column::ProgrammeId.eq(programme.id))
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("rule"))?;
    let current = parse(&locked.definition)?;
    let mut next = apply(&txn, &programme, current, fields, Validator::default()).await?;
    next.version = locked.version + 1;
    let now = now();
    rule::Entity::update_many()
        .col_expr(rule::Column::Version, Expr::value(next.version))
        .col_expr(rule::Column::Active, Expr::value(next.active))
        .col_expr(rule::Column::Definition, Expr::value(definition(&next)?))
        .col_expr(rule::Column::UpdatedAt, Expr::value(now))
        .filter(rule::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    write_version(&txn, programme.id, &next, now).await?;
    let version = terms::bump(&txn, programme.id).await?;
    txn.commit().await?;
    app.terms.changed(programme.id, version);
    Ok(StoredRule {
        rule: next,
        currency: programme.currency.to_string(),
        created_at: locked.created_at,
        updated_at: now,
    })
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<StoredRule> {
    caller.require(&[Scope::Admin])?;
    find(&app.db, caller.programme_id, id).await
}

/// A rule as it was at `version`.
pub async fn version(
    app: &App,
    caller: &Caller,
    id: Uuid,
    version: i32,
) -> AppResult<(Rule, String, DateTime<Utc>)> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let row = rule_version::Entity::find_by_id((id, version))
        .filter(rule_version::Column::ProgrammeId.eq(programme.id))
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("rule version"))?;
    Ok((
        parse(&row.definition)?,
        programme.currency.to_string(),
        row.created_at,
    ))
}

pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<StoredRule>> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query = rule::Entity::find().filter(rule::Column::ProgrammeId.eq(programme.id));
    if let Some(after) = after {
        query = query.filter(rule::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(rule::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let currency = programme.currency.to_string();
    let rules = rows
        .into_iter()
        .map(|row| stored(row, &currency))
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(rules, |r| r.rule.id.to_string(), |r| r))
}

/// The programme's active rules, for the terms snapshot purchases are priced with
/// (`terms.rs`; the domain checks validity windows and conditions).
pub async fn active(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<Vec<Rule>> {
    rule::Entity::find()
        .filter(rule::Column::ProgrammeId.eq(programme_id))
        .filter(rule::Column::Active.eq(true))
        .order_by_asc(rule::Column::Id)
        .all(db)
        .await?
        .iter()
        .map(|row| parse(&row.definition))
        .collect()
}

async fn find(db: &impl ConnectionTrait, programme_id: Uuid, id: Uuid) -> AppResult<StoredRule> {
    let row = rule::Entity::find_by_id(id)
        .filter(rule::Column::ProgrammeId.eq(programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("rule"))?;
    let currency = programme::Entity::find_by_id(programme_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("programme"))?
        .currency;
    stored(row, &currency)
}

fn stored(row: rule::Model, currency: &str) -> AppResult<StoredRule> {
    Ok(StoredRule {
        rule: parse(&row.definition)?,
        currency: currency.to_owned(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Now, to the microsecond: what PostgreSQL keeps of a timestamp, so a rule read back
/// shows the times it was answered with.
fn now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

fn definition(rule: &Rule) -> AppResult<String> {
    serde_json::to_string(rule).map_err(|e| AppError::Internal(e.to_string()))
}

fn parse(text: &str) -> AppResult<Rule> {
    serde_json::from_str(text)
        .map_err(|e| AppError::Internal(format!("stored rule is corrupt: {e}")))
}

async fn write_version(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    rule: &Rule,
    now: DateTime<Utc>,
) -> AppResult<()> {
    rule_version::Entity::insert(rule_version::ActiveModel {
        rule_id: Set(rule.id),
        version: Set(rule.version),
        programme_id: Set(programme_id),
        definition: Set(definition(rule)?),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Applies the given fields to `rule`, checking each, and the rule as a whole.
async fn apply(
    db: &impl ConnectionTrait,
    programme: &Programme,
    mut rule: Rule,
    fields: RuleFields,
    mut v: Validator,
) -> AppResult<Rule> {
    if let Some(name) = fields.name {
        rule.name = text_field(&mut v, "name", &name, 200);
    }
    if let Some(priority) = fields.priority {
        v.require(
            "priority",
            (-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority),
            &format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
        );
        rule.priority = priority;
    }
    rule.active = fields.active.unwrap_or(rule.active);
    rule.stackable = fields.stackable.unwrap_or(rule.stackable);
    rule.valid_from = fields.valid_from.unwrap_or(rule.valid_from);
    rule.valid_to = fields.valid_to.unwrap_or(rule.valid_to);
    if let Some(to) = rule.valid_to {
        v.require("valid_to", to > rule.valid_from, "must be after valid_from");
    }
    if let Some(c) = fields.conditions {
        rule.conditions = conditions(db, programme, c, &mut v).await?;
    }
    if let Some(e) = fields.effect {
        if let Some(effect) = effect(&e, &mut v) {
            rule.effect = effect;
        }
    }
    if let Some(caps) = fields.caps {
        check_caps(&caps, &mut v);
        rule.caps = caps;
    }
    if let Some(f) = fields.funder {
        if let Some(funder) = funder(db, programme.id, &f, &mut v).await? {
            rule.funder = funder;
        }
    }
    v.finish()?;
    Ok(rule)
}

async fn conditions(
    db: &impl ConnectionTrait,
    programme: &Programme,
    c: ConditionFields,
    v: &mut Validator,
) -> AppResult<Conditions> {
    let field = |name: &str| format!("conditions.{name}");
    let bounded = |v: &mut Validator, name: &str, len: usize| {
        v.require(
            &field(name),
            len >= 1,
            "must not be empty (omit it instead)",
        );
        v.require(
            &field(name),
            len <= MAX_LIST,
            &format!("must have at most {MAX_LIST} entries"),
        );
    };
    if let Some(ids) = &c.partner_ids {
        bounded(v, "partner_ids", ids.len());
        let unknown = unknown_partners(db, programme.id, ids, None).await?;
        v.require(
            &field("partner_ids"),
            unknown.is_empty(),
            &format!("no partner of this programme has the ids {unknown:?}"),
        );
    }
    if let Some(ids) = &c.tier_ids {
        bounded(v, "tier_ids", ids.len());
        let known: Vec<Uuid> = tier::Entity::find()
            .select_only()
            .column(tier::Column::Id)
            .filter(tier::Column::ProgrammeId.eq(programme.id))
            .filter(tier::Column::Id.is_in(ids.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        let unknown: Vec<&Uuid> = ids.iter().filter(|id| !known.contains(id)).collect();
        v.require(
            &field("tier_ids"),
            unknown.is_empty(),
            &format!("no tier of this programme has the ids {unknown:?}"),
        );
    }
    let categories = |v: &mut Validator, name: &str, list: Option<Vec<String>>| {
        list.map(|list| {
            bounded(v, name, list.len());
            list.iter()
                .map(|c| text_field(v, &field(name), c, MAX_CATEGORY_CHARS))
                .collect::<Vec<_>>()
        })
    };
    let partner_categories = categories(v, "partner_categories", c.partner_categories);
    let purchase_categories = categories(v, "purchase_categories", c.purchase_categories);
    let min_amount = c.min_amount.and_then(|(amount, currency)| {
        let money = v.check(
            &field("min_amount.amount"),
            Money::positive(&amount, &currency),
        )?;
        v.require(
            &field("min_amount.currency"),
            money.currency == programme.currency,
            &format!("must be the programme's currency, {}", programme.currency),
        );
        v.require(
            &field("min_amount.amount"),
            money.amount <= limits::max_purchase_amount(),
            &format!("must be at most {}", limits::MAX_PURCHASE_UNITS),
        );
        Some(money.amount)
    });
    let days_of_week = c.days_of_week.map(|days| {
        bounded(v, "days_of_week", days.len());
        v.require(
            &field("days_of_week"),
            days.iter().all(|d| (1..=7).contains(d)),
            "days are 1 (Monday) to 7 (Sunday)",
        );
        let set: BTreeSet<u8> = days.iter().filter_map(|d| u8::try_from(*d).ok()).collect();
        set.into_iter().collect()
    });
    let hours = c.hours.and_then(|(from, to)| {
        let from_minute = Hours::parse_time(&from);
        let to_minute = Hours::parse_time(&to);
        v.require(
            &field("hours.from"),
            from_minute.is_some(),
            "must be HH:MM (UTC)",
        );
        v.require(
            &field("hours.to"),
            to_minute.is_some(),
            "must be HH:MM (UTC)",
        );
        let (from_minute, to_minute) = (from_minute?, to_minute?);
        v.require(
            &field("hours.to"),
            from_minute != to_minute,
            "must differ from hours.from (omit hours for the whole day)",
        );
        Some(Hours {
            from_minute,
            to_minute,
        })
    });
    Ok(Conditions {
        partner_ids: c.partner_ids,
        partner_categories,
        min_amount,
        tier_ids: c.tier_ids,
        first_purchase_at_partner: c.first_purchase_at_partner,
        days_of_week,
        hours,
        purchase_categories,
    })
}

/// The effect, its value bounded by what its kind can mean.
fn effect(e: &EffectFields, v: &mut Validator) -> Option<Effect> {
    let kind = EffectKind::parse(&e.kind);
    v.require(
        "effect.kind",
        kind.is_some(),
        "must be points_per_unit, cashback_percent, bonus_points or multiplier",
    );
    let value = v.check("effect.value", parse_rate(&e.value))?;
    let kind = kind?;
    let (ok, why) = match kind {
        EffectKind::PointsPerUnit => (value > Decimal::ZERO, "must be greater than zero"),
        EffectKind::CashbackPercent => (
            value > Decimal::ZERO && value <= Decimal::ONE_HUNDRED,
            "must be a percent greater than 0 and at most 100",
        ),
        EffectKind::BonusPoints => (
            value > Decimal::ZERO && value.fract().is_zero(),
            "must be a whole number of points greater than zero",
        ),
        EffectKind::Multiplier => (
            value > Decimal::ONE && value <= Decimal::from(1000),
            "must be greater than 1 and at most 1000",
        ),
    };
    v.require("effect.value", ok, why);
    Some(Effect { kind, value })
}

fn check_caps(caps: &Caps, v: &mut Validator) {
    let within = |cap: Option<Points>| cap.is_none_or(|c| (0..=MAX_POINTS_PER_ENTRY).contains(&c));
    let message = format!("must be between 0 and {MAX_POINTS_PER_ENTRY}");
    v.require("caps.per_purchase", within(caps.per_purchase), &message);
    v.require("caps.per_member_day", within(caps.per_member_day), &message);
    v.require(
        "caps.per_member_month",
        within(caps.per_member_month),
        &message,
    );
}

/// Who pays: `partner` (a merchant; without `partner_id`, the one where the purchase
/// happens), `bank` (a bank partner) or `operator`.
pub(crate) async fn funder(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    f: &FunderFields,
    v: &mut Validator,
) -> AppResult<Option<Funder>> {
    let named = |kind: PartnerKind| async move {
        match f.partner_id {
            None => Ok::<_, AppError>(None),
            Some(id) => Ok(unknown_partners(db, programme_id, &[id], Some(kind))
                .await?
                .is_empty()
                .then_some(id)),
        }
    };
    Ok(match f.kind.as_str() {
        "partner" => match f.partner_id {
            None => Some(Funder::SellingPartner),
            Some(_) => {
                let found = named(PartnerKind::Merchant).await?;
                v.require(
                    "funder.partner_id",
                    found.is_some(),
                    "names no merchant partner of this programme",
                );
                found.map(Funder::Partner)
            }
        },
        "bank" => {
            let found = named(PartnerKind::Bank).await?;
            v.require(
                "funder.partner_id",
                found.is_some(),
                "must name a bank partner of this programme",
            );
            found.map(Funder::Bank)
        }
        "operator" => {
            v.require(
                "funder.partner_id",
                f.partner_id.is_none(),
                "must be omitted when the operator funds",
            );
            Some(Funder::Operator)
        }
        _ => {
            v.require("funder.kind", false, "must be partner, bank or operator");
            None
        }
    })
}

/// The ids among `ids` that name no partner of the programme (of `kind`, when given).
pub(crate) async fn unknown_partners(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    ids: &[Uuid],
    kind: Option<PartnerKind>,
) -> AppResult<Vec<Uuid>> {
    let mut query = partner::Entity::find()
        .select_only()
        .column(partner::Column::Id)
        .filter(partner::Column::ProgrammeId.eq(programme_id))
        .filter(partner::Column::Id.is_in(ids.iter().copied()));
    if let Some(kind) = kind {
        query = query.filter(partner::Column::Kind.eq(kind.as_str()));
    }
    let found: Vec<Uuid> = query.into_tuple().all(db).await?;
    Ok(ids
        .iter()
        .filter(|id| !found.contains(id))
        .copied()
        .collect())
}

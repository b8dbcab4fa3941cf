//! Campaigns (admin): a reward for a segment of members, paid by a funder, within a
//! points budget and a window, with a holdout that gets nothing.
//!
//! - A campaign is an earning rule for its treated members: purchases price it with
//!   `earning::price_purchase` (`CampaignTerms::as_rule`), its line names the campaign
//!   and is posted from the funder's account.
//! - Segments are evaluated by the database, a page of member ids at a time ([`assign`]);
//!   each member's group (hash of campaign and member id) is recorded once, when the
//!   campaign starts (create, change, or the `campaigns` job) or when the member enters
//!   the segment later (the job, every round, while the campaign runs).
//! - The budget is a guarded counter on the campaign's row ([`spend_budget`]), locked by
//!   the purchases that award from it ([`for_purchase`]).

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::outbox;
use crate::pagination::{Page, PageRequest};
use crate::programmes::{self, Programme};
use crate::rules::FunderFields;
use crate::terms::{self, ProgrammeTerms};
use crate::{App, Caller, Scope};
use chrono::{DateTime, Duration, Utc};
use coalition_domain::campaigns::{group_of, CampaignTerms, Group, RewardKind};
use coalition_domain::earning::PurchaseOutcome;
use coalition_domain::limits::MAX_POINTS_PER_ENTRY;
use coalition_domain::money::{parse_rate, Money};
use coalition_domain::rules::{Funder, Rule};
use coalition_domain::tiers::{to_minor, Ladder};
use coalition_domain::Points;
use coalition_store::entities::{
    campaign, campaign_member, member, member_partner, outbox_event, purchase, tier_spend_day,
};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Cond, Expr, OnConflict, Query, SelectStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Members evaluated and assigned per statement: a segment of 10 000 members is ten
/// selects and ten inserts, never one round trip per member.
pub const ASSIGN_BATCH: u64 = 1000;
/// The longest explicit member list.
pub const MAX_MEMBER_IDS: usize = 1000;
/// The longest look-back of `lapsed` and `spend_band`, in days.
pub const MAX_DAYS: i64 = 3650;

/// Who a campaign targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Segment {
    /// Bought before, but nowhere in the last `days` UTC days (today included).
    Lapsed { days: i64 },
    /// The member's effective tier (qualified, or a live floor above it) is this one.
    Tier { tier_id: Uuid },
    /// Bought at `buys_at`, never at `never_at`.
    CrossSell { buys_at: Uuid, never_at: Uuid },
    /// Spent between `min_spend` and `max_spend` (inclusive, net of refunds) in the last
    /// `window_days` days, in minor units of the programme's currency.
    SpendBand {
        window_days: i64,
        min_spend: i64,
        max_spend: Option<i64>,
    },
    /// Linked to the partner (enrolled there, or bought there).
    PartnerMembers { partner_id: Uuid },
    /// Exactly these members.
    Members { member_ids: Vec<Uuid> },
    /// P(alive) below `p_alive_below` (0–1, exclusive) under the programme's latest CLV
    /// model at each assignment round.
    AtRisk { p_alive_below: Decimal },
    /// In one of these RFM segments (`coalition_domain::classify::RfmSegment` names), as
    /// of the assignment round's day.
    Rfm { segments: Vec<String> },
}

impl Segment {
    fn kind(&self) -> &'static str {
        match self {
            Segment::Lapsed { .. } => "lapsed",
            Segment::Tier { .. } => "tier",
            Segment::CrossSell { .. } => "cross_sell",
            Segment::SpendBand { .. } => "spend_band",
            Segment::PartnerMembers { .. } => "partner_members",
            Segment::Members { .. } => "members",
            Segment::AtRisk { .. } => "at_risk",
            Segment::Rfm { .. } => "rfm",
        }
    }
}

/// What is stored as the campaign's `definition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub segment: Segment,
    pub reward: Reward,
    pub funder: Funder,
    /// Win-back: one `campaign.reminder` per treated member (lapsed segments only).
    pub reminder: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    pub kind: String,
    pub value: Decimal,
    pub partner_ids: Option<Vec<Uuid>>,
}

/// A campaign as stored.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    pub definition: Definition,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub holdout_basis_points: i32,
    pub budget_points: Points,
    pub budget_used: Points,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Campaign {
    /// `scheduled`, `running` or `ended`, at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if now >= self.ends_at {
            "ended"
        } else if now >= self.starts_at {
            "running"
        } else {
            "scheduled"
        }
    }

    fn terms(&self) -> Option<CampaignTerms> {
        Some(CampaignTerms {
            id: self.id,
            name: self.name.clone(),
            reward: RewardKind::parse(&self.definition.reward.kind)?,
            value: self.definition.reward.value,
            partner_ids: self.definition.reward.partner_ids.clone(),
            funder: self.definition.funder,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        })
    }
}

/// A segment as sent: `kind` and the fields that kind needs.
#[derive(Debug, Clone, Default)]
pub struct SegmentFields {
    pub kind: String,
    pub days: Option<i64>,
    pub tier_id: Option<Uuid>,
    pub buys_at: Option<Uuid>,
    pub never_at: Option<Uuid>,
    pub window_days: Option<i64>,
    /// (amount, currency)
    pub min_spend: Option<(String, String)>,
    pub max_spend: Option<(String, String)>,
    pub partner_id: Option<Uuid>,
    pub member_ids: Option<Vec<Uuid>>,
    pub p_alive_below: Option<f64>,
    pub segments: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct RewardFields {
    pub kind: String,
    pub value: String,
    pub partner_ids: Option<Vec<Uuid>>,
}

/// A campaign's fields as sent; on create `name`, `segment`, `reward`, `funder`,
/// `budget_points` and `ends_at` are required, on change every field is optional.
#[derive(Debug, Clone, Default)]
pub struct CampaignFields {
    pub name: Option<String>,
    pub segment: Option<SegmentFields>,
    pub reward: Option<RewardFields>,
    pub funder: Option<FunderFields>,
    pub budget_points: Option<i64>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub holdout_percent: Option<i64>,
    pub reminder: Option<bool>,
}

pub async fn create(app: &App, caller: &Caller, fields: CampaignFields) -> AppResult<Campaign> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let now = now();
    let mut v = Validator::default();
    for (field, given) in [
        ("name", fields.name.is_some()),
        ("segment", fields.segment.is_some()),
        ("reward", fields.reward.is_some()),
        ("funder", fields.funder.is_some()),
        ("budget_points", fields.budget_points.is_some()),
        ("ends_at", fields.ends_at.is_some()),
    ] {
        v.require(field, given, "is required");
    }
    let draft = Campaign {
        id: Uuid::now_v7(),
        name: String::new(),
        definition: Definition {
            segment: Segment::Members { member_ids: vec![] },
            reward: Reward {
                kind: "bonus".into(),
                value: Decimal::ONE,
                partner_ids: None,
            },
            funder: Funder::Operator,
            reminder: false,
        },
        starts_at: now,
        ends_at: now,
        holdout_basis_points: 0,
        budget_points: 1,
        budget_used: 0,
        currency: programme.currency.to_string(),
        created_at: now,
        updated_at: now,
    };
    let c = apply(&app.db, &programme, draft, fields, v, now).await?;
    let txn = app.db.begin().await?;
    campaign::Entity::insert(campaign::ActiveModel {
        id: Set(c.id),
        programme_id: Set(programme.id),
        name: Set(c.name.clone()),
        definition: Set(to_json(&c.definition)?),
        starts_at: Set(c.starts_at),
        ends_at: Set(c.ends_at),
        holdout_basis_points: Set(c.holdout_basis_points),
        budget_points: Set(c.budget_points),
        budget_used: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    let version = terms::bump(&txn, programme.id).await?;
    txn.commit().await?;
    app.terms.changed(programme.id, version);
    if c.starts_at <= now {
        assign(&app.db, caller.programme_id, &c, now).await?;
    }
    Ok(c)
}

/// Changes the given fields of a campaign that has not started (409 `campaign_started`
/// once it has: its members may have been assigned and rewarded under the old terms).
pub async fn update(
    app: &App,
    caller: &Caller,
    id: Uuid,
    fields: CampaignFields,
) -> AppResult<Campaign> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let now = now();
    let txn = app.db.begin().await?;
    let row = locked(&txn, programme.id, id).await?;
    let current = stored(row, &programme.currency.to_string())?;
    if current.starts_at <= now {
        return Err(AppError::CampaignStarted);
    }
    let mut next = apply(&txn, &programme, current, fields, Validator::default(), now).await?;
    next.updated_at = now;
    campaign::Entity::update_many()
        .col_expr(campaign::Column::Name, Expr::value(next.name.clone()))
        .col_expr(
            campaign::Column::Definition,
            Expr::value(to_json(&next.definition)?),
        )
        .col_expr(campaign::Column::StartsAt, Expr::value(next.starts_at))
        .col_expr(campaign::Column::EndsAt, Expr::value(next.ends_at))
        .col_expr(
            campaign::Column::HoldoutBasisPoints,
            Expr::value(next.holdout_basis_points),
        )
        .col_expr(
            campaign::Column::BudgetPoints,
            Expr::value(next.budget_points),
        )
        .col_expr(campaign::Column::UpdatedAt, Expr::value(now))
        .filter(campaign::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    let version = terms::bump(&txn, programme.id).await?;
    txn.commit().await?;
    app.terms.changed(programme.id, version);
    if next.starts_at <= now {
        assign(&app.db, programme.id, &next, now).await?;
    }
    Ok(next)
}

/// Ends the campaign now; ending an ended campaign changes nothing.
pub async fn end(app: &App, caller: &Caller, id: Uuid) -> AppResult<Campaign> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let now = now();
    let txn = app.db.begin().await?;
    let row = locked(&txn, programme.id, id).await?;
    let mut c = stored(row, &programme.currency.to_string())?;
    if c.ends_at <= now {
        txn.commit().await?;
        return Ok(c);
    }
    // A campaign ended before its start never starts: both move to now.
    c.starts_at = c.starts_at.min(now);
    (c.ends_at, c.updated_at) = (now, now);
    campaign::Entity::update_many()
        .col_expr(campaign::Column::StartsAt, Expr::value(c.starts_at))
        .col_expr(campaign::Column::EndsAt, Expr::value(now))
        .col_expr(campaign::Column::UpdatedAt, Expr::value(now))
        .filter(campaign::Column::Id.eq(id))
        .exec(&txn)
        .await?;
    let version = terms::bump(&txn, programme.id).await?;
    txn.commit().await?;
    app.terms.changed(programme.id, version);
    Ok(c)
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<Campaign> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let row = campaign::Entity::find_by_id(id)
        .filter(campaign::Column::ProgrammeId.eq(programme.id))
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("campaign"))?;
    stored(row, &programme.currency.to_string())
}

pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<Campaign>> {
    caller.require(&[Scope::Admin])?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query = campaign::Entity::find().filter(campaign::Column::ProgrammeId.eq(programme.id));
    if let Some(after) = after {
        query = query.filter(campaign::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(campaign::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let currency = programme.currency.to_string();
    let campaigns = rows
        .into_iter()
        .map(|row| stored(row, &currency))
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(campaigns, |c| c.id.to_string(), |c| c))
}

/// The recorded assignment of a campaign's members, by member id; one group or both.
pub async fn members(
    app: &App,
    caller: &Caller,
    id: Uuid,
    group: Option<Group>,
    page: PageRequest,
) -> AppResult<Page<campaign_member::Model>> {
    let found = get(app, caller, id).await?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query =
        campaign_member::Entity::find().filter(campaign_member::Column::CampaignId.eq(found.id));
    if let Some(group) = group {
        query = query.filter(campaign_member::Column::Group.eq(group.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(campaign_member::Column::MemberId.gt(after));
    }
    let rows = query
        .order_by_asc(campaign_member::Column::MemberId)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    Ok(page.page(rows, |r| r.member_id.to_string(), |r| r))
}

async fn locked(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    id: Uuid,
) -> AppResult<campaign::Model> {
    campaign::Entity::find_by_id(id)
        .filter(campaign::Column::ProgrammeId.eq(programme_id))
        .lock_exclusive()
        .one(db)
        .await?
        .ok_or(AppError::NotFound("campaign"))
}

fn stored(row: campaign::Model, currency: &str) -> AppResult<Campaign> {
    let definition = serde_json::from_str(&row.definition)
        .map_err(|e| AppError::Internal(format!("stored campaign is corrupt: {e}")))?;
    Ok(Campaign {
        id: row.id,
        name: row.name,
        definition,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        holdout_basis_points: row.holdout_basis_points,
        budget_points: row.budget_points,
        budget_used: row.budget_used,
        currency: currency.to_owned(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn to_json(definition: &Definition) -> AppResult<String> {
    serde_json::to_string(definition).map_err(|e| AppError::Internal(e.to_string()))
}

/// Now, to the microsecond, as PostgreSQL keeps it.
fn now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

// ---------------------------------------------------------------------------------------
// Validation.

/// Applies the given fields to `c`, checking each, and the campaign as a whole.
async fn apply(
    db: &impl ConnectionTrait,
    programme: &Programme,
    mut c: Campaign,
    fields: CampaignFields,
    mut v: Validator,
    now: DateTime<Utc>,
) -> AppResult<Campaign> {
    if let Some(name) = fields.name {
        c.name = text_field(&mut v, "name", &name, 200);
    }
    if let Some(s) = fields.segment {
        if let Some(segment) = segment(db, programme, s, &mut v).await? {
            c.definition.segment = segment;
        }
    }
    if let Some(r) = fields.reward {
        if let Some(reward) = reward(db, programme.id, r, &mut v).await? {
            c.definition.reward = reward;
        }
    }
    if let Some(f) = fields.funder {
        if let Some(funder) = crate::rules::funder(db, programme.id, &f, &mut v).await? {
            c.definition.funder = funder;
        }
    }
    if let Some(budget) = fields.budget_points {
        v.require(
            "budget_points",
            (1..=MAX_POINTS_PER_ENTRY).contains(&budget),
            &format!("must be between 1 and {MAX_POINTS_PER_ENTRY}"),
        );
        c.budget_points = budget;
    }
    if let Some(percent) = fields.holdout_percent {
        v.require(
            "holdout_percent",
            (0..=100).contains(&percent),
            "must be a whole percent from 0 to 100",
        );
        c.holdout_basis_points = (percent.clamp(0, 100) * 100) as i32;
    }
    c.definition.reminder = fields.reminder.unwrap_or(c.definition.reminder);
    v.require(
        "reminder",
        !c.definition.reminder || matches!(c.definition.segment, Segment::Lapsed { .. }),
        "win-back reminders are for lapsed segments only",
    );
    v.instant("starts_at", fields.starts_at);
    v.instant("ends_at", fields.ends_at);
    c.starts_at = fields.starts_at.map(trunc).unwrap_or(c.starts_at);
    if let Some(ends_at) = fields.ends_at {
        c.ends_at = trunc(ends_at);
        v.require("ends_at", c.ends_at > now, "must be in the future");
    }
    v.require(
        "ends_at",
        c.ends_at > c.starts_at,
        "must be after starts_at",
    );
    v.finish()?;
    Ok(c)
}

fn trunc(at: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(at, 6)
}

async fn segment(
    db: &impl ConnectionTrait,
    programme: &Programme,
    s: SegmentFields,
    v: &mut Validator,
) -> AppResult<Option<Segment>> {
    let required = |v: &mut Validator, name: &str, given: bool| {
        v.require(
            &format!("segment.{name}"),
            given,
            "is required for this kind",
        );
    };
    let days = |v: &mut Validator, name: &str, value: Option<i64>| {
        required(v, name, value.is_some());
        let value = value?;
        v.require(
            &format!("segment.{name}"),
            (1..=MAX_DAYS).contains(&value),
            &format!("must be between 1 and {MAX_DAYS}"),
        );
        Some(value)
    };
    refuse_foreign_fields(&s, v);
    let segment = match s.kind.as_str() {
        "lapsed" => days(v, "days", s.days).map(|days| Segment::Lapsed { days }),
        "tier" => {
            required(v, "tier_id", s.tier_id.is_some());
            let known = crate::tiers::ladder(db, programme.id).await?;
            if let Some(id) = s.tier_id {
                v.require(
                    "segment.tier_id",
                    known.get(id).is_some(),
                    "names no tier of this programme",
                );
            }
            s.tier_id.map(|tier_id| Segment::Tier { tier_id })
        }
        "cross_sell" => {
            required(v, "buys_at", s.buys_at.is_some());
            required(v, "never_at", s.never_at.is_some());
            for (name, id) in [("buys_at", s.buys_at), ("never_at", s.never_at)] {
                partner_exists(db, programme.id, v, &format!("segment.{name}"), id).await?;
            }
            v.require(
                "segment.never_at",
                s.buys_at.is_none() || s.buys_at != s.never_at,
                "must differ from buys_at",
            );
            s.buys_at
                .zip(s.never_at)
                .map(|(buys_at, never_at)| Segment::CrossSell { buys_at, never_at })
        }
        "spend_band" => {
            let window_days = days(v, "window_days", s.window_days);
            required(v, "min_spend", s.min_spend.is_some());
            let min_spend = spend(v, programme, "min_spend", s.min_spend);
            let max_spend = spend(v, programme, "max_spend", s.max_spend);
            if let (Some(min), Some(max)) = (min_spend, max_spend) {
                v.require(
                    "segment.max_spend",
                    max >= min,
                    "must not be below min_spend",
                );
            }
            window_days
                .zip(min_spend)
                .map(|(window_days, min_spend)| Segment::SpendBand {
                    window_days,
                    min_spend,
                    max_spend,
                })
        }
        "partner_members" => {
            required(v, "partner_id", s.partner_id.is_some());
            partner_exists(db, programme.id, v, "segment.partner_id", s.partner_id).await?;
            s.partner_id
                .map(|partner_id| Segment::PartnerMembers { partner_id })
        }
        "members" => {
            let ids = s.member_ids.unwrap_or_default();
            v.require(
                "segment.member_ids",
                (1..=MAX_MEMBER_IDS).contains(&ids.len()),
                &format!("must list 1 to {MAX_MEMBER_IDS} members"),
            );
            let ids: Vec<Uuid> = ids
                .into_iter()
                .take(MAX_MEMBER_IDS)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let known: Vec<Uuid> = member::Entity::find()
                .select_only()
                .column(member::Column::Id)
                .filter(member::Column::ProgrammeId.eq(programme.id))
                .filter(member::Column::Id.is_in(ids.iter().copied()))
                .into_tuple()
                .all(db)
                .await?;
            let unknown: Vec<&Uuid> = ids.iter().filter(|id| !known.contains(id)).collect();
            v.require(
                "segment.member_ids",
                unknown.is_empty(),
                &format!("no member of this programme has the ids {unknown:?}"),
            );
            Some(Segment::Members { member_ids: ids })
        }
        "at_risk" => {
            required(v, "p_alive_below", s.p_alive_below.is_some());
            let below = s.p_alive_below.filter(|p| *p > 0.0 && *p < 1.0);
            v.require(
                "segment.p_alive_below",
                s.p_alive_below.is_none() || below.is_some(),
                "must be above 0 and below 1",
            );
            match below.and_then(|p| p.to_string().parse::<Decimal>().ok()) {
                Some(p_alive_below) => {
                    if crate::analytics::latest_model(db, programme.id)
                        .await?
                        .is_none()
                    {
                        return Err(AppError::NoClvModel);
                    }
                    Some(Segment::AtRisk { p_alive_below })
                }
                None => None,
            }
        }
        "rfm" => {
            use coalition_domain::classify::RfmSegment;
            let names = s.segments.unwrap_or_default();
            v.require(
                "segment.segments",
                !names.is_empty(),
                "must name at least one RFM segment",
            );
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| RfmSegment::parse(n).is_none())
                .collect();
            v.require(
                "segment.segments",
                unknown.is_empty(),
                &format!(
                    "{unknown:?} are not RFM segments (champions, loyal, potential_loyalists, \
                     new, promising, need_attention, about_to_sleep, at_risk, cannot_lose, \
                     hibernating, lost)"
                ),
            );
            let segments: Vec<String> = RfmSegment::ALL
                .iter()
                .filter(|k| names.iter().any(|n| n == k.as_str()))
                .map(|k| k.as_str().to_owned())
                .collect();
            (!segments.is_empty() && unknown.is_empty()).then_some(Segment::Rfm { segments })
        }
        _ => {
            v.require(
                "segment.kind",
                false,
                "must be lapsed, tier, cross_sell, spend_band, partner_members, members, \
                 at_risk or rfm",
            );
            None
        }
    };
    Ok(segment)
}

/// A field another kind uses is refused, not ignored: a request means what it says.
fn refuse_foreign_fields(s: &SegmentFields, v: &mut Validator) {
    let used: &[&str] = match s.kind.as_str() {
        "lapsed" => &["days"],
        "tier" => &["tier_id"],
        "cross_sell" => &["buys_at", "never_at"],
        "spend_band" => &["window_days", "min_spend", "max_spend"],
        "partner_members" => &["partner_id"],
        "members" => &["member_ids"],
        "at_risk" => &["p_alive_below"],
        "rfm" => &["segments"],
        _ => return,
    };
    let given = [
        ("days", s.days.is_some()),
        ("tier_id", s.tier_id.is_some()),
        ("buys_at", s.buys_at.is_some()),
        ("never_at", s.never_at.is_some()),
        ("window_days", s.window_days.is_some()),
        ("min_spend", s.min_spend.is_some()),
        ("max_spend", s.max_spend.is_some()),
        ("partner_id", s.partner_id.is_some()),
        ("member_ids", s.member_ids.is_some()),
        ("p_alive_below", s.p_alive_below.is_some()),
        ("segments", s.segments.is_some()),
    ];
    for (name, present) in given {
        v.require(
            &format!("segment.{name}"),
            !present || used.contains(&name),
            &format!("is not used by the {} segment", s.kind),
        );
    }
}

/// A spend limit in minor units of the programme's currency.
fn spend(
    v: &mut Validator,
    programme: &Programme,
    name: &str,
    given: Option<(String, String)>,
) -> Option<i64> {
    let (amount, currency) = given?;
    let field = format!("segment.{name}.amount");
    let money = v.check(&field, Money::positive(&amount, &currency))?;
    v.require(
        &format!("segment.{name}.currency"),
        money.currency == programme.currency,
        &format!("must be the programme's currency, {}", programme.currency),
    );
    let minor = to_minor(money.amount, programme.currency.minor_units())
        .filter(|m| *m <= coalition_domain::limits::MAX_PURCHASE_UNITS as i64 * 1_000_000);
    v.require(&field, minor.is_some(), "is too large");
    minor
}

async fn partner_exists(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    v: &mut Validator,
    field: &str,
    id: Option<Uuid>,
) -> AppResult<()> {
    if let Some(id) = id {
        let unknown = crate::rules::unknown_partners(db, programme_id, &[id], None).await?;
        v.require(
            field,
            unknown.is_empty(),
            "names no partner of this programme",
        );
    }
    Ok(())
}

async fn reward(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    r: RewardFields,
    v: &mut Validator,
) -> AppResult<Option<Reward>> {
    let kind = RewardKind::parse(&r.kind);
    v.require("reward.kind", kind.is_some(), "must be multiplier or bonus");
    let value = v.check("reward.value", parse_rate(&r.value));
    if let (Some(kind), Some(value)) = (kind, value) {
        let (ok, why) = match kind {
            RewardKind::Multiplier => (
                value > Decimal::ONE && value <= Decimal::from(1000),
                "must be greater than 1 and at most 1000",
            ),
            RewardKind::Bonus => (
                value > Decimal::ZERO
                    && value.fract().is_zero()
                    && value <= Decimal::from(MAX_POINTS_PER_ENTRY),
                "must be a whole number of points greater than zero",
            ),
        };
        v.require("reward.value", ok, why);
    }
    if let Some(ids) = &r.partner_ids {
        v.require(
            "reward.partner_ids",
            (1..=crate::rules::MAX_LIST).contains(&ids.len()),
            "must list 1 to 100 partners (omit it for every partner)",
        );
        let unknown = crate::rules::unknown_partners(db, programme_id, ids, None).await?;
        v.require(
            "reward.partner_ids",
            unknown.is_empty(),
            &format!("no partner of this programme has the ids {unknown:?}"),
        );
    }
    Ok(kind.zip(value).map(|(kind, value)| Reward {
        kind: kind.as_str().into(),
        value: value.normalize(),
        partner_ids: r.partner_ids,
    }))
}

// ---------------------------------------------------------------------------------------
// Terms and purchases.

/// The programme's campaigns that have not ended, for the terms snapshot.
pub async fn live(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<Vec<CampaignTerms>> {
    let rows = campaign::Entity::find()
        .filter(campaign::Column::ProgrammeId.eq(programme_id))
        .filter(campaign::Column::EndsAt.gt(Utc::now()))
        .order_by_asc(campaign::Column::Id)
        .all(db)
        .await?;
    rows.into_iter()
        .map(|row| {
            let c = stored(row, "")?;
            c.terms()
                .ok_or_else(|| AppError::Internal("stored campaign reward is corrupt".into()))
        })
        .collect()
}

/// Whether a campaign may reward a purchase at `partner_id` at `at` (for a treated
/// member): then the purchase reads the member's assignments.
pub fn any_applies(terms: &ProgrammeTerms, partner_id: Uuid, at: DateTime<Utc>) -> bool {
    terms.campaigns.iter().any(|c| c.applies(partner_id, at))
}

/// The campaigns that reward this member's purchase, as rules capped at what each
/// budget has left. One indexed read of the member's assignments; with `lock`, the
/// campaigns' rows are locked (in id order) until the purchase commits, so concurrent
/// purchases share out what is left and never more ([`spend_budget`]).
pub async fn for_purchase(
    db: &impl ConnectionTrait,
    terms: &ProgrammeTerms,
    partner_id: Uuid,
    member_id: Uuid,
    at: DateTime<Utc>,
    lock: bool,
) -> AppResult<Vec<Rule>> {
    let applying: Vec<&CampaignTerms> = terms
        .campaigns
        .iter()
        .filter(|c| c.applies(partner_id, at))
        .collect();
    if applying.is_empty() {
        return Ok(vec![]);
    }
    let treated: Vec<Uuid> = campaign_member::Entity::find()
        .select_only()
        .column(campaign_member::Column::CampaignId)
        .filter(campaign_member::Column::CampaignId.is_in(applying.iter().map(|c| c.id)))
        .filter(campaign_member::Column::MemberId.eq(member_id))
        .filter(campaign_member::Column::Group.eq(Group::Treatment.as_str()))
        .into_tuple()
        .all(db)
        .await?;
    if treated.is_empty() {
        return Ok(vec![]);
    }
    let mut query = campaign::Entity::find()
        .select_only()
        .column(campaign::Column::Id)
        .column(campaign::Column::BudgetPoints)
        .column(campaign::Column::BudgetUsed)
        .filter(campaign::Column::Id.is_in(treated))
        .order_by_asc(campaign::Column::Id);
    if lock {
        query = query.lock_exclusive();
    }
    let budgets: Vec<(Uuid, i64, i64)> = query.into_tuple().all(db).await?;
    Ok(budgets
        .into_iter()
        .filter_map(|(id, budget, used)| {
            let c = applying.iter().find(|c| c.id == id)?;
            Some(c.as_rule(budget - used))
        })
        .collect())
}

/// Counts the purchase's campaign points against each campaign's budget: a guarded
/// UPDATE, so even a purchase that did not hold the lock could not overspend.
pub async fn spend_budget(db: &impl ConnectionTrait, outcome: &PurchaseOutcome) -> AppResult<()> {
    for line in &outcome.breakdown {
        let Some(id) = line.campaign_id else { continue };
        let used = Expr::col(campaign::Column::BudgetUsed);
        let done = campaign::Entity::update_many()
            .col_expr(campaign::Column::BudgetUsed, used.clone().add(line.points))
            .filter(campaign::Column::Id.eq(id))
            .filter(
                Expr::expr(Expr::col(campaign::Column::BudgetUsed).add(line.points))
                    .lte(Expr::col(campaign::Column::BudgetPoints)),
            )
            .exec(db)
            .await?;
        if done.rows_affected != 1 {
            return Err(AppError::Internal(format!(
                "campaign {id}: the budget no longer covers {} points",
                line.points
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Assignment.

/// Records the group of every member of the campaign's segment not assigned yet, a page
/// of [`ASSIGN_BATCH`] member ids at a time, each page in its own transaction (with its
/// win-back reminders). Returns how many members it assigned.
pub async fn assign<C>(
    db: &C,
    programme_id: Uuid,
    c: &Campaign,
    now: DateTime<Utc>,
) -> AppResult<u64>
where
    C: ConnectionTrait + TransactionTrait,
{
    let ladder = match c.definition.segment {
        Segment::Tier { .. } => crate::tiers::ladder(db, programme_id).await?,
        _ => Ladder::default(),
    };
    if let Some(mut ids) = computed_members(db, programme_id, c, now).await? {
        // Computed once per round, then assigned a page at a time like the others (the
        // page's select still leaves out the erased and the already assigned).
        ids.sort_unstable();
        let mut assigned = 0;
        for chunk in ids.chunks(ASSIGN_BATCH as usize) {
            let select = unassigned_page(programme_id, c, &ladder, None, now, Some(chunk));
            let statement = db.get_database_backend().build(&select);
            let page: Vec<Uuid> = db
                .query_all(statement)
                .await?
                .iter()
                .map(|row| row.try_get_by_index::<Uuid>(0))
                .collect::<Result<_, _>>()?;
            if page.is_empty() {
                continue;
            }
            let txn = db.begin().await?;
            assigned += record(&txn, programme_id, c, &page, now).await?;
            txn.commit().await?;
        }
        return Ok(assigned);
    }
    let mut after: Option<Uuid> = None;
    let mut assigned = 0;
    loop {
        let select = unassigned_page(programme_id, c, &ladder, after, now, None);
        let statement = db.get_database_backend().build(&select);
        let ids: Vec<Uuid> = db
            .query_all(statement)
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<Uuid>(0))
            .collect::<Result<_, _>>()?;
        let Some(last) = ids.last().copied() else {
            return Ok(assigned);
        };
        let txn = db.begin().await?;
        assigned += record(&txn, programme_id, c, &ids, now).await?;
        txn.commit().await?;
        if (ids.len() as u64) < ASSIGN_BATCH {
            return Ok(assigned);
        }
        after = Some(last);
    }
}

/// The members of a computed segment (`at_risk`: P(alive) in Rust; `rfm`: its own
/// query), in one go; none for the segments the page select evaluates itself.
async fn computed_members(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    c: &Campaign,
    now: DateTime<Utc>,
) -> AppResult<Option<Vec<Uuid>>> {
    match &c.definition.segment {
        Segment::AtRisk { p_alive_below } => {
            let below = rust_decimal::prelude::ToPrimitive::to_f64(p_alive_below).unwrap_or(0.0);
            // No model (none fitted since): nobody is known to be at risk.
            Ok(Some(
                crate::analytics::at_risk_member_ids(db, programme_id, below, now.date_naive())
                    .await?
                    .unwrap_or_default(),
            ))
        }
        Segment::Rfm { segments } => {
            let segments: Vec<coalition_domain::classify::RfmSegment> = segments
                .iter()
                .filter_map(|s| coalition_domain::classify::RfmSegment::parse(s))
                .collect();
            let minor = coalition_domain::Currency::parse(&c.currency)
                .map(|c| c.minor_units())
                .unwrap_or(2);
            Ok(Some(
                crate::classics::rfm_member_ids(
                    db,
                    programme_id,
                    minor,
                    now.date_naive(),
                    &segments,
                )
                .await?,
            ))
        }
        _ => Ok(None),
    }
}

/// Inserts the page's assignments; rows another process wrote first are left alone, and
/// reminders go only to the members this insert assigned.
async fn record(
    txn: &impl ConnectionTrait,
    programme_id: Uuid,
    c: &Campaign,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> AppResult<u64> {
    let rows = ids.iter().map(|member_id| campaign_member::ActiveModel {
        campaign_id: Set(c.id),
        member_id: Set(*member_id),
        programme_id: Set(programme_id),
        group: Set(group_of(c.id, *member_id, c.holdout_basis_points as u32)
            .as_str()
            .to_owned()),
        assigned_at: Set(now),
    });
    let mut insert = Query::insert();
    insert
        .into_table(campaign_member::Entity)
        .columns([
            campaign_member::Column::CampaignId,
            campaign_member::Column::MemberId,
            campaign_member::Column::ProgrammeId,
            campaign_member::Column::Group,
            campaign_member::Column::AssignedAt,
        ])
        .on_conflict(
            OnConflict::columns([
                campaign_member::Column::CampaignId,
                campaign_member::Column::MemberId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .returning(Query::returning().columns([
            campaign_member::Column::MemberId,
            campaign_member::Column::Group,
        ]));
    for row in rows {
        let values = [
            row.campaign_id.into_value(),
            row.member_id.into_value(),
            row.programme_id.into_value(),
            row.group.into_value(),
            row.assigned_at.into_value(),
        ];
        insert.values_panic(values.into_iter().flatten().map(Into::into));
    }
    let statement = txn.get_database_backend().build(&insert);
    let written = txn.query_all(statement).await?;
    let mut treated = Vec::new();
    for row in &written {
        let member_id: Uuid = row.try_get_by_index(0)?;
        let group: String = row.try_get_by_index(1)?;
        if group == Group::Treatment.as_str() {
            treated.push(member_id);
        }
    }
    if c.definition.reminder && !treated.is_empty() {
        remind(txn, programme_id, c, &treated, now).await?;
    }
    Ok(written.len() as u64)
}

/// One `campaign.reminder` per member, in one INSERT.
async fn remind(
    txn: &impl ConnectionTrait,
    programme_id: Uuid,
    c: &Campaign,
    member_ids: &[Uuid],
    now: DateTime<Utc>,
) -> AppResult<()> {
    let reward = &c.definition.reward;
    let what = match RewardKind::parse(&reward.kind) {
        Some(RewardKind::Multiplier) => format!("×{} points", reward.value),
        _ => format!("{} bonus points", reward.value),
    };
    let message = format!(
        "We miss you: {what} on your purchases until {}",
        c.ends_at.format("%Y-%m-%d")
    );
    let events = member_ids
        .iter()
        .map(|member_id| {
            let payload = json!({
                "campaign_id": c.id,
                "member_id": member_id,
                "message": message,
                "reward": {"kind": reward.kind, "value": reward.value.to_string(),
                           "partner_ids": reward.partner_ids},
                "ends_at": c.ends_at,
            });
            Ok(outbox_event::ActiveModel {
                id: Set(Uuid::now_v7()),
                programme_id: Set(programme_id),
                event_type: Set(outbox::events::CAMPAIGN_REMINDER.to_owned()),
                payload: Set(serde_json::to_string(&payload)
                    .map_err(|e| AppError::Internal(e.to_string()))?),
                created_at: Set(now),
                delivered_at: Set(None),
            })
        })
        .collect::<AppResult<Vec<_>>>()?;
    outbox_event::Entity::insert_many(events)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// The next page of the segment's members (not erased, not assigned yet), by id.
fn unassigned_page(
    programme_id: Uuid,
    c: &Campaign,
    ladder: &Ladder,
    after: Option<Uuid>,
    now: DateTime<Utc>,
    computed: Option<&[Uuid]>,
) -> SelectStatement {
    let in_segment = match computed {
        Some(ids) => Cond::all()
            .add(Expr::col((member::Entity, member::Column::Id)).is_in(ids.iter().copied())),
        None => in_segment(programme_id, &c.definition.segment, ladder, now),
    };
    let m = |col: member::Column| Expr::col((member::Entity, col));
    let mut select = Query::select();
    select
        .column((member::Entity, member::Column::Id))
        .from(member::Entity)
        .and_where(m(member::Column::ProgrammeId).eq(programme_id))
        .and_where(m(member::Column::ErasedAt).is_null())
        .and_where(
            Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from(campaign_member::Entity)
                    .and_where(
                        Expr::col((campaign_member::Entity, campaign_member::Column::CampaignId))
                            .eq(c.id),
                    )
                    .and_where(
                        Expr::col((campaign_member::Entity, campaign_member::Column::MemberId))
                            .equals((member::Entity, member::Column::Id)),
                    )
                    .to_owned(),
            )
            .not(),
        )
        .cond_where(in_segment)
        .order_by((member::Entity, member::Column::Id), sea_orm::Order::Asc)
        .limit(ASSIGN_BATCH);
    if let Some(after) = after {
        select.and_where(m(member::Column::Id).gt(after));
    }
    select
}

/// The member's days with purchases (after `after`, when given): probes of
/// `tier_spend_days`' primary key (member_id, day), not a scan of purchases.
fn spend_days_of_member(after: Option<chrono::NaiveDate>) -> SelectStatement {
    let mut q = Query::select();
    q.expr(Expr::val(1)).from(tier_spend_day::Entity).and_where(
        Expr::col((tier_spend_day::Entity, tier_spend_day::Column::MemberId))
            .equals((member::Entity, member::Column::Id)),
    );
    if let Some(after) = after {
        q.and_where(Expr::col((tier_spend_day::Entity, tier_spend_day::Column::Day)).gt(after));
    }
    q
}

/// Accounts that bought at `partner` (through the index on (partner_id, external_ref)).
fn buyers(programme_id: Uuid, partner: Uuid) -> SelectStatement {
    let p = |col: purchase::Column| Expr::col((purchase::Entity, col));
    let mut q = Query::select();
    q.column((purchase::Entity, purchase::Column::AccountId))
        .from(purchase::Entity)
        .and_where(p(purchase::Column::PartnerId).eq(partner))
        .and_where(p(purchase::Column::ProgrammeId).eq(programme_id));
    q
}

fn in_segment(programme_id: Uuid, segment: &Segment, ladder: &Ladder, now: DateTime<Utc>) -> Cond {
    let m = |col: member::Column| Expr::col((member::Entity, col));
    let account = || m(member::Column::AccountId);
    match segment {
        Segment::Lapsed { days } => {
            let last_quiet_day = (now - Duration::days(*days)).date_naive();
            Cond::all()
                .add(Expr::exists(spend_days_of_member(None)))
                .add(Expr::exists(spend_days_of_member(Some(last_quiet_day))).not())
        }
        Segment::CrossSell { buys_at, never_at } => Cond::all()
            .add(account().in_subquery(buyers(programme_id, *buys_at)))
            .add(account().not_in_subquery(buyers(programme_id, *never_at))),
        Segment::PartnerMembers { partner_id } => Cond::all().add(
            m(member::Column::Id).in_subquery(
                Query::select()
                    .column(member_partner::Column::MemberId)
                    .from(member_partner::Entity)
                    .and_where(Expr::col(member_partner::Column::PartnerId).eq(*partner_id))
                    .to_owned(),
            ),
        ),
        Segment::Members { member_ids } => {
            Cond::all().add(m(member::Column::Id).is_in(member_ids.iter().copied()))
        }
        Segment::SpendBand {
            window_days,
            min_spend,
            max_spend,
        } => {
            let first_day = (now - Duration::days(*window_days - 1)).date_naive();
            let total = || Expr::expr(Expr::col(tier_spend_day::Column::Amount).sum());
            let mut having = Cond::all().add(total().gte(*min_spend));
            if let Some(max) = max_spend {
                having = having.add(total().lte(*max));
            }
            Cond::all().add(
                m(member::Column::Id).in_subquery(
                    Query::select()
                        .column(tier_spend_day::Column::MemberId)
                        .from(tier_spend_day::Entity)
                        .and_where(Expr::col(tier_spend_day::Column::ProgrammeId).eq(programme_id))
                        .and_where(Expr::col(tier_spend_day::Column::Day).gte(first_day))
                        .group_by_col(tier_spend_day::Column::MemberId)
                        .cond_having(having)
                        .to_owned(),
                ),
            )
        }
        Segment::Tier { tier_id } => effective_tier_is(*tier_id, ladder, now),
        // Computed in Rust or by their own query: `assign` names their members.
        Segment::AtRisk { .. } | Segment::Rfm { .. } => Cond::all().add(Expr::val(1).eq(0)),
    }
}

/// The member's effective tier is `tier_id`, as `tiers::effective` decides it: a live
/// floor ranked above the qualified tier, otherwise the qualified tier (no stored tier,
/// or one no longer on the ladder, is the entry tier). Written with the ladder's ids,
/// so the database needs no join.
fn effective_tier_is(tier_id: Uuid, ladder: &Ladder, now: DateTime<Utc>) -> Cond {
    let m = |col: member::Column| Expr::col((member::Entity, col));
    let Some(target) = ladder.get(tier_id) else {
        return Cond::all().add(Expr::val(1).eq(0));
    };
    let rank = target.terms.rank;
    let ids = |keep: &dyn Fn(i32) -> bool| -> Vec<Uuid> {
        ladder
            .tiers()
            .iter()
            .filter(|t| keep(t.terms.rank))
            .map(|t| t.terms.id)
            .collect()
    };
    let all = ids(&|_| true);
    let entry = ladder.entry().map(|t| t.terms.id);
    let qualified_in = |set: Vec<Uuid>| {
        let mut c = Cond::any().add(
            Cond::all()
                .add(m(member::Column::TierId).is_not_null())
                .add(m(member::Column::TierId).is_in(set.clone())),
        );
        if entry.is_some_and(|e| set.contains(&e)) {
            c = c.add(
                Cond::any()
                    .add(m(member::Column::TierId).is_null())
                    .add(m(member::Column::TierId).is_not_in(all.clone())),
            );
        }
        c
    };
    let floor_in = |set: Vec<Uuid>| {
        Cond::all()
            .add(m(member::Column::FloorTierId).is_not_null())
            .add(m(member::Column::FloorEndsAt).is_not_null())
            .add(m(member::Column::FloorTierId).is_in(set))
            .add(m(member::Column::FloorEndsAt).gt(now))
    };
    Cond::any()
        .add(
            Cond::all()
                .add(floor_in(vec![tier_id]))
                .add(qualified_in(ids(&|r| r >= rank)).not()),
        )
        .add(
            Cond::all()
                .add(qualified_in(vec![tier_id]))
                .add(floor_in(ids(&|r| r > rank)).not()),
        )
}

/// The `campaigns` job: assigns the members of every running campaign's segment who are
/// not assigned yet — campaigns whose start has come, and members who entered a dynamic
/// segment since the last round.
#[derive(Debug, Serialize)]
pub struct AssignReport {
    pub campaigns: u64,
    pub assigned: u64,
}

pub async fn assign_running(app: &App, now: DateTime<Utc>) -> AppResult<AssignReport> {
    let rows = campaign::Entity::find()
        .filter(campaign::Column::StartsAt.lte(now))
        .filter(campaign::Column::EndsAt.gt(now))
        .order_by_asc(campaign::Column::Id)
        .all(&app.db)
        .await?;
    let mut report = AssignReport {
        campaigns: 0,
        assigned: 0,
    };
    for row in rows {
        let programme_id = row.programme_id;
        let c = stored(row, "")?;
        report.campaigns += 1;
        report.assigned += assign(&app.db, programme_id, &c, now).await?;
    }
    Ok(report)
}

/// The kinds a segment may name, as the API documents them.
pub const SEGMENT_KINDS: [&str; 8] = [
    "lapsed",
    "tier",
    "cross_sell",
    "spend_band",
    "partner_members",
    "members",
    "at_risk",
    "rfm",
];

impl Segment {
    /// Its fields as the API answers them.
    pub fn fields(&self, currency: &str) -> SegmentFields {
        let minor = coalition_domain::Currency::parse(currency)
            .map(|c| c.minor_units())
            .unwrap_or(2);
        let money = |m: i64| {
            (
                coalition_domain::tiers::from_minor(m, minor).to_string(),
                currency.to_owned(),
            )
        };
        let mut f = SegmentFields {
            kind: self.kind().into(),
            ..Default::default()
        };
        match self {
            Segment::Lapsed { days } => f.days = Some(*days),
            Segment::Tier { tier_id } => f.tier_id = Some(*tier_id),
            Segment::CrossSell { buys_at, never_at } => {
                (f.buys_at, f.never_at) = (Some(*buys_at), Some(*never_at))
            }
            Segment::SpendBand {
                window_days,
                min_spend,
                max_spend,
            } => {
                f.window_days = Some(*window_days);
                f.min_spend = Some(money(*min_spend));
                f.max_spend = max_spend.map(money);
            }
            Segment::PartnerMembers { partner_id } => f.partner_id = Some(*partner_id),
            Segment::Members { member_ids } => f.member_ids = Some(member_ids.clone()),
            Segment::AtRisk { p_alive_below } => {
                f.p_alive_below = rust_decimal::prelude::ToPrimitive::to_f64(p_alive_below)
            }
            Segment::Rfm { segments } => f.segments = Some(segments.clone()),
        }
        f
    }
}

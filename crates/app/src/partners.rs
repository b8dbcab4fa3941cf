//! Partners of a programme: merchants that earn and redeem, and co-brand banks.

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::pagination::{Page, PageRequest};
use crate::terms;
use crate::{App, Caller, Scope};
use coalition_domain::money::parse_rate;
use coalition_store::entities::{partner, partner_merchant_id, partner_price};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartnerKind {
    Merchant,
    Bank,
}

impl PartnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerKind::Merchant => "merchant",
            PartnerKind::Bank => "bank",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "merchant" => Some(PartnerKind::Merchant),
            "bank" => Some(PartnerKind::Bank),
            _ => None,
        }
    }
}

pub struct NewPartner {
    pub name: String,
    pub kind: String,
    pub category: String,
    pub earn_points_per_unit: String,
    pub issue_price_per_point: String,
    pub redemption_value_per_point: String,
}

#[derive(Debug, Clone)]
pub struct Partner {
    pub id: Uuid,
    pub name: String,
    pub kind: PartnerKind,
    pub category: String,
    pub earn_points_per_unit: Decimal,
    pub issue_price_per_point: Decimal,
    pub redemption_value_per_point: Decimal,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The card-network merchant ids (MIDs) the bank sees for this partner: a bank card
    /// transaction at one of them earns here (`bank`). Unique per programme.
    pub merchant_ids: Vec<String>,
}

impl TryFrom<partner::Model> for Partner {
    type Error = AppError;
    fn try_from(row: partner::Model) -> AppResult<Self> {
        let rate = |text: &str| {
            text.parse::<Decimal>()
                .map_err(|_| AppError::Internal(format!("partner {} has a corrupt rate", row.id)))
        };
        Ok(Partner {
            id: row.id,
            kind: PartnerKind::parse(&row.kind)
                .ok_or_else(|| AppError::Internal("corrupt partner kind".into()))?,
            earn_points_per_unit: rate(&row.earn_points_per_unit)?,
            issue_price_per_point: rate(&row.issue_price_per_point)?,
            redemption_value_per_point: rate(&row.redemption_value_per_point)?,
            merchant_ids: serde_json::from_str(&row.merchant_ids).map_err(|_| {
                AppError::Internal(format!("partner {} has corrupt merchant ids", row.id))
            })?,
            name: row.name,
            category: row.category,
            created_at: row.created_at,
        })
    }
}

pub async fn create(app: &App, caller: &Caller, input: NewPartner) -> AppResult<Partner> {
    caller.require(&[Scope::Admin])?;
    let mut v = Validator::default();
    let name = text_field(&mut v, "name", &input.name, 200);
    let category = text_field(&mut v, "category", &input.category, 100);
    let kind = PartnerKind::parse(&input.kind);
    v.require("kind", kind.is_some(), "must be 'merchant' or 'bank'");
    let earn = v.check(
        "earn_points_per_unit",
        parse_rate(&input.earn_points_per_unit),
    );
    let issue = v.check(
        "issue_price_per_point",
        parse_rate(&input.issue_price_per_point),
    );
    let redeem = v.check(
        "redemption_value_per_point",
        parse_rate(&input.redemption_value_per_point),
    );
    v.finish()?;
    let partner = Partner {
        id: Uuid::now_v7(),
        name,
        kind: kind.expect("validated"),
        category,
        earn_points_per_unit: earn.expect("validated"),
        issue_price_per_point: issue.expect("validated"),
        redemption_value_per_point: redeem.expect("validated"),
        created_at: chrono::Utc::now(),
        merchant_ids: vec![],
    };
    let txn = app.db.begin().await?;
    partner::Entity::insert(partner::ActiveModel {
        id: Set(partner.id),
        programme_id: Set(caller.programme_id),
        name: Set(partner.name.clone()),
        kind: Set(partner.kind.as_str().to_owned()),
        category: Set(partner.category.clone()),
        earn_points_per_unit: Set(partner.earn_points_per_unit.to_string()),
        issue_price_per_point: Set(partner.issue_price_per_point.to_string()),
        redemption_value_per_point: Set(partner.redemption_value_per_point.to_string()),
        created_at: Set(partner.created_at),
        merchant_ids: Set("[]".into()),
    })
    .exec_without_returning(&txn)
    .await?;
    record_prices(&txn, caller.programme_id, &partner, partner.created_at).await?;
    let version = terms::bump(&txn, caller.programme_id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    Ok(partner)
}

/// A change to a partner's name, category, rates or prices; absent fields stay.
#[derive(Debug, Default)]
pub struct PartnerChange {
    pub name: Option<String>,
    pub category: Option<String>,
    pub earn_points_per_unit: Option<String>,
    pub issue_price_per_point: Option<String>,
    pub redemption_value_per_point: Option<String>,
    /// Replaces the partner's merchant ids (an empty list removes them all).
    pub merchant_ids: Option<Vec<String>>,
}

/// The most merchant ids one partner may have, and the longest one.
pub const MAX_MERCHANT_IDS: usize = 100;
pub const MAX_MERCHANT_ID_CHARS: usize = 64;

/// Checks a partner's new merchant ids: each one non-empty text, none twice.
fn check_merchant_ids(v: &mut Validator, ids: Vec<String>) -> Vec<String> {
    v.require(
        "merchant_ids",
        ids.len() <= MAX_MERCHANT_IDS,
        &format!("must have at most {MAX_MERCHANT_IDS} entries"),
    );
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids.iter().take(MAX_MERCHANT_IDS) {
        let id = text_field(v, "merchant_ids", id, MAX_MERCHANT_ID_CHARS);
        if out.contains(&id) {
            v.require("merchant_ids", false, "must not name a merchant id twice");
        } else if !id.is_empty() {
            out.push(id);
        }
    }
    out
}

/// Changes a partner's terms. Every server process prices purchases with the new terms
/// within a second (`terms`); a purchase already being priced finishes on the old ones.
pub async fn update(
    app: &App,
    caller: &Caller,
    id: Uuid,
    change: PartnerChange,
) -> AppResult<Partner> {
    caller.require(&[Scope::Admin])?;
    let mut v = Validator::default();
    let name = change.name.map(|n| text_field(&mut v, "name", &n, 200));
    let category = change
        .category
        .map(|c| text_field(&mut v, "category", &c, 100));
    let mut rate = |field: &str, text: Option<String>| {
        text.and_then(|t| {
            v.check(field, parse_rate(&t))
                .map(|r: Decimal| r.to_string())
        })
    };
    let earn = rate("earn_points_per_unit", change.earn_points_per_unit);
    let issue = rate("issue_price_per_point", change.issue_price_per_point);
    let redeem = rate(
        "redemption_value_per_point",
        change.redemption_value_per_point,
    );
    let merchant_ids = change
        .merchant_ids
        .map(|ids| check_merchant_ids(&mut v, ids));
    v.finish()?;
    let txn = app.db.begin().await?;
    let current = partner::Entity::find_by_id(id)
        .filter(partner::Column::ProgrammeId.eq(caller.programme_id))
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("partner"))?;
    let mut row: partner::ActiveModel = current.clone().into();
    if let Some(ids) = &merchant_ids {
        set_merchant_ids(&txn, caller.programme_id, id, ids).await?;
        let text = serde_json::to_string(ids).map_err(|e| AppError::Internal(e.to_string()))?;
        if text != current.merchant_ids {
            row.set(partner::Column::MerchantIds, text.into());
        }
    }
    let changes = [
        (partner::Column::Name, name),
        (partner::Column::Category, category),
        (partner::Column::EarnPointsPerUnit, earn),
        (partner::Column::IssuePricePerPoint, issue),
        (partner::Column::RedemptionValuePerPoint, redeem),
    ];
    for (column, value) in changes {
        if let Some(value) = value {
            row.set(column, value.into());
        }
    }
    if !row.is_changed() {
        txn.commit().await?;
        return current.try_into();
    }
    let updated: Partner = row.update(&txn).await?.try_into()?;
    if updated.issue_price_per_point.to_string() != current.issue_price_per_point
        || updated.redemption_value_per_point.to_string() != current.redemption_value_per_point
    {
        record_prices(&txn, caller.programme_id, &updated, chrono::Utc::now()).await?;
    }
    let version = terms::bump(&txn, caller.programme_id).await?;
    txn.commit().await?;
    app.terms.changed(caller.programme_id, version);
    Ok(updated)
}

/// Replaces the partner's rows in `partner_merchant_ids`, whose primary key refuses a
/// MID another partner of the programme has (`409 merchant_id_taken`).
async fn set_merchant_ids(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    partner_id: Uuid,
    ids: &[String],
) -> AppResult<()> {
    partner_merchant_id::Entity::delete_many()
        .filter(partner_merchant_id::Column::ProgrammeId.eq(programme_id))
        .filter(partner_merchant_id::Column::PartnerId.eq(partner_id))
        .exec(db)
        .await?;
    for id in ids {
        let taken = partner_merchant_id::Entity::find_by_id((programme_id, id.clone()))
            .one(db)
            .await?;
        if taken.is_some() {
            return Err(AppError::MerchantIdTaken(id.clone()));
        }
        partner_merchant_id::Entity::insert(partner_merchant_id::ActiveModel {
            programme_id: Set(programme_id),
            merchant_id: Set(id.clone()),
            partner_id: Set(partner_id),
        })
        .exec_without_returning(db)
        .await
        .map_err(|e| {
            if coalition_store::is_unique_violation(&e) {
                AppError::MerchantIdTaken(id.clone())
            } else {
                e.into()
            }
        })?;
    }
    Ok(())
}

/// Settlement prices points at the prices in force when they were posted: every change
/// of a partner's prices is kept, valid from the moment it is made. Whatever creates a
/// partner or changes its prices must call this in the same transaction: a posting with
/// no price in force fails the settlement.
pub async fn record_prices(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    partner: &Partner,
    valid_from: chrono::DateTime<chrono::Utc>,
) -> AppResult<()> {
    partner_price::Entity::insert(partner_price::ActiveModel {
        id: Set(Uuid::now_v7()),
        programme_id: Set(programme_id),
        partner_id: Set(partner.id),
        valid_from: Set(valid_from),
        issue_price_per_point: Set(partner.issue_price_per_point.to_string()),
        redemption_value_per_point: Set(partner.redemption_value_per_point.to_string()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A partner of the programme; another programme's partner is simply not found.
pub async fn find(db: &impl ConnectionTrait, programme_id: Uuid, id: Uuid) -> AppResult<Partner> {
    partner::Entity::find_by_id(id)
        .filter(partner::Column::ProgrammeId.eq(programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("partner"))?
        .try_into()
}

/// Operators see every partner; a partner sees only itself.
pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<Partner> {
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    if caller.scope != Scope::Admin && caller.partner_id != Some(id) {
        return Err(AppError::NotFound("partner"));
    }
    find(&app.db, caller.programme_id, id).await
}

pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<Partner>> {
    caller.require(&[Scope::Admin])?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query =
        partner::Entity::find().filter(partner::Column::ProgrammeId.eq(caller.programme_id));
    if let Some(after) = after {
        query = query.filter(partner::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(partner::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let rows = rows
        .into_iter()
        .map(Partner::try_from)
        .collect::<AppResult<Vec<_>>>()?;
    Ok(page.page(rows, |p| p.id.to_string(), |p| p))
}

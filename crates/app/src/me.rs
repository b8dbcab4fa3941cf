//! One member's own view of the coalition: what the portal pages and `/v1/me` show.
//! The member is always the principal's — every function here reads or changes only
//! `principal.member_id`, in `principal.programme_id`; ids of anything else (a card, a
//! campaign) are looked up *within* that member's things, so another member's id is
//! "not found".
//!
//! The use cases reuse the operator's (history, tier standing, erasure) through
//! [`MemberPrincipal::on_own_behalf`], a caller confined to this module.

use crate::balances::{self, BalanceView, HistoryItem};
use crate::error::{AppError, AppResult};
use crate::pagination::{Page, PageRequest};
use crate::partners::Partner;
use crate::tiers::Standing;
use crate::{App, Caller, Scope};
use chrono::{DateTime, Utc};
use coalition_store::entities::{bank_card, campaign, campaign_member, card, member, partner};
use rust_decimal::Decimal;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::HashMap;
use uuid::Uuid;

/// The member a portal session or a member access token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPrincipal {
    pub programme_id: Uuid,
    pub member_id: Uuid,
}

impl MemberPrincipal {
    /// The operator's caller, used only to run the operator's use cases on this member
    /// herself (never with another member's id): they hold the rules the member's view
    /// shares with the operator's (history lines, tier standing, erasure).
    fn on_own_behalf(&self) -> Caller {
        Caller {
            programme_id: self.programme_id,
            client_id: format!("member:{}", self.member_id),
            scope: Scope::Admin,
            partner_id: None,
        }
    }
}

/// The member's row, if she is in the programme and not erased: a session or token of an
/// erased member opens nothing.
pub async fn current(app: &App, principal: &MemberPrincipal) -> AppResult<member::Model> {
    member::Entity::find_by_id(principal.member_id)
        .filter(member::Column::ProgrammeId.eq(principal.programme_id))
        .filter(member::Column::ErasedAt.is_null())
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("member"))
}

/// Contact data and consents, as the member sees them (all of them: they are hers).
#[derive(Debug, Clone)]
pub struct Profile {
    pub member_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent_marketing: bool,
    pub consent_data_sharing: bool,
    pub member_since: DateTime<Utc>,
}

impl From<member::Model> for Profile {
    fn from(row: member::Model) -> Self {
        Profile {
            member_id: row.id,
            name: row.name,
            email: row.email,
            phone: row.phone,
            consent_marketing: row.consent_marketing,
            consent_data_sharing: row.consent_data_sharing,
            member_since: row.created_at,
        }
    }
}

pub async fn profile(app: &App, principal: &MemberPrincipal) -> AppResult<Profile> {
    current(app, principal).await.map(Profile::from)
}

/// The home page: who, how many points and what they are worth, expiring soon, tier.
#[derive(Debug, Clone)]
pub struct Overview {
    pub profile: Profile,
    pub balance: BalanceView,
    pub tier: Standing,
}

pub async fn overview(app: &App, principal: &MemberPrincipal) -> AppResult<Overview> {
    let row = current(app, principal).await?;
    let balance = balances::account_balance(app, principal.programme_id, row.account_id).await?;
    let tier = standing_of(app, principal, &row).await?;
    Ok(Overview {
        profile: Profile::from(row),
        balance,
        tier,
    })
}

pub async fn balance(app: &App, principal: &MemberPrincipal) -> AppResult<BalanceView> {
    let row = current(app, principal).await?;
    balances::account_balance(app, principal.programme_id, row.account_id).await
}

/// The tier in effect, the spend of the rolling window and what the next tier needs.
pub async fn tier(app: &App, principal: &MemberPrincipal) -> AppResult<Standing> {
    let row = current(app, principal).await?;
    standing_of(app, principal, &row).await
}

async fn standing_of(
    app: &App,
    principal: &MemberPrincipal,
    row: &member::Model,
) -> AppResult<Standing> {
    let programme = crate::programmes::load(app, principal.programme_id).await?;
    let terms = crate::terms::of_programme(app, &app.db, principal.programme_id).await?;
    crate::tiers::standing(&app.db, &terms.ladder, &programme, row, Utc::now()).await
}

/// Every movement of her points, newest first, each award with its breakdown; a refund
/// line carries the purchase it undoes (`purchase_id`).
pub async fn history(
    app: &App,
    principal: &MemberPrincipal,
    page: PageRequest,
) -> AppResult<Page<HistoryItem>> {
    current(app, principal).await?;
    balances::history(app, &principal.on_own_behalf(), principal.member_id, page).await
}

/// Where to earn and where to spend: every partner of the programme, with its rates.
pub async fn partners(app: &App, principal: &MemberPrincipal) -> AppResult<Vec<Partner>> {
    current(app, principal).await?;
    let rows = partner::Entity::find()
        .filter(partner::Column::ProgrammeId.eq(principal.programme_id))
        .order_by_asc(partner::Column::Name)
        .all(&app.db)
        .await?;
    rows.into_iter().map(Partner::try_from).collect()
}

/// Partner names by id, for history lines and cards.
pub async fn partner_names(
    app: &App,
    principal: &MemberPrincipal,
) -> AppResult<HashMap<Uuid, String>> {
    Ok(partners(app, principal)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect())
}

/// A campaign the member is treated in: what it gives, where, until when.
#[derive(Debug, Clone)]
pub struct Offer {
    pub campaign_id: Uuid,
    pub name: String,
    /// `multiplier` or `bonus`.
    pub reward_kind: String,
    pub reward_value: Decimal,
    /// The partners it applies at; none: every partner.
    pub partner_ids: Option<Vec<Uuid>>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// The campaigns not yet ended whose treatment group holds the member. Control-group
/// assignments are never read here: a member must not learn she was held out.
pub async fn offers(app: &App, principal: &MemberPrincipal) -> AppResult<Vec<Offer>> {
    current(app, principal).await?;
    let treated: Vec<Uuid> = campaign_member::Entity::find()
        .filter(campaign_member::Column::MemberId.eq(principal.member_id))
        .filter(campaign_member::Column::ProgrammeId.eq(principal.programme_id))
        .filter(campaign_member::Column::Group.eq("treatment"))
        .all(&app.db)
        .await?
        .into_iter()
        .map(|m| m.campaign_id)
        .collect();
    if treated.is_empty() {
        return Ok(vec![]);
    }
    let rows = campaign::Entity::find()
        .filter(campaign::Column::Id.is_in(treated))
        .filter(campaign::Column::ProgrammeId.eq(principal.programme_id))
        .filter(campaign::Column::EndsAt.gt(Utc::now()))
        .order_by_asc(campaign::Column::EndsAt)
        .all(&app.db)
        .await?;
    rows.into_iter().map(offer_of).collect()
}

fn offer_of(row: campaign::Model) -> AppResult<Offer> {
    let definition: crate::campaigns::Definition = serde_json::from_str(&row.definition)
        .map_err(|_| AppError::Internal(format!("campaign {} has a corrupt definition", row.id)))?;
    Ok(Offer {
        campaign_id: row.id,
        name: row.name,
        reward_kind: definition.reward.kind,
        reward_value: definition.reward.value,
        partner_ids: definition.reward.partner_ids,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
    })
}

/// A card of the member's, as she sees it: the last four digits only, whatever kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCard {
    pub id: Uuid,
    /// `loyalty` (the programme's card) or `co_branded` (a bank's payment card).
    pub kind: &'static str,
    pub last4: String,
    /// `active`, `blocked`, `replaced` or `retired`.
    pub status: String,
    /// The partner that issued it (the bank, for a co-branded card).
    pub issuer_partner_id: Option<Uuid>,
    /// `YYYY-MM`, co-branded cards only.
    pub expiry_month: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub const LOYALTY: &str = "loyalty";
pub const CO_BRANDED: &str = "co_branded";

fn last4(number: &str) -> String {
    number[number.len().saturating_sub(4)..].to_owned()
}

fn loyalty_card(row: card::Model) -> MemberCard {
    MemberCard {
        id: row.id,
        kind: LOYALTY,
        last4: last4(&row.number),
        status: row.status,
        issuer_partner_id: row.issued_by_partner_id,
        expiry_month: None,
        created_at: row.created_at,
    }
}

fn co_branded_card(row: bank_card::Model) -> MemberCard {
    MemberCard {
        id: row.id,
        kind: CO_BRANDED,
        last4: row.last4,
        status: row.status,
        issuer_partner_id: Some(row.bank_partner_id),
        expiry_month: Some(row.expiry_month),
        created_at: row.created_at,
    }
}

/// Her loyalty cards, then her co-branded cards, oldest first.
pub async fn cards(app: &App, principal: &MemberPrincipal) -> AppResult<Vec<MemberCard>> {
    current(app, principal).await?;
    let loyalty = card::Entity::find()
        .filter(card::Column::ProgrammeId.eq(principal.programme_id))
        .filter(card::Column::MemberId.eq(principal.member_id))
        .order_by_asc(card::Column::CreatedAt)
        .order_by_asc(card::Column::Id)
        .all(&app.db)
        .await?;
    let co_branded = bank_card::Entity::find()
        .filter(bank_card::Column::ProgrammeId.eq(principal.programme_id))
        .filter(bank_card::Column::MemberId.eq(principal.member_id))
        .order_by_asc(bank_card::Column::CreatedAt)
        .order_by_asc(bank_card::Column::Id)
        .all(&app.db)
        .await?;
    Ok(loyalty
        .into_iter()
        .map(loyalty_card)
        .chain(co_branded.into_iter().map(co_branded_card))
        .collect())
}

/// Blocks one of her cards (lost or stolen): from active to blocked, as the operator's
/// and the bank's block do; a blocked card stays blocked, a replaced or retired one is
/// refused as there. A card that is not hers is "not found".
pub async fn block_card(
    app: &App,
    principal: &MemberPrincipal,
    card_id: Uuid,
) -> AppResult<MemberCard> {
    current(app, principal).await?;
    let loyalty = card::Entity::find_by_id(card_id)
        .filter(card::Column::ProgrammeId.eq(principal.programme_id))
        .filter(card::Column::MemberId.eq(principal.member_id))
        .one(&app.db)
        .await?;
    if let Some(row) = loyalty {
        let blocked = crate::cards::block(app, &principal.on_own_behalf(), &row.number).await?;
        return Ok(loyalty_card(blocked));
    }
    let row = bank_card::Entity::find_by_id(card_id)
        .filter(bank_card::Column::ProgrammeId.eq(principal.programme_id))
        .filter(bank_card::Column::MemberId.eq(principal.member_id))
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("card"))?;
    block_co_branded(app, row).await.map(co_branded_card)
}

/// The bank's block (`bank::block_card`) without a bank caller: the same conditional
/// update from active, the same refusals.
async fn block_co_branded(app: &App, row: bank_card::Model) -> AppResult<bank_card::Model> {
    bank_card::Entity::update_many()
        .col_expr(bank_card::Column::Status, Expr::value(crate::bank::BLOCKED))
        .filter(bank_card::Column::Id.eq(row.id))
        .filter(bank_card::Column::Status.eq(crate::bank::ACTIVE))
        .exec(&app.db)
        .await?;
    let now = bank_card::Entity::find_by_id(row.id)
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("card"))?;
    match now.status.as_str() {
        crate::bank::REPLACED => Err(AppError::CardReplaced),
        crate::bank::RETIRED => Err(AppError::CardRetired),
        _ => Ok(now),
    }
}

/// Turns marketing e-mails on or off.
pub async fn set_marketing_consent(
    app: &App,
    principal: &MemberPrincipal,
    consent: bool,
) -> AppResult<Profile> {
    current(app, principal).await?;
    let change = crate::members::MemberChange {
        consent_marketing: Some(consent),
        ..Default::default()
    };
    crate::members::update(app, &principal.on_own_behalf(), principal.member_id, change).await?;
    profile(app, principal).await
}

/// "Erase my data": the operator's erasure (`members::erase`) — personal data goes, her
/// cards are retired, what is left of her points is forfeited; the ledger keeps its
/// numbers. Afterwards her sessions and tokens open nothing (`current`).
pub async fn erase(app: &App, principal: &MemberPrincipal) -> AppResult<()> {
    current(app, principal).await?;
    crate::members::erase(app, &principal.on_own_behalf(), principal.member_id).await
}

//! The bank: co-branded cards, the secrets that sign its events, and card-linked earning
//! from those events (authorization → pending, clearing → posted, reversal or lapse →
//! pending removed, refund → clawed back).
//!
//! What each event does is decided by the domain's state machine
//! (`coalition_domain::bank::apply`) from what was seen of its transaction before, so
//! events may come in any order and end in the same state. Here: who may call, the
//! transaction boundary, pricing, and writing what the state machine decided. Every
//! event is processed under its member account's lock, and recorded in `bank_events`
//! whose unique (programme, bank, event id) is the guard that a second delivery moves
//! nothing.

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::ledger::{self, AccountState, EntryContext};
use crate::outbox;
use crate::pagination::{Page, PageRequest};
use crate::partners::{Partner, PartnerKind};
use crate::programmes::{self, Programme};
use crate::terms::ProgrammeTerms;
use crate::{App, Caller, Scope};
use chrono::{DateTime, Datelike, Utc};
use coalition_domain::bank::{self as rules, CardState, Event, EventType, Seen};
use coalition_domain::earning::{
    price_purchase, BreakdownLine, MemberFacts, PurchaseOutcome, PurchaseTerms, Seller,
};
use coalition_domain::ledger::{purchase_entry, refund_entry};
use coalition_domain::money::Money;
use coalition_domain::refund::{clawback_within_balance, split_proportionally};
use coalition_domain::rules::Funder;
use coalition_domain::{AccountKind, AccountRef, Points};
use coalition_store::entities::{
    bank_card, bank_event, bank_signing_secret, bank_transaction, rule_award,
};
use coalition_store::is_unique_violation;
use rust_decimal::Decimal;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The bank partner behind a caller: only a `bank`-scope client of a `kind: "bank"`
/// partner may call the bank's routes (others: 403 `insufficient_scope`).
pub async fn bank_of(app: &App, caller: &Caller) -> AppResult<Partner> {
    caller.require(&[Scope::Bank])?;
    let id = caller
        .partner_id
        .ok_or_else(|| AppError::Forbidden("this client is not bound to a bank".into()))?;
    let bank = crate::terms::partner(app, &app.db, caller.programme_id, id).await?;
    if bank.kind != PartnerKind::Bank {
        return Err(AppError::Forbidden(
            "only a bank partner's client may call the bank's routes".into(),
        ));
    }
    Ok(bank)
}

// ---------------------------------------------------------------------------------------
// Cards

pub const ACTIVE: &str = "active";
pub const BLOCKED: &str = "blocked";
pub const REPLACED: &str = "replaced";
/// Its member was erased: the card does nothing, ever again (`card_retired`).
pub const RETIRED: &str = "retired";

/// A co-branded card as the bank describes it: its token, never its number.
pub struct NewBankCard {
    pub member_id: Uuid,
    pub card_token: String,
    pub bin: String,
    pub last4: String,
    pub expiry_month: String,
}

/// A replacement card: a new token, BIN, last four and expiry for the same member.
pub struct Replacement {
    pub card_token: String,
    pub bin: String,
    pub last4: String,
    pub expiry_month: String,
}

pub const MAX_TOKEN_CHARS: usize = 128;

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM`, month 01–12.
fn valid_month(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && digits(&text[..4])
        && digits(&text[5..])
        && (1..=12).contains(&text[5..].parse::<u32>().unwrap_or(0))
}

struct CardFields {
    card_token: String,
    bin: String,
    last4: String,
    expiry_month: String,
}

fn check_card(
    v: &mut Validator,
    card_token: &str,
    bin: &str,
    last4: &str,
    month: &str,
) -> CardFields {
    let card_token = text_field(v, "card_token", card_token, MAX_TOKEN_CHARS);
    v.require(
        "bin",
        digits(bin) && (6..=8).contains(&bin.len()),
        "must be 6 to 8 digits",
    );
    v.require(
        "last4",
        digits(last4) && last4.len() == 4,
        "must be 4 digits",
    );
    v.require("expiry_month", valid_month(month), "must be YYYY-MM");
    CardFields {
        card_token,
        bin: bin.to_owned(),
        last4: last4.to_owned(),
        expiry_month: month.to_owned(),
    }
}

fn token_taken(err: sea_orm::DbErr) -> AppError {
    if is_unique_violation(&err) {
        AppError::CardTokenTaken
    } else {
        err.into()
    }
}

/// Issues a co-branded card to a member the bank may see (one it enrolled or is
/// linked to; others are 404), on the member's points account like any other card.
pub async fn issue_card(
    app: &App,
    caller: &Caller,
    input: NewBankCard,
) -> AppResult<bank_card::Model> {
    let bank = bank_of(app, caller).await?;
    let mut v = Validator::default();
    let fields = check_card(
        &mut v,
        &input.card_token,
        &input.bin,
        &input.last4,
        &input.expiry_month,
    );
    v.finish()?;
    let txn = app.db.begin().await?;
    let member = crate::members::visible(&txn, caller, input.member_id).await?;
    // Under her account's lock: an erasure either committed before (the account is
    // closed) or waits, and then retires this card too.
    let account = ledger::lock_account(&txn, member.account_id).await?;
    if member.erased_at.is_some() || account.closed_at.is_some() {
        return Err(AppError::MemberErased);
    }
    let card = bank_card::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        bank_partner_id: bank.id,
        member_id: member.id,
        account_id: member.account_id,
        card_token: fields.card_token,
        bin: fields.bin,
        last4: fields.last4,
        expiry_month: fields.expiry_month,
        status: ACTIVE.into(),
        replaced_by_id: None,
        created_at: Utc::now(),
    };
    bank_card::Entity::insert(bank_card::ActiveModel::from(card.clone()))
        .exec_without_returning(&txn)
        .await
        .map_err(token_taken)?;
    txn.commit().await?;
    Ok(card)
}

/// One of this bank's cards; another bank's or programme's is not found.
async fn own_card(
    db: &impl ConnectionTrait,
    caller: &Caller,
    bank: &Partner,
    id: Uuid,
    lock: bool,
) -> AppResult<bank_card::Model> {
    let mut query = bank_card::Entity::find_by_id(id)
        .filter(bank_card::Column::ProgrammeId.eq(caller.programme_id))
        .filter(bank_card::Column::BankPartnerId.eq(bank.id));
    if lock {
        query = query.lock_exclusive();
    }
    query.one(db).await?.ok_or(AppError::NotFound("bank card"))
}

pub async fn get_card(app: &App, caller: &Caller, id: Uuid) -> AppResult<bank_card::Model> {
    let bank = bank_of(app, caller).await?;
    own_card(&app.db, caller, &bank, id, false).await
}

/// Blocks a card (blocking a blocked card changes nothing): it starts no new
/// transaction, but the follow-ups of those it began still count (a clearing follows
/// its authorization days later; see `coalition_domain::bank::card_admits`).
pub async fn block_card(app: &App, caller: &Caller, id: Uuid) -> AppResult<bank_card::Model> {
    let bank = bank_of(app, caller).await?;
    let card = own_card(&app.db, caller, &bank, id, false).await?;
    match card.status.as_str() {
        REPLACED => return Err(AppError::CardReplaced),
        RETIRED => return Err(AppError::CardRetired),
        BLOCKED => return Ok(card),
        _ => {}
    }
    bank_card::Entity::update_many()
        .col_expr(bank_card::Column::Status, Expr::value(BLOCKED))
        .filter(bank_card::Column::Id.eq(id))
        .filter(bank_card::Column::Status.eq(ACTIVE))
        .exec(&app.db)
        .await?;
    let card = own_card(&app.db, caller, &bank, id, false).await?;
    match card.status.as_str() {
        REPLACED => Err(AppError::CardReplaced),
        RETIRED => Err(AppError::CardRetired),
        _ => Ok(card),
    }
}

/// Replaces a card (lost, expired, compromised): a new card for the same member and
/// account; the old one becomes `replaced`. The points were never on the card.
pub async fn replace_card(
    app: &App,
    caller: &Caller,
    id: Uuid,
    input: Replacement,
) -> AppResult<bank_card::Model> {
    let bank = bank_of(app, caller).await?;
    let mut v = Validator::default();
    let fields = check_card(
        &mut v,
        &input.card_token,
        &input.bin,
        &input.last4,
        &input.expiry_month,
    );
    v.finish()?;
    let txn = app.db.begin().await?;
    let old = own_card(&txn, caller, &bank, id, true).await?;
    match old.status.as_str() {
        REPLACED => return Err(AppError::CardReplaced),
        RETIRED => return Err(AppError::CardRetired),
        _ => {}
    }
    let card = bank_card::Model {
        id: Uuid::now_v7(),
        card_token: fields.card_token,
        bin: fields.bin,
        last4: fields.last4,
        expiry_month: fields.expiry_month,
        status: ACTIVE.into(),
        replaced_by_id: None,
        created_at: Utc::now(),
        ..old.clone()
    };
    bank_card::Entity::insert(bank_card::ActiveModel::from(card.clone()))
        .exec_without_returning(&txn)
        .await
        .map_err(token_taken)?;
    bank_card::Entity::update_many()
        .col_expr(bank_card::Column::Status, Expr::value(REPLACED))
        .col_expr(bank_card::Column::ReplacedById, Expr::value(card.id))
        .filter(bank_card::Column::Id.eq(old.id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(card)
}

/// This bank's cards, oldest first; one member's when `member_id` is given.
pub async fn list_cards(
    app: &App,
    caller: &Caller,
    member_id: Option<Uuid>,
    page: PageRequest,
) -> AppResult<Page<bank_card::Model>> {
    let bank = bank_of(app, caller).await?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query = bank_card::Entity::find()
        .filter(bank_card::Column::ProgrammeId.eq(caller.programme_id))
        .filter(bank_card::Column::BankPartnerId.eq(bank.id));
    if let Some(member_id) = member_id {
        query = query.filter(bank_card::Column::MemberId.eq(member_id));
    }
    if let Some(after) = after {
        query = query.filter(bank_card::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(bank_card::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    Ok(page.page(rows, |c| c.id.to_string(), |c| c))
}

// ---------------------------------------------------------------------------------------
// Signing secrets

/// A new secret for signing events: `whsec_` and the base64 of 32 random bytes. The
/// answer is the only time it is shown.
pub async fn create_secret(app: &App, caller: &Caller) -> AppResult<bank_signing_secret::Model> {
    use base64::Engine;
    use rand::RngCore;
    let bank = bank_of(app, caller).await?;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let row = bank_signing_secret::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        bank_partner_id: bank.id,
        secret: format!(
            "{}{}",
            rules::SECRET_PREFIX,
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
        created_at: Utc::now(),
        revoked_at: None,
    };
    bank_signing_secret::Entity::insert(bank_signing_secret::ActiveModel::from(row.clone()))
        .exec_without_returning(&app.db)
        .await?;
    Ok(row)
}

/// The bank's active secrets (their ids and dates; never the secret again).
pub async fn list_secrets(
    app: &App,
    caller: &Caller,
) -> AppResult<Vec<bank_signing_secret::Model>> {
    let bank = bank_of(app, caller).await?;
    active_secrets(&app.db, caller.programme_id, bank.id).await
}

async fn active_secrets(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    bank_id: Uuid,
) -> AppResult<Vec<bank_signing_secret::Model>> {
    Ok(bank_signing_secret::Entity::find()
        .filter(bank_signing_secret::Column::BankPartnerId.eq(bank_id))
        .filter(bank_signing_secret::Column::ProgrammeId.eq(programme_id))
        .filter(bank_signing_secret::Column::RevokedAt.is_null())
        .order_by_asc(bank_signing_secret::Column::Id)
        .all(db)
        .await?)
}

/// Ends a secret: events signed only with it are refused from now on. A revoked or
/// unknown secret is not found.
pub async fn revoke_secret(app: &App, caller: &Caller, id: Uuid) -> AppResult<()> {
    let bank = bank_of(app, caller).await?;
    let done = bank_signing_secret::Entity::update_many()
        .col_expr(
            bank_signing_secret::Column::RevokedAt,
            Expr::value(Some(Utc::now())),
        )
        .filter(bank_signing_secret::Column::Id.eq(id))
        .filter(bank_signing_secret::Column::BankPartnerId.eq(bank.id))
        .filter(bank_signing_secret::Column::ProgrammeId.eq(caller.programme_id))
        .filter(bank_signing_secret::Column::RevokedAt.is_null())
        .exec(&app.db)
        .await?;
    if done.rows_affected == 0 {
        return Err(AppError::NotFound("signing secret"));
    }
    Ok(())
}

/// The Standard Webhooks headers of a delivery, as sent.
pub struct Signature<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks a delivery's signature against the bank's active secrets (401
/// `invalid_signature` otherwise), before its body is read for anything else.
pub async fn verify_signature(
    app: &App,
    caller: &Caller,
    signature: Signature<'_>,
    body: &[u8],
) -> AppResult<Partner> {
    let bank = bank_of(app, caller).await?;
    let keys: Vec<Vec<u8>> = active_secrets(&app.db, caller.programme_id, bank.id)
        .await?
        .iter()
        .filter_map(|s| rules::secret_key(&s.secret))
        .collect();
    rules::verify(
        &keys,
        signature.id,
        signature.timestamp,
        signature.signature,
        body,
        Utc::now().timestamp(),
    )
    .map_err(|e| AppError::InvalidSignature(e.to_string()))?;
    Ok(bank)
}

// ---------------------------------------------------------------------------------------
// Events

pub const MAX_ID_CHARS: usize = 255;

/// A bank event as received (after its signature verified).
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub transaction_id: String,
    pub card_token: String,
    pub amount: String,
    pub currency: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub merchant_category_code: Option<String>,
    pub occurred_at: DateTime<Utc>,
    /// The body's canonical JSON, hashed: the same event id with another body is refused.
    pub canonical: String,
}

struct Checked {
    id: String,
    event_type: EventType,
    transaction_id: String,
    card_token: String,
    amount: Money,
    merchant_id: String,
    merchant_name: String,
    occurred_at: DateTime<Utc>,
    request_hash: String,
}

/// How far ahead of the server's clock an event's `occurred_at` may be (clock skew).
pub const MAX_EVENT_FUTURE_MINUTES: i64 = 5;
/// How old an event's `occurred_at` may be: a card network settles and refunds within
/// months; 400 days covers a year's chargeback window with room to spare.
pub const MAX_EVENT_AGE_DAYS: i64 = 400;

fn check_event(input: NewEvent, programme: &Programme, now: DateTime<Utc>) -> AppResult<Checked> {
    let mut v = Validator::default();
    v.instant("occurred_at", Some(input.occurred_at));
    v.require(
        "occurred_at",
        input.occurred_at <= now + chrono::Duration::minutes(MAX_EVENT_FUTURE_MINUTES),
        &format!("must not be more than {MAX_EVENT_FUTURE_MINUTES} minutes in the future"),
    );
    v.require(
        "occurred_at",
        input.occurred_at >= now - chrono::Duration::days(MAX_EVENT_AGE_DAYS),
        &format!("must not be more than {MAX_EVENT_AGE_DAYS} days in the past"),
    );
    let id = text_field(&mut v, "id", &input.id, MAX_ID_CHARS);
    let event_type = EventType::parse(&input.event_type);
    v.require(
        "type",
        event_type.is_some(),
        "must be authorization, clearing, reversal or refund",
    );
    let transaction_id = text_field(
        &mut v,
        "transaction_id",
        &input.transaction_id,
        MAX_ID_CHARS,
    );
    let card_token = text_field(&mut v, "card_token", &input.card_token, MAX_TOKEN_CHARS);
    let amount = v.check(
        "amount.amount",
        Money::positive(&input.amount, &input.currency),
    );
    if let Some(amount) = &amount {
        v.require(
            "amount.amount",
            amount.amount <= coalition_domain::limits::max_purchase_amount(),
            &format!(
                "must be at most {}",
                coalition_domain::limits::MAX_PURCHASE_UNITS
            ),
        );
    }
    let merchant_id = text_field(&mut v, "merchant.id", &input.merchant_id, 64);
    let merchant_name = text_field(&mut v, "merchant.name", &input.merchant_name, 200);
    if let Some(code) = &input.merchant_category_code {
        text_field(&mut v, "merchant.category_code", code, 8);
    }
    v.finish()?;
    let amount = amount.expect("validated");
    programme.ensure_currency(&amount)?;
    Ok(Checked {
        id,
        event_type: event_type.expect("validated"),
        transaction_id,
        card_token,
        amount,
        merchant_id,
        merchant_name,
        occurred_at: input.occurred_at,
        request_hash: hex::encode(Sha256::digest(input.canonical.as_bytes())),
    })
}

/// What an event did, as answered (and stored, for a second delivery).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventOutcome {
    pub event_id: String,
    /// `applied`, or `duplicate` for a second delivery: nothing moved then, and the
    /// figures are what the first delivery did.
    pub status: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub transaction_id: String,
    pub card_id: Uuid,
    pub member_id: Uuid,
    /// The coalition partner the merchant id matched (absent: not a partner; the bank's
    /// own rate applied).
    pub partner_id: Option<Uuid>,
    /// Points that became pending.
    pub points_pending: Points,
    /// Points posted (spendable).
    pub points_posted: Points,
    /// Pending points removed without posting (a reversal).
    pub points_reversed: Points,
    /// Earned points taken back by a refund.
    pub points_clawed_back: Points,
    /// What a refund should have taken back but the member had spent (never negative
    /// balances; as for purchase refunds).
    pub points_shortfall: Points,
    /// The lines of the points this event priced (authorization: the pending ones;
    /// clearing: the posted ones).
    pub breakdown: Vec<BreakdownLine>,
    /// The member's points and pending points after the event.
    pub balance: Points,
    pub pending_points: Points,
}

/// One funder of a transaction's posted points: what it gave and what came back to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct FunderShare {
    kind: String,
    owner: Uuid,
    given: Points,
    returned: Points,
}

impl FunderShare {
    fn account(&self) -> AppResult<AccountRef> {
        let kind = AccountKind::parse(&self.kind)
            .ok_or_else(|| AppError::Internal("corrupt funder kind".into()))?;
        Ok(AccountRef {
            kind,
            owner: self.owner,
        })
    }
}

/// Processes one signed event: the first delivery of an event id applies it; any
/// later delivery answers `duplicate` and moves nothing.
#[tracing::instrument(target = "coalition::trace", name = "bank.event", skip_all)]
pub async fn process_event(
    app: &App,
    caller: &Caller,
    bank: &Partner,
    input: NewEvent,
) -> AppResult<EventOutcome> {
    let programme = programmes::load(app, caller.programme_id).await?;
    let req = check_event(input, &programme, Utc::now())?;
    // A first delivery that lost a race (the same event, or an event of the same new
    // transaction on another member's account, committed meanwhile) rolls back and goes
    // again: it then reads the winner's rows — a duplicate's answer, or the transaction.
    for _ in 0..MAX_EVENT_ATTEMPTS {
        if let Some(seen) = recorded(&app.db, caller.programme_id, bank.id, &req).await? {
            return Ok(seen);
        }
        let card = bank_card::Entity::find()
            .filter(bank_card::Column::ProgrammeId.eq(caller.programme_id))
            .filter(bank_card::Column::BankPartnerId.eq(bank.id))
            .filter(bank_card::Column::CardToken.eq(req.card_token.as_str()))
            .one(&app.db)
            .await?
            .ok_or(AppError::NotFound("bank card"))?;
        let txn = app.db.begin().await?;
        let (outcome, state) =
            match apply_in(app, &txn, caller, &programme, bank, &card, &req).await {
                Ok(Applied::Done(outcome, state)) => (*outcome, state),
                Ok(Applied::Raced) => {
                    txn.rollback().await.ok();
                    continue;
                }
                Err(e) => {
                    txn.rollback().await.ok();
                    return Err(e);
                }
            };
        if let Err(e) = txn.commit().await {
            return match recorded(&app.db, caller.programme_id, bank.id, &req).await? {
                Some(seen) => Ok(seen),
                None => Err(e.into()),
            };
        }
        app.cache.changed(state.account_id, state.version).await;
        return Ok(outcome);
    }
    Err(AppError::Internal(format!(
        "bank event lost {MAX_EVENT_ATTEMPTS} races in a row"
    )))
}

/// How often a first delivery that lost a race on a unique key goes again (the second
/// try reads the winner's rows; more is a fault).
const MAX_EVENT_ATTEMPTS: usize = 3;

/// What applying an event in a transaction came to.
enum Applied {
    Done(Box<EventOutcome>, AccountState),
    /// Another delivery committed the same unique key first: roll back and go again.
    Raced,
}

/// `Raced` for a unique violation (a concurrent first delivery won), else the error.
fn raced(err: sea_orm::DbErr) -> AppResult<Applied> {
    if is_unique_violation(&err) {
        Ok(Applied::Raced)
    } else {
        Err(err.into())
    }
}

/// The stored answer of an event already processed, as a duplicate; the same id with
/// another body is refused.
async fn recorded(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    bank_id: Uuid,
    req: &Checked,
) -> AppResult<Option<EventOutcome>> {
    let Some(row) = bank_event::Entity::find()
        .filter(bank_event::Column::ProgrammeId.eq(programme_id))
        .filter(bank_event::Column::BankPartnerId.eq(bank_id))
        .filter(bank_event::Column::EventId.eq(req.id.as_str()))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    if row.request_hash != req.request_hash {
        return Err(AppError::EventIdReused(req.id.clone()));
    }
    let mut outcome: EventOutcome = serde_json::from_str(&row.response)
        .map_err(|e| AppError::Internal(format!("stored bank event answer: {e}")))?;
    outcome.status = "duplicate".into();
    Ok(Some(outcome))
}

/// What was seen of a stored transaction, for the state machine.
fn seen_of(row: &bank_transaction::Model) -> AppResult<Seen> {
    let cleared = match (&row.cleared_amount, row.cleared_points) {
        (Some(amount), Some(points)) => Some((crate::purchases::parse_stored(amount)?, points)),
        _ => None,
    };
    Ok(Seen {
        authorized: row.authorized_points,
        cleared,
        refunded: crate::purchases::parse_stored(&row.refunded_amount)?,
        reversed: row.reversed,
        lapsed: row.lapsed,
    })
}

fn new_transaction(
    caller: &Caller,
    bank: &Partner,
    card: &bank_card::Model,
    req: &Checked,
    now: DateTime<Utc>,
) -> bank_transaction::Model {
    bank_transaction::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        bank_partner_id: bank.id,
        transaction_id: req.transaction_id.clone(),
        card_id: card.id,
        account_id: card.account_id,
        currency: req.amount.currency.to_string(),
        authorized_points: None,
        cleared_amount: None,
        cleared_points: None,
        cleared_partner_id: None,
        earn_entry_id: None,
        funders: "[]".into(),
        refunded_amount: "0".into(),
        reversed: false,
        lapsed: false,
        lapses_at: None,
        pending_points: 0,
        points_posted: 0,
        points_clawed_back: 0,
        points_shortfall: 0,
        created_at: now,
        updated_at: now,
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_in(
    app: &App,
    txn: &DatabaseTransaction,
    caller: &Caller,
    programme: &Programme,
    bank: &Partner,
    card: &bank_card::Model,
    req: &Checked,
) -> AppResult<Applied> {
    let now = Utc::now();
    // The account lock first (as everything that changes an account does): events of
    // one member, this transaction's among them, take turns.
    let account = ledger::lock_account(txn, card.account_id).await?;
    if account.merged_into_account_id.is_some() {
        return Err(AppError::Internal(
            "a bank card's member account was merged".into(),
        ));
    }
    if recorded(txn, caller.programme_id, bank.id, req)
        .await?
        .is_some()
    {
        // Delivered meanwhile: the caller goes again and answers `duplicate`.
        return Ok(Applied::Raced);
    }
    // The card as it is now (it was read before the lock; an erasure, which retires it,
    // takes the same lock first). Her closed account is a retired card too.
    let card = &bank_card::Entity::find_by_id(card.id)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("bank card"))?;
    let card_state = if account.closed_at.is_some() {
        CardState::Retired
    } else {
        CardState::parse(&card.status)
    };
    let existing = bank_transaction::Entity::find()
        .filter(bank_transaction::Column::ProgrammeId.eq(caller.programme_id))
        .filter(bank_transaction::Column::BankPartnerId.eq(bank.id))
        .filter(bank_transaction::Column::TransactionId.eq(req.transaction_id.as_str()))
        .lock_exclusive()
        .one(txn)
        .await?;
    let is_new = existing.is_none();
    // The first event of a transaction fixes its card's account; an event naming a card
    // of another member's account for it is refused (a replacement card keeps the
    // account, so its events still count).
    if existing
        .as_ref()
        .is_some_and(|row| row.account_id != card.account_id)
    {
        return Err(AppError::Validation(vec![crate::FieldError::new(
            "card_token",
            "the transaction belongs to a card of another member",
        )]));
    }
    // The first event of a transaction fixes its card (and so its account).
    let mut row = existing.unwrap_or_else(|| new_transaction(caller, bank, card, req, now));
    let seen = seen_of(&row)?;
    // A blocked or replaced card starts no new transaction but finishes those it began;
    // a retired one does nothing. Refused, nothing is written.
    rules::card_admits(card_state, &seen, req.event_type).map_err(|state| match state {
        CardState::Replaced => AppError::CardReplaced,
        CardState::Retired => AppError::CardRetired,
        CardState::Active | CardState::Blocked => AppError::CardBlocked,
    })?;
    let terms = crate::terms::of_programme(app, txn, caller.programme_id).await?;
    // Pricing only for the authorization and the clearing that count (the first of
    // each): a second one changes nothing.
    let mut priced: Option<(Option<Partner>, PurchaseOutcome)> = None;
    let event = match req.event_type {
        EventType::Authorization if seen.authorized.is_none() => {
            let p = price(app, txn, programme, &terms, bank, &row, card, req).await?;
            let points = p.1.points_earned;
            priced = Some(p);
            Event::Authorization { points }
        }
        EventType::Clearing if seen.cleared.is_none() => {
            let p = price(app, txn, programme, &terms, bank, &row, card, req).await?;
            let points = p.1.points_earned;
            priced = Some(p);
            Event::Clearing {
                amount: req.amount.amount,
                points,
            }
        }
        EventType::Authorization => Event::Authorization { points: 0 },
        EventType::Clearing => Event::Clearing {
            amount: req.amount.amount,
            points: 0,
        },
        EventType::Reversal => Event::Reversal,
        EventType::Refund => Event::Refund {
            amount: req.amount.amount,
        },
    };
    let (next, effect) = rules::apply(&seen, event);
    let mut outcome = EventOutcome {
        event_id: req.id.clone(),
        status: "applied".into(),
        event_type: req.event_type.as_str().into(),
        transaction_id: req.transaction_id.clone(),
        card_id: card.id,
        member_id: card.member_id,
        partner_id: None,
        points_pending: effect.pending.max(0),
        points_posted: effect.posted,
        points_reversed: if req.event_type == EventType::Clearing {
            0
        } else {
            (-effect.pending).max(0)
        },
        points_clawed_back: 0,
        points_shortfall: 0,
        breakdown: vec![],
        balance: 0,
        pending_points: 0,
    };
    if let Some((partner, priced)) = &priced {
        outcome.partner_id = partner.as_ref().map(|p| p.id);
        outcome.breakdown = priced.breakdown.clone();
    }
    // Record the facts.
    match event {
        Event::Authorization { points } if seen.authorized.is_none() => {
            row.authorized_points = Some(points);
            let lapses_at = req
                .occurred_at
                .checked_add_signed(app.bank_authorization_lapse)
                .ok_or_else(|| AppError::Internal("authorization lapse out of range".into()))?;
            row.lapses_at = Some(lapses_at);
        }
        Event::Clearing { amount, points } if seen.cleared.is_none() => {
            row.cleared_amount = Some(amount.to_string());
            row.cleared_points = Some(points);
            row.cleared_partner_id = priced.as_ref().map(|(p, _)| p.as_ref().unwrap_or(bank).id);
        }
        Event::Reversal => row.reversed = true,
        Event::Refund { .. } => row.refunded_amount = next.refunded.to_string(),
        _ => {}
    }
    let target = next.target();
    row.pending_points = target.pending;
    if target.pending == 0 {
        row.lapses_at = None;
    }
    // Post what the clearing earned.
    if effect.posted > 0 {
        let (partner, priced) = priced
            .as_ref()
            .ok_or_else(|| AppError::Internal("a clearing posted without pricing".into()))?;
        let seller = partner.as_ref().unwrap_or(bank);
        let entry_id = post(txn, caller, programme, seller, card, req, priced, now).await?;
        row.earn_entry_id = Some(entry_id);
        row.funders = serde_json::to_string(&funders_of(caller, seller, priced))
            .map_err(|e| AppError::Internal(e.to_string()))?;
    }
    row.points_posted = target.posted;
    // Claw back what refunds take (after posting: a refund may have come first).
    if effect.clawed_back > 0 {
        let (taken, shortfall) =
            claw_back(txn, caller, &mut row, req, effect.clawed_back, now).await?;
        outcome.points_clawed_back = taken;
        outcome.points_shortfall = shortfall;
        row.points_shortfall += shortfall;
        if outcome.partner_id.is_none() {
            outcome.partner_id = row.cleared_partner_id.filter(|p| *p != bank.id);
        }
    }
    row.points_clawed_back = target.clawed_back;
    row.updated_at = now;
    if is_new {
        let inserted =
            bank_transaction::Entity::insert(bank_transaction::ActiveModel::from(row.clone()))
                .exec_without_returning(txn)
                .await;
        if let Err(e) = inserted {
            return raced(e);
        }
    } else {
        let active: bank_transaction::ActiveModel = row.clone().into();
        bank_transaction::Entity::update(reset_all(active))
            .exec(txn)
            .await?;
    }
    // The account's version moves with every event, so cached balances (pending
    // points included) are dropped after the commit.
    let state = ledger::change_balance(txn, card.account_id, 0).await?;
    outcome.balance = state.balance;
    outcome.pending_points = pending_on(txn, card.account_id).await?;
    let response =
        serde_json::to_string(&outcome).map_err(|e| AppError::Internal(e.to_string()))?;
    let inserted = bank_event::Entity::insert(bank_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        programme_id: Set(caller.programme_id),
        bank_partner_id: Set(bank.id),
        event_id: Set(req.id.clone()),
        event_type: Set(req.event_type.as_str().into()),
        transaction_id: Set(req.transaction_id.clone()),
        request_hash: Set(req.request_hash.clone()),
        response: Set(response),
        created_at: Set(now),
    })
    .exec_without_returning(txn)
    .await;
    if let Err(e) = inserted {
        return raced(e);
    }
    let mut data = serde_json::to_value(&outcome).map_err(|e| AppError::Internal(e.to_string()))?;
    data["bank_partner_id"] = serde_json::json!(bank.id);
    outbox::append(
        txn,
        caller.programme_id,
        outbox::events::BANK_EVENT_PROCESSED,
        data,
    )
    .await?;
    Ok(Applied::Done(Box::new(outcome), state))
}

/// Marks every column of a loaded row as set, so an update writes the row as it is.
fn reset_all(mut active: bank_transaction::ActiveModel) -> bank_transaction::ActiveModel {
    use sea_orm::{ActiveModelTrait, Iterable};
    for column in bank_transaction::Column::iter() {
        if !matches!(column, bank_transaction::Column::Id) {
            active.reset(column);
        }
    }
    active
}

/// Prices an authorization or a clearing: at the coalition partner whose merchant ids
/// include the merchant's, by that partner's base rate and the programme's earning
/// rules (bank-funded bonus rules among them; each line's funder pays); anywhere else
/// by the bank's own base rate alone, funded by the bank. The bank charged the whole
/// amount, so a tier's discount does not apply; its earn multiplier does.
#[allow(clippy::too_many_arguments)]
async fn price(
    app: &App,
    db: &DatabaseTransaction,
    programme: &Programme,
    terms: &ProgrammeTerms,
    bank: &Partner,
    row: &bank_transaction::Model,
    card: &bank_card::Model,
    req: &Checked,
) -> AppResult<(Option<Partner>, PurchaseOutcome)> {
    let partner = terms
        .partners
        .values()
        .find(|p| p.kind == PartnerKind::Merchant && p.merchant_ids.contains(&req.merchant_id))
        .cloned();
    let seller = partner.as_ref().unwrap_or(bank);
    let at = req.occurred_at;
    let tier = crate::tiers::member_tier(app, db, programme.id, Some(card.member_id), at)
        .await?
        .map(|mut t| {
            t.discount_percent = Decimal::ZERO;
            t
        });
    // A bank pays for a bonus on its own cards' transactions only: another bank's
    // funded rules do not apply here.
    let rules = match &partner {
        Some(_) => terms
            .rules
            .iter()
            .filter(|r| !matches!(r.funder, Funder::Bank(b) if b != bank.id))
            .cloned()
            .collect(),
        None => vec![],
    };
    // Caps count awards by the day and month they were made (stamped at processing
    // time), so the windows are those of the processing time too, not of occurred_at:
    // a back- or future-dated event neither escapes nor is starved by a cap.
    let facts = member_facts(db, row.account_id, seller.id, &rules, tier, Utc::now()).await?;
    let purchase = PurchaseTerms {
        amount: req.amount.amount,
        currency: programme.currency.clone(),
        point_value: programme.point_value,
        seller: Seller {
            id: seller.id,
            name: seller.name.clone(),
            category: seller.category.clone(),
            earn_points_per_unit: seller.earn_points_per_unit,
        },
        categories: vec![],
        at,
        redeem_points: 0,
    };
    let outcome = price_purchase(&purchase, &facts, &rules)
        .map_err(|e| AppError::Validation(vec![crate::FieldError::new("amount.amount", e)]))?;
    Ok((partner, outcome))
}

/// What the rules need of the member's history: as a purchase reads it (first purchase
/// at the partner, the capped rules' awards of the day and month of `processed_at`,
/// the clock awards are stamped on, windows bounded on both sides), under the account
/// lock the event holds.
async fn member_facts(
    db: &DatabaseTransaction,
    account_id: Uuid,
    seller_id: Uuid,
    rules: &[coalition_domain::rules::Rule],
    tier: Option<coalition_domain::tiers::TierTerms>,
    processed_at: DateTime<Utc>,
) -> AppResult<MemberFacts> {
    let mut facts = MemberFacts {
        tier,
        ..Default::default()
    };
    if rules.is_empty() {
        return Ok(facts);
    }
    facts.first_purchase_at_partner =
        !crate::purchases::bought_at(db, account_id, seller_id).await?;
    let capped: Vec<Uuid> = rules
        .iter()
        .filter(|r| r.caps.per_member())
        .map(|r| r.id)
        .collect();
    if capped.is_empty() {
        return Ok(facts);
    }
    let day = processed_at.date_naive();
    let month = day.with_day(1).unwrap_or(day);
    let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let (day_start, month_start) = (midnight(day), midnight(month));
    let day_end = day_start + chrono::Duration::days(1);
    let month_end = month
        .checked_add_months(chrono::Months::new(1))
        .map_or(day_end, midnight);
    let awards = rule_award::Entity::find()
        .filter(rule_award::Column::AccountId.eq(account_id))
        .filter(rule_award::Column::RuleId.is_in(capped))
        .filter(rule_award::Column::CreatedAt.gte(month_start))
        .filter(rule_award::Column::CreatedAt.lt(month_end))
        .all(db)
        .await?;
    for a in awards {
        *facts.awarded_this_month.entry(a.rule_id).or_insert(0) += a.points;
        if a.created_at >= day_start && a.created_at < day_end {
            *facts.awarded_today.entry(a.rule_id).or_insert(0) += a.points;
        }
    }
    Ok(facts)
}

/// Each line's funder: the seller for the base rate and tier lines (the bank off the
/// coalition), a rule's funder for its line.
fn funded_lines(
    caller: &Caller,
    seller: &Partner,
    priced: &PurchaseOutcome,
) -> Vec<(AccountRef, Points)> {
    priced
        .breakdown
        .iter()
        .map(|l| {
            let funder = l.funder.unwrap_or(Funder::SellingPartner);
            (
                AccountRef::funding(funder, caller.programme_id, seller.id),
                l.points,
            )
        })
        .collect()
}

fn funders_of(caller: &Caller, seller: &Partner, priced: &PurchaseOutcome) -> Vec<FunderShare> {
    let mut out: Vec<FunderShare> = vec![];
    for (account, points) in funded_lines(caller, seller, priced) {
        match out
            .iter_mut()
            .find(|f| f.kind == account.kind.as_str() && f.owner == account.owner)
        {
            Some(f) => f.given += points,
            None => out.push(FunderShare {
                kind: account.kind.as_str().into(),
                owner: account.owner,
                given: points,
                returned: 0,
            }),
        }
    }
    out
}

/// Posts the clearing's points: one purchase entry at the seller (funders debited per
/// line), a lot, the rule awards (caps count them), the balance.
#[allow(clippy::too_many_arguments)]
async fn post(
    txn: &DatabaseTransaction,
    caller: &Caller,
    programme: &Programme,
    seller: &Partner,
    card: &bank_card::Model,
    req: &Checked,
    priced: &PurchaseOutcome,
    now: DateTime<Utc>,
) -> AppResult<Uuid> {
    let entry_id = Uuid::now_v7();
    let entry = purchase_entry(
        seller.id,
        card.account_id,
        &funded_lines(caller, seller, priced),
        0,
    )?;
    ledger::change_balance(txn, card.account_id, priced.points_earned).await?;
    let ctx = EntryContext {
        programme_id: caller.programme_id,
        reason: format!(
            "Card purchase of {} {} at {} (co-branded card ending {})",
            req.amount.amount_string(),
            req.amount.currency,
            req.merchant_name,
            card.last4
        ),
        partner_id: Some(seller.id),
        purchase_id: None,
        refund_id: None,
        breakdown: priced.breakdown.clone(),
    };
    ledger::write_entry(txn, entry_id, &entry, &ctx, now).await?;
    let expires_at = programme.lot_expiry(now);
    ledger::add_lot(
        txn,
        caller.programme_id,
        card.account_id,
        entry_id,
        priced.points_earned,
        expires_at,
        now,
    )
    .await?;
    let awards: Vec<rule_award::ActiveModel> = priced
        .breakdown
        .iter()
        .filter_map(|l| Some((l.rule_id?, l.rule_version?, l.points)))
        .map(|(rule_id, rule_version, points)| {
            rule_award::ActiveModel::from(rule_award::Model {
                id: Uuid::now_v7(),
                programme_id: caller.programme_id,
                rule_id,
                rule_version,
                account_id: card.account_id,
                entry_id,
                points,
                created_at: now,
            })
        })
        .collect();
    if !awards.is_empty() {
        rule_award::Entity::insert_many(awards)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(entry_id)
}

/// Takes back `due` points as a purchase refund does: never below zero (nor into points
/// POS holds reserve) — what cannot be taken is the shortfall, recorded, and its funders
/// are not credited for it; the rest goes back to each funder in proportion to what it
/// still has to get back.
#[allow(clippy::too_many_arguments)]
async fn claw_back(
    txn: &DatabaseTransaction,
    caller: &Caller,
    row: &mut bank_transaction::Model,
    req: &Checked,
    due: Points,
    now: DateTime<Utc>,
) -> AppResult<(Points, Points)> {
    let mut account = ledger::lock_account(txn, row.account_id).await?;
    if account.held > 0 {
        if let Some(released) = crate::holds::release_lapsed_in(txn, row.account_id, now).await? {
            account.balance = released.balance;
            account.held = released.held;
        }
    }
    let (taken, shortfall) = clawback_within_balance(account.balance - account.held, 0, due);
    let mut funders: Vec<FunderShare> =
        serde_json::from_str(&row.funders).map_err(|e| AppError::Internal(e.to_string()))?;
    let weights: Vec<Points> = funders.iter().map(|f| f.given - f.returned).collect();
    let shares = split_proportionally(taken, &weights);
    let mut clawbacks = Vec::with_capacity(funders.len());
    for (f, share) in funders.iter_mut().zip(shares) {
        f.returned += share;
        clawbacks.push((f.account()?, share));
    }
    let seller = row.cleared_partner_id.unwrap_or(row.bank_partner_id);
    let entry = refund_entry(seller, row.account_id, &clawbacks, 0)?;
    let ctx = EntryContext {
        programme_id: caller.programme_id,
        reason: format!(
            "Card refund of {} {} (bank transaction {})",
            req.amount.amount_string(),
            req.amount.currency,
            row.transaction_id
        ),
        partner_id: Some(seller),
        purchase_id: None,
        refund_id: None,
        breakdown: vec![],
    };
    ledger::write_entry(txn, Uuid::now_v7(), &entry, &ctx, now).await?;
    if taken > 0 {
        ledger::change_balance(txn, row.account_id, -taken).await?;
        ledger::consume_lots(txn, row.account_id, taken).await?;
    }
    row.funders = serde_json::to_string(&funders).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((taken, shortfall))
}

/// Points an account has pending (authorizations not yet cleared): shown, not spendable.
pub async fn pending_on(db: &impl ConnectionTrait, account_id: Uuid) -> AppResult<Points> {
    use sea_orm::sea_query::{Alias, Func, SimpleExpr};
    let total = Func::cast_as(
        Func::sum(Expr::col(bank_transaction::Column::PendingPoints)),
        Alias::new("BIGINT"),
    );
    let sum: Option<Option<i64>> = bank_transaction::Entity::find()
        .select_only()
        .column_as(SimpleExpr::from(total), "total")
        .filter(bank_transaction::Column::AccountId.eq(account_id))
        .filter(bank_transaction::Column::PendingPoints.gt(0))
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.flatten().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// The lapse job

#[derive(Debug, Default, Serialize)]
pub struct LapseReport {
    /// Authorizations whose pending points were removed.
    pub lapsed: u64,
    pub points: Points,
}

/// Authorizations that no clearing followed within `App::bank_authorization_lapse` of
/// their time lose their pending points, each in its own transaction under its
/// account's lock; a transaction read again under the lock that moved meanwhile (a
/// clearing came) is left alone. A clearing after a lapse still posts.
pub async fn lapse_authorizations(app: &App, now: DateTime<Utc>) -> AppResult<LapseReport> {
    let mut report = LapseReport::default();
    // Rows read again and left alone are never selected again: the loop cannot spin on
    // a row the query counts as due and the re-check does not (and it stops anyway when
    // a whole batch changed nothing).
    let mut skipped: Vec<Uuid> = Vec::new();
    loop {
        let mut query = bank_transaction::Entity::find()
            .filter(bank_transaction::Column::LapsesAt.lte(now))
            .filter(bank_transaction::Column::PendingPoints.gt(0));
        if !skipped.is_empty() {
            query = query.filter(bank_transaction::Column::Id.is_not_in(skipped.clone()));
        }
        let due = query
            .order_by_asc(bank_transaction::Column::LapsesAt)
            .limit(500)
            .all(&app.db)
            .await?;
        if due.is_empty() {
            return Ok(report);
        }
        let before = report.lapsed;
        for row in due {
            let id = row.id;
            let txn = app.db.begin().await?;
            ledger::lock_account(&txn, row.account_id).await?;
            let Some(mut row) = bank_transaction::Entity::find_by_id(row.id)
                .lock_exclusive()
                .one(&txn)
                .await?
            else {
                skipped.push(id);
                continue;
            };
            if row.pending_points == 0 || row.lapses_at.is_none_or(|at| at > now) {
                txn.commit().await?;
                skipped.push(id);
                continue;
            }
            let (next, effect) = rules::apply(&seen_of(&row)?, Event::Lapse);
            row.lapsed = next.lapsed;
            row.pending_points = next.target().pending;
            row.lapses_at = None;
            row.updated_at = Utc::now();
            let active: bank_transaction::ActiveModel = row.clone().into();
            bank_transaction::Entity::update(reset_all(active))
                .exec(&txn)
                .await?;
            let state = ledger::change_balance(&txn, row.account_id, 0).await?;
            txn.commit().await?;
            app.cache.changed(state.account_id, state.version).await;
            report.lapsed += 1;
            report.points += -effect.pending;
        }
        if report.lapsed == before {
            return Ok(report);
        }
    }
}

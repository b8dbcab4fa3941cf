//! Cards: registered (named) and bearer (anonymous) cards, registering a bearer card to a
//! member (its points move with it), blocking and replacing (the balance stays with the
//! points account, so the new card carries it and the old one can do nothing).
//!
//! Who manages a card (reads it, blocks it, replaces it): the operator, every card of its
//! programme; a partner, the cards it issued and the cards of members it enrolled. Only
//! those partners issue further cards to a member. Anyone else is told "not found". A
//! sale links a partner to a member for reading (profile, balance, its own history), not
//! for control: otherwise one small purchase with a member's card would let any partner
//! replace the member's card or mint a new one on the member's account. Three things
//! stay open to every partner of the programme, because at the till the card is the
//! credential: using a card in a purchase, asking its points (`account_of_usable`), and
//! registering a bearer card its holder presents.
//!
//! Every state change is a conditional UPDATE from the state it read, and registration
//! and replacement lock the card row first, so two changes of one card never both win.

use crate::error::{AppError, AppResult};
use crate::idempotency::{self, IdempotencyKey, StoredResponse};
use crate::ledger::{self, AccountState, EntryContext};
use crate::members;
use crate::{App, Caller, Scope};
use coalition_domain::card_number;
use coalition_domain::ledger::{AccountRef, EntryKind, JournalEntry};
use coalition_store::entities::{card, point_account, point_lot};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

pub const ACTIVE: &str = "active";
pub const BLOCKED: &str = "blocked";
pub const REPLACED: &str = "replaced";
/// A card of an erased member: it can do nothing, ever again.
pub const RETIRED: &str = "retired";

#[derive(Debug, Clone)]
pub struct Card {
    pub row: card::Model,
}

/// The outcome of registering a bearer card.
#[derive(Debug, Clone)]
pub struct Registered {
    pub card: card::Model,
    pub points_moved: i64,
    pub balance: i64,
}

fn new_number() -> String {
    card_number::from_random_digits(rand::rngs::OsRng.next_u64())
}

/// What a refused card number is told: the same for every malformed number, so the
/// OpenAPI checks (which cannot compute a check digit) can recognise it.
pub const NUMBER_MESSAGE: &str = "must be a card number: 16 digits ending in a valid check digit";

/// Refuses, as a validation error of `field`, a number that cannot be a card's (a typo
/// caught by the check digit is the till's mistake, not an unknown card).
pub fn check_number(v: &mut crate::error::Validator, field: &str, number: &str) {
    v.require(field, card_number::is_well_formed(number), NUMBER_MESSAGE);
}

/// [`check_number`] for a number that comes alone (a path).
pub fn valid_number(field: &str, number: &str) -> AppResult<()> {
    let mut v = crate::error::Validator::default();
    check_number(&mut v, field, number);
    v.finish()
}

/// A card of the caller's programme by its number. A number is digits: anything else
/// (a NUL from a path's `%00`, which PostgreSQL refuses to compare) names no card.
pub async fn find(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    number: &str,
) -> AppResult<card::Model> {
    // No other text names a card; asking the database anyway could fail (PostgreSQL
    // refuses a NUL character in a query) where the answer is simply "not found".
    if !card_number::is_well_formed(number) {
        return Err(AppError::NotFound("card"));
    }
    card::Entity::find()
        .filter(card::Column::Number.eq(number))
        .filter(card::Column::ProgrammeId.eq(programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("card"))
}

/// Refuses cards that may not earn or spend.
pub fn ensure_active(card: &card::Model) -> AppResult<()> {
    match card.status.as_str() {
        ACTIVE => Ok(()),
        REPLACED => Err(AppError::CardReplaced),
        RETIRED => Err(AppError::CardRetired),
        _ => Err(AppError::CardBlocked),
    }
}

/// The card a new card is: on which account, for which member, of which kind, and who
/// issued it (a replacement keeps the issuer of the card it replaces).
struct NewCard<'a> {
    account_id: Uuid,
    member_id: Option<Uuid>,
    kind: &'a str,
    issued_by_partner_id: Option<Uuid>,
}

async fn insert_card(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    new: NewCard<'_>,
) -> AppResult<card::Model> {
    let NewCard {
        account_id,
        member_id,
        kind,
        issued_by_partner_id,
    } = new;
    let row = card::Model {
        id: Uuid::now_v7(),
        programme_id,
        number: new_number(),
        account_id,
        member_id,
        kind: kind.to_owned(),
        status: ACTIVE.to_owned(),
        issued_by_partner_id,
        replaced_by_number: None,
        created_at: chrono::Utc::now(),
    };
    card::Entity::insert(card::ActiveModel::from(row.clone()))
        .exec_without_returning(db)
        .await?;
    Ok(row)
}

/// Issues a registered card to a member, or a bearer card (with its own points account)
/// when no member is given.
pub async fn issue(app: &App, caller: &Caller, member_id: Option<Uuid>) -> AppResult<card::Model> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    let txn = app.db.begin().await?;
    let issued = match member_id {
        Some(member_id) => {
            let member = members::visible(&txn, caller, member_id).await?;
            let enrolled_here = member.enrolled_by_partner_id == caller.partner_id;
            if members::seeing_partner(caller).is_some() && !enrolled_here {
                return Err(AppError::NotFound("member"));
            }
            // Under her account's lock: an erasure either committed before (and the
            // account is closed) or waits, and then retires this card too.
            let account = ledger::lock_account(&txn, member.account_id).await?;
            if member.erased_at.is_some() || account.closed_at.is_some() {
                return Err(AppError::MemberErased);
            }
            let card = NewCard {
                account_id: member.account_id,
                member_id: Some(member.id),
                kind: "registered",
                issued_by_partner_id: caller.partner_id,
            };
            insert_card(&txn, caller.programme_id, card).await?
        }
        None => {
            let account_id = Uuid::now_v7();
            point_account::Entity::insert(crate::ledger::new_account(
                account_id,
                caller.programme_id,
                None,
                chrono::Utc::now(),
            ))
            .exec_without_returning(&txn)
            .await?;
            let card = NewCard {
                account_id,
                member_id: None,
                kind: "bearer",
                issued_by_partner_id: caller.partner_id,
            };
            insert_card(&txn, caller.programme_id, card).await?
        }
    };
    txn.commit().await?;
    Ok(issued)
}

/// A card of the programme that this caller manages: the operator any, a partner those
/// it issued and those of members it enrolled. Others are "not found".
pub async fn managed(
    db: &impl ConnectionTrait,
    caller: &Caller,
    number: &str,
) -> AppResult<card::Model> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    let card = find(db, caller.programme_id, number).await?;
    let Some(partner_id) = members::seeing_partner(caller) else {
        return Ok(card);
    };
    if card.issued_by_partner_id == Some(partner_id) {
        return Ok(card);
    }
    match card.member_id {
        Some(member_id) if members::enrolled_by(db, member_id, partner_id).await? => Ok(card),
        _ => Err(AppError::NotFound("card")),
    }
}

/// Locks the card row until the transaction ends (`FOR UPDATE` on PostgreSQL) and
/// answers it as it is under the lock.
async fn locked(txn: &DatabaseTransaction, card: card::Model) -> AppResult<card::Model> {
    card::Entity::find_by_id(card.id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("card"))
}

/// A card as this caller may see it: a partner that sees the card only because it
/// issued it (a bearer card someone else registered) does not learn whose card it is.
pub async fn get(app: &App, caller: &Caller, number: &str) -> AppResult<card::Model> {
    let card = managed(&app.db, caller, number).await?;
    as_seen_by(&app.db, caller, card).await
}

/// The card as an answer to this caller: without its member unless the caller may see
/// that member. Every answer that shows a card (get, block, replace) goes through here.
async fn as_seen_by(
    db: &impl ConnectionTrait,
    caller: &Caller,
    mut card: card::Model,
) -> AppResult<card::Model> {
    if let (Some(partner_id), Some(member_id)) = (members::seeing_partner(caller), card.member_id) {
        if !members::linked(db, member_id, partner_id).await? {
            card.member_id = None;
        }
    }
    Ok(card)
}

/// The account behind a card any partner of the programme was shown, for the till's
/// "how many points do I have?": a card that cannot be used says why, and nothing about
/// whose card it is.
pub async fn account_of_usable(app: &App, caller: &Caller, number: &str) -> AppResult<Uuid> {
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    let card = find(&app.db, caller.programme_id, number).await?;
    ensure_active(&card)?;
    Ok(card.account_id)
}

/// Attaches a bearer card to a member. Its points move to the member's account in one
/// journal entry, its lots keep their expiry dates, and every card on the bearer account
/// (a replacement, say) follows.
pub async fn register(
    app: &App,
    caller: &Caller,
    number: &str,
    member_id: Uuid,
    key: &IdempotencyKey,
    render: impl FnOnce(&Registered) -> StoredResponse,
) -> AppResult<StoredResponse> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    let (response, changed) = idempotency::run(app, key, |txn| async move {
        let outcome = register_in(&txn, caller, number, member_id).await?;
        let response = render(&outcome.0);
        Ok((txn, response, outcome.1))
    })
    .await?;
    for state in changed.unwrap_or_default() {
        app.cache.changed(state.account_id, state.version).await;
    }
    Ok(response)
}

async fn register_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    number: &str,
    member_id: Uuid,
) -> AppResult<(Registered, Vec<AccountState>)> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    // The card is the credential here: any partner may register a bearer card presented
    // at its till. The lock keeps a concurrent block, replace or registration out.
    let card = locked(txn, find(txn, caller.programme_id, number).await?).await?;
    ensure_active(&card)?;
    if card.member_id.is_some() {
        return Err(AppError::CardAlreadyRegistered);
    }
    let member = members::visible(txn, caller, member_id).await?;
    if member.erased_at.is_some() {
        return Err(AppError::MemberErased);
    }
    let (from, to) = (card.account_id, member.account_id);
    let points = lock_pair(txn, from, to).await?;
    let states = merge_accounts(txn, from, to, points).await?;
    let now = chrono::Utc::now();
    let entry = JournalEntry::new(EntryKind::CardTransfer)
        .transfer(AccountRef::member(from), AccountRef::member(to), points)
        .balanced()?;
    let ctx = EntryContext {
        programme_id: caller.programme_id,
        reason: format!("Bearer card {} registered to the member", mask(number)),
        partner_id: caller.partner_id,
        purchase_id: None,
        refund_id: None,
        breakdown: vec![],
    };
    ledger::write_entry(txn, Uuid::now_v7(), &entry, &ctx, now).await?;
    move_to_account(txn, from, to, member.id).await?;
    if let Some(partner_id) = caller.partner_id {
        members::link_partner(txn, caller.programme_id, member.id, partner_id).await?;
    }
    let card = find(txn, caller.programme_id, number).await?;
    let balance = states
        .iter()
        .find(|s| s.account_id == to)
        .map(|s| s.balance)
        .unwrap_or_default();
    Ok((
        Registered {
            card,
            points_moved: points,
            balance,
        },
        states,
    ))
}

/// Locks both accounts in id order (two registrations can never deadlock) and answers
/// the bearer account's points, read under its lock so no purchase can change them
/// before the move. Points a till holds on the bearer account stay there: the card is
/// not registered while a hold is live (`holds_pending`), so a hold never has to follow
/// its points to another account; lapsed holds are released first.
async fn lock_pair(txn: &DatabaseTransaction, from: Uuid, to: Uuid) -> AppResult<i64> {
    let mut ids = [from, to];
    ids.sort();
    let (mut points, mut held) = (0, 0);
    for id in ids {
        let account = ledger::lock_account(txn, id).await?;
        if account.merged_into_account_id.is_some() {
            return Err(AppError::Internal(format!(
                "account {id} was merged already"
            )));
        }
        if id == from {
            (points, held) = (account.balance, account.held);
        } else if account.closed_at.is_some() {
            // Erased while this waited for her account's lock.
            return Err(AppError::MemberErased);
        }
    }
    if held > 0 {
        let now = chrono::Utc::now();
        let released = crate::holds::release_lapsed_in(txn, from, now).await?;
        if released.map_or(held, |state| state.held) > 0 {
            return Err(AppError::HoldsPending);
        }
    }
    Ok(points)
}

/// Empties the bearer account into the member's and marks it merged: from now on its
/// guarded UPDATE refuses every change, so a purchase or refund that raced this
/// registration retries on the card's new account instead of crediting a dead one.
async fn merge_accounts(
    txn: &DatabaseTransaction,
    from: Uuid,
    to: Uuid,
    points: i64,
) -> AppResult<Vec<AccountState>> {
    let emptied = point_account::Entity::update_many()
        .col_expr(point_account::Column::Balance, Expr::value(0i64))
        .col_expr(
            point_account::Column::Version,
            Expr::col(point_account::Column::Version).add(1),
        )
        .col_expr(
            point_account::Column::MergedIntoAccountId,
            Expr::value(Some(to)),
        )
        .filter(point_account::Column::Id.eq(from))
        .filter(point_account::Column::Balance.eq(points))
        .filter(point_account::Column::Held.eq(0i64))
        .exec_with_returning(txn)
        .await?;
    let emptied = emptied
        .into_iter()
        .next()
        .ok_or_else(|| AppError::Internal("bearer account changed under its lock".into()))?;
    let filled = ledger::change_balance(txn, to, points).await?;
    Ok(vec![emptied.into(), filled])
}

/// The live lots and the cards follow the points (emptied lots stay behind, holding
/// nothing). Purchases keep the account they were made on: a refund finds the points
/// through the purchase's card, which is on the member's account from now on.
async fn move_to_account(
    txn: &DatabaseTransaction,
    from: Uuid,
    to: Uuid,
    member_id: Uuid,
) -> AppResult<()> {
    point_lot::Entity::update_many()
        .col_expr(point_lot::Column::AccountId, Expr::value(to))
        .filter(point_lot::Column::AccountId.eq(from))
        // A literal, so both databases use the partial index of live lots.
        .filter(Expr::col(point_lot::Column::PointsRemaining).gt(Expr::cust("0")))
        .exec(txn)
        .await?;
    card::Entity::update_many()
        .col_expr(card::Column::AccountId, Expr::value(to))
        .col_expr(card::Column::MemberId, Expr::value(Some(member_id)))
        .filter(card::Column::AccountId.eq(from))
        .exec(txn)
        .await?;
    Ok(())
}

/// Last four digits only, for reasons shown in histories and logs.
pub fn mask(number: &str) -> String {
    format!("…{}", &number[number.len().saturating_sub(4)..])
}

/// Blocks a card: from active to blocked, as one conditional UPDATE. Blocking a blocked
/// card answers it as it is; a replaced card stays replaced.
pub async fn block(app: &App, caller: &Caller, number: &str) -> AppResult<card::Model> {
    let card = managed(&app.db, caller, number).await?;
    card::Entity::update_many()
        .col_expr(card::Column::Status, Expr::value(BLOCKED))
        .filter(card::Column::Id.eq(card.id))
        .filter(card::Column::Status.eq(ACTIVE))
        .exec(&app.db)
        .await?;
    let now = find(&app.db, caller.programme_id, number).await?;
    match now.status.as_str() {
        BLOCKED => as_seen_by(&app.db, caller, now).await,
        REPLACED => Err(AppError::CardReplaced),
        RETIRED => Err(AppError::CardRetired),
        _ => Err(AppError::Internal(format!(
            "card {} is {} after blocking",
            mask(number),
            now.status
        ))),
    }
}

/// Unblocks a card (admin): from blocked back to active, as one conditional UPDATE. An
/// active card is answered as it is; a replaced or retired card stays what it is.
pub async fn unblock(app: &App, caller: &Caller, number: &str) -> AppResult<card::Model> {
    caller.require(&[Scope::Admin])?;
    let card = managed(&app.db, caller, number).await?;
    card::Entity::update_many()
        .col_expr(card::Column::Status, Expr::value(ACTIVE))
        .filter(card::Column::Id.eq(card.id))
        .filter(card::Column::Status.eq(BLOCKED))
        .exec(&app.db)
        .await?;
    let now = find(&app.db, caller.programme_id, number).await?;
    ensure_active(&now)?;
    Ok(now)
}

/// Replaces a card (lost, damaged, blocked): a new number on the same points account.
/// The card row is locked and its status changes only from the status read, so one card
/// is replaced at most once, and a concurrent block cannot undo it.
pub async fn replace(
    app: &App,
    caller: &Caller,
    number: &str,
    key: &IdempotencyKey,
    render: impl FnOnce(&card::Model) -> StoredResponse,
) -> AppResult<StoredResponse> {
    let (response, _) = idempotency::run(app, key, |txn| async move {
        let old = locked(&txn, managed(&txn, caller, number).await?).await?;
        match old.status.as_str() {
            REPLACED => return Err(AppError::CardReplaced),
            // Her data was erased: no new card may reach her account.
            RETIRED => return Err(AppError::CardRetired),
            _ => {}
        }
        let replacement = NewCard {
            account_id: old.account_id,
            member_id: old.member_id,
            kind: &old.kind,
            issued_by_partner_id: old.issued_by_partner_id,
        };
        let new = insert_card(&txn, caller.programme_id, replacement).await?;
        let updated = card::Entity::update_many()
            .col_expr(card::Column::Status, Expr::value(REPLACED))
            .col_expr(
                card::Column::ReplacedByNumber,
                Expr::value(Some(new.number.clone())),
            )
            .filter(card::Column::Id.eq(old.id))
            .filter(card::Column::Status.eq(old.status.clone()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(AppError::CardReplaced);
        }
        let response = render(&as_seen_by(&txn, caller, new).await?);
        Ok((txn, response, ()))
    })
    .await?;
    Ok(response)
}

pub use card::Model as CardRow;

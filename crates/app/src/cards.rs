//! Cards: registered (named) and bearer (anonymous) cards, registering a bearer card to a
//! member (its points move with it), blocking and replacing (the balance stays with the
//! points account, so the new card carries it and the old one can do nothing).

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
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    TransactionTrait,
};
use uuid::Uuid;

pub const ACTIVE: &str = "active";
pub const BLOCKED: &str = "blocked";
pub const REPLACED: &str = "replaced";

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

/// A card of the caller's programme by its number.
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
        REPLACED => Err(AppError::CardReplaced(
            card.replaced_by_number.clone().unwrap_or_default(),
        )),
        _ => Err(AppError::CardBlocked),
    }
}

async fn insert_card(
    db: &impl ConnectionTrait,
    caller: &Caller,
    account_id: Uuid,
    member_id: Option<Uuid>,
    kind: &str,
) -> AppResult<card::Model> {
    let row = card::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        number: new_number(),
        account_id,
        member_id,
        kind: kind.to_owned(),
        status: ACTIVE.to_owned(),
        issued_by_partner_id: caller.partner_id,
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
            if member.erased_at.is_some() {
                return Err(AppError::MemberErased);
            }
            insert_card(
                &txn,
                caller,
                member.account_id,
                Some(member.id),
                "registered",
            )
            .await?
        }
        None => {
            let account_id = Uuid::now_v7();
            point_account::Entity::insert(point_account::ActiveModel {
                id: Set(account_id),
                programme_id: Set(caller.programme_id),
                member_id: Set(None),
                balance: Set(0),
                version: Set(0),
                created_at: Set(chrono::Utc::now()),
            })
            .exec_without_returning(&txn)
            .await?;
            insert_card(&txn, caller, account_id, None, "bearer").await?
        }
    };
    txn.commit().await?;
    Ok(issued)
}

pub async fn get(app: &App, caller: &Caller, number: &str) -> AppResult<card::Model> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    find(&app.db, caller.programme_id, number).await
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
    let card = find(txn, caller.programme_id, number).await?;
    ensure_active(&card)?;
    if card.member_id.is_some() {
        return Err(AppError::CardAlreadyRegistered);
    }
    let member = members::visible(txn, caller, member_id).await?;
    if member.erased_at.is_some() {
        return Err(AppError::MemberErased);
    }
    let (from, to) = (card.account_id, member.account_id);
    let bearer = point_account::Entity::find_by_id(from)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("points account"))?;
    let points = bearer.balance;
    // Lock both accounts in id order so two transfers can never deadlock.
    let mut states = Vec::new();
    let mut order = [(from, -points), (to, points)];
    order.sort_by_key(|(id, _)| *id);
    for (account, delta) in order {
        states.push(ledger::change_balance(txn, account, delta).await?);
    }
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
    point_lot::Entity::update_many()
        .col_expr(point_lot::Column::AccountId, Expr::value(to))
        .filter(point_lot::Column::AccountId.eq(from))
        .exec(txn)
        .await?;
    card::Entity::update_many()
        .col_expr(card::Column::AccountId, Expr::value(to))
        .col_expr(card::Column::MemberId, Expr::value(Some(member.id)))
        .filter(card::Column::AccountId.eq(from))
        .exec(txn)
        .await?;
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

/// Last four digits only, for reasons shown in histories and logs.
pub fn mask(number: &str) -> String {
    format!("…{}", &number[number.len().saturating_sub(4)..])
}

pub async fn block(app: &App, caller: &Caller, number: &str) -> AppResult<card::Model> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    let card = find(&app.db, caller.programme_id, number).await?;
    if card.status == REPLACED {
        return Err(AppError::CardReplaced(
            card.replaced_by_number.unwrap_or_default(),
        ));
    }
    card::Entity::update_many()
        .col_expr(card::Column::Status, Expr::value(BLOCKED))
        .filter(card::Column::Id.eq(card.id))
        .exec(&app.db)
        .await?;
    find(&app.db, caller.programme_id, number).await
}

/// Replaces a card (lost, damaged, blocked): a new number on the same points account.
/// The status check is part of the UPDATE, so one card is replaced at most once.
pub async fn replace(
    app: &App,
    caller: &Caller,
    number: &str,
    key: &IdempotencyKey,
    render: impl FnOnce(&card::Model) -> StoredResponse,
) -> AppResult<StoredResponse> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    let (response, _) = idempotency::run(app, key, |txn| async move {
        let old = find(&txn, caller.programme_id, number).await?;
        if old.status == REPLACED {
            return Err(AppError::CardReplaced(
                old.replaced_by_number.unwrap_or_default(),
            ));
        }
        let new = insert_card(&txn, caller, old.account_id, old.member_id, &old.kind).await?;
        let updated = card::Entity::update_many()
            .col_expr(card::Column::Status, Expr::value(REPLACED))
            .col_expr(
                card::Column::ReplacedByNumber,
                Expr::value(Some(new.number.clone())),
            )
            .filter(card::Column::Id.eq(old.id))
            .filter(card::Column::Status.ne(REPLACED))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(AppError::CardReplaced(String::new()));
        }
        let response = render(&new);
        Ok((txn, response, ()))
    })
    .await?;
    Ok(response)
}

pub use card::Model as CardRow;

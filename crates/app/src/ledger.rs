//! Writing the journal: entries with their postings, guarded member balances, and the
//! point lots behind them. Every function here runs inside the caller's transaction.

use crate::error::{AppError, AppResult};
use chrono::{DateTime, Utc};
use coalition_domain::earning::BreakdownLine;
use coalition_domain::limits::MAX_BALANCE;
use coalition_domain::lots::{plan_partial, Lot};
use coalition_domain::{AccountKind, JournalEntry, Points};
use coalition_store::entities::{journal_entry, point_account, point_lot, posting};
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use uuid::Uuid;

/// What an entry is about, for the member's history.
pub struct EntryContext {
    pub programme_id: Uuid,
    pub reason: String,
    pub partner_id: Option<Uuid>,
    pub purchase_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
    pub breakdown: Vec<BreakdownLine>,
}

/// A member account after a guarded change: its new balance, the part of it reserved by
/// POS holds, and its version (for the cache).
#[derive(Debug, Clone, Copy)]
pub struct AccountState {
    pub account_id: Uuid,
    pub balance: Points,
    pub held: Points,
    pub version: i64,
}

impl From<point_account::Model> for AccountState {
    fn from(row: point_account::Model) -> Self {
        Self {
            account_id: row.id,
            balance: row.balance,
            held: row.held,
            version: row.version,
        }
    }
}

pub async fn write_entry(
    db: &impl ConnectionTrait,
    id: Uuid,
    entry: &JournalEntry,
    ctx: &EntryContext,
    now: DateTime<Utc>,
) -> AppResult<Uuid> {
    let breakdown =
        serde_json::to_string(&ctx.breakdown).map_err(|e| AppError::Internal(e.to_string()))?;
    journal_entry::Entity::insert(journal_entry::ActiveModel {
        id: Set(id),
        programme_id: Set(ctx.programme_id),
        kind: Set(entry.kind.as_str().to_owned()),
        reason: Set(ctx.reason.clone()),
        partner_id: Set(ctx.partner_id),
        purchase_id: Set(ctx.purchase_id),
        refund_id: Set(ctx.refund_id),
        breakdown: Set(breakdown),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    if !entry.postings.is_empty() {
        let rows = entry.postings.iter().map(|p| posting::ActiveModel {
            seq: NotSet,
            entry_id: Set(id),
            programme_id: Set(ctx.programme_id),
            account_kind: Set(p.account.kind.as_str().to_owned()),
            account_id: Set(p.account.owner),
            amount: Set(p.amount),
            created_at: Set(now),
        });
        posting::Entity::insert_many(rows)
            .exec_without_returning(db)
            .await?;
    }
    Ok(id)
}

/// Changes a member balance by `delta`, refusing to go below zero.
pub async fn change_balance(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    delta: Points,
) -> AppResult<AccountState> {
    spend_and_earn(db, account_id, (-delta).max(0), delta.max(0)).await
}

/// Takes `spend` points from a member balance and adds `earn`, in one statement, refusing
/// when the points not reserved by POS holds (`balance - held`) do not cover `spend`,
/// when the balance would pass `MAX_BALANCE`, or when the account was merged into a
/// member's by a card registration. The guard is in the UPDATE itself, so it holds across
/// server processes sharing the database; on PostgreSQL the row stays locked until
/// commit, which also serialises lot changes, and a statement that waited for a
/// registration re-checks the guard against the merged row. A refusal while the account
/// has lapsed holds releases them (`holds::release_lapsed_in`) and tries once more.
pub async fn spend_and_earn(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    spend: Points,
    earn: Points,
) -> AppResult<AccountState> {
    let change = Change {
        balance: earn - spend,
        held: 0,
    };
    let guard = Expr::expr(
        Expr::col(point_account::Column::Balance).sub(Expr::col(point_account::Column::Held)),
    )
    .gte(spend)
    .and(Expr::col(point_account::Column::Balance).lte(MAX_BALANCE - earn + spend));
    if let Some(state) = guarded_change(db, account_id, change, guard.clone()).await? {
        return Ok(state);
    }
    if spend > 0
        && crate::holds::release_lapsed_in(db, account_id, Utc::now())
            .await?
            .is_some()
    {
        if let Some(state) = guarded_change(db, account_id, change, guard).await? {
            return Ok(state);
        }
    }
    Err(refusal(db, account_id, spend, earn).await?)
}

/// How a guarded change moves an account's balance and its reserved points.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub balance: Points,
    pub held: Points,
}

/// Applies `change` to a live (not merged) account where `guard` holds, in one UPDATE
/// that also bumps the version (cached views of the account are then out of date).
/// `None`: the guard refused and nothing changed.
pub async fn guarded_change(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    change: Change,
    guard: SimpleExpr,
) -> AppResult<Option<AccountState>> {
    let updated = point_account::Entity::update_many()
        .col_expr(
            point_account::Column::Balance,
            Expr::col(point_account::Column::Balance).add(change.balance),
        )
        .col_expr(
            point_account::Column::Held,
            Expr::col(point_account::Column::Held).add(change.held),
        )
        .col_expr(
            point_account::Column::Version,
            Expr::col(point_account::Column::Version).add(1),
        )
        .filter(point_account::Column::Id.eq(account_id))
        .filter(guard)
        .filter(point_account::Column::MergedIntoAccountId.is_null());
    // A closed (erased) account loses points but never gains any: the guard is in the
    // UPDATE, so a credit that waited for the erasure's lock is refused after it.
    let updated = if change.balance > 0 {
        updated.filter(point_account::Column::ClosedAt.is_null())
    } else {
        updated
    };
    let updated = updated.exec_with_returning(db).await?;
    Ok(updated.into_iter().next().map(AccountState::from))
}

/// Spends `spend` points a POS hold reserved and adds `earn`: the balance and the
/// reserved points drop together, so what is spendable is unchanged by the spend.
pub async fn spend_held_and_earn(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    spend: Points,
    earn: Points,
) -> AppResult<AccountState> {
    let change = Change {
        balance: earn - spend,
        held: -spend,
    };
    let guard = Expr::col(point_account::Column::Held)
        .gte(spend)
        .and(Expr::col(point_account::Column::Balance).gte(spend))
        .and(Expr::col(point_account::Column::Balance).lte(MAX_BALANCE - earn + spend));
    match guarded_change(db, account_id, change, guard).await? {
        Some(state) => Ok(state),
        None => Err(refusal(db, account_id, spend, earn).await?),
    }
}

/// Why a guarded balance change of `-spend + earn` found no row to change. The account
/// is read again after the refusal, so a change committed in between may have moved its
/// balance: the limit is blamed only when the balance read now is over it too, and
/// otherwise the balance did not cover `spend` when the guard looked.
pub async fn refusal(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    spend: Points,
    earn: Points,
) -> AppResult<AppError> {
    let account = point_account::Entity::find_by_id(account_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("points account"))?;
    Ok(if account.merged_into_account_id.is_some() {
        AppError::AccountMerged
    } else if account.closed_at.is_some() {
        AppError::CardRetired
    } else if account.balance > MAX_BALANCE - earn + spend {
        AppError::BalanceLimit { max: MAX_BALANCE }
    } else {
        AppError::InsufficientPoints {
            available: account.balance - account.held,
            requested: spend,
        }
    })
}

/// Reads an account and locks it until the transaction ends (`FOR UPDATE` on
/// PostgreSQL; SQLite runs one transaction at a time anyway). Everything that changes an
/// account and another row takes the account first, so no two of them deadlock.
pub async fn lock_account(
    db: &impl ConnectionTrait,
    account_id: Uuid,
) -> AppResult<point_account::Model> {
    use sea_orm::QuerySelect;
    point_account::Entity::find_by_id(account_id)
        .lock_exclusive()
        .one(db)
        .await?
        .ok_or(AppError::NotFound("points account"))
}

pub async fn add_lot(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    account_id: Uuid,
    entry_id: Uuid,
    points: Points,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    if points == 0 {
        return Ok(());
    }
    point_lot::Entity::insert(new_lot(
        programme_id,
        account_id,
        entry_id,
        points,
        expires_at,
        now,
    ))
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A new lot of `points` credited by `entry_id`, all of them remaining.
pub fn new_lot(
    programme_id: Uuid,
    account_id: Uuid,
    entry_id: Uuid,
    points: Points,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> point_lot::ActiveModel {
    point_lot::ActiveModel {
        id: Set(Uuid::now_v7()),
        programme_id: Set(programme_id),
        account_id: Set(account_id),
        entry_id: Set(entry_id),
        points_initial: Set(points),
        points_remaining: Set(points),
        expires_at: Set(expires_at),
        created_at: Set(now),
        reminder_stage: NotSet,
    }
}

/// Lots read per query while consuming: one read covers nearly every purchase or refund.
pub const LOT_CHUNK: u64 = 32;

/// The account's lots that still hold points, soonest expiry first (ties by id). The
/// literal `> 0` (not a bound value) lets PostgreSQL and SQLite use the partial index
/// `ix_lots_live`, which leaves emptied lots out: they pile up at the soonest end.
pub(crate) fn live_lots(account_id: Uuid) -> Select<point_lot::Entity> {
    point_lot::Entity::find()
        .filter(point_lot::Column::AccountId.eq(account_id))
        .filter(Expr::col(point_lot::Column::PointsRemaining).gt(Expr::cust("0")))
        .order_by_asc(point_lot::Column::ExpiresAt)
        .order_by_asc(point_lot::Column::Id)
}

/// Takes `points` out of the account's lots, soonest expiry first. Call it only after the
/// guarded balance change, which both proves the points exist and locks the account.
/// Reads the lots a chunk at a time, so a member with thousands of lots pays for the few
/// the points come from, not for all of them.
pub async fn consume_lots(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    points: Points,
) -> AppResult<()> {
    let mut left = points;
    while left > 0 {
        // Lots emptied by the previous chunk are no longer live: this reads the next ones.
        let chunk: Vec<Lot> = live_lots(account_id)
            .limit(LOT_CHUNK)
            .all(db)
            .await?
            .into_iter()
            .map(|l| Lot {
                id: l.id,
                remaining: l.points_remaining,
                expires_at: l.expires_at,
            })
            .collect();
        let plan = plan_partial(&chunk, left);
        // Points left over a short chunk: the lots ran out (the guard said they would not).
        if plan.left > 0 && chunk.len() < LOT_CHUNK as usize {
            return Err(AppError::Internal(format!(
                "lots of account {account_id} hold fewer than {points} points"
            )));
        }
        for (lot_id, take) in plan.takes {
            point_lot::Entity::update_many()
                .col_expr(
                    point_lot::Column::PointsRemaining,
                    Expr::col(point_lot::Column::PointsRemaining).sub(take),
                )
                .filter(point_lot::Column::Id.eq(lot_id))
                .exec(db)
                .await?;
        }
        left = plan.left;
    }
    Ok(())
}

/// Sum of an account's postings: the balance of append-only (partner, operator) accounts.
pub async fn posted_balance(
    db: &impl ConnectionTrait,
    kind: AccountKind,
    owner: Uuid,
) -> AppResult<Points> {
    use sea_orm::sea_query::{Alias, Func, SimpleExpr};
    use sea_orm::QuerySelect;
    // PostgreSQL sums bigints as numeric; the cast brings it back (SQLite: a no-op).
    let total = Func::cast_as(
        Func::sum(Expr::col(posting::Column::Amount)),
        Alias::new("BIGINT"),
    );
    let sum: Option<Option<i64>> = posting::Entity::find()
        .select_only()
        .column_as(SimpleExpr::from(total), "total")
        .filter(posting::Column::AccountKind.eq(kind.as_str()))
        .filter(posting::Column::AccountId.eq(owner))
        .into_tuple()
        .one(db)
        .await?;
    Ok(sum.flatten().unwrap_or(0))
}

/// A new, empty points account of a programme (a member's, or a card's before anyone
/// registers it).
pub(crate) fn new_account(
    id: Uuid,
    programme_id: Uuid,
    member_id: Option<Uuid>,
    created_at: DateTime<Utc>,
) -> point_account::ActiveModel {
    use sea_orm::ActiveValue::Set;
    point_account::ActiveModel {
        id: Set(id),
        programme_id: Set(programme_id),
        member_id: Set(member_id),
        balance: Set(0),
        version: Set(0),
        merged_into_account_id: Set(None),
        closed_at: Set(None),
        held: Set(0),
        created_at: Set(created_at),
    }
}

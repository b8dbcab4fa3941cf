//! POS holds: a partner reserves a member's points at the till, then captures them (a
//! reward alone, or the purchase they pay for) or voids them; a hold left alone lapses
//! after `App::hold_ttl`.
//!
//! `point_accounts.held` is the sum of the account's holds in status `held`, and what a
//! member may spend is `balance - held`: every UPDATE that takes points compares against
//! that difference (`ledger::spend_and_earn`), as does the one that reserves them here,
//! so a reservation holds across server processes. A hold changes status once, by a
//! conditional UPDATE from `held` (and, for capture and void, not yet lapsed) in the same
//! transaction as the account change it implies: of a capture and a void racing, exactly
//! one finds the hold held; the other is told what became of it.
//!
//! A lapsed hold still counts in `held` until it is released: by `release_lapsed` (a job
//! for the scheduler and `coalition jobs release-holds`), or on the spot when a spend or a
//! new hold on its account is refused (`release_lapsed_in`, then one more try). Reads
//! count only live holds, so a balance never shows a lapsed hold as reserved.
//!
//! Lock order is the ledger's: the account first (`ledger::lock_account`), then the
//! hold, everywhere a hold and its account change together.
//!
//! A capture needs the hold's card still usable: a card blocked or replaced after the
//! hold was made takes nothing more at the till, and its hold lapses or is voided.

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::idempotency::{self, IdempotencyKey, StoredResponse};
use crate::ledger::{self, AccountState, Change, EntryContext};
use crate::programmes::{self, Programme};
use crate::purchases::{self, NewPurchase, Recorded};
use crate::{cards, App, Caller, Scope};
use chrono::{DateTime, Utc};
use coalition_domain::ledger::redemption_entry;
use coalition_domain::{limits, Points};
use coalition_store::entities::{hold, point_account};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

pub const HELD: &str = "held";
pub const CAPTURED: &str = "captured";
pub const VOIDED: &str = "voided";
pub const EXPIRED: &str = "expired";

pub struct NewHold {
    pub card_number: String,
    pub points: Points,
}

/// The purchase a capture records: the hold's points pay part of it.
pub struct CapturePurchase {
    pub amount: String,
    pub currency: String,
    pub external_ref: String,
    pub store_ref: Option<String>,
    pub staff_ref: Option<String>,
    pub categories: Option<Vec<String>>,
}

/// A hold after a change, with its account as the change left it.
#[derive(Debug, Clone)]
pub struct Held {
    pub hold: hold::Model,
    pub account: AccountState,
    /// The purchase a capture recorded.
    pub purchase: Option<Recorded>,
}

/// The status a hold is in at `now`: a hold still `held` whose time has passed is
/// `expired`, whether or not its points were released yet.
pub fn status_at(hold: &hold::Model, now: DateTime<Utc>) -> &str {
    if hold.status == HELD && hold.expires_at <= now {
        EXPIRED
    } else {
        &hold.status
    }
}

fn check(input: NewHold) -> AppResult<NewHold> {
    let mut v = Validator::default();
    let card_number = text_field(&mut v, "card_number", &input.card_number, 32);
    if !card_number.is_empty() {
        crate::cards::check_number(&mut v, "card_number", &card_number);
    }
    v.require("points", input.points > 0, "must be at least 1");
    v.require(
        "points",
        input.points <= limits::MAX_POINTS_PER_ENTRY,
        &format!("must be at most {}", limits::MAX_POINTS_PER_ENTRY),
    );
    v.finish()?;
    Ok(NewHold {
        card_number,
        points: input.points,
    })
}

/// Reserves points on a card (partner; any card of the programme, as for purchases).
#[tracing::instrument(target = "coalition::trace", name = "hold.create", skip_all)]
pub async fn create(
    app: &App,
    caller: &Caller,
    input: NewHold,
    key: &IdempotencyKey,
    render: impl Fn(&Held) -> StoredResponse,
) -> AppResult<StoredResponse> {
    let partner_id = caller.acting_partner()?;
    let input = check(input)?;
    let ttl = chrono::Duration::from_std(app.hold_ttl)
        .map_err(|e| AppError::Internal(format!("hold lifetime: {e}")))?;
    let (input, render) = (&input, &render);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let created = idempotency::run(app, key, |txn| async move {
            let held = create_in(&txn, caller, partner_id, input, ttl).await?;
            let response = render(&held);
            Ok((txn, response, held.account))
        })
        .await;
        match created {
            // A registration merged the card's account meanwhile: follow the card.
            Err(AppError::AccountMerged) if attempt < purchases::MERGE_RETRIES => continue,
            Err(e) => return Err(e),
            Ok((response, changed)) => {
                if let Some(state) = changed {
                    app.cache.changed(state.account_id, state.version).await;
                }
                return Ok(response);
            }
        }
    }
}

async fn create_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    partner_id: Uuid,
    input: &NewHold,
    ttl: chrono::Duration,
) -> AppResult<Held> {
    let card = cards::find(txn, caller.programme_id, &input.card_number).await?;
    cards::ensure_active(&card)?;
    let now = Utc::now();
    let account = reserve(txn, card.account_id, input.points, now).await?;
    let row = hold::Model {
        id: Uuid::now_v7(),
        programme_id: caller.programme_id,
        partner_id,
        account_id: card.account_id,
        card_number: card.number,
        points: input.points,
        status: HELD.to_owned(),
        expires_at: now + ttl,
        purchase_id: None,
        created_at: now,
        resolved_at: None,
    };
    hold::Entity::insert(hold::ActiveModel::from(row.clone()))
        .exec_without_returning(txn)
        .await?;
    Ok(Held {
        hold: row,
        account: as_shown(txn, account, now).await?,
        purchase: None,
    })
}

/// `held += points` where the spendable points cover them; a refusal while the account
/// has lapsed holds releases those and tries once more.
async fn reserve(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    points: Points,
    now: DateTime<Utc>,
) -> AppResult<AccountState> {
    let change = Change {
        balance: 0,
        held: points,
    };
    let guard = || {
        Expr::expr(
            Expr::col(point_account::Column::Balance).sub(Expr::col(point_account::Column::Held)),
        )
        .gte(points)
    };
    if let Some(state) = ledger::guarded_change(db, account_id, change, guard()).await? {
        return Ok(state);
    }
    if release_lapsed_in(db, account_id, now).await?.is_some() {
        if let Some(state) = ledger::guarded_change(db, account_id, change, guard()).await? {
            return Ok(state);
        }
    }
    Err(ledger::refusal(db, account_id, points, 0).await?)
}

/// `held -= points`: a hold's reservation ends without the points being spent.
async fn unreserve(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    points: Points,
) -> AppResult<AccountState> {
    let change = Change {
        balance: 0,
        held: -points,
    };
    let guard = Expr::col(point_account::Column::Held).gte(points);
    ledger::guarded_change(db, account_id, change, guard)
        .await?
        .ok_or_else(|| {
            AppError::Internal(format!(
                "account {account_id} holds fewer reserved points than its holds"
            ))
        })
}

/// Marks the account's lapsed holds expired and frees their points, in the caller's
/// transaction (taking the account's lock first). `None` when there was nothing to free.
pub(crate) async fn release_lapsed_in(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<Option<AccountState>> {
    Ok(expire_lapsed(db, account_id, now).await?.1)
}

/// How many lapsed holds of the account were expired, and the account after.
async fn expire_lapsed(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<(u64, Option<AccountState>)> {
    let account = ledger::lock_account(db, account_id).await?;
    if account.held == 0 {
        return Ok((0, None));
    }
    let lapsed = hold::Entity::update_many()
        .col_expr(hold::Column::Status, Expr::value(EXPIRED))
        .col_expr(hold::Column::ResolvedAt, Expr::value(Some(now)))
        .filter(hold::Column::AccountId.eq(account_id))
        .filter(hold::Column::Status.eq(HELD))
        .filter(hold::Column::ExpiresAt.lte(now))
        .exec_with_returning(db)
        .await?;
    let points: Points = lapsed.iter().map(|h| h.points).sum();
    if points == 0 {
        return Ok((0, None));
    }
    let state = unreserve(db, account_id, points).await?;
    Ok((lapsed.len() as u64, Some(state)))
}

/// Voids every hold of the account still held, lapsed or not, and frees their points,
/// in the caller's transaction (which holds the account's lock): an erased member's
/// points are forfeited, and no till may capture them afterwards.
pub(crate) async fn void_all_in(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<Option<AccountState>> {
    let voided = hold::Entity::update_many()
        .col_expr(hold::Column::Status, Expr::value(VOIDED))
        .col_expr(hold::Column::ResolvedAt, Expr::value(Some(now)))
        .filter(hold::Column::AccountId.eq(account_id))
        .filter(hold::Column::Status.eq(HELD))
        .exec_with_returning(db)
        .await?;
    let points: Points = voided.iter().map(|h| h.points).sum();
    if points == 0 {
        return Ok(None);
    }
    Ok(Some(unreserve(db, account_id, points).await?))
}

/// Accounts the release job handles per query.
const RELEASE_BATCH: u64 = 100;

/// The job: releases every hold that lapsed by `now` and answers how many. Safe on
/// several processes at once: a hold leaves `held` once (a conditional UPDATE), with
/// its account's reserved points in the same transaction.
pub async fn release_lapsed(app: &App, now: DateTime<Utc>) -> AppResult<u64> {
    let mut released = 0;
    loop {
        let accounts: Vec<Uuid> = hold::Entity::find()
            .select_only()
            .column(hold::Column::AccountId)
            .distinct()
            .filter(hold::Column::Status.eq(HELD))
            .filter(hold::Column::ExpiresAt.lte(now))
            .limit(RELEASE_BATCH)
            .into_tuple()
            .all(&app.db)
            .await?;
        let mut batch = 0;
        for account_id in &accounts {
            let txn = app.db.begin().await?;
            let (count, state) = expire_lapsed(&txn, *account_id, now).await?;
            txn.commit().await?;
            if let Some(state) = state {
                app.cache.changed(state.account_id, state.version).await;
            }
            batch += count;
        }
        released += batch;
        // Another process may have released this batch: stop rather than spin.
        if batch == 0 || (accounts.len() as u64) < RELEASE_BATCH {
            return Ok(released);
        }
    }
}

/// A hold of the caller's programme, seen by the partner that made it (or an operator).
async fn find_own(db: &impl ConnectionTrait, caller: &Caller, id: Uuid) -> AppResult<hold::Model> {
    let found = hold::Entity::find_by_id(id)
        .filter(hold::Column::ProgrammeId.eq(caller.programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("hold"))?;
    if caller.scope != Scope::Admin && caller.partner_id != Some(found.partner_id) {
        return Err(AppError::NotFound("hold"));
    }
    Ok(found)
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<hold::Model> {
    caller.require(&[Scope::Admin, Scope::Partner])?;
    find_own(&app.db, caller, id).await
}

/// Moves the hold from `held` (not lapsed) to `status`; whoever comes second is told
/// what became of it.
async fn claim(
    txn: &DatabaseTransaction,
    hold: &hold::Model,
    status: &str,
    now: DateTime<Utc>,
) -> AppResult<hold::Model> {
    let claimed = hold::Entity::update_many()
        .col_expr(hold::Column::Status, Expr::value(status))
        .col_expr(hold::Column::ResolvedAt, Expr::value(Some(now)))
        .filter(hold::Column::Id.eq(hold.id))
        .filter(hold::Column::Status.eq(HELD))
        .filter(hold::Column::ExpiresAt.gt(now))
        .exec(txn)
        .await?;
    let current = hold::Entity::find_by_id(hold.id)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("hold"))?;
    if claimed.rows_affected == 1 {
        return Ok(current);
    }
    Err(match status_at(&current, now) {
        EXPIRED | HELD => AppError::HoldExpired,
        other => AppError::HoldNotHeld {
            status: other.to_owned(),
        },
    })
}

/// Captures a hold: its points are spent, alone or on the purchase given.
#[tracing::instrument(target = "coalition::trace", name = "hold.capture", skip_all)]
pub async fn capture(
    app: &App,
    caller: &Caller,
    id: Uuid,
    purchase: Option<CapturePurchase>,
    key: &IdempotencyKey,
    render: impl FnOnce(&Held) -> StoredResponse,
) -> AppResult<StoredResponse> {
    let partner_id = caller.acting_partner()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let run = idempotency::run(app, key, |txn| async move {
        let held = capture_in(app, &txn, caller, &programme, id, purchase).await?;
        let response = render(&held);
        let member_id = held.purchase.as_ref().and_then(|r| r.priced.card.member_id);
        let earned = held.purchase.as_ref().map(|r| r.purchase.points_earned);
        Ok((
            txn,
            response,
            (held.account, member_id, (earned, held.hold.points)),
        ))
    })
    .await;
    let (response, changed) = match run {
        Ok(done) => done,
        Err(e) => return Err(purchases::name_duplicate(&app.db, caller, partner_id, e).await),
    };
    if let Some((state, member_id, (earned, redeemed))) = changed {
        match earned {
            Some(earned) => crate::metrics::purchase_committed(earned, redeemed),
            None => crate::metrics::points_moved(0, redeemed),
        }
        purchases::after_commit(app, caller, state, member_id).await;
    }
    Ok(response)
}

async fn capture_in(
    app: &App,
    txn: &DatabaseTransaction,
    caller: &Caller,
    programme: &Programme,
    id: Uuid,
    purchase: Option<CapturePurchase>,
) -> AppResult<Held> {
    let hold = find_own(txn, caller, id).await?;
    ledger::lock_account(txn, hold.account_id).await?;
    let now = Utc::now();
    let mut captured = claim(txn, &hold, CAPTURED, now).await?;
    let Some(p) = purchase else {
        let account = take_reward(app, txn, caller, &captured, now).await?;
        let account = as_shown(txn, account, now).await?;
        return Ok(Held {
            hold: captured,
            account,
            purchase: None,
        });
    };
    let new = NewPurchase {
        card_number: hold.card_number.clone(),
        amount: p.amount,
        currency: p.currency,
        external_ref: p.external_ref,
        redeem_points: Some(hold.points),
        store_ref: p.store_ref,
        staff_ref: p.staff_ref,
        categories: p.categories,
    };
    let (recorded, account) =
        purchases::record_paid_by_hold(app, txn, caller, programme, new, hold.account_id)
            .await
            .map_err(fields_of_the_capture)?;
    if recorded.purchase.points_redeemed != hold.points {
        return Err(AppError::Internal(
            "the purchase did not redeem the hold's points".into(),
        ));
    }
    hold::Entity::update_many()
        .col_expr(
            hold::Column::PurchaseId,
            Expr::value(Some(recorded.purchase.id)),
        )
        .filter(hold::Column::Id.eq(hold.id))
        .exec(txn)
        .await?;
    captured.purchase_id = Some(recorded.purchase.id);
    Ok(Held {
        hold: captured,
        account: as_shown(txn, account, now).await?,
        purchase: Some(recorded),
    })
}

/// Validation errors of the purchase named as the capture's request names its fields:
/// `purchase.amount.amount`, and `points` (the hold's) for what the purchase calls
/// `redeem_points`.
fn fields_of_the_capture(err: AppError) -> AppError {
    match err {
        AppError::Validation(fields) => AppError::Validation(
            fields
                .into_iter()
                .map(|f| match f.field.as_str() {
                    "redeem_points" => crate::FieldError::new("points", f.message),
                    other => crate::FieldError::new(&format!("purchase.{other}"), f.message),
                })
                .collect(),
        ),
        other => other,
    }
}

/// The hold's points taken alone, as a reward: out of the balance and the reservation,
/// soonest-expiring lots first, to the capturing partner's redeemed account.
async fn take_reward(
    app: &App,
    txn: &DatabaseTransaction,
    caller: &Caller,
    hold: &hold::Model,
    now: DateTime<Utc>,
) -> AppResult<AccountState> {
    let card = cards::find(txn, caller.programme_id, &hold.card_number).await?;
    cards::ensure_active(&card)?;
    let partner = crate::terms::partner(app, txn, caller.programme_id, hold.partner_id).await?;
    let account = ledger::spend_held_and_earn(txn, hold.account_id, hold.points, 0).await?;
    ledger::consume_lots(txn, hold.account_id, hold.points).await?;
    let entry = redemption_entry(hold.partner_id, hold.account_id, hold.points)?;
    let ctx = EntryContext {
        programme_id: caller.programme_id,
        reason: format!(
            "Reward of {} points at {} (card {})",
            hold.points,
            partner.name,
            cards::mask(&hold.card_number)
        ),
        partner_id: Some(hold.partner_id),
        purchase_id: None,
        refund_id: None,
        breakdown: vec![],
    };
    ledger::write_entry(txn, Uuid::now_v7(), &entry, &ctx, now).await?;
    Ok(account)
}

/// Voids a hold: its points are free again.
pub async fn void(
    app: &App,
    caller: &Caller,
    id: Uuid,
    key: &IdempotencyKey,
    render: impl FnOnce(&Held) -> StoredResponse,
) -> AppResult<StoredResponse> {
    caller.acting_partner()?;
    let (response, changed) = idempotency::run(app, key, |txn| async move {
        let hold = find_own(&txn, caller, id).await?;
        ledger::lock_account(&txn, hold.account_id).await?;
        let now = Utc::now();
        let voided = claim(&txn, &hold, VOIDED, now).await?;
        let account = unreserve(&txn, hold.account_id, hold.points).await?;
        let account = as_shown(&txn, account, now).await?;
        let held = Held {
            hold: voided,
            account,
            purchase: None,
        };
        let response = render(&held);
        Ok((txn, response, account))
    })
    .await?;
    if let Some(state) = changed {
        app.cache.changed(state.account_id, state.version).await;
    }
    Ok(response)
}

/// An account as answers show it: `held` counts live holds only. A lapsed hold
/// reserves nothing, released yet or not, so answers count as balance reads do (one
/// query, and only when the account has holds at all).
pub(crate) async fn as_shown(
    db: &impl ConnectionTrait,
    state: AccountState,
    now: DateTime<Utc>,
) -> AppResult<AccountState> {
    if state.held == 0 {
        return Ok(state);
    }
    let (held, _) = live_on(db, state.account_id, now).await?;
    Ok(AccountState { held, ..state })
}

/// What the live (not lapsed) holds of an account reserve at `now`, and when the first
/// of them lapses: a balance view stays true until then.
pub(crate) async fn live_on(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<(Points, Option<DateTime<Utc>>)> {
    let live = hold::Entity::find()
        .filter(hold::Column::AccountId.eq(account_id))
        .filter(hold::Column::Status.eq(HELD))
        .filter(hold::Column::ExpiresAt.gt(now))
        .all(db)
        .await?;
    let points = live.iter().map(|h| h.points).sum();
    Ok((points, live.iter().map(|h| h.expires_at).min()))
}

pub use hold::Model as HoldRow;

//! Refunds: give back the points spent on the refunded part, claw back the points earned
//! on it. A balance never goes below zero: what cannot be clawed back is recorded as the
//! refund's shortfall, and the issuing partner's account is not credited for it.

use crate::error::{AppError, AppResult, Validator};
use crate::idempotency::{self, IdempotencyKey, StoredResponse};
use crate::ledger::{self, AccountState, EntryContext};
use crate::programmes::{self, Programme};
use crate::purchases::{find_own, parse_stored};
use crate::{App, Caller};
use coalition_domain::ledger::{refund_entry, refund_entry_after_erasure};
use coalition_domain::money::Money;
use coalition_domain::refund::{
    clawback_within_balance, refund_share, split_proportionally, PurchaseRecord, RefundError,
    RefundShare,
};
use coalition_domain::webhooks::REFUND_RECORDED;
use coalition_domain::{AccountKind, AccountRef, Points};
use coalition_store::entities::{point_account, posting, purchase, refund};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder};
use tracing::Instrument;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Refunded {
    pub refund: refund::Model,
    pub balance: i64,
    pub currency: String,
}

#[tracing::instrument(target = "coalition::trace", name = "refund", skip_all)]
pub async fn refund(
    app: &App,
    caller: &Caller,
    purchase_id: Uuid,
    amount: String,
    currency: String,
    key: &IdempotencyKey,
    render: impl FnOnce(&Refunded) -> StoredResponse,
) -> AppResult<StoredResponse> {
    caller.acting_partner()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let mut v = Validator::default();
    let amount = v.check("amount.amount", Money::positive(&amount, &currency));
    v.finish()?;
    let amount = amount.expect("validated");
    programme.ensure_currency(&amount)?;
    // A partner refunds its own purchases only (`find_own`): the event is about it.
    let announce = crate::terms::of_programme(app, &app.db, caller.programme_id)
        .await?
        .webhooks
        .wants(REFUND_RECORDED, caller.partner_id);
    let (response, changed) = idempotency::run(app, key, |txn| async move {
        let (refunded, state) =
            refund_in(&txn, caller, &programme, purchase_id, amount, announce).await?;
        let response = render(&refunded);
        Ok((txn, response, state))
    })
    .instrument(crate::spans::db(
        sea_orm::ConnectionTrait::get_database_backend(&app.db),
        "refund.transaction",
    ))
    .await?;
    if let Some(state) = changed {
        crate::metrics::refund_committed();
        app.cache.changed(state.account_id, state.version).await;
    }
    Ok(response)
}

/// The purchase, and the points account its card is on now, locked. A registration
/// moves a bearer card (not its purchases) to the member's account, so a purchase's points
/// are where its card is. The purchase is read again under the lock: a refund of the same
/// purchase that held the lock meanwhile changed its refunded total (a copy read before
/// would fail the compare-and-set below). A registration that committed while this waited
/// leaves the old account merged: the card is read again. Registrations lock the account
/// before moving cards, so once the card is read on the account held here, it stays.
async fn purchase_with_locked_account(
    txn: &DatabaseTransaction,
    caller: &Caller,
    purchase_id: Uuid,
) -> AppResult<(purchase::Model, point_account::Model)> {
    let bought = find_own(txn, caller, purchase_id).await?;
    // An imported purchase has no card (and a historical day): nothing to refund to.
    if bought.occurred_at.is_some() || bought.card_number.is_empty() {
        return Err(AppError::ImportedPurchaseNotRefundable);
    }
    let number = bought.card_number;
    let mut account_id = crate::cards::find(txn, caller.programme_id, &number)
        .await?
        .account_id;
    for _ in 0..crate::purchases::MERGE_RETRIES {
        let account = ledger::lock_account(txn, account_id).await?;
        let card = crate::cards::find(txn, caller.programme_id, &number).await?;
        if account.merged_into_account_id.is_none() && card.account_id == account_id {
            return Ok((find_own(txn, caller, purchase_id).await?, account));
        }
        account_id = card.account_id;
    }
    Err(AppError::AccountMerged)
}

async fn refund_in(
    txn: &DatabaseTransaction,
    caller: &Caller,
    programme: &Programme,
    purchase_id: Uuid,
    amount: Money,
    announce: bool,
) -> AppResult<(Refunded, AccountState)> {
    let (bought, account) = purchase_with_locked_account(txn, caller, purchase_id).await?;
    let account_id = account.id;
    let already_refunded = parse_stored(&bought.refunded_amount)?;
    let record = PurchaseRecord {
        amount: parse_stored(&bought.amount)?,
        already_refunded,
        points_earned: bought.points_earned,
        points_redeemed: bought.points_redeemed,
    };
    let share = refund_share(&record, amount.amount).map_err(|e| match e {
        RefundError::ExceedsRemaining { .. } => AppError::RefundExceedsRemaining(e.to_string()),
        RefundError::NotPositive | RefundError::OutOfRange => {
            AppError::Validation(vec![crate::FieldError::new("amount.amount", e)])
        }
    })?;
    // Compare-and-set on the refunded total, a second guard: refunds of one purchase
    // already queue on its account's lock and read the total under it.
    let new_total = already_refunded + amount.amount;
    let claimed = purchase::Entity::update_many()
        .col_expr(
            purchase::Column::RefundedAmount,
            Expr::value(new_total.to_string()),
        )
        .filter(purchase::Column::Id.eq(bought.id))
        .filter(purchase::Column::RefundedAmount.eq(bought.refunded_amount.clone()))
        .exec(txn)
        .await?;
    if claimed.rows_affected != 1 {
        return Err(AppError::RefundExceedsRemaining(
            "another refund of this purchase was recorded at the same time; retry".into(),
        ));
    }
    let now = chrono::Utc::now();
    let refund_id = Uuid::now_v7();
    let ctx = EntryContext {
        programme_id: caller.programme_id,
        reason: format!(
            "Refund of {} {} on purchase {}",
            amount.amount_string(),
            amount.currency,
            bought.external_ref
        ),
        partner_id: Some(bought.partner_id),
        purchase_id: Some(bought.id),
        refund_id: Some(refund_id),
        breakdown: vec![],
    };
    let (state, figures) = if account.closed_at.is_some() {
        // Her data was erased: the account takes no points; what the refund gives back
        // is forfeited as her points were, and nothing can be clawed back.
        let entry = refund_entry_after_erasure(
            caller.programme_id,
            bought.partner_id,
            account_id,
            share.points_returned,
        )?;
        let entry_id = ledger::write_entry(txn, Uuid::now_v7(), &entry, &ctx, now).await?;
        let figures = RefundFigures {
            clawed: 0,
            shortfall: share.clawback_due,
            entry_id,
        };
        (AccountState::from(account), figures)
    } else {
        refund_points(txn, &bought, account_id, programme, &share, &ctx, now).await?
    };
    let row = refund::Model {
        id: refund_id,
        programme_id: caller.programme_id,
        purchase_id: bought.id,
        partner_id: bought.partner_id,
        amount: amount.amount.to_string(),
        points_clawed_back: figures.clawed,
        points_returned: share.points_returned,
        points_shortfall: figures.shortfall,
        entry_id: figures.entry_id,
        created_at: now,
    };
    refund::Entity::insert(refund::ActiveModel::from(row.clone()))
        .exec_without_returning(txn)
        .await?;
    purchase::Entity::update_many()
        .col_expr(
            purchase::Column::PointsClawedBack,
            Expr::col(purchase::Column::PointsClawedBack).add(figures.clawed),
        )
        .col_expr(
            purchase::Column::PointsReturned,
            Expr::col(purchase::Column::PointsReturned).add(share.points_returned),
        )
        .filter(purchase::Column::Id.eq(bought.id))
        .exec(txn)
        .await?;
    let member_id = refund_spend(txn, caller.programme_id, &bought, &amount).await?;
    if announce {
        let currency = amount.currency.to_string();
        let event = crate::webhooks::refund_event(&row, member_id, &currency);
        crate::outbox::append(txn, caller.programme_id, REFUND_RECORDED, event).await?;
    }
    Ok((
        Refunded {
            refund: row,
            balance: state.balance,
            currency: amount.currency.to_string(),
        },
        state,
    ))
}

/// What a refund did to the member's points.
struct RefundFigures {
    clawed: Points,
    shortfall: Points,
    entry_id: Uuid,
}

/// Gives back the spent points and claws back the earned ones, within the balance.
async fn refund_points(
    txn: &DatabaseTransaction,
    bought: &purchase::Model,
    account_id: Uuid,
    programme: &Programme,
    share: &RefundShare,
    ctx: &EntryContext,
    now: chrono::DateTime<chrono::Utc>,
) -> AppResult<(AccountState, RefundFigures)> {
    let mut state = ledger::change_balance(txn, account_id, share.points_returned).await?;
    // Points reserved by POS holds are not clawed back; lapsed holds reserve nothing.
    if state.held > 0 {
        if let Some(released) = crate::holds::release_lapsed_in(txn, account_id, now).await? {
            state = released;
        }
    }
    let (clawed, shortfall) = clawback_within_balance(
        state.balance - state.held - share.points_returned,
        share.points_returned,
        share.clawback_due,
    );
    let funders = funders_of(txn, bought).await?;
    let weights: Vec<_> = funders.iter().map(|(_, points)| *points).collect();
    let clawbacks: Vec<_> = funders
        .iter()
        .map(|(account, _)| *account)
        .zip(split_proportionally(clawed, &weights))
        .collect();
    let entry = refund_entry(
        bought.partner_id,
        account_id,
        &clawbacks,
        share.points_returned,
    )?;
    let entry_id = ledger::write_entry(txn, Uuid::now_v7(), &entry, ctx, now).await?;
    // Returned points get a fresh lot: the spent lots are gone from the ledger's view.
    let expires_at = programme.lot_expiry(now);
    ledger::add_lot(
        txn,
        ctx.programme_id,
        account_id,
        entry_id,
        share.points_returned,
        expires_at,
        now,
    )
    .await?;
    // Clawback after the returned lot exists: the lots must always hold the balance.
    if clawed > 0 {
        state = ledger::change_balance(txn, account_id, -clawed).await?;
        ledger::consume_lots(txn, account_id, clawed).await?;
    }
    let figures = RefundFigures {
        clawed,
        shortfall,
        entry_id,
    };
    Ok((state, figures))
}

/// The accounts that funded a purchase's earned points, each with what it still has to
/// get back (what it gave, less what earlier refunds of the purchase clawed back to it),
/// in the order of the purchase's postings: the selling partner alone when nothing was
/// earned. Splitting a clawback by what is still owed (never by what was given) keeps
/// each funder within what it gave, so partial refunds that add up to a full one give
/// every funder back exactly its points, whichever funder each rounding favoured.
fn funder_account(row: &posting::Model) -> AppResult<AccountRef> {
    let kind = AccountKind::parse(&row.account_kind)
        .ok_or_else(|| AppError::Internal("corrupt posting account kind".into()))?;
    Ok(AccountRef {
        kind,
        owner: row.account_id,
    })
}

async fn funders_of(
    txn: &DatabaseTransaction,
    bought: &purchase::Model,
) -> AppResult<Vec<(AccountRef, Points)>> {
    let funding = [AccountKind::PartnerIssued, AccountKind::OperatorFunding].map(|k| k.as_str());
    let rows = posting::Entity::find()
        .filter(posting::Column::EntryId.eq(bought.entry_id))
        .filter(posting::Column::AccountKind.is_in(funding))
        .filter(posting::Column::Amount.lt(0))
        .order_by_asc(posting::Column::Seq)
        .all(txn)
        .await?;
    if rows.len() <= 1 {
        // One funder (nearly every purchase) takes the whole clawback: what earlier
        // refunds gave back does not change the split, so it is not read.
        return Ok(match rows.first() {
            Some(row) => vec![(funder_account(row)?, -row.amount)],
            None => vec![(AccountRef::partner_issued(bought.partner_id), 0)],
        });
    }
    let earlier: Vec<Uuid> = refund::Entity::find()
        .filter(refund::Column::PurchaseId.eq(bought.id))
        .all(txn)
        .await?
        .into_iter()
        .map(|r| r.entry_id)
        .collect();
    let clawed_back = if earlier.is_empty() {
        vec![]
    } else {
        posting::Entity::find()
            .filter(posting::Column::EntryId.is_in(earlier))
            .filter(posting::Column::AccountKind.is_in(funding))
            .filter(posting::Column::Amount.gt(0))
            .all(txn)
            .await?
    };
    let mut funders = Vec::with_capacity(rows.len());
    for row in rows {
        let kind = funder_account(&row)?.kind;
        let returned: Points = clawed_back
            .iter()
            .filter(|c| c.account_kind == row.account_kind && c.account_id == row.account_id)
            .map(|c| c.amount)
            .sum();
        funders.push((
            AccountRef {
                kind,
                owner: row.account_id,
            },
            (-row.amount - returned).max(0),
        ));
    }
    if funders.is_empty() {
        funders.push((AccountRef::partner_issued(bought.partner_id), 0));
    }
    Ok(funders)
}

/// Takes the refunded amount off the qualifying spend of the member whose account the
/// purchase was made on (`tiers`); a bearer account's purchases never counted. Answers
/// that member.
async fn refund_spend(
    txn: &DatabaseTransaction,
    programme_id: Uuid,
    bought: &purchase::Model,
    amount: &Money,
) -> AppResult<Option<Uuid>> {
    let account = point_account::Entity::find_by_id(bought.account_id)
        .one(txn)
        .await?;
    let member_id = account.and_then(|a| a.member_id);
    if let Some(member_id) = member_id {
        let minor = crate::tiers::spend_of(amount)?;
        crate::tiers::record_refund(txn, programme_id, member_id, minor, bought.created_at).await?;
    }
    Ok(member_id)
}

pub use refund::Model as RefundRow;

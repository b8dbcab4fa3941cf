//! Purchases at a partner: pay part with points, earn on the rest, all in one entry.

use crate::cards;
use crate::error::{text_field, AppError, AppResult, Validator};
use crate::idempotency::{self, IdempotencyKey, StoredResponse};
use crate::ledger::{self, AccountState, EntryContext};
use crate::members;
use crate::partners::Partner;
use crate::programmes::{self, Programme};
use crate::{App, Caller};
use coalition_domain::earning::{price_purchase, EarningError, PurchaseOutcome, PurchaseTerms};
use coalition_domain::ledger::purchase_entry;
use coalition_domain::limits;
use coalition_domain::money::Money;
use coalition_domain::{JournalEntry, Points};
use coalition_store::entities::{card, point_account, purchase, refund};
use coalition_store::is_unique_violation;
use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder,
};
use uuid::Uuid;

pub struct NewPurchase {
    pub card_number: String,
    pub amount: String,
    pub currency: String,
    pub external_ref: String,
    pub redeem_points: Option<Points>,
    pub store_ref: Option<String>,
    pub staff_ref: Option<String>,
}

/// A validated purchase request.
pub(crate) struct Checked {
    card_number: String,
    amount: Money,
    external_ref: String,
    redeem_points: Points,
    store_ref: Option<String>,
    staff_ref: Option<String>,
}

/// A purchase as priced (a quote) or as recorded.
#[derive(Debug, Clone)]
pub struct Priced {
    pub card: card::Model,
    pub partner: Partner,
    pub amount: Money,
    pub outcome: PurchaseOutcome,
    /// The member's points after the purchase.
    pub balance: Points,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub purchase: purchase::Model,
    pub priced: Priced,
}

fn check(input: NewPurchase, programme: &Programme) -> AppResult<Checked> {
    let mut v = Validator::default();
    let card_number = text_field(&mut v, "card_number", &input.card_number, 32);
    let external_ref = text_field(&mut v, "external_ref", &input.external_ref, 128);
    let amount = v.check(
        "amount.amount",
        Money::positive(&input.amount, &input.currency),
    );
    if let Some(amount) = &amount {
        v.require(
            "amount.amount",
            amount.amount <= limits::max_purchase_amount(),
            &format!("must be at most {}", limits::MAX_PURCHASE_UNITS),
        );
    }
    let redeem_points = input.redeem_points.unwrap_or(0);
    v.require("redeem_points", redeem_points >= 0, "must not be negative");
    v.require(
        "redeem_points",
        redeem_points <= limits::MAX_POINTS_PER_ENTRY,
        &format!("must be at most {}", limits::MAX_POINTS_PER_ENTRY),
    );
    let optional = |v: &mut Validator, field: &str, value: Option<String>| {
        value
            .map(|s| text_field(v, field, &s, 128))
            .filter(|s| !s.is_empty())
    };
    let store_ref = optional(&mut v, "store_ref", input.store_ref);
    let staff_ref = optional(&mut v, "staff_ref", input.staff_ref);
    v.finish()?;
    let amount = amount.expect("validated");
    programme.ensure_currency(&amount)?;
    Ok(Checked {
        card_number,
        amount,
        external_ref,
        redeem_points,
        store_ref,
        staff_ref,
    })
}

pub(crate) async fn price(
    app: &App,
    db: &impl ConnectionTrait,
    caller: &Caller,
    programme: &Programme,
    req: &Checked,
) -> AppResult<Priced> {
    let partner =
        crate::terms::partner(app, db, caller.programme_id, caller.acting_partner()?).await?;
    let card = cards::find(db, caller.programme_id, &req.card_number).await?;
    cards::ensure_active(&card)?;
    let terms = PurchaseTerms {
        amount: req.amount.amount,
        currency: programme.currency.clone(),
        point_value: programme.point_value,
        earn_points_per_unit: partner.earn_points_per_unit,
        redeem_points: req.redeem_points,
        partner_name: partner.name.clone(),
    };
    let outcome = price_purchase(&terms).map_err(|e| match e {
        EarningError::RedemptionExceedsAmount { .. } => {
            AppError::RedemptionExceedsAmount(e.to_string())
        }
        EarningError::NegativeRedemption | EarningError::RedemptionNotWholeMinorUnits { .. } => {
            AppError::Validation(vec![crate::FieldError::new("redeem_points", e)])
        }
        EarningError::TooManyPoints => {
            AppError::Validation(vec![crate::FieldError::new("amount.amount", e)])
        }
    })?;
    Ok(Priced {
        card,
        partner,
        amount: req.amount.clone(),
        outcome,
        balance: 0,
    })
}

/// What recording the purchase would do, without doing it.
pub async fn quote(app: &App, caller: &Caller, input: NewPurchase) -> AppResult<Priced> {
    caller.acting_partner()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let req = check(input, &programme)?;
    let mut priced = price(app, &app.db, caller, &programme, &req).await?;
    let account = point_account::Entity::find_by_id(priced.card.account_id)
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("points account"))?;
    let out = &priced.outcome;
    if account.balance < out.points_redeemed {
        return Err(AppError::InsufficientPoints {
            available: account.balance,
            requested: out.points_redeemed,
        });
    }
    priced.balance = account.balance - out.points_redeemed + out.points_earned;
    Ok(priced)
}

/// How often a purchase or refund follows its card to a new account when a registration
/// merged the old one meanwhile; a card is registered once, so one retry is all it needs.
pub(crate) const MERGE_RETRIES: usize = 3;

pub async fn record(
    app: &App,
    caller: &Caller,
    input: NewPurchase,
    key: &IdempotencyKey,
    render: impl Fn(&Recorded) -> StoredResponse,
) -> AppResult<StoredResponse> {
    caller.acting_partner()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let req = check(input, &programme)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match record_once(app, caller, &programme, &req, key, &render).await {
            Err(AppError::AccountMerged) if attempt < MERGE_RETRIES => continue,
            other => return other,
        }
    }
}

async fn record_once(
    app: &App,
    caller: &Caller,
    programme: &Programme,
    req: &Checked,
    key: &IdempotencyKey,
    render: &impl Fn(&Recorded) -> StoredResponse,
) -> AppResult<StoredResponse> {
    // A purchase that may move its member's tier needs the transactional path.
    if app.db.get_database_backend() == DbBackend::Postgres
        && req.redeem_points == 0
        && !crate::tiers::has_ladder(app, caller.programme_id).await?
    {
        return crate::earn_statement::record(app, caller, programme, req, key, render).await;
    }
    let (response, changed) = idempotency::run(app, key, |txn| async move {
        let mut priced = price(app, &txn, caller, programme, req).await?;
        let write = plan(app, caller, programme, &priced, req)?;
        let state = write_step_by_step(&txn, &write).await?;
        // After pricing: this purchase is priced with the tier the member had before it.
        if let Some(member_id) = priced.card.member_id {
            let spend = crate::tiers::spend_of(&req.amount)?;
            let at = write.row.created_at;
            crate::tiers::record_spend(app, &txn, caller.programme_id, member_id, spend, at)
                .await?;
        }
        priced.balance = state.balance;
        let recorded = Recorded {
            purchase: write.row,
            priced,
        };
        let response = render(&recorded);
        Ok((txn, response, (state, recorded.priced.card.member_id)))
    })
    .await?;
    if let Some((state, member_id)) = changed {
        after_commit(app, caller, state, member_id).await;
    }
    Ok(response)
}

/// Once the purchase is committed: the cached balance is out of date, and the partner
/// may see the member from now on.
pub(crate) async fn after_commit(
    app: &App,
    caller: &Caller,
    state: AccountState,
    member_id: Option<Uuid>,
) {
    app.cache.changed(state.account_id, state.version).await;
    if let Some(member_id) = member_id {
        let (programme, partner) = (caller.programme_id, caller.partner_id);
        app.directory
            .remember(member_id, programme, state.account_id, partner);
    }
}

/// Everything a purchase writes, decided before anything is written.
pub(crate) struct PurchaseWrite {
    pub entry: JournalEntry,
    pub ctx: EntryContext,
    pub row: purchase::Model,
    pub lot_expires_at: chrono::DateTime<chrono::Utc>,
    /// The member to link to the partner, unless the link is known to exist.
    pub link_member: Option<Uuid>,
}

/// Decides every row a priced purchase writes.
pub(crate) fn plan(
    app: &App,
    caller: &Caller,
    programme: &Programme,
    priced: &Priced,
    req: &Checked,
) -> AppResult<PurchaseWrite> {
    let out = &priced.outcome;
    let account_id = priced.card.account_id;
    let now = chrono::Utc::now();
    let (purchase_id, entry_id) = (Uuid::now_v7(), Uuid::now_v7());
    let entry = purchase_entry(
        priced.partner.id,
        account_id,
        out.points_earned,
        out.points_redeemed,
    )?;
    let ctx = EntryContext {
        programme_id: caller.programme_id,
        reason: format!(
            "Purchase of {} {} at {}",
            req.amount.amount_string(),
            req.amount.currency,
            priced.partner.name
        ),
        partner_id: Some(priced.partner.id),
        purchase_id: Some(purchase_id),
        refund_id: None,
        breakdown: out.breakdown.clone(),
    };
    let row = purchase::Model {
        id: purchase_id,
        programme_id: caller.programme_id,
        partner_id: priced.partner.id,
        account_id,
        card_number: priced.card.number.clone(),
        external_ref: req.external_ref.clone(),
        store_ref: req.store_ref.clone(),
        staff_ref: req.staff_ref.clone(),
        amount: req.amount.amount.to_string(),
        currency: req.amount.currency.to_string(),
        discount: out.discount.to_string(),
        points_earned: out.points_earned,
        points_redeemed: out.points_redeemed,
        refunded_amount: "0".into(),
        points_clawed_back: 0,
        points_returned: 0,
        entry_id,
        created_at: now,
    };
    let partner = Some(priced.partner.id);
    let link_member = priced.card.member_id.filter(|member_id| {
        let known = app
            .directory
            .account(*member_id, caller.programme_id, partner);
        known.is_none()
    });
    Ok(PurchaseWrite {
        entry,
        ctx,
        row,
        lot_expires_at: programme.lot_expiry(now),
        link_member,
    })
}

/// A unique violation on writing a purchase is its external reference, taken already.
pub(crate) fn duplicate_or(err: sea_orm::DbErr, row: &purchase::Model) -> AppError {
    if is_unique_violation(&err) {
        AppError::DuplicateExternalRef(row.external_ref.clone())
    } else {
        err.into()
    }
}

/// The portable way: guarded balance change, lots, entry, purchase, link, one by one.
async fn write_step_by_step(
    txn: &DatabaseTransaction,
    write: &PurchaseWrite,
) -> AppResult<AccountState> {
    let row = &write.row;
    let (account_id, programme_id, now) = (row.account_id, row.programme_id, row.created_at);
    let (points_redeemed, entry_id) = (row.points_redeemed, row.entry_id);
    // The guard: the balance must cover the redeemed points before anything is earned.
    let state = ledger::spend_and_earn(txn, account_id, points_redeemed, row.points_earned).await?;
    ledger::consume_lots(txn, account_id, points_redeemed).await?;
    ledger::write_entry(txn, entry_id, &write.entry, &write.ctx, now).await?;
    let lot = (row.points_earned, write.lot_expires_at);
    ledger::add_lot(txn, programme_id, account_id, entry_id, lot.0, lot.1, now).await?;
    purchase::Entity::insert(purchase::ActiveModel::from(row.clone()))
        .exec_without_returning(txn)
        .await
        .map_err(|e| duplicate_or(e, row))?;
    if let Some(member_id) = write.link_member {
        members::link_partner(txn, programme_id, member_id, row.partner_id).await?;
    }
    Ok(state)
}

/// A purchase with its refunds, as the recording partner (or an operator) sees it.
pub async fn get(
    app: &App,
    caller: &Caller,
    id: Uuid,
) -> AppResult<(purchase::Model, Vec<refund::Model>)> {
    caller.require(&[crate::Scope::Admin, crate::Scope::Partner])?;
    let found = find_own(&app.db, caller, id).await?;
    let refunds = refund::Entity::find()
        .filter(refund::Column::PurchaseId.eq(id))
        .order_by_asc(refund::Column::Id)
        .all(&app.db)
        .await?;
    Ok((found, refunds))
}

/// A purchase of the caller's programme that a partner caller recorded itself.
pub async fn find_own(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: Uuid,
) -> AppResult<purchase::Model> {
    let found = purchase::Entity::find_by_id(id)
        .filter(purchase::Column::ProgrammeId.eq(caller.programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("purchase"))?;
    match caller.partner_id {
        Some(partner_id)
            if caller.scope != crate::Scope::Admin && found.partner_id != partner_id =>
        {
            Err(AppError::NotFound("purchase"))
        }
        _ => Ok(found),
    }
}

pub(crate) fn parse_stored(text: &str) -> AppResult<Decimal> {
    text.parse()
        .map_err(|_| AppError::Internal(format!("stored amount '{text}' is corrupt")))
}

//! Purchases at a partner: pay part with points, earn on the rest, all in one entry.

use crate::cards;
use crate::error::{text_field, AppError, AppResult, Validator};
use crate::idempotency::{self, IdempotencyKey, StoredResponse};
use crate::ledger::{self, AccountState, EntryContext};
use crate::members;
use crate::pagination::{Page, PageRequest};
use crate::partners::Partner;
use crate::programmes::{self, Programme};
use crate::terms::ProgrammeTerms;
use crate::{App, Caller};
use chrono::{DateTime, Datelike, Utc};
use coalition_domain::earning::{
    price_purchase, EarningError, MemberFacts, PurchaseOutcome, PurchaseTerms, Seller,
};
use coalition_domain::ledger::purchase_entry;
use coalition_domain::limits;
use coalition_domain::money::Money;
use coalition_domain::rules::{self as rule_terms, Occasion};
use coalition_domain::tiers::TierTerms;
use coalition_domain::{AccountKind, AccountRef, JournalEntry, Points};
use coalition_store::entities::{
    card, journal_entry, point_account, posting, purchase, refund, rule_award,
};
use coalition_store::is_unique_violation;
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

pub struct NewPurchase {
    pub card_number: String,
    pub amount: String,
    pub currency: String,
    pub external_ref: String,
    pub redeem_points: Option<Points>,
    pub store_ref: Option<String>,
    pub staff_ref: Option<String>,
    /// Category tags of what was bought, for category rules.
    pub categories: Option<Vec<String>>,
}

/// The most category tags one purchase may carry, and the longest tag.
pub const MAX_PURCHASE_CATEGORIES: usize = 20;
pub const MAX_CATEGORY_CHARS: usize = 100;

/// A validated purchase request.
pub(crate) struct Checked {
    card_number: String,
    amount: Money,
    external_ref: String,
    redeem_points: Points,
    store_ref: Option<String>,
    staff_ref: Option<String>,
    categories: Vec<String>,
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
    /// Of those, the points reserved by POS holds (`balance - held` is spendable).
    pub held: Points,
    /// When it was priced: the time the rules saw, and the purchase's time.
    pub at: DateTime<Utc>,
    /// Whether a webhook endpoint may hear of it: then `purchase.recorded` goes to the
    /// outbox with it (read from the terms snapshot it was priced with).
    pub(crate) announce: bool,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub purchase: purchase::Model,
    pub priced: Priced,
}

fn check(input: NewPurchase, programme: &Programme) -> AppResult<Checked> {
    let mut v = Validator::default();
    let card_number = text_field(&mut v, "card_number", &input.card_number, 32);
    if !card_number.is_empty() {
        crate::cards::check_number(&mut v, "card_number", &card_number);
    }
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
    let categories = input.categories.unwrap_or_default();
    v.require(
        "categories",
        categories.len() <= MAX_PURCHASE_CATEGORIES,
        &format!("must have at most {MAX_PURCHASE_CATEGORIES} entries"),
    );
    let categories = categories
        .iter()
        .take(MAX_PURCHASE_CATEGORIES)
        .map(|c| text_field(&mut v, "categories", c, MAX_CATEGORY_CHARS))
        .collect();
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
        categories,
    })
}

/// What pricing reads before it knows the member's history.
pub(crate) struct Context {
    partner: Partner,
    card: card::Model,
    /// The programme's terms; its earning rules price the purchase.
    pub(crate) terms: Arc<ProgrammeTerms>,
    tier: Option<TierTerms>,
    at: DateTime<Utc>,
    /// The campaigns rewarding this member here, as rules capped at their budgets left
    /// (`with_campaigns`); empty until then.
    campaigns: Vec<coalition_domain::rules::Rule>,
}

impl Context {
    /// Whether a running campaign may reward this purchase: then it cannot take the
    /// one-statement path, which knows nothing of assignments and budgets.
    pub(crate) fn campaigns_may_apply(&self) -> bool {
        self.card.member_id.is_some()
            && crate::campaigns::any_applies(&self.terms, self.partner.id, self.at)
    }

    /// Reads the member's campaign rewards; `lock` holds their budgets until commit.
    pub(crate) async fn with_campaigns(
        mut self,
        db: &impl ConnectionTrait,
        lock: bool,
    ) -> AppResult<Self> {
        if let (true, Some(member_id)) = (self.campaigns_may_apply(), self.card.member_id) {
            self.campaigns = crate::campaigns::for_purchase(
                db,
                &self.terms,
                self.partner.id,
                member_id,
                self.at,
                lock,
            )
            .await?;
        }
        Ok(self)
    }

    fn occasion<'a>(&'a self, req: &'a Checked) -> Occasion<'a> {
        Occasion {
            partner_id: self.partner.id,
            partner_category: &self.partner.category,
            amount: req.amount.amount,
            categories: &req.categories,
            at: self.at,
            tier: self.tier.as_ref(),
        }
    }

    /// Whether a rule that may apply needs the member's history (a first-purchase
    /// condition or a cap per member): then the purchase takes the account lock first.
    pub(crate) fn needs_history(&self, req: &Checked) -> bool {
        rule_terms::needs_history(&self.terms.rules, &self.occasion(req))
    }
}

pub(crate) async fn context(
    app: &App,
    db: &impl ConnectionTrait,
    caller: &Caller,
    req: &Checked,
) -> AppResult<Context> {
    let (terms, partner) =
        crate::terms::with_partner(app, db, caller.programme_id, caller.acting_partner()?).await?;
    let card = cards::find(db, caller.programme_id, &req.card_number).await?;
    cards::ensure_active(&card)?;
    let at = Utc::now();
    let tier = member_tier(app, db, caller.programme_id, card.member_id, at).await?;
    Ok(Context {
        partner,
        card,
        terms,
        tier,
        at,
        campaigns: vec![],
    })
}

/// The member's tier, for its discount, its multiplier and tier conditions: the one
/// place a purchase looks it up.
async fn member_tier(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> AppResult<Option<TierTerms>> {
    crate::tiers::member_tier(app, db, programme_id, member_id, at).await
}

/// What pricing needs of the member's history, when a rule needs it: whether this is
/// the first purchase at the partner, and what each capped rule already awarded today
/// and this month (UTC). Read it under the account lock when the purchase is recorded,
/// so concurrent purchases of one member see each other's awards.
pub(crate) async fn member_facts(
    db: &impl ConnectionTrait,
    ctx: &Context,
    req: &Checked,
) -> AppResult<MemberFacts> {
    let mut facts = MemberFacts {
        tier: ctx.tier.clone(),
        ..Default::default()
    };
    if !ctx.needs_history(req) {
        return Ok(facts);
    }
    let account_id = ctx.card.account_id;
    facts.first_purchase_at_partner = !bought_at(db, account_id, ctx.partner.id).await?;
    let capped: Vec<Uuid> = ctx
        .terms
        .rules
        .iter()
        .filter(|r| r.caps.per_member())
        .map(|r| r.id)
        .collect();
    if capped.is_empty() {
        return Ok(facts);
    }
    let (day_start, month_start) = day_and_month_start(ctx.at);
    let awards = rule_award::Entity::find()
        .filter(rule_award::Column::AccountId.eq(account_id))
        .filter(rule_award::Column::RuleId.is_in(capped))
        .filter(rule_award::Column::CreatedAt.gte(month_start))
        .all(db)
        .await?;
    for a in awards {
        *facts.awarded_this_month.entry(a.rule_id).or_insert(0) += a.points;
        if a.created_at >= day_start {
            *facts.awarded_today.entry(a.rule_id).or_insert(0) += a.points;
        }
    }
    Ok(facts)
}

/// The start of `at`'s UTC day and of its UTC calendar month.
fn day_and_month_start(at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = at.date_naive();
    let month = day.with_day(1).unwrap_or(day);
    let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    (midnight(day), midnight(month))
}

/// Whether the account earned or redeemed at the partner before: one of its postings
/// belongs to a purchase entry of that partner. Read through the account's postings
/// (indexed), so the purchase path needs no index of purchases by account. A purchase
/// that moved no points leaves no posting and does not count; purchases made on a bearer
/// card before it was registered stay on the bearer card's account and do not count.
pub(crate) async fn bought_at(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    partner_id: Uuid,
) -> AppResult<bool> {
    let query = Query::select()
        .column((posting::Entity, posting::Column::Seq))
        .from(posting::Entity)
        .inner_join(
            journal_entry::Entity,
            Expr::col((journal_entry::Entity, journal_entry::Column::Id))
                .equals((posting::Entity, posting::Column::EntryId)),
        )
        .and_where(
            Expr::col((posting::Entity, posting::Column::AccountKind))
                .eq(AccountKind::Member.as_str()),
        )
        .and_where(Expr::col((posting::Entity, posting::Column::AccountId)).eq(account_id))
        .and_where(Expr::col((journal_entry::Entity, journal_entry::Column::Kind)).eq("purchase"))
        .and_where(
            Expr::col((journal_entry::Entity, journal_entry::Column::PartnerId)).eq(partner_id),
        )
        .limit(1)
        .to_owned();
    let statement = db.get_database_backend().build(&query);
    Ok(db.query_one(statement).await?.is_some())
}

/// Prices the purchase with the domain's one pricing function: quotes and purchases
/// both come here.
pub(crate) fn price_with(
    programme: &Programme,
    req: &Checked,
    ctx: Context,
    facts: &MemberFacts,
) -> AppResult<Priced> {
    let terms = PurchaseTerms {
        amount: req.amount.amount,
        currency: programme.currency.clone(),
        point_value: programme.point_value,
        seller: Seller {
            id: ctx.partner.id,
            name: ctx.partner.name.clone(),
            category: ctx.partner.category.clone(),
            earn_points_per_unit: ctx.partner.earn_points_per_unit,
        },
        categories: req.categories.clone(),
        at: ctx.at,
        redeem_points: req.redeem_points,
    };
    // A bank-funded rule applies to the bank's own card events only (crates/app/src/bank.rs):
    // a bank pays for its bonus on its own cards' transactions, never at a till.
    let bank_funded = |r: &coalition_domain::rules::Rule| {
        matches!(r.funder, coalition_domain::rules::Funder::Bank(_))
    };
    let with_campaigns;
    let rules: &[coalition_domain::rules::Rule] =
        if ctx.campaigns.is_empty() && !ctx.terms.rules.iter().any(bank_funded) {
            &ctx.terms.rules
        } else {
            with_campaigns = ctx
                .terms
                .rules
                .iter()
                .chain(ctx.campaigns.iter())
                .filter(|r| !bank_funded(r))
                .cloned()
                .collect::<Vec<_>>();
            &with_campaigns
        };
    let outcome = price_purchase(&terms, facts, rules).map_err(|e| match e {
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
    let announce = ctx.terms.webhooks.wants(
        coalition_domain::webhooks::PURCHASE_RECORDED,
        Some(ctx.partner.id),
    );
    Ok(Priced {
        announce,
        card: ctx.card,
        partner: ctx.partner,
        amount: req.amount.clone(),
        outcome,
        balance: 0,
        held: 0,
        at: ctx.at,
    })
}

/// What recording the purchase would do, without doing it.
pub async fn quote(app: &App, caller: &Caller, input: NewPurchase) -> AppResult<Priced> {
    caller.acting_partner()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let req = check(input, &programme)?;
    let ctx = context(app, &app.db, caller, &req).await?;
    let ctx = ctx.with_campaigns(&app.db, false).await?;
    let facts = member_facts(&app.db, &ctx, &req).await?;
    let mut priced = price_with(&programme, &req, ctx, &facts)?;
    let account = point_account::Entity::find_by_id(priced.card.account_id)
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("points account"))?;
    let out = &priced.outcome;
    // Points reserved by live POS holds are not spendable (a purchase would release
    // lapsed ones, so the quote does not count them).
    let (held, _) = if account.held > 0 {
        crate::holds::live_on(&app.db, account.id, chrono::Utc::now()).await?
    } else {
        (0, None)
    };
    let available = account.balance - held;
    if available < out.points_redeemed {
        return Err(AppError::InsufficientPoints {
            available,
            requested: out.points_redeemed,
        });
    }
    priced.balance = account.balance - out.points_redeemed + out.points_earned;
    priced.held = held;
    Ok(priced)
}

/// How often a purchase or refund follows its card to a new account when a registration
/// merged the old one meanwhile; a card is registered once, so one retry is all it needs.
pub(crate) const MERGE_RETRIES: usize = 3;

#[tracing::instrument(target = "coalition::trace", name = "purchase.record", skip_all)]
pub async fn record(
    app: &App,
    caller: &Caller,
    input: NewPurchase,
    key: &IdempotencyKey,
    render: impl Fn(&Recorded) -> StoredResponse,
) -> AppResult<StoredResponse> {
    let partner_id = caller.acting_partner()?;
    let programme = programmes::load(app, caller.programme_id).await?;
    let req = check(input, &programme)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match record_once(app, caller, &programme, &req, key, &render).await {
            Err(AppError::AccountMerged) if attempt < MERGE_RETRIES => continue,
            Err(e) => return Err(name_duplicate(&app.db, caller, partner_id, e).await),
            done => return done,
        }
    }
}

pub use purchase::Model as PurchaseRow;
pub use refund::Model as RefundRow;

/// A `duplicate_external_ref` refusal with the id of the purchase that holds the
/// reference (read after the failed transaction ended); any other error as it is.
pub(crate) async fn name_duplicate(
    db: &impl ConnectionTrait,
    caller: &Caller,
    partner_id: Uuid,
    err: AppError,
) -> AppError {
    let AppError::DuplicateExternalRef {
        external_ref,
        purchase_id: None,
    } = err
    else {
        return err;
    };
    let existing = purchase::Entity::find()
        .select_only()
        .column(purchase::Column::Id)
        .filter(purchase::Column::ProgrammeId.eq(caller.programme_id))
        .filter(purchase::Column::PartnerId.eq(partner_id))
        .filter(purchase::Column::ExternalRef.eq(external_ref.as_str()))
        .into_tuple::<Uuid>()
        .one(db)
        .await;
    AppError::DuplicateExternalRef {
        external_ref,
        purchase_id: existing.ok().flatten(),
    }
}

/// Which purchases to list: a partner sees its own only; the operator any partner's.
#[derive(Debug, Default)]
pub struct PurchaseFilter {
    pub external_ref: Option<String>,
    pub partner_id: Option<Uuid>,
}

/// Purchases, oldest first, with their refunds: a partner's own (a till that lost an
/// answer finds its purchase by `external_ref`), or the programme's for the operator.
pub async fn list(
    app: &App,
    caller: &Caller,
    filter: PurchaseFilter,
    page: PageRequest,
) -> AppResult<Page<(purchase::Model, Vec<refund::Model>)>> {
    caller.require(&[crate::Scope::Admin, crate::Scope::Partner])?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let partner = match crate::members::seeing_partner(caller) {
        Some(own) if filter.partner_id.is_some_and(|asked| asked != own) => {
            return Ok(Page {
                data: vec![],
                next_cursor: None,
            })
        }
        Some(own) => Some(own),
        None => filter.partner_id,
    };
    let mut query =
        purchase::Entity::find().filter(purchase::Column::ProgrammeId.eq(caller.programme_id));
    if let Some(partner) = partner {
        query = query.filter(purchase::Column::PartnerId.eq(partner));
    }
    if let Some(external_ref) = &filter.external_ref {
        query = query.filter(purchase::Column::ExternalRef.eq(external_ref.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(purchase::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(purchase::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let ids: Vec<Uuid> = rows.iter().map(|p| p.id).collect();
    let mut refunds: std::collections::HashMap<Uuid, Vec<refund::Model>> = Default::default();
    for r in refund::Entity::find()
        .filter(refund::Column::PurchaseId.is_in(ids))
        .order_by_asc(refund::Column::Id)
        .all(&app.db)
        .await?
    {
        refunds.entry(r.purchase_id).or_default().push(r);
    }
    Ok(page.page(
        rows,
        |p| p.id.to_string(),
        |p| {
            let own = refunds.get(&p.id).cloned().unwrap_or_default();
            (p, own)
        },
    ))
}

async fn record_once(
    app: &App,
    caller: &Caller,
    programme: &Programme,
    req: &Checked,
    key: &IdempotencyKey,
    render: &impl Fn(&Recorded) -> StoredResponse,
) -> AppResult<StoredResponse> {
    if app.db.get_database_backend() == DbBackend::Postgres && req.redeem_points == 0 {
        // The one-statement path, unless a rule needs the member's history (read under
        // the account lock, in a transaction).
        let read = crate::spans::db(DbBackend::Postgres, "purchase.read");
        let ctx = match context(app, &app.db, caller, req).instrument(read).await {
            Ok(ctx) => ctx,
            Err(e) => return idempotency::replay_or(app, key, e).await,
        };
        if !ctx.needs_history(req) && !ctx.campaigns_may_apply() {
            return crate::earn_statement::record(app, caller, programme, req, ctx, key, render)
                .await;
        }
    }
    let transaction = crate::spans::db(app.db.get_database_backend(), "purchase.transaction");
    let (response, changed) = idempotency::run(app, key, |txn| async move {
        let ctx = context(app, &txn, caller, req).await?;
        // The account before the campaigns' budget rows: every path (hold captures
        // too) locks in that order, or two purchases of one member deadlock.
        if ctx.needs_history(req) || ctx.campaigns_may_apply() {
            locked_unmerged(&txn, ctx.card.account_id).await?;
        }
        let ctx = ctx.with_campaigns(&txn, true).await?;
        let facts = member_facts(&txn, &ctx, req).await?;
        let mut priced = price_with(programme, req, ctx, &facts)?;
        let write = plan(app, caller, programme, &priced, req)?;
        let state = write_step_by_step(&txn, &write, PaidFrom::Balance).await?;
        crate::campaigns::spend_budget(&txn, &priced.outcome).await?;
        record_spend(app, &txn, caller, &priced, req, &write).await?;
        let shown = crate::holds::as_shown(&txn, state, chrono::Utc::now()).await?;
        (priced.balance, priced.held) = (shown.balance, shown.held);
        let recorded = Recorded {
            purchase: write.row,
            priced,
        };
        let response = render(&recorded);
        let points = (
            recorded.purchase.points_earned,
            recorded.purchase.points_redeemed,
        );
        Ok((
            txn,
            response,
            (state, recorded.priced.card.member_id, points),
        ))
    })
    .instrument(transaction)
    .await?;
    if let Some((state, member_id, (earned, redeemed))) = changed {
        crate::metrics::purchase_committed(earned, redeemed);
        after_commit(app, caller, state, member_id).await;
    }
    Ok(response)
}

/// Counts the purchase's amount toward its member's tier, after pricing: the purchase
/// is priced with the tier the member had before it, and may upgrade the member.
async fn record_spend(
    app: &App,
    txn: &DatabaseTransaction,
    caller: &Caller,
    priced: &Priced,
    req: &Checked,
    write: &PurchaseWrite,
) -> AppResult<()> {
    if let Some(member_id) = priced.card.member_id {
        let spend = crate::tiers::spend_of(&req.amount)?;
        let at = write.row.created_at;
        crate::tiers::record_spend(app, txn, caller.programme_id, member_id, spend, at).await?;
    }
    Ok(())
}

/// Locks the member's account for the rest of the transaction; one merged into another
/// by a registration meanwhile sends the purchase round again on the card's new account.
async fn locked_unmerged(txn: &DatabaseTransaction, account_id: Uuid) -> AppResult<()> {
    let account = ledger::lock_account(txn, account_id).await?;
    match account.merged_into_account_id {
        Some(_) => Err(AppError::AccountMerged),
        None => Ok(()),
    }
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
    /// What each rule gave, for the caps of later purchases.
    pub awards: Vec<rule_award::Model>,
    /// `purchase.recorded`'s data, when a webhook endpoint may hear of it.
    pub event: Option<serde_json::Value>,
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
    let now = priced.at;
    let (purchase_id, entry_id) = (Uuid::now_v7(), Uuid::now_v7());
    let seller = priced.partner.id;
    let funded: Vec<(AccountRef, Points)> = out
        .breakdown
        .iter()
        .map(|l| {
            let funder = l
                .funder
                .unwrap_or(coalition_domain::rules::Funder::SellingPartner);
            (
                AccountRef::funding(funder, caller.programme_id, seller),
                l.points,
            )
        })
        .collect();
    let entry = purchase_entry(seller, account_id, &funded, out.points_redeemed)?;
    let awards = out
        .breakdown
        .iter()
        .filter_map(|l| Some((l.rule_id?, l.rule_version?, l.points)))
        .map(|(rule_id, rule_version, points)| rule_award::Model {
            id: Uuid::now_v7(),
            programme_id: caller.programme_id,
            rule_id,
            rule_version,
            account_id,
            entry_id,
            points,
            created_at: now,
        })
        .collect();
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
        occurred_at: None,
    };
    let partner = Some(priced.partner.id);
    let link_member = priced.card.member_id.filter(|member_id| {
        let known = app
            .directory
            .account(*member_id, caller.programme_id, partner);
        known.is_none()
    });
    let event = priced
        .announce
        .then(|| crate::webhooks::purchase_event(&row, priced.card.member_id));
    Ok(PurchaseWrite {
        event,
        entry,
        ctx,
        row,
        lot_expires_at: programme.lot_expiry(now),
        link_member,
        awards,
    })
}

/// A unique violation on writing a purchase is its external reference, taken already.
pub(crate) fn duplicate_or(err: sea_orm::DbErr, row: &purchase::Model) -> AppError {
    if is_unique_violation(&err) {
        AppError::DuplicateExternalRef {
            external_ref: row.external_ref.clone(),
            purchase_id: None,
        }
    } else {
        err.into()
    }
}

/// Where a purchase's redeemed points come from: the member's spendable points, or the
/// points a POS hold reserved for it (see `record_paid_by_hold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaidFrom {
    Balance,
    Hold,
}

/// The portable way: guarded balance change, lots, entry, purchase, link, one by one.
async fn write_step_by_step(
    txn: &DatabaseTransaction,
    write: &PurchaseWrite,
    paid_from: PaidFrom,
) -> AppResult<AccountState> {
    let row = &write.row;
    let (account_id, programme_id, now) = (row.account_id, row.programme_id, row.created_at);
    let (points_redeemed, entry_id) = (row.points_redeemed, row.entry_id);
    let earned = row.points_earned;
    // The guard: the spendable points (or the hold's) must cover the redeemed points
    // before anything is earned.
    let state = match paid_from {
        PaidFrom::Balance => {
            ledger::spend_and_earn(txn, account_id, points_redeemed, earned).await?
        }
        PaidFrom::Hold => {
            ledger::spend_held_and_earn(txn, account_id, points_redeemed, earned).await?
        }
    };
    ledger::consume_lots(txn, account_id, points_redeemed).await?;
    ledger::write_entry(txn, entry_id, &write.entry, &write.ctx, now).await?;
    if !write.awards.is_empty() {
        let rows = write
            .awards
            .iter()
            .cloned()
            .map(rule_award::ActiveModel::from);
        rule_award::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    let lot = (row.points_earned, write.lot_expires_at);
    ledger::add_lot(txn, programme_id, account_id, entry_id, lot.0, lot.1, now).await?;
    purchase::Entity::insert(purchase::ActiveModel::from(row.clone()))
        .exec_without_returning(txn)
        .await
        .map_err(|e| duplicate_or(e, row))?;
    if let Some(member_id) = write.link_member {
        members::link_partner(txn, programme_id, member_id, row.partner_id).await?;
    }
    if let Some(event) = &write.event {
        let kind = coalition_domain::webhooks::PURCHASE_RECORDED;
        crate::outbox::append(txn, programme_id, kind, event.clone()).await?;
    }
    Ok(state)
}

/// The hook of POS holds (`crate::holds::capture`): the purchase a captured hold pays
/// for, recorded by the same pipeline as `record`, inside the capture's transaction, with
/// the hold's points as `redeem_points`. Only where the points come from differs: out of
/// the hold's reservation, so `held` drops with the balance.
pub(crate) async fn record_paid_by_hold(
    app: &App,
    txn: &DatabaseTransaction,
    caller: &Caller,
    programme: &Programme,
    input: NewPurchase,
    hold_account_id: Uuid,
) -> AppResult<(Recorded, AccountState)> {
    let req = check(input, programme)?;
    // The capture locked the account already: the member's history is read under it.
    let ctx = context(app, txn, caller, &req).await?;
    let ctx = ctx.with_campaigns(txn, true).await?;
    let facts = member_facts(txn, &ctx, &req).await?;
    let mut priced = price_with(programme, &req, ctx, &facts)?;
    if priced.card.account_id != hold_account_id {
        return Err(AppError::Internal(
            "the hold's card is on another account than the hold".into(),
        ));
    }
    let write = plan(app, caller, programme, &priced, &req)?;
    let state = write_step_by_step(txn, &write, PaidFrom::Hold).await?;
    crate::campaigns::spend_budget(txn, &priced.outcome).await?;
    record_spend(app, txn, caller, &priced, &req, &write).await?;
    (priced.balance, priced.held) = (state.balance, state.held);
    let recorded = Recorded {
        purchase: write.row,
        priced,
    };
    Ok((recorded, state))
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

//! A member's balance (cache first, database on a miss) and ledger history.

use crate::error::{AppError, AppResult};
use crate::ledger;
use crate::members;
use crate::pagination::{Page, PageRequest};
use crate::programmes;
use crate::{App, Caller};
use chrono::{DateTime, Duration, Utc};
use coalition_domain::earning::BreakdownLine;
use coalition_domain::money::format_amount;
use coalition_domain::{AccountKind, Points};
use coalition_store::cache::{Versioned, MAX_TTL};
use coalition_store::entities::{journal_entry, point_account, point_lot, posting};
use rust_decimal::{Decimal, RoundingStrategy};
use sea_orm::sea_query::{Expr, Func, SimpleExpr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Points expiring within this window are shown as "expiring soon".
pub const EXPIRING_SOON_DAYS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiringLot {
    pub points: Points,
    pub expires_at: DateTime<Utc>,
}

/// A points account's balance as cached: the same for a member and for any card on the
/// account, so it names neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub points: Points,
    /// Points reserved by live POS holds.
    pub held_points: Points,
    /// What can be spent now: `points - held_points`.
    pub available_points: Points,
    /// Points of bank card authorizations not cleared yet: shown, not spendable, not
    /// in `points`. (A view cached before bank events existed reads as 0: the account's
    /// version moved with its first event, so such a view is never served after it.)
    #[serde(default)]
    pub pending_points: Points,
    /// Money value of the points, as a decimal string in `currency`.
    pub value: String,
    pub currency: String,
    pub expiring_soon: Vec<ExpiringLot>,
}

/// A member's balance, for the operator and the partners that may see the member.
pub async fn balance(app: &App, caller: &Caller, member_id: Uuid) -> AppResult<BalanceView> {
    let account_id = members::visible_account(app, caller, member_id).await?;
    account_balance(app, caller.programme_id, account_id).await
}

/// The till's balance inquiry: the points behind a card, for any partner of the
/// programme shown the card; nothing about whose card it is.
pub async fn card_balance(app: &App, caller: &Caller, number: &str) -> AppResult<BalanceView> {
    let account_id = crate::cards::account_of_usable(app, caller, number).await?;
    account_balance(app, caller.programme_id, account_id).await
}

pub(crate) async fn account_balance(
    app: &App,
    programme_id: Uuid,
    account_id: Uuid,
) -> AppResult<BalanceView> {
    if let Some(hit) = app.cache.get(account_id).await {
        if let Ok(view) = serde_json::from_str::<BalanceView>(&hit.body) {
            return Ok(view);
        }
    }
    let (view, version, ttl) = read_balance(app, programme_id, account_id).await?;
    if let Ok(body) = serde_json::to_string(&view) {
        app.cache
            .put(account_id, Versioned { version, body }, ttl)
            .await;
    }
    Ok(view)
}

async fn read_balance(
    app: &App,
    programme_id: Uuid,
    account_id: Uuid,
) -> AppResult<(BalanceView, i64, std::time::Duration)> {
    let programme = programmes::load(app, programme_id).await?;
    let account = point_account::Entity::find_by_id(account_id)
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("points account"))?;
    let now = Utc::now();
    let horizon = now + Duration::days(EXPIRING_SOON_DAYS);
    // Not every lot: those inside the window (the view lists them) and the first one
    // beyond it (with any sharing its expiry), in one statement. A lot further out enters
    // the window and expires after that one does, so it cannot end the view sooner.
    let lots = ledger::live_lots(account_id)
        .filter(
            Expr::col(point_lot::Column::ExpiresAt)
                .lte(window_or_first_beyond(account_id, horizon)),
        )
        .all(&app.db)
        .await?;
    let mut ttl = view_lifetime(now, lots.iter().map(|l| l.expires_at));
    // Lapsed holds reserve nothing, released or not; the view ends when the next lapses.
    let (held, next_lapse) = if account.held > 0 {
        crate::holds::live_on(&app.db, account_id, now).await?
    } else {
        (0, None)
    };
    if let Some(until) = next_lapse.and_then(|at| (at - now).to_std().ok()) {
        ttl = ttl.min(until);
    }
    let lots = lots.into_iter().filter(|l| l.expires_at < horizon);
    let value = Decimal::from(account.balance)
        .checked_mul(programme.point_value)
        .ok_or_else(|| AppError::Internal(format!("value of account {account_id} overflows")))?
        .round_dp_with_strategy(programme.currency.minor_units(), RoundingStrategy::ToZero);
    let view = BalanceView {
        points: account.balance,
        held_points: held,
        available_points: account.balance - held,
        pending_points: crate::bank::pending_on(&app.db, account_id).await?,
        value: format_amount(value, &programme.currency),
        currency: programme.currency.to_string(),
        expiring_soon: lots
            .map(|l| ExpiringLot {
                points: l.points_remaining,
                expires_at: l.expires_at,
            })
            .collect(),
    };
    Ok((view, account.version, ttl))
}

/// The expiry of the account's first live lot beyond `horizon`, or `horizon` when none is.
fn window_or_first_beyond(account_id: Uuid, horizon: DateTime<Utc>) -> SimpleExpr {
    let first_beyond = ledger::live_lots(account_id)
        .filter(point_lot::Column::ExpiresAt.gt(horizon))
        .select_only()
        .column(point_lot::Column::ExpiresAt)
        .limit(1)
        .into_query();
    let first_beyond =
        SimpleExpr::SubQuery(None, Box::new(first_beyond.into_sub_query_statement()));
    Func::coalesce([first_beyond, Expr::value(horizon)]).into()
}

/// How long a balance view stays true without a write: until the next lot enters the
/// "expiring soon" window or expires, whichever comes first.
fn view_lifetime(
    now: DateTime<Utc>,
    lot_expiries: impl Iterator<Item = DateTime<Utc>>,
) -> std::time::Duration {
    lot_expiries
        .flat_map(|expires| [expires - Duration::days(EXPIRING_SOON_DAYS), expires])
        .filter(|moment| *moment > now)
        .min()
        .and_then(|next| (next - now).to_std().ok())
        .map_or(MAX_TTL, |until| until.min(MAX_TTL))
}

/// A partner's view of a member's history holds only its own purchases, refunds and
/// rewards: postings whose entry is a purchase, refund or redemption by that partner.
fn own_purchases_and_refunds(partner_id: Uuid) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{Alias, Expr, Query};
    let entry = Alias::new("own_entry");
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from_as(journal_entry::Entity, entry.clone())
            .and_where(
                Expr::col((entry.clone(), journal_entry::Column::Id))
                    .equals((posting::Entity, posting::Column::EntryId)),
            )
            .and_where(Expr::col((entry.clone(), journal_entry::Column::PartnerId)).eq(partner_id))
            .and_where(Expr::col((entry, journal_entry::Column::Kind)).is_in([
                "purchase",
                "refund",
                "redemption",
            ]))
            .to_owned(),
    )
}

/// One line of a member's history: one posting on the member's account, with its entry.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub seq: i64,
    pub entry_id: Uuid,
    pub kind: &'static str,
    pub points: Points,
    pub reason: String,
    pub partner_id: Option<Uuid>,
    pub purchase_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
    pub breakdown: Vec<BreakdownLine>,
    pub created_at: DateTime<Utc>,
}

/// What a posting means for the member, from its entry's kind and its sign.
fn movement(entry_kind: &str, points: Points) -> &'static str {
    match (entry_kind, points >= 0) {
        ("purchase", true) => "earned",
        ("purchase", false) => "redeemed",
        ("redemption", false) => "redeemed",
        ("refund", true) => "returned",
        ("refund", false) => "clawed_back",
        ("card_transfer", true) => "card_transfer_in",
        ("card_transfer", false) => "card_transfer_out",
        ("expiry", false) => "expired",
        ("erasure", false) => "forfeited",
        _ => "adjustment",
    }
}

pub async fn history(
    app: &App,
    caller: &Caller,
    member_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<HistoryItem>> {
    let member = members::visible(&app.db, caller, member_id).await?;
    let before = page.decode_cursor(|c| c.parse::<i64>().ok())?;
    let mut query = posting::Entity::find()
        .filter(posting::Column::AccountKind.eq(AccountKind::Member.as_str()))
        .filter(posting::Column::AccountId.eq(member.account_id));
    if let Some(before) = before {
        query = query.filter(posting::Column::Seq.lt(before));
    }
    if let Some(partner_id) = members::seeing_partner(caller) {
        query = query.filter(own_purchases_and_refunds(partner_id));
    }
    let postings = query
        .order_by_desc(posting::Column::Seq)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let entry_ids: Vec<Uuid> = postings.iter().map(|p| p.entry_id).collect();
    let entries = journal_entry::Entity::find()
        .filter(journal_entry::Column::Id.is_in(entry_ids))
        .all(&app.db)
        .await?;
    let mut items = Vec::with_capacity(postings.len());
    for p in postings {
        let entry = entries
            .iter()
            .find(|e| e.id == p.entry_id)
            .ok_or_else(|| AppError::Internal("posting without entry".into()))?;
        let kind = movement(&entry.kind, p.amount);
        // The rule breakdown explains earned points, so it goes with the earning line.
        let breakdown = if kind == "earned" {
            serde_json::from_str(&entry.breakdown).unwrap_or_default()
        } else {
            vec![]
        };
        items.push(HistoryItem {
            seq: p.seq,
            entry_id: entry.id,
            kind,
            points: p.amount,
            reason: entry.reason.clone(),
            partner_id: entry.partner_id,
            purchase_id: entry.purchase_id,
            refund_id: entry.refund_id,
            breakdown,
            created_at: p.created_at,
        });
    }
    Ok(page.page(items, |i| i.seq.to_string(), |i| i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_lives_until_a_lot_enters_the_window_or_expires() {
        let now = Utc::now();
        assert_eq!(view_lifetime(now, std::iter::empty()), MAX_TTL);
        let far = now + Duration::days(400);
        assert_eq!(view_lifetime(now, [far].into_iter()), MAX_TTL);
        // Enters the 30-day window in 2 minutes.
        let entering = now + Duration::days(EXPIRING_SOON_DAYS) + Duration::minutes(2);
        assert_eq!(
            view_lifetime(now, [far, entering].into_iter()),
            std::time::Duration::from_secs(120)
        );
        // Already in the window, expires in 1 minute.
        let expiring = now + Duration::minutes(1);
        assert_eq!(
            view_lifetime(now, [expiring].into_iter()),
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn the_lots_read_on_a_miss_give_the_lifetime_all_lots_give() {
        let now = Utc::now();
        let horizon = now + Duration::days(EXPIRING_SOON_DAYS);
        let minutes = Duration::minutes;
        let moments = [
            now - minutes(1),
            now + minutes(1),
            now + minutes(4),
            now + minutes(10),
            horizon - minutes(1),
            horizon,
            horizon + minutes(1),
            horizon + minutes(3),
            horizon + minutes(10),
            horizon + Duration::days(400),
        ];
        // Every set of lots made of these expiries (duplicates aside).
        for set in 0..1u32 << moments.len() {
            let all: Vec<DateTime<Utc>> = (0..moments.len())
                .filter(|i| set & (1 << i) != 0)
                .map(|i| moments[i])
                .collect();
            // What read_balance reads: lots up to the first expiry beyond the window.
            let edge = all.iter().copied().filter(|e| *e > horizon).min();
            let edge = edge.unwrap_or(horizon);
            let read: Vec<DateTime<Utc>> = all.iter().copied().filter(|e| *e <= edge).collect();
            assert_eq!(
                view_lifetime(now, read.into_iter()),
                view_lifetime(now, all.clone().into_iter()),
                "expiries {all:?}"
            );
        }
    }
}

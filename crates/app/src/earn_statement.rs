//! PostgreSQL: a purchase that redeems nothing, written in one statement. The balance
//! change, the journal entry with its postings, the lot, the purchase, the partner link
//! and the idempotency record are data-modifying CTEs hanging off the account UPDATE, so
//! they commit together or not at all — one round trip instead of nine (BEGIN, six
//! writes, the idempotency record, COMMIT). It writes the same rows as the step-by-step
//! path (`purchases::write_step_by_step`), which SQLite and redemptions use; both run
//! under the same end-to-end tests on PostgreSQL.
//!
//! What each rule awarded (`rule_awards`) is one more CTE. Purchases whose rules need
//! the member's history (a first-purchase condition, a cap per member) do not come here:
//! they read it under the account lock, in a transaction (`purchases::record_once`).
//!
//! The stored answer holds the new balance, known only inside the statement: it is
//! rendered with a placeholder balance, which the statement replaces. The placeholder is
//! the whole run of members `"balance":<i64::MIN>,"held_points":0,"available_points":
//! <i64::MIN>` (the points POS holds reserve are read in the same UPDATE), quotes
//! included: a caller's text (an external reference, say) is a JSON string, whose quotes
//! are always escaped, so it can never contain it.

use crate::error::{AppError, AppResult};
use crate::idempotency::{self, IdempotencyKey, StoredResponse};
use crate::ledger::{self, AccountState};
use crate::programmes::Programme;
use crate::purchases::{self, duplicate_or, Checked, Context, PurchaseWrite, Recorded};
use crate::{App, Caller};
use coalition_domain::limits::MAX_BALANCE;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tracing::Instrument;

/// Stands for the new balance in the rendered answer; no real balance is negative.
const BALANCE_PLACEHOLDER: i64 = i64::MIN;

/// The rendered answer's balance members, as the placeholder balance shows them.
fn balance_members(balance: i64, held: i64) -> String {
    let available = balance.wrapping_sub(held);
    format!("\"balance\":{balance},\"held_points\":{held},\"available_points\":{available}")
}

pub(crate) async fn record(
    app: &App,
    caller: &Caller,
    programme: &Programme,
    req: &Checked,
    ctx: Context,
    key: &IdempotencyKey,
    render: &impl Fn(&Recorded) -> StoredResponse,
) -> AppResult<StoredResponse> {
    // No rule that may apply needs the member's history (the caller checked): the facts
    // are the tier alone, read without the account lock.
    let read = crate::spans::db(DbBackend::Postgres, "purchase.read_tier");
    let facts = purchases::member_facts(&app.db, &ctx, req)
        .instrument(read)
        .await?;
    let terms_ladder_empty = ctx.terms.ladder.is_empty();
    let priced = match purchases::price_with(programme, req, ctx, &facts) {
        Ok(priced) => priced,
        Err(e) => return idempotency::replay_or(app, key, e).await,
    };
    let write = purchases::plan(app, caller, programme, &priced, req)?;
    let created_at = write.row.created_at;
    let member_id = priced.card.member_id;
    let spend = match member_id {
        Some(member) => Some((member, crate::tiers::spend_of(&priced.amount)?)),
        None => None,
    };
    let mut recorded = Recorded {
        purchase: write.row.clone(),
        priced,
    };
    (recorded.priced.balance, recorded.priced.held) = (BALANCE_PLACEHOLDER, 0);
    let template = render(&recorded);
    let placeholder = balance_members(BALANCE_PLACEHOLDER, 0);
    if template.body.matches(&placeholder).count() != 1 {
        return Err(AppError::Internal(
            "the purchase answer must show the balance exactly once".into(),
        ));
    }
    let written = crate::spans::db(DbBackend::Postgres, "purchase.write");
    let state = match write_all(&app.db, &write, spend, key, &template, &placeholder)
        .instrument(written)
        .await
    {
        Ok(state) => state,
        Err(e) => return idempotency::replay_or(app, key, e).await,
    };
    crate::metrics::purchase_committed(write.row.points_earned, write.row.points_redeemed);
    purchases::after_commit(app, caller, state, member_id).await;
    if let (Some(member_id), false) = (member_id, terms_ladder_empty) {
        crate::tiers::promote_after_purchase(app, caller.programme_id, member_id, created_at)
            .await?;
    }
    Ok(StoredResponse {
        body: template
            .body
            .replace(&placeholder, &balance_members(state.balance, state.held)),
        ..template
    })
}

/// Collects bind values and hands out their `$n` placeholders.
#[derive(Default)]
struct Binds(Vec<Value>);

impl Binds {
    fn add(&mut self, value: impl Into<Value>) -> String {
        self.0.push(value.into());
        format!("${}", self.0.len())
    }
}

async fn write_all(
    db: &impl ConnectionTrait,
    write: &PurchaseWrite,
    spend: Option<(uuid::Uuid, i64)>,
    key: &IdempotencyKey,
    answer: &StoredResponse,
    placeholder: &str,
) -> AppResult<AccountState> {
    let row = &write.row;
    let mut b = Binds::default();
    let earned = b.add(row.points_earned);
    let account = b.add(row.account_id);
    let entry = b.add(row.entry_id);
    let programme = b.add(row.programme_id);
    let stamp = b.add(row.created_at);
    // The moment the rows are written: the purchase's stamp, or the statement's start
    // on the database's clock when the statement began later (it waited for a
    // connection). A settlement waits for the transactions open before its period's
    // end, and only a statement that began after that can be missing from its read:
    // this keeps such a statement's rows out of the settled period (`settlements`).
    let now = format!("GREATEST({stamp}::timestamptz, now())");
    let partner = b.add(row.partner_id);
    let breakdown = serde_json::to_string(&write.ctx.breakdown)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    // What live holds reserve: a lapsed hold reserves nothing, released yet or not (the
    // answer counts as balance reads do). The holds are read only when there are any.
    let live_held = format!(
        "CASE WHEN held = 0 THEN 0::bigint ELSE held - (SELECT COALESCE(SUM(h.points), 0)::bigint \
         FROM holds h WHERE h.account_id = point_accounts.id AND h.status = 'held' \
         AND h.expires_at <= {stamp}) END"
    );
    let mut sql = format!(
        "WITH account AS (\
           UPDATE point_accounts SET balance = balance + {earned}::bigint, version = version + 1 \
           WHERE id = {account} AND balance <= {} - {earned}::bigint AND merged_into_account_id IS NULL AND closed_at IS NULL \
           RETURNING balance, {live_held} AS held, version), \
         entry AS (\
           INSERT INTO journal_entries (id, programme_id, kind, reason, partner_id, purchase_id, refund_id, breakdown, created_at) \
           SELECT {entry}, {programme}, {}, {}, {}, {}, NULL, {}, {now} FROM account)",
        b.add(MAX_BALANCE),
        b.add(write.entry.kind.as_str()),
        b.add(write.ctx.reason.clone()),
        b.add(write.ctx.partner_id),
        b.add(write.ctx.purchase_id),
        b.add(breakdown),
    );
    if !write.entry.postings.is_empty() {
        let rows: Vec<String> = write
            .entry
            .postings
            .iter()
            .map(|p| {
                format!(
                    "({}::text, {}::uuid, {}::bigint)",
                    b.add(p.account.kind.as_str()),
                    b.add(p.account.owner),
                    b.add(p.amount)
                )
            })
            .collect();
        sql += &format!(
            ", postings AS (\
               INSERT INTO postings (entry_id, programme_id, account_kind, account_id, amount, created_at) \
               SELECT {entry}, {programme}, p.kind, p.owner, p.amount, {now} \
               FROM account, (VALUES {}) AS p(kind, owner, amount))",
            rows.join(", ")
        );
    }
    if row.points_earned > 0 {
        sql += &format!(
            ", lot AS (\
               INSERT INTO point_lots (id, programme_id, account_id, entry_id, points_initial, points_remaining, expires_at, created_at) \
               SELECT {}, {programme}, {account}, {entry}, {earned}, {earned}, {}, {now} FROM account)",
            b.add(uuid::Uuid::now_v7()),
            b.add(write.lot_expires_at),
        );
    }
    sql += &format!(
        ", purchase AS (\
           INSERT INTO purchases (id, programme_id, partner_id, account_id, card_number, external_ref, store_ref, staff_ref, \
             amount, currency, discount, points_earned, points_redeemed, refunded_amount, points_clawed_back, points_returned, entry_id, created_at) \
           SELECT {}, {programme}, {partner}, {account}, {}, {}, {}, {}, {}, {}, {}, {earned}, {}, {}, {}, {}, {entry}, {now} FROM account)",
        b.add(row.id),
        b.add(row.card_number.clone()),
        b.add(row.external_ref.clone()),
        b.add(row.store_ref.clone()),
        b.add(row.staff_ref.clone()),
        b.add(row.amount.clone()),
        b.add(row.currency.clone()),
        b.add(row.discount.clone()),
        b.add(row.points_redeemed),
        b.add(row.refunded_amount.clone()),
        b.add(row.points_clawed_back),
        b.add(row.points_returned),
    );
    if !write.awards.is_empty() {
        let rows: Vec<String> = write
            .awards
            .iter()
            .map(|a| {
                format!(
                    "({}::uuid, {}::uuid, {}::integer, {}::bigint)",
                    b.add(a.id),
                    b.add(a.rule_id),
                    b.add(a.rule_version),
                    b.add(a.points)
                )
            })
            .collect();
        sql += &format!(
            ", awards AS (\
               INSERT INTO rule_awards (id, programme_id, rule_id, rule_version, account_id, entry_id, points, created_at) \
               SELECT a.id, {programme}, a.rule_id, a.rule_version, {account}, {entry}, a.points, {now} \
               FROM account, (VALUES {}) AS a(id, rule_id, rule_version, points))",
            rows.join(", ")
        );
    }
    if let Some(member_id) = write.link_member {
        sql += &format!(
            ", link AS (\
               INSERT INTO member_partners (member_id, partner_id, programme_id, created_at) \
               SELECT {}, {partner}, {programme}, {now} FROM account ON CONFLICT DO NOTHING)",
            b.add(member_id)
        );
    }
    // The member's qualifying spend (`tiers`); an upgrade it earns follows the commit
    // (`tiers::promote_after_purchase`).
    if let Some((member_id, minor)) = spend {
        sql += &format!(
            ", spend AS (\
               INSERT INTO tier_spend_days (member_id, day, programme_id, amount) \
               SELECT {}, {}, {programme}, {} FROM account \
               ON CONFLICT (member_id, day) DO UPDATE SET amount = tier_spend_days.amount + EXCLUDED.amount)",
            b.add(member_id),
            b.add(row.created_at.date_naive()),
            b.add(minor),
        );
    }
    sql += &format!(
        ", idempotency AS (\
           INSERT INTO idempotency_keys (client_id, key, request_hash, status_code, response_body, location, created_at) \
           SELECT {}, {}, {}, {}, replace({}, {}, '\"balance\":' || balance::text || ',\"held_points\":' || held::text \
             || ',\"available_points\":' || (balance - held)::text), {}, {now} FROM account)",
        b.add(key.client_id.clone()),
        b.add(key.key.clone()),
        b.add(key.request_hash.clone()),
        b.add(i32::from(answer.status)),
        b.add(answer.body.clone()),
        b.add(placeholder.to_owned()),
        b.add(answer.location.clone()),
    );
    sql += " SELECT balance, held, version FROM account";
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, b.0);
    let Some(changed) = db
        .query_one(statement)
        .await
        .map_err(|e| duplicate_or(e, row))?
    else {
        // The guard refused: nothing was written. Say why (merged, closed by an erasure,
        // or over the limit).
        return Err(ledger::refusal(db, row.account_id, 0, row.points_earned).await?);
    };
    Ok(AccountState {
        account_id: row.account_id,
        balance: changed.try_get("", "balance")?,
        held: changed.try_get("", "held")?,
        version: changed.try_get("", "version")?,
    })
}

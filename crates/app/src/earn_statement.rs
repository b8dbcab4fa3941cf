//! PostgreSQL: a purchase that redeems nothing, written in one statement. The balance
//! change, the journal entry with its postings, the lot, the purchase and the partner link
//! are data-modifying CTEs hanging off the account UPDATE, so they happen together or not
//! at all, in one round trip instead of six. It writes the same rows as the step-by-step
//! path (`purchases::write_step_by_step`), which SQLite and redemptions use; both run
//! under the same end-to-end tests on PostgreSQL.

use crate::error::{AppError, AppResult};
use crate::ledger::AccountState;
use crate::purchases::{duplicate_or, PurchaseWrite};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

/// Collects bind values and hands out their `$n` placeholders.
#[derive(Default)]
struct Binds(Vec<Value>);

impl Binds {
    fn add(&mut self, value: impl Into<Value>) -> String {
        self.0.push(value.into());
        format!("${}", self.0.len())
    }
}

pub(crate) async fn write(
    txn: &DatabaseTransaction,
    write: &PurchaseWrite,
) -> AppResult<AccountState> {
    let row = &write.row;
    let mut b = Binds::default();
    let earned = b.add(row.points_earned);
    let account = b.add(row.account_id);
    let entry = b.add(write.entry_id);
    let programme = b.add(row.programme_id);
    let now = b.add(row.created_at);
    let partner = b.add(row.partner_id);
    let breakdown = serde_json::to_string(&write.ctx.breakdown)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let mut sql = format!(
        "WITH account AS (\
           UPDATE point_accounts SET balance = balance + {earned}::bigint, version = version + 1 \
           WHERE id = {account} RETURNING balance, version), \
         entry AS (\
           INSERT INTO journal_entries (id, programme_id, kind, reason, partner_id, purchase_id, refund_id, breakdown, created_at) \
           SELECT {entry}, {programme}, {}, {}, {}, {}, NULL, {}, {now} FROM account)",
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
    if let Some(member_id) = write.link_member {
        sql += &format!(
            ", link AS (\
               INSERT INTO member_partners (member_id, partner_id, programme_id, created_at) \
               SELECT {}, {partner}, {programme}, {now} FROM account ON CONFLICT DO NOTHING)",
            b.add(member_id)
        );
    }
    sql += " SELECT balance, version FROM account";
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, b.0);
    let changed = txn
        .query_one(statement)
        .await
        .map_err(|e| duplicate_or(e, row))?
        .ok_or(AppError::NotFound("points account"))?;
    Ok(AccountState {
        account_id: row.account_id,
        balance: changed.try_get("", "balance")?,
        version: changed.try_get("", "version")?,
    })
}

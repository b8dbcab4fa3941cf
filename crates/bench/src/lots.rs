//! A member with many point lots against one with a handful: the three requests that
//! read a member's lots — a redemption, a refund's clawback, a balance read on a cache
//! miss — one at a time, so the figure is the latency that member sees (a member's
//! point-moving requests queue on its account row anyway).

use crate::http1::{self, Connection};
use crate::load::{outcome, Figures};
use crate::setup::{insert_batch, Error, Member, Programme, Seeded};
use chrono::{DateTime, Duration, Utc};
use coalition_domain::ledger::purchase_entry;
use coalition_domain::AccountRef;
use coalition_store::entities::{journal_entry, point_account, point_lot, posting, purchase};
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter,
    TransactionTrait,
};
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

/// The programme's default lot life (`programme create` without `--point-expiry-days`).
const LOT_LIFE_DAYS: i64 = 730;
/// The balance view's "expiring soon" window.
const WINDOW_DAYS: i64 = 30;
/// Lots written per transaction while seeding.
const SEED_BATCH: usize = 1_000;
/// Lots of the member that stands for everyone else.
pub const FEW_LOTS: usize = 5;
/// Each request pays this many points; the bill is exactly their value, so nothing is
/// earned and no lot is added: the member's lot count stays what was seeded.
const REDEEM_POINTS: i64 = 50;
/// Each refund returns this much of a seeded purchase, which earned one point per unit:
/// one point clawed back, and no lot added (the purchase redeemed nothing).
const REFUND_AMOUNT: &str = "1.00";

/// A member whose lots come from purchases written straight into the database.
pub struct Holder {
    member: Member,
    lots: usize,
    /// Lots inside the "expiring soon" window when seeded: the balance view lists them.
    in_window: usize,
    /// The seeded purchases, refunded a little at a time.
    purchases: Vec<Uuid>,
}

/// Seeds a member with `lots` lots of `points_each`, each from its own purchase at the
/// first partner (1 point per EUR), with expiries spread evenly over the next two years,
/// as a member buying steadily for two years would have. Entries, postings, purchases,
/// lots and the stored balance agree, as if the purchases had gone through the API.
pub async fn seed_holder(
    database_url: &str,
    programme: &Programme,
    lots: usize,
    points_each: i64,
) -> Result<Holder, Error> {
    let db = Database::connect(database_url).await?;
    let mut seeded = Seeded::new(programme, 0, rand::thread_rng().gen());
    seeded.email = format!("lots-{}@bench.example.org", Uuid::new_v4().simple());
    insert_batch(&db, programme, std::slice::from_ref(&seeded)).await?;
    let now = Utc::now();
    let life = Duration::days(LOT_LIFE_DAYS);
    let expiries: Vec<DateTime<Utc>> = (0..lots as i32)
        .map(|k| now + life * (2 * k + 1) / (2 * lots as i32))
        .collect();
    let mut purchases = Vec::with_capacity(lots);
    for batch in expiries.chunks(SEED_BATCH) {
        let ids = insert_purchases(&db, programme, &seeded, batch, points_each, life).await?;
        purchases.extend(ids);
    }
    point_account::Entity::update_many()
        .col_expr(
            point_account::Column::Balance,
            Expr::value(points_each * lots as i64),
        )
        .filter(point_account::Column::Id.eq(seeded.account_id))
        .exec(&db)
        .await?;
    db.execute_unprepared("ANALYZE point_lots").await?;
    db.close().await?;
    let window = now + Duration::days(WINDOW_DAYS);
    Ok(Holder {
        member: Member {
            id: seeded.member_id,
            card: seeded.card,
        },
        lots,
        in_window: expiries.iter().filter(|e| **e < window).count(),
        purchases,
    })
}

/// One purchase per expiry, each with its entry, two postings and its lot.
async fn insert_purchases(
    db: &DatabaseConnection,
    programme: &Programme,
    member: &Seeded,
    expiries: &[DateTime<Utc>],
    points: i64,
    life: Duration,
) -> Result<Vec<Uuid>, Error> {
    let partner = programme.partners[0].0;
    let rows: Vec<Rows> = expiries
        .iter()
        .map(|expires_at| Rows::new(programme.id, partner, member, points, *expires_at - life))
        .collect::<Result<_, _>>()?;
    let txn = db.begin().await?;
    journal_entry::Entity::insert_many(rows.iter().map(|r| r.entry.clone()))
        .exec_without_returning(&txn)
        .await?;
    posting::Entity::insert_many(rows.iter().flat_map(|r| r.postings.clone()))
        .exec_without_returning(&txn)
        .await?;
    purchase::Entity::insert_many(rows.iter().map(|r| r.purchase.clone()))
        .exec_without_returning(&txn)
        .await?;
    let lots = rows
        .iter()
        .zip(expiries)
        .map(|(r, expires_at)| point_lot::ActiveModel {
            id: Set(Uuid::now_v7()),
            programme_id: Set(programme.id),
            account_id: Set(member.account_id),
            entry_id: Set(r.entry_id),
            points_initial: Set(points),
            points_remaining: Set(points),
            expires_at: Set(*expires_at),
            created_at: Set(*expires_at - life),
            reminder_stage: NotSet,
        });
    point_lot::Entity::insert_many(lots)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    Ok(rows.iter().map(|r| r.purchase_id).collect())
}

/// What one earning purchase writes, as the API would have written it.
struct Rows {
    purchase_id: Uuid,
    entry_id: Uuid,
    entry: journal_entry::ActiveModel,
    postings: Vec<posting::ActiveModel>,
    purchase: purchase::ActiveModel,
}

impl Rows {
    fn new(
        programme_id: Uuid,
        partner: Uuid,
        member: &Seeded,
        points: i64,
        at: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let (purchase_id, entry_id) = (Uuid::now_v7(), Uuid::now_v7());
        let amount = format!("{points}.00");
        let entry = purchase_entry(
            partner,
            member.account_id,
            &[(AccountRef::partner_issued(partner), points)],
            0,
        )?;
        let postings = entry
            .postings
            .iter()
            .map(|p| posting::ActiveModel {
                seq: NotSet,
                entry_id: Set(entry_id),
                programme_id: Set(programme_id),
                account_kind: Set(p.account.kind.as_str().to_owned()),
                account_id: Set(p.account.owner),
                amount: Set(p.amount),
                created_at: Set(at),
            })
            .collect();
        Ok(Self {
            purchase_id,
            entry_id,
            entry: journal_entry::ActiveModel::from(journal_entry::Model {
                id: entry_id,
                programme_id,
                kind: entry.kind.as_str().to_owned(),
                reason: format!("Purchase of {amount} EUR (bench seed)"),
                partner_id: Some(partner),
                purchase_id: Some(purchase_id),
                refund_id: None,
                breakdown: "[]".to_owned(),
                created_at: at,
            }),
            postings,
            purchase: purchase::ActiveModel::from(purchase::Model {
                id: purchase_id,
                programme_id,
                partner_id: partner,
                account_id: member.account_id,
                card_number: member.card.clone(),
                external_ref: format!("seed-{purchase_id}"),
                store_ref: None,
                staff_ref: None,
                amount,
                currency: "EUR".to_owned(),
                discount: "0".to_owned(),
                points_earned: points,
                points_redeemed: 0,
                refunded_amount: "0".to_owned(),
                points_clawed_back: 0,
                points_returned: 0,
                entry_id,
                created_at: at,
                occurred_at: None,
            }),
        })
    }
}

/// The three figures of one member.
pub struct HolderFigures {
    pub lots: usize,
    pub in_window: usize,
    pub redeem: Figures,
    pub refund: Figures,
    pub read: Figures,
}

/// `rounds` times, one request at a time: a redemption (which also makes the member's
/// cached balance stale), a balance read (so a cache miss), a refund with a clawback.
pub async fn measure(
    base: &str,
    partner_tokens: &[String],
    holder: &Holder,
    rounds: usize,
) -> HolderFigures {
    let mut conn = Connection::new(base);
    let (seller, spender) = (&partner_tokens[0], &partner_tokens[1]);
    let mut figures = HolderFigures {
        lots: holder.lots,
        in_window: holder.in_window,
        redeem: Figures::default(),
        refund: Figures::default(),
        read: Figures::default(),
    };
    // Twice what the points are worth: a tier's discount (`--economics`) still leaves
    // the points something to pay for.
    let paid = 2 * REDEEM_POINTS;
    let value = format!("{}.{:02}", paid / 100, paid % 100);
    for round in 0..rounds {
        let body = json!({
            "card_number": holder.member.card,
            "amount": {"amount": value, "currency": "EUR"},
            "external_ref": Uuid::new_v4().to_string(),
            "redeem_points": REDEEM_POINTS,
        });
        let redeem = post(spender, "/v1/purchases", &body);
        timed(&mut conn, &redeem, &mut figures.redeem).await;

        let read = http1::get(&format!("/v1/members/{}/balance", holder.member.id), seller);
        timed(&mut conn, &read, &mut figures.read).await;

        let refunded = holder.purchases[round % holder.purchases.len()];
        let body = json!({"amount": {"amount": REFUND_AMOUNT, "currency": "EUR"}});
        let refund = post(seller, &format!("/v1/purchases/{refunded}/refunds"), &body);
        timed(&mut conn, &refund, &mut figures.refund).await;
    }
    for f in [&mut figures.redeem, &mut figures.refund, &mut figures.read] {
        f.latencies_us.sort_unstable();
    }
    figures
}

fn post(token: &str, path: &str, body: &serde_json::Value) -> Vec<u8> {
    let key = Uuid::new_v4().to_string();
    http1::post_json(path, token, &key, &body.to_string())
}

async fn timed(conn: &mut Connection, request: &[u8], figures: &mut Figures) {
    let sent = Instant::now();
    let answer = outcome(conn.send(request).await);
    figures.record(answer, sent);
}

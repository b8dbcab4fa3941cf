//! Property test: random sequences of earn / redeem / refund / bearer-card registration /
//! card replacement keep the ledger's invariants, checked straight against the stored
//! journal after every operation. Then a member with more lots than the ledger reads at
//! once, over HTTP: the lots it spends and shows are the ones a plan over all its lots
//! picks.

use crate::support::{fresh_database_url, spawn_app, stored_account, test_redis_url};
use chrono::{DateTime, Duration, Utc};
use coalition_app::idempotency::{IdempotencyKey, StoredResponse};
use coalition_app::ledger::LOT_CHUNK;
use coalition_app::{cards, members, purchases, refunds, App, AppError, Caller, Scope};
use coalition_domain::lots::{plan_consumption, Lot};
use coalition_server::config::Config;
use coalition_store::entities::{card, point_account, point_lot, posting, purchase};
use proptest::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Earn {
        member: usize,
        partner: usize,
        cents: i64,
    },
    Redeem {
        member: usize,
        partner: usize,
        points: i64,
    },
    Refund {
        purchase: usize,
        percent: u32,
    },
    /// Registers one of the bearer cards to a member (refused once it is registered).
    Register {
        bearer: usize,
        member: usize,
    },
    /// Replaces a card; the new number takes its place in the test's card list.
    Replace {
        card: usize,
    },
}

/// Cards 0–2 belong to members 0–2; cards 3–4 are bearer cards.
const CARDS: usize = 5;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..CARDS, 0..2usize, 1..50_000i64).prop_map(|(member, partner, cents)| Op::Earn {
            member,
            partner,
            cents
        }),
        (0..CARDS, 0..2usize, 1..400i64).prop_map(|(member, partner, points)| Op::Redeem {
            member,
            partner,
            points
        }),
        (0..20usize, 1..=100u32).prop_map(|(purchase, percent)| Op::Refund { purchase, percent }),
        (3..CARDS, 0..3usize).prop_map(|(bearer, member)| Op::Register { bearer, member }),
        (0..CARDS).prop_map(|card| Op::Replace { card }),
    ]
}

fn key() -> IdempotencyKey {
    IdempotencyKey {
        client_id: "prop".into(),
        key: Uuid::new_v4().to_string(),
        request_hash: "h".into(),
    }
}

fn id_of(body: &str) -> Uuid {
    body.parse().expect("rendered id")
}

async fn run_ops(ops: Vec<Op>) {
    let mut settings = HashMap::new();
    settings.insert("DATABASE_URL".to_owned(), fresh_database_url().await);
    settings.insert("COALITION_MIGRATE_ON_START".to_owned(), "true".to_owned());
    let app: App = coalition_server::build_app(&Config::from_map(&settings).unwrap())
        .await
        .unwrap();
    let programme = coalition_app::programmes::create(
        &app.db,
        coalition_app::programmes::NewProgramme {
            name: "P".into(),
            currency: "EUR".into(),
            point_value: "0.01".into(),
            point_expiry_days: 30,
        },
    )
    .await
    .unwrap();
    let admin = Caller {
        programme_id: programme.programme_id,
        client_id: "admin".into(),
        scope: Scope::Admin,
        partner_id: None,
    };
    let mut partners = Vec::new();
    for (name, rate) in [("Gym", "1"), ("Shop", "2.5")] {
        let input = coalition_app::partners::NewPartner {
            name: name.into(),
            kind: "merchant".into(),
            category: "x".into(),
            earn_points_per_unit: rate.into(),
            issue_price_per_point: "0.01".into(),
            redemption_value_per_point: "0.01".into(),
        };
        let p = coalition_app::partners::create(&app, &admin, input)
            .await
            .unwrap();
        partners.push(Caller {
            partner_id: Some(p.id),
            scope: Scope::Partner,
            client_id: format!("pos-{name}"),
            ..admin.clone()
        });
    }
    let mut cards_of = Vec::new();
    let mut member_ids = Vec::new();
    for n in 0..3 {
        let m = members::enrol(
            &app,
            &admin,
            members::NewMember {
                name: "M".into(),
                email: format!("m{n}@example.org"),
                phone: None,
                consent_marketing: false,
                consent_data_sharing: false,
            },
        )
        .await
        .unwrap();
        member_ids.push(m.row.id);
        cards_of.push(
            cards::issue(&app, &admin, Some(m.row.id))
                .await
                .unwrap()
                .number,
        );
    }
    for _ in 3..CARDS {
        cards_of.push(cards::issue(&app, &admin, None).await.unwrap().number);
    }
    let mut bought: Vec<(Uuid, usize, i64)> = Vec::new(); // (purchase, partner, cents left)
    for op in ops {
        let purchase = |member: usize, cents: i64, redeem: i64| purchases::NewPurchase {
            card_number: cards_of[member].clone(),
            amount: format!("{}.{:02}", cents / 100, cents % 100),
            currency: "EUR".into(),
            external_ref: Uuid::new_v4().to_string(),
            redeem_points: Some(redeem),
            store_ref: None,
            staff_ref: None,
            categories: None,
        };
        let render = |r: &purchases::Recorded| StoredResponse {
            status: 201,
            body: r.purchase.id.to_string(),
            location: None,
        };
        match op {
            Op::Earn {
                member,
                partner,
                cents,
            } => {
                if let Ok(r) = purchases::record(
                    &app,
                    &partners[partner],
                    purchase(member, cents, 0),
                    &key(),
                    render,
                )
                .await
                {
                    bought.push((id_of(&r.body), partner, cents));
                }
            }
            Op::Redeem {
                member,
                partner,
                points,
            } => {
                let cents = points + 500; // a bill larger than the points' value, so part earns
                if let Ok(r) = purchases::record(
                    &app,
                    &partners[partner],
                    purchase(member, cents, points),
                    &key(),
                    render,
                )
                .await
                {
                    bought.push((id_of(&r.body), partner, cents));
                }
            }
            Op::Refund { purchase, percent } => {
                let Some(entry) = bought.get_mut(purchase) else {
                    continue;
                };
                let cents = (entry.2 * i64::from(percent) / 100).max(1).min(entry.2);
                if entry.2 == 0 {
                    continue;
                }
                let amount = format!("{}.{:02}", cents / 100, cents % 100);
                let render = |_: &refunds::Refunded| StoredResponse {
                    status: 201,
                    body: String::new(),
                    location: None,
                };
                refunds::refund(
                    &app,
                    &partners[entry.1],
                    entry.0,
                    amount,
                    "EUR".into(),
                    &key(),
                    render,
                )
                .await
                .expect("refund within what is left");
                entry.2 -= cents;
            }
            Op::Register { bearer, member } => {
                let render = |_: &cards::Registered| StoredResponse {
                    status: 200,
                    body: String::new(),
                    location: None,
                };
                let done = cards::register(
                    &app,
                    &admin,
                    &cards_of[bearer],
                    member_ids[member],
                    &key(),
                    render,
                )
                .await;
                assert!(
                    matches!(done, Ok(_) | Err(AppError::CardAlreadyRegistered)),
                    "{done:?}"
                );
            }
            Op::Replace { card } => {
                let render = |new: &cards::CardRow| StoredResponse {
                    status: 201,
                    body: new.number.clone(),
                    location: None,
                };
                let new = cards::replace(&app, &admin, &cards_of[card], &key(), render)
                    .await
                    .expect("an active card can be replaced");
                cards_of[card] = new.body;
            }
        }
        check_invariants(&app, programme.programme_id).await;
    }
}

async fn check_invariants(app: &App, programme_id: Uuid) {
    let postings = posting::Entity::find()
        .filter(posting::Column::ProgrammeId.eq(programme_id))
        .all(&app.db)
        .await
        .unwrap();
    let mut per_entry: HashMap<Uuid, i64> = HashMap::new();
    let mut per_member_account: HashMap<Uuid, i64> = HashMap::new();
    let mut outside_members = 0;
    for p in &postings {
        *per_entry.entry(p.entry_id).or_default() += p.amount;
        if p.account_kind == "member" {
            *per_member_account.entry(p.account_id).or_default() += p.amount;
        } else {
            outside_members += p.amount;
        }
    }
    assert!(
        per_entry.values().all(|sum| *sum == 0),
        "every entry sums to zero: {per_entry:?}"
    );
    let accounts = point_account::Entity::find()
        .filter(point_account::Column::ProgrammeId.eq(programme_id))
        .all(&app.db)
        .await
        .unwrap();
    let mut total = 0;
    for a in &accounts {
        assert!(a.balance >= 0, "no balance below zero");
        assert_eq!(
            a.balance,
            per_member_account.get(&a.id).copied().unwrap_or(0),
            "stored balance equals its postings"
        );
        let lots = point_lot::Entity::find()
            .filter(point_lot::Column::AccountId.eq(a.id))
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(
            a.balance,
            lots.iter().map(|l| l.points_remaining).sum::<i64>(),
            "lots hold exactly the balance"
        );
        // A registration moves a bearer account's lots, spent there, beside the member's
        // own: spent-first order holds per account the points were spent on.
        let received_merge = accounts
            .iter()
            .any(|other| other.merged_into_account_id == Some(a.id));
        if !received_merge {
            assert_soonest_expiry_spent_first(lots);
        }
        total += a.balance;
    }
    // Issued minus redeemed minus clawed back (the partners' side) equals what members hold.
    assert_eq!(total, -outside_members);
    check_cards_and_purchases(app, programme_id, &accounts).await;
}

/// Points always sit behind a usable card, and a purchase's card is on the account that
/// holds its points (so a refund works where the points are).
async fn check_cards_and_purchases(
    app: &App,
    programme_id: Uuid,
    accounts: &[point_account::Model],
) {
    let all_cards = card::Entity::find()
        .filter(card::Column::ProgrammeId.eq(programme_id))
        .all(&app.db)
        .await
        .unwrap();
    for a in accounts {
        let usable = all_cards
            .iter()
            .filter(|c| c.account_id == a.id && c.status != "replaced")
            .count();
        if a.merged_into_account_id.is_some() {
            assert_eq!(
                (a.balance, usable),
                (0, 0),
                "a merged account is empty and cardless"
            );
        } else if a.balance > 0 {
            assert!(
                usable > 0,
                "account {} holds {} points and no card",
                a.id,
                a.balance
            );
        }
    }
    let bought = purchase::Entity::find()
        .filter(purchase::Column::ProgrammeId.eq(programme_id))
        .all(&app.db)
        .await
        .unwrap();
    for p in bought {
        let card = all_cards
            .iter()
            .find(|c| c.number == p.card_number)
            .unwrap();
        crate::support::assert_refund_reaches_the_points(&p, card, accounts);
    }
}

/// Every lot here expires a fixed time after it was written, so spending soonest expiry
/// first leaves, in (expiry, id) order: emptied lots, at most one partly spent, then lots
/// never touched.
fn assert_soonest_expiry_spent_first(mut lots: Vec<point_lot::Model>) {
    lots.sort_by_key(|l| (l.expires_at, l.id));
    let first_live = lots.iter().position(|l| l.points_remaining > 0);
    let after = first_live.map_or(&[][..], |i| &lots[i + 1..]);
    assert!(
        after.iter().all(|l| l.points_remaining == l.points_initial),
        "a lot was spent before one expiring sooner: {lots:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 50, ..ProptestConfig::default() })]
    #[test]
    fn random_earn_redeem_refund_register_replace_sequences_keep_the_ledger_balanced(ops in proptest::collection::vec(op(), 1..18)) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run_ops(ops));
    }
}

/// Lots of the member below: more than one read of the ledger takes.
const MANY_LOTS: usize = 45;

/// The expiry of the `k`-th lot in consumption order: eight inside the 30-day window, one
/// entering it in 150 s, then pairs sharing an expiry (the id decides between them).
fn expiry(now: DateTime<Utc>, k: usize) -> DateTime<Utc> {
    match k {
        0..=7 => now + Duration::days(2 + k as i64),
        8 => now + Duration::days(30) + Duration::seconds(150),
        _ => now + Duration::days(60 + (k as i64 - 9) / 2),
    }
}

async fn lots_of(db: &DatabaseConnection, account_id: Uuid) -> Vec<point_lot::Model> {
    point_lot::Entity::find()
        .filter(point_lot::Column::AccountId.eq(account_id))
        .all(db)
        .await
        .unwrap()
}

/// What each lot holds after taking `points` as one plan over all the lots would.
fn after_plan(lots: &[point_lot::Model], points: i64) -> (HashMap<Uuid, i64>, usize) {
    let as_lots: Vec<Lot> = lots
        .iter()
        .map(|l| Lot {
            id: l.id,
            remaining: l.points_remaining,
            expires_at: l.expires_at,
        })
        .collect();
    let plan = plan_consumption(&as_lots, points).expect("the lots hold the points");
    let mut held: HashMap<Uuid, i64> = lots.iter().map(|l| (l.id, l.points_remaining)).collect();
    for (id, take) in &plan {
        *held.get_mut(id).unwrap() -= take;
    }
    (held, plan.len())
}

fn held(lots: &[point_lot::Model]) -> HashMap<Uuid, i64> {
    lots.iter().map(|l| (l.id, l.points_remaining)).collect()
}

/// The live lots inside the 30-day window, soonest first, as the balance view shows them.
fn expiring_soon(lots: &[point_lot::Model], now: DateTime<Utc>) -> Vec<(i64, DateTime<Utc>)> {
    let mut soon: Vec<&point_lot::Model> = lots
        .iter()
        .filter(|l| l.points_remaining > 0 && l.expires_at < now + Duration::days(30))
        .collect();
    soon.sort_by_key(|l| (l.expires_at, l.id));
    soon.iter()
        .map(|l| (l.points_remaining, l.expires_at))
        .collect()
}

fn shown(view: &Value) -> Vec<(i64, DateTime<Utc>)> {
    view["expiring_soon"]
        .as_array()
        .expect("expiring_soon")
        .iter()
        .map(|e| {
            let at = e["expires_at"].as_str().unwrap().parse().unwrap();
            (e["points"].as_i64().unwrap(), at)
        })
        .collect()
}

#[tokio::test]
async fn a_member_with_many_lots_spends_and_sees_what_one_plan_over_all_lots_gives() {
    let t = spawn_app().await;
    let programme = t.programme("Many lots").await;
    let gym = t.partner(&programme, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "many-lots@example.org").await;
    let mut bought = Vec::new();
    for _ in 0..MANY_LOTS {
        let purchase = t.purchase(&gym, &card, "10.00", 0).await;
        bought.push(purchase["id"].as_str().unwrap().to_owned());
    }
    // Expiries out of the order the lots were written in (lot j gets the (17 j mod 45)-th).
    let account_id = stored_account(&t.app.db, &member).await.id;
    let mut written = lots_of(&t.app.db, account_id).await;
    written.sort_by_key(|l| l.id);
    let now = Utc::now();
    for (j, lot) in written.iter().enumerate() {
        point_lot::Entity::update_many()
            .col_expr(
                point_lot::Column::ExpiresAt,
                Expr::value(expiry(now, j * 17 % MANY_LOTS)),
            )
            .filter(point_lot::Column::Id.eq(lot.id))
            .exec(&t.app.db)
            .await
            .unwrap();
    }
    let lots = lots_of(&t.app.db, account_id).await;
    let balance = format!("/v1/members/{member}/balance");

    // The view lists the eight lots inside the window, and lives until the ninth enters it.
    let view = t.get(&balance, &gym.token).await.expect(200);
    assert_eq!(shown(&view), expiring_soon(&lots, now));
    assert_eq!(shown(&view).len(), 8);
    if let (Some(url), Some(prefix)) = (test_redis_url(), t.redis_prefix.as_deref()) {
        let mut redis = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{prefix}balance:{account_id}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!((100..=150).contains(&ttl), "cached for {ttl} s");
    }

    // A redemption spanning more lots than one read takes (it earns nothing: no new lot).
    let (expected, used) = after_plan(&lots, 355);
    assert!(
        used > LOT_CHUNK as usize,
        "{used} lots span more than one read"
    );
    t.purchase(&gym, &card, "3.55", 355).await;
    let lots = lots_of(&t.app.db, account_id).await;
    assert_eq!(held(&lots), expected);

    // A refund's clawback takes from the soonest-expiring lots too, not the purchase's.
    let (expected, _) = after_plan(&lots, 10);
    let refund = json!({"amount": {"amount": "10.00", "currency": "EUR"}});
    t.post_moving(
        &format!("/v1/purchases/{}/refunds", bought[0]),
        &gym.token,
        refund,
    )
    .await
    .expect(201);
    let lots = lots_of(&t.app.db, account_id).await;
    assert_eq!(held(&lots), expected);

    let view = t.get(&balance, &gym.token).await.expect(200);
    assert_eq!(view["points"], json!(MANY_LOTS as i64 * 10 - 355 - 10));
    assert_eq!(shown(&view), expiring_soon(&lots, now));
}

//! Property test: random sequences of earn / redeem / refund / bearer-card registration /
//! card replacement keep the ledger's invariants, checked straight against the stored
//! journal after every operation.

use crate::support::fresh_database_url;
use coalition_app::idempotency::{IdempotencyKey, StoredResponse};
use coalition_app::{cards, members, purchases, refunds, App, AppError, Caller, Scope};
use coalition_server::config::Config;
use coalition_store::entities::{card, point_account, point_lot, posting, purchase};
use proptest::prelude::*;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
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
        total += a.balance;
    }
    // Issued minus redeemed minus clawed back (the partners' side) equals what members hold.
    assert_eq!(total, -outside_members);
    check_cards_and_purchases(app, programme_id, &accounts).await;
}

/// Points always sit behind a usable card, and a purchase always belongs to the account
/// its card is on now (so a refund works where the points are).
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
        assert_eq!(
            p.account_id, card.account_id,
            "purchases follow their card's account"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 50, ..ProptestConfig::default() })]
    #[test]
    fn random_earn_redeem_refund_register_replace_sequences_keep_the_ledger_balanced(ops in proptest::collection::vec(op(), 1..18)) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run_ops(ops));
    }
}

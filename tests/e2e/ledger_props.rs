//! Property test: random sequences of earn / redeem / refund keep the ledger's
//! invariants, checked straight against the stored journal.

use crate::support::fresh_database_url;
use coalition_app::idempotency::{IdempotencyKey, StoredResponse};
use coalition_app::{cards, members, purchases, refunds, App, Caller, Scope};
use coalition_server::config::Config;
use coalition_store::entities::{point_account, point_lot, posting};
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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..2usize, 1..50_000i64).prop_map(|(member, partner, cents)| Op::Earn {
            member,
            partner,
            cents
        }),
        (0..3usize, 0..2usize, 1..400i64).prop_map(|(member, partner, points)| Op::Redeem {
            member,
            partner,
            points
        }),
        (0..20usize, 1..=100u32).prop_map(|(purchase, percent)| Op::Refund { purchase, percent }),
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
        cards_of.push(
            cards::issue(&app, &admin, Some(m.row.id))
                .await
                .unwrap()
                .number,
        );
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
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 50, ..ProptestConfig::default() })]
    #[test]
    fn random_earn_redeem_refund_sequences_keep_the_ledger_balanced(ops in proptest::collection::vec(op(), 1..14)) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run_ops(ops));
    }
}

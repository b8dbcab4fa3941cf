//! Property test: random sequences of hold / capture (reward or purchase) / void /
//! purchase paying with points / refund / a hold lapsing / the release job, against an
//! oracle of what may be spent. A hold or a spend succeeds exactly when the points not
//! reserved by live holds cover it; the available balance never goes below zero; the
//! account's reserved points are exactly its holds still held; every hold ends in the
//! status the oracle says; and the ledger's invariants hold after every step.

use crate::support::{assert_accounts_consistent, fresh_database_url};
use coalition_app::holds::{self, CapturePurchase, NewHold};
use coalition_app::idempotency::{IdempotencyKey, StoredResponse};
use coalition_app::{cards, members, purchases, refunds, App, AppError, Caller, Scope};
use coalition_server::config::Config;
use coalition_store::entities::{hold, point_account};
use proptest::prelude::*;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Earn {
        cents: i64,
    },
    Hold {
        points: i64,
    },
    Capture {
        hold: usize,
    },
    CaptureWithPurchase {
        hold: usize,
        extra_cents: i64,
    },
    Void {
        hold: usize,
    },
    Redeem {
        points: i64,
    },
    Refund {
        purchase: usize,
        percent: u32,
    },
    /// The hold's time passes (its expiry is moved into the past).
    Lapse {
        hold: usize,
    },
    ReleaseJob,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1..40_000i64).prop_map(|cents| Op::Earn { cents }),
        3 => (1..400i64).prop_map(|points| Op::Hold { points }),
        1 => (0..8usize).prop_map(|hold| Op::Capture { hold }),
        1 => (0..8usize, 0..3_000i64).prop_map(|(hold, extra_cents)| Op::CaptureWithPurchase { hold, extra_cents }),
        1 => (0..8usize).prop_map(|hold| Op::Void { hold }),
        2 => (1..400i64).prop_map(|points| Op::Redeem { points }),
        1 => (0..6usize, 1..=100u32).prop_map(|(purchase, percent)| Op::Refund { purchase, percent }),
        1 => (0..8usize).prop_map(|hold| Op::Lapse { hold }),
        1 => Just(Op::ReleaseJob),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    Lapsed,
    Captured,
    Voided,
}

/// What the oracle knows: the balance, and each hold's points and state.
#[derive(Default)]
struct Oracle {
    balance: i64,
    holds: Vec<(Uuid, i64, State)>,
    /// Purchases made: (id, cents left to refund).
    bought: Vec<(Uuid, i64)>,
}

impl Oracle {
    fn live_held(&self) -> i64 {
        self.holds
            .iter()
            .filter(|h| h.2 == State::Live)
            .map(|h| h.1)
            .sum()
    }
    fn available(&self) -> i64 {
        self.balance - self.live_held()
    }
}

fn key() -> IdempotencyKey {
    IdempotencyKey {
        client_id: "holds-prop".into(),
        key: Uuid::new_v4().to_string(),
        request_hash: "h".into(),
    }
}

fn euros(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A purchase's answer, as text: it shows the balance members in the order every
/// purchase answer must (on PostgreSQL a purchase that redeems nothing fills them in
/// inside its one statement).
fn purchase_answer(r: &purchases::Recorded) -> StoredResponse {
    let (balance, held) = (r.priced.balance, r.priced.held);
    let text = format!(
        r#"{{"id":"{}","earned":{},"balance":{balance},"held_points":{held},"available_points":{}}}"#,
        r.purchase.id,
        r.purchase.points_earned,
        balance - held
    );
    StoredResponse {
        status: 200,
        body: text,
        location: None,
    }
}

fn answer(body: Value) -> StoredResponse {
    StoredResponse {
        status: 200,
        body: body.to_string(),
        location: None,
    }
}

fn parsed(r: &StoredResponse) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

struct World {
    app: App,
    programme_id: Uuid,
    shop: Caller,
    card: String,
    account_id: Uuid,
}

async fn world() -> World {
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
    let input = coalition_app::partners::NewPartner {
        name: "Shop".into(),
        kind: "merchant".into(),
        category: "x".into(),
        earn_points_per_unit: "2".into(),
        issue_price_per_point: "0.01".into(),
        redemption_value_per_point: "0.01".into(),
    };
    let partner = coalition_app::partners::create(&app, &admin, input)
        .await
        .unwrap();
    let shop = Caller {
        partner_id: Some(partner.id),
        scope: Scope::Partner,
        client_id: "pos".into(),
        ..admin.clone()
    };
    let member = members::enrol(
        &app,
        &admin,
        members::NewMember {
            name: "M".into(),
            email: "m@example.org".into(),
            phone: None,
            consent_marketing: false,
            consent_data_sharing: false,
        },
    )
    .await
    .unwrap();
    let card = cards::issue(&app, &admin, Some(member.row.id))
        .await
        .unwrap()
        .number;
    World {
        app,
        programme_id: programme.programme_id,
        shop,
        card,
        account_id: member.row.account_id,
    }
}

async fn buy(w: &World, cents: i64, redeem: i64) -> Result<Value, AppError> {
    let input = purchases::NewPurchase {
        card_number: w.card.clone(),
        amount: euros(cents),
        currency: "EUR".into(),
        external_ref: Uuid::new_v4().to_string(),
        redeem_points: Some(redeem),
        store_ref: None,
        staff_ref: None,
        categories: None,
    };
    let r = purchases::record(&w.app, &w.shop, input, &key(), purchase_answer).await?;
    Ok(parsed(&r))
}

async fn run_ops(ops: Vec<Op>) {
    let w = world().await;
    let mut o = Oracle::default();
    // Points to begin with, so the first holds and spends are decided on something.
    apply(&w, &mut o, Op::Earn { cents: 30_000 }).await;
    for op in ops {
        apply(&w, &mut o, op).await;
        check(&w, &o).await;
    }
}

async fn apply(w: &World, o: &mut Oracle, op: Op) {
    match op {
        Op::Earn { cents } => {
            let p = buy(w, cents, 0).await.expect("earning is never refused");
            o.balance += p["earned"].as_i64().unwrap();
            o.bought
                .push((p["id"].as_str().unwrap().parse().unwrap(), cents));
        }
        Op::Redeem { points } => {
            let cents = points + 500; // worth less than the bill, so part earns
            match buy(w, cents, points).await {
                Ok(p) => {
                    assert!(
                        points <= o.available(),
                        "spent {points} of {}",
                        o.available()
                    );
                    o.balance += p["earned"].as_i64().unwrap() - points;
                    o.bought
                        .push((p["id"].as_str().unwrap().parse().unwrap(), cents));
                }
                Err(AppError::InsufficientPoints { available, .. }) => {
                    assert!(
                        points > o.available(),
                        "refused {points} of {}",
                        o.available()
                    );
                    assert_eq!(
                        available,
                        o.available(),
                        "the refusal names what is spendable"
                    );
                }
                Err(e) => panic!("redeem: {e:?}"),
            }
        }
        Op::Hold { points } => {
            let input = NewHold {
                card_number: w.card.clone(),
                points,
            };
            let render = |h: &holds::Held| answer(json!({"id": h.hold.id}));
            match holds::create(&w.app, &w.shop, input, &key(), render).await {
                Ok(r) => {
                    assert!(
                        points <= o.available(),
                        "held {points} of {}",
                        o.available()
                    );
                    let id = parsed(&r)["id"].as_str().unwrap().parse().unwrap();
                    o.holds.push((id, points, State::Live));
                }
                Err(AppError::InsufficientPoints { .. }) => {
                    assert!(
                        points > o.available(),
                        "refused {points} of {}",
                        o.available()
                    )
                }
                Err(e) => panic!("hold: {e:?}"),
            }
        }
        Op::Capture { hold } => resolve(w, o, hold, Resolution::Reward).await,
        Op::CaptureWithPurchase { hold, extra_cents } => {
            resolve(w, o, hold, Resolution::Purchase { extra_cents }).await
        }
        Op::Void { hold } => resolve(w, o, hold, Resolution::Void).await,
        Op::Refund { purchase, percent } => {
            let Some(&(id, left)) = o.bought.get(purchase) else {
                return;
            };
            let cents = (left * i64::from(percent) / 100).max(1).min(left);
            if left == 0 {
                return;
            }
            let render = |r: &refunds::Refunded| {
                answer(
                    json!({"returned": r.refund.points_returned, "clawed": r.refund.points_clawed_back, "shortfall": r.refund.points_shortfall}),
                )
            };
            let r = refunds::refund(
                &w.app,
                &w.shop,
                id,
                euros(cents),
                "EUR".into(),
                &key(),
                render,
            )
            .await
            .expect("refund within what is left");
            let r = parsed(&r);
            let (returned, clawed) = (
                r["returned"].as_i64().unwrap(),
                r["clawed"].as_i64().unwrap(),
            );
            o.balance += returned - clawed;
            assert!(o.available() >= 0, "a clawback took held points");
            if r["shortfall"].as_i64().unwrap() > 0 {
                assert_eq!(
                    o.available(),
                    0,
                    "a shortfall only when nothing spendable is left"
                );
            }
            o.bought[purchase].1 -= cents;
        }
        Op::Lapse { hold } => {
            let Some(h) = o.holds.get_mut(hold) else {
                return;
            };
            if h.2 == State::Live {
                let past = chrono::Utc::now() - chrono::Duration::seconds(1);
                hold::Entity::update_many()
                    .col_expr(hold::Column::ExpiresAt, Expr::value(past))
                    .filter(hold::Column::Id.eq(h.0))
                    .exec(&w.app.db)
                    .await
                    .unwrap();
                h.2 = State::Lapsed;
            }
        }
        Op::ReleaseJob => {
            let unreleased = stored_holds(w)
                .await
                .iter()
                .filter(|h| h.status == "held" && h.expires_at <= chrono::Utc::now())
                .count() as u64;
            let released = holds::release_lapsed(&w.app, chrono::Utc::now())
                .await
                .unwrap();
            assert_eq!(released, unreleased, "the job releases every lapsed hold");
        }
    }
}

enum Resolution {
    Reward,
    Purchase { extra_cents: i64 },
    Void,
}

async fn resolve(w: &World, o: &mut Oracle, index: usize, how: Resolution) {
    let Some(&(id, points, state)) = o.holds.get(index) else {
        return;
    };
    let render = |h: &holds::Held| {
        let earned = h.purchase.as_ref().map_or(0, |r| r.purchase.points_earned);
        answer(json!({"earned": earned, "purchase": h.purchase.as_ref().map(|r| r.purchase.id)}))
    };
    let done = match how {
        Resolution::Void => holds::void(&w.app, &w.shop, id, &key(), render).await,
        Resolution::Reward => holds::capture(&w.app, &w.shop, id, None, &key(), render).await,
        Resolution::Purchase { extra_cents } => {
            let cents = points + extra_cents; // the held points are worth `points` cents
            let purchase = CapturePurchase {
                amount: euros(cents),
                currency: "EUR".into(),
                external_ref: Uuid::new_v4().to_string(),
                store_ref: None,
                staff_ref: None,
                categories: None,
            };
            let done = holds::capture(&w.app, &w.shop, id, Some(purchase), &key(), render).await;
            if let Ok(r) = &done {
                let purchase_id = parsed(r)["purchase"].as_str().unwrap().parse().unwrap();
                o.bought.push((purchase_id, cents));
            }
            done
        }
    };
    match (state, done) {
        (State::Live, Ok(r)) => {
            let voiding = matches!(how, Resolution::Void);
            if !voiding {
                o.balance += parsed(&r)["earned"].as_i64().unwrap() - points;
            }
            o.holds[index].2 = if voiding {
                State::Voided
            } else {
                State::Captured
            };
        }
        (State::Lapsed, Err(AppError::HoldExpired)) => {}
        (State::Captured | State::Voided, Err(AppError::HoldNotHeld { status })) => {
            let expected = if state == State::Captured {
                "captured"
            } else {
                "voided"
            };
            assert_eq!(status, expected);
        }
        (state, other) => panic!("hold in state {state:?}: {other:?}"),
    }
}

async fn stored_holds(w: &World) -> Vec<hold::Model> {
    hold::Entity::find()
        .filter(hold::Column::AccountId.eq(w.account_id))
        .all(&w.app.db)
        .await
        .unwrap()
}

async fn check(w: &World, o: &Oracle) {
    let account = point_account::Entity::find_by_id(w.account_id)
        .one(&w.app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.balance, o.balance, "the balance is the oracle's");
    assert!(account.balance - account.held >= 0, "available below zero");
    assert!(o.available() >= 0, "oracle available below zero");
    let stored = stored_holds(w).await;
    let still_held: i64 = stored
        .iter()
        .filter(|h| h.status == "held")
        .map(|h| h.points)
        .sum();
    assert_eq!(
        account.held, still_held,
        "held is exactly the holds still held"
    );
    for (id, _, state) in &o.holds {
        let row = stored.iter().find(|h| h.id == *id).unwrap();
        let ok = match state {
            State::Live => row.status == "held",
            State::Lapsed => row.status == "held" || row.status == "expired",
            State::Captured => row.status == "captured",
            State::Voided => row.status == "voided",
        };
        assert!(
            ok,
            "hold {id} is {} where the oracle says {state:?}",
            row.status
        );
    }
    assert_accounts_consistent(&w.app.db, w.programme_id).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 50, ..ProptestConfig::default() })]
    #[test]
    fn holds_never_let_the_available_balance_go_below_zero(ops in proptest::collection::vec(op(), 1..30)) {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(run_ops(ops));
    }
}

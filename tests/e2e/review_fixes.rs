//! Regression tests for the holes a hostile review found in the ledger and the cards:
//! each test names the finding it guards. They run on both backends; the races are
//! meaningful on PostgreSQL, where requests really run at the same time.

use crate::support::*;
use serde_json::{json, Value};

async fn refund(t: &TestApp, partner: &Partner, purchase: &Value, amount: &str) -> Value {
    let id = purchase["id"].as_str().unwrap();
    t.post_moving(
        &format!("/v1/purchases/{id}/refunds"),
        &partner.token,
        json!({"amount": {"amount": amount, "currency": "EUR"}}),
    )
    .await
    .expect(201)
}

/// Finding 1: buy on a bearer card, register it, refund — the refund used to work on the
/// old, empty bearer account, so the member kept the points (a free-points machine).
#[tokio::test]
async fn a_refund_after_registering_a_bearer_card_claws_back_from_the_member() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let bob = enrol(&t, &gym, "bob@example.org").await;
    let card = bearer_card(&t, &gym).await;
    let bought = t.purchase(&gym, &card, "100.00", 0).await;
    assert_eq!(bought["points_earned"], 100);
    register(&t, &gym, &card, &bob).await.expect(200);
    assert_eq!(t.points(&gym.token, &bob).await, 100);

    let refunded = refund(&t, &gym, &bought, "100.00").await;
    assert_eq!(
        (
            &refunded["points_clawed_back"],
            &refunded["points_shortfall"],
            &refunded["balance"]
        ),
        (&json!(100), &json!(0), &json!(0))
    );
    assert_eq!(t.points(&gym.token, &bob).await, 0, "no free points");
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// Finding 1, variant: points spent on the bearer card come back to the member (not to an
/// account no card reaches), and the answer shows the member's balance.
#[tokio::test]
async fn points_spent_on_a_bearer_card_come_back_to_the_member_it_was_registered_to() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let bob = enrol(&t, &gym, "bob@example.org").await;
    let card = bearer_card(&t, &gym).await;
    t.purchase(&gym, &card, "100.00", 0).await;
    // 50 points pay 0.50 of a 10.00 bill; 9.50 earns 9: 100 - 50 + 9 = 59.
    let paid = t.purchase(&gym, &card, "10.00", 50).await;
    assert_eq!(paid["balance"], 59);
    let moved = register(&t, &gym, &card, &bob).await.expect(200);
    assert_eq!(
        (&moved["points_moved"], &moved["balance"]),
        (&json!(59), &json!(59))
    );

    let refunded = refund(&t, &gym, &paid, "10.00").await;
    assert_eq!(
        (
            &refunded["points_returned"],
            &refunded["points_clawed_back"],
            &refunded["balance"]
        ),
        (&json!(50), &json!(9), &json!(100))
    );
    assert_eq!(t.points(&gym.token, &bob).await, 100);
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// Finding 3: a partner may read, block and replace only cards it issued or whose member
/// it enrolled (a sale is not enough); any partner may still ask a card's points at the
/// till (finding 7).
#[tokio::test]
async fn partners_act_only_on_cards_they_may_see() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "42.00", 0).await;

    t.get(&format!("/v1/cards/{card}"), &shop.token)
        .await
        .expect_problem(404, "not_found");
    t.post(&format!("/v1/cards/{card}/block"), &shop.token, json!({}))
        .await
        .expect_problem(404, "not_found");
    t.post_moving(&format!("/v1/cards/{card}/replace"), &shop.token, json!({}))
        .await
        .expect_problem(404, "not_found");
    let gym_view = t
        .get(&format!("/v1/cards/{card}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(
        gym_view["status"], "active",
        "nothing the shop tried changed it"
    );

    // The till's balance inquiry: points, no identity.
    let inquiry = t
        .get(&format!("/v1/cards/{card}/balance"), &shop.token)
        .await
        .expect(200);
    assert_eq!(
        (&inquiry["points"], &inquiry["value"]["amount"]),
        (&json!(42), &json!("0.42"))
    );
    assert!(!inquiry.to_string().contains(&ann), "{inquiry}");
    assert!(!inquiry.to_string().contains("ann@example.org"));

    // Selling to Ann lets the shop see her (profile, balance), never manage her cards:
    // one small purchase must not let it kill her card or mint a new one on her points.
    t.purchase(&shop, &card, "1.00", 0).await;
    t.get(&format!("/v1/members/{ann}"), &shop.token)
        .await
        .expect(200);
    t.get(&format!("/v1/cards/{card}"), &shop.token)
        .await
        .expect_problem(404, "not_found");
    t.post_moving(&format!("/v1/cards/{card}/replace"), &shop.token, json!({}))
        .await
        .expect_problem(404, "not_found");
    t.post("/v1/cards", &shop.token, json!({"member_id": ann}))
        .await
        .expect_problem(404, "not_found");

    // A bearer card the shop issued and the gym registered to a member the shop cannot
    // see: the shop still sees its card, not whose it became.
    let bearer = bearer_card(&t, &shop).await;
    let (carl, _) = t.member_with_card(&gym, "carl@example.org").await;
    register(&t, &gym, &bearer, &carl).await.expect(200);
    let seen = t
        .get(&format!("/v1/cards/{bearer}"), &shop.token)
        .await
        .expect(200);
    assert_eq!(seen["member_id"], Value::Null);
    let seen_by_gym = t
        .get(&format!("/v1/cards/{bearer}"), &gym.token)
        .await
        .expect(200);
    assert_eq!(seen_by_gym["member_id"], json!(carl));

    // The operator acts on any card of the programme.
    t.post(&format!("/v1/cards/{card}/block"), &prog.admin, json!({}))
        .await
        .expect(200);
    t.get(&format!("/v1/cards/{card}/balance"), &shop.token)
        .await
        .expect_problem(409, "card_blocked");
}

/// Finding 4: block and replace fired together used to leave a blocked card carrying a
/// replacement, after which a second replace made two active cards on one account.
#[tokio::test]
async fn block_racing_replace_never_leaves_two_usable_cards() {
    use coalition_store::entities::card;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for round in 0..25 {
        let (member, number) = t
            .member_with_card(&gym, &format!("m{round}@example.org"))
            .await;
        let (block_path, replace_path) = (
            format!("/v1/cards/{number}/block"),
            format!("/v1/cards/{number}/replace"),
        );
        let block = t.post(&block_path, &gym.token, json!({}));
        let replace = t.post_moving(&replace_path, &gym.token, json!({}));
        let (blocked, replaced) = tokio::join!(block, replace);
        assert!(
            blocked.status == 200 || blocked.code() == "card_replaced",
            "{}",
            blocked.body
        );
        replaced.expect(201);
        t.post_moving(
            &format!("/v1/cards/{number}/replace"),
            &gym.token,
            json!({}),
        )
        .await
        .expect_problem(409, "card_replaced");
        let account = stored_account(&t.app.db, &member).await;
        let on_account = card::Entity::find()
            .filter(card::Column::AccountId.eq(account.id))
            .all(&t.app.db)
            .await
            .unwrap();
        let old = on_account.iter().find(|c| c.number == number).unwrap();
        assert_eq!(old.status, "replaced", "round {round}");
        let usable = on_account.iter().filter(|c| c.status != "replaced").count();
        assert_eq!(usable, 1, "round {round}: {on_account:?}");
    }
}

/// Finding 5: at a point value of 0.001, 9 points are worth 0.009 — no whole cent. They
/// used to be taken for a discount of 0.00; now such an amount is refused.
#[tokio::test]
async fn points_worth_less_than_a_cent_are_refused_not_taken_for_nothing() {
    let t = spawn_app().await;
    let prog = t.programme_with_point_value("Milli", "0.001").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;
    for path in ["/v1/purchases/quote", "/v1/purchases"] {
        let body = json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": "r-9", "redeem_points": 9});
        let refused = t
            .post_moving(path, &gym.token, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "redeem_points", "{refused}");
    }
    assert_eq!(t.points(&gym.token, &ann).await, 100, "nothing taken");
    let paid = t.purchase(&gym, &card, "5.00", 10).await;
    assert_eq!(paid["discount"]["amount"], "0.01");
    assert_eq!(paid["points_redeemed"], 10);
}

/// Finding 7: a partner learns a card's points at the till, never whose card it is; and
/// enrolling an e-mail that belongs to a member it may not see reveals nothing of them.
#[tokio::test]
async fn quotes_and_enrolments_reveal_nothing_of_members_a_partner_may_not_see() {
    use coalition_store::entities::member;
    use sea_orm::{EntityTrait, PaginatorTrait};
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    let quote = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "q"});
    let quoted = t
        .post("/v1/purchases/quote", &shop.token, quote)
        .await
        .expect(200);
    assert!(quoted.get("member_id").is_none(), "{quoted}");
    assert!(!quoted.to_string().contains(&ann));

    let members_before = member::Entity::find().count(&t.app.db).await.unwrap();
    for email in ["ann@example.org", "ANN@Example.org"] {
        let taken = t
            .post(
                "/v1/members",
                &shop.token,
                json!({"name": "Ann", "email": email}),
            )
            .await
            .expect_problem(409, "email_taken");
        assert!(!taken.to_string().contains(&ann), "{taken}");
    }
    assert_eq!(
        member::Entity::find().count(&t.app.db).await.unwrap(),
        members_before,
        "nothing enrolled"
    );
    t.get(&format!("/v1/members/{ann}"), &shop.token)
        .await
        .expect_problem(404, "not_found");
}

/// Finding 9: huge amounts are refused with a field error before anything is written;
/// a balance at its limit refuses more points instead of failing with a 500.
#[tokio::test]
async fn huge_amounts_and_full_balances_are_refused_before_any_write() {
    use coalition_store::entities::point_account;
    use sea_orm::{sea_query::Expr, ColumnTrait, EntityTrait, QueryFilter};
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "10.00", 0).await;
    for (amount, redeem, field) in [
        ("1000000000000000.00", 0, "amount.amount"),
        ("1000000000.01", 0, "amount.amount"),
        ("10.00", 9_000_000_000_000_000_000_i64, "redeem_points"),
    ] {
        let body = json!({"card_number": card, "amount": {"amount": amount, "currency": "EUR"}, "external_ref": "huge", "redeem_points": redeem});
        let refused = t
            .post_moving("/v1/purchases", &gym.token, body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], field, "{refused}");
    }
    let rate = json!({"name": "Greedy", "kind": "merchant", "category": "x", "earn_points_per_unit": "1000000000000",
        "issue_price_per_point": "0.01", "redemption_value_per_point": "0.01"});
    t.post("/v1/partners", &prog.admin, rate)
        .await
        .expect_problem(422, "validation_failed");
    // The largest purchase at the largest rate still fits one entry.
    let big = t.partner(&prog, "Big", "1000").await;
    let (_, big_card) = t.member_with_card(&big, "big@example.org").await;
    let biggest = t.purchase(&big, &big_card, "1000000000.00", 0).await;
    assert_eq!(biggest["points_earned"], 1_000_000_000_000_i64);
    refund(&t, &big, &biggest, "1000000000.00").await;

    // Bring Ann's account to the balance limit (as years of earning would).
    let account = stored_account(&t.app.db, &ann).await;
    point_account::Entity::update_many()
        .col_expr(
            point_account::Column::Balance,
            Expr::value(coalition_domain::limits::MAX_BALANCE - 5),
        )
        .filter(point_account::Column::Id.eq(account.id))
        .exec(&t.app.db)
        .await
        .unwrap();
    for redeem in [0, 1] {
        let body = json!({"card_number": card, "amount": {"amount": "100.00", "currency": "EUR"}, "external_ref": format!("over-{redeem}"), "redeem_points": redeem});
        t.post_moving("/v1/purchases", &gym.token, body)
            .await
            .expect_problem(422, "balance_limit_exceeded");
    }
    let after = stored_account(&t.app.db, &ann).await;
    assert_eq!(
        (after.balance, after.version),
        (coalition_domain::limits::MAX_BALANCE - 5, account.version),
        "nothing written"
    );
}

/// Suspected: the one-statement purchase on PostgreSQL failed with a 500 when
/// `external_ref` held its balance placeholder text, where SQLite answered 201. Both
/// purchase paths (earn only, and paying with points) must answer every input alike.
#[tokio::test]
async fn odd_inputs_get_the_same_answer_on_both_purchase_paths() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "1000.00", 0).await;
    let long = "x".repeat(129);
    let odd = [
        ("-9223372036854775808", 201),
        ("\"balance\":-9223372036854775808", 201),
        ("{\"balance\":1}", 201),
        ("ünïcødé ✓ 漢字 🎉", 201),
        ("0000123", 201),
        ("1e5", 201),
        ("nul\u{0}byte", 422),
        ("bell\u{7}", 422),
        ("   ", 422),
        (long.as_str(), 422),
    ];
    for (i, (external_ref, status)) in odd.into_iter().enumerate() {
        for redeem in [0, 100] {
            let external_ref = format!("{external_ref}{}", if redeem == 0 { "" } else { "+" });
            let external_ref = if status == 422 {
                external_ref.trim_end_matches('+').to_owned()
            } else {
                external_ref
            };
            let body = json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": external_ref, "redeem_points": redeem});
            let answer = t.post_moving("/v1/purchases", &gym.token, body).await;
            assert_eq!(
                answer.status.as_u16(),
                status,
                "case {i} redeem {redeem}: {}",
                answer.body
            );
            if status == 201 {
                assert_eq!(answer.body["external_ref"], json!(external_ref));
                assert!(answer.body["balance"].as_i64().unwrap() > 0);
            } else {
                assert_eq!(answer.code(), "validation_failed");
            }
        }
    }
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// Suspected: a purchase racing the card's registration read the card outside any lock
/// and could land its points on the old bearer account; registration read the bearer
/// balance unlocked and could split points from their lots. Many purchases on a bearer
/// card while it is registered: every point ends up on the member, lots match.
#[tokio::test]
async fn purchases_racing_a_registration_land_on_the_member() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for round in 0..8 {
        let bob = enrol(&t, &gym, &format!("bob{round}@example.org")).await;
        let card = bearer_card(&t, &gym).await;
        t.purchase(&gym, &card, "100.00", 0).await;
        let buys = (0..6).map(|i| {
            let body = json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"},
                "external_ref": format!("race-{round}-{i}"), "redeem_points": i % 2});
            t.post_moving("/v1/purchases", &gym.token, body)
        });
        let (registered, bought) = tokio::join!(
            register(&t, &gym, &card, &bob),
            futures::future::join_all(buys)
        );
        registered.expect(200);
        let mut expected = 100;
        for answer in bought {
            let body = answer.expect(201);
            expected +=
                body["points_earned"].as_i64().unwrap() - body["points_redeemed"].as_i64().unwrap();
        }
        assert_eq!(t.points(&gym.token, &bob).await, expected, "round {round}");
        assert_accounts_consistent(&t.app.db, prog.id).await;
    }
}

/// Suspected: `--point-expiry-days` had no upper bound; a huge value overflowed the date
/// arithmetic and every purchase panicked.
#[tokio::test]
async fn point_expiry_days_are_bounded() {
    let dir = std::env::temp_dir().join(format!("coalition-expiry-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coalition-under-test"))
        .args(["programme", "create", "--name", "X", "--currency", "EUR"])
        .args(["--point-value", "0.01", "--point-expiry-days", "2000000000"])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/c.db?mode=rwc", dir.display()),
        )
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--point-expiry-days"), "{stderr}");
    assert!(out.stdout.is_empty());
    std::fs::remove_dir_all(&dir).ok();

    // Within the bound, the longest life works end to end.
    let t = spawn_app().await;
    let input = coalition_app::programmes::NewProgramme {
        name: "Long".into(),
        currency: "EUR".into(),
        point_value: "0.01".into(),
        point_expiry_days: coalition_domain::limits::MAX_POINT_EXPIRY_DAYS,
    };
    let created = coalition_app::programmes::create(&t.app.db, input)
        .await
        .unwrap();
    let admin = t
        .token(&created.operator.client_id, &created.operator.client_secret)
        .await;
    let prog = Programme {
        id: created.programme_id,
        admin,
        client_id: created.operator.client_id,
        client_secret: created.operator.client_secret,
    };
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(t.points(&gym.token, &ann).await, 10);
}

/// Beyond the list: a path with a method it does not take answered an empty 405.
#[tokio::test]
async fn a_method_a_path_does_not_take_is_a_problem_with_allow() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let answer = t
        .call(
            reqwest::Method::DELETE,
            // Not a Luhn-valid number: one that passed would be refused as a PAN first.
            "/v1/cards/4111111111111112",
            Some(&prog.admin),
            None,
            None,
        )
        .await;
    assert!(
        answer.headers.get("allow").is_some(),
        "{:?}",
        answer.headers
    );
    answer.expect_problem(405, "method_not_allowed");
}

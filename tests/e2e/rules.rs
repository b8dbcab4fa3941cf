//! Earning rules end to end: the seed scenario, rule changes and their versions, each
//! kind of condition, quote == commit over random rules, and caps per member per day
//! under concurrent purchases (across two server processes on PostgreSQL).

use crate::support::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

fn eur(amount: &str) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn purchase_body(card: &str, amount: &str, redeem: i64, categories: &[&str]) -> Value {
    json!({"card_number": card, "amount": eur(amount), "external_ref": Uuid::new_v4().to_string(),
           "redeem_points": redeem, "categories": categories})
}

async fn rule(t: &Client, admin: &str, body: Value) -> Value {
    t.post("/v1/rules", admin, body).await.expect(201)
}

async fn patch(t: &Client, token: &str, path: &str, body: Value) -> Resp {
    t.call(Method::PATCH, path, Some(token), Some(body), None)
        .await
}

/// (kind, rule_id, points) of each breakdown line.
fn lines(answer: &Value) -> Vec<(String, Option<String>, i64)> {
    answer["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["rule_id"].as_str().map(str::to_owned),
                l["points"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_seed_cashback_credits_250_worth_of_points_that_are_spent_at_another_partner() {
    let t = spawn_app().await;
    let prog = t.programme("Seed").await;
    let gym = t.partner(&prog, "Gym", "0").await;
    let shop = t.partner(&prog, "Sports shop", "1").await;
    let diet = t.partner(&prog, "Diet store", "1").await;
    let cashback = rule(
        &t,
        &prog.admin,
        json!({"name": "Gym cashback", "effect": {"kind": "cashback_percent", "value": "5"},
               "conditions": {"partner_ids": [gym.id]}}),
    )
    .await;
    let (member, card) = t.member_with_card(&gym, "seed@example.org").await;

    // 5 % of 5000 is 250, at 0.01 a point: 25,000 points, all from the rule.
    let bought = t.purchase(&gym, &card, "5000.00", 0).await;
    assert_eq!(bought["points_earned"], 25_000);
    assert_eq!(
        lines(&bought),
        vec![(
            "cashback_percent".into(),
            cashback["id"].as_str().map(str::to_owned),
            25_000
        )]
    );
    assert_eq!(bought["breakdown"][0]["rule_version"], 1);
    assert_eq!(
        bought["breakdown"][0]["funder"]["partner_id"],
        json!(gym.id)
    );
    assert_eq!(bought["payable"], eur("5000.00"));
    // The award is recorded for caps, on either purchase path (on PostgreSQL this one
    // took the one-statement path: its rule needs no history).
    {
        use coalition_store::entities::rule_award;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let rule_id: Uuid = cashback["id"].as_str().unwrap().parse().unwrap();
        let awards = rule_award::Entity::find()
            .filter(rule_award::Column::RuleId.eq(rule_id))
            .all(&t.app.db)
            .await
            .unwrap();
        assert_eq!(
            awards
                .iter()
                .map(|a| (a.points, a.rule_version))
                .collect::<Vec<_>>(),
            vec![(25_000, 1)]
        );
    }
    let balance = t
        .get(&format!("/v1/members/{member}/balance"), &gym.token)
        .await
        .expect(200);
    assert_eq!(balance["value"], eur("250.00"));

    // Spent at the sports shop: 250.00 off a bill of 300.00; the rest earns the shop's 1
    // point per euro. The rule names the gym only, so it gives nothing here.
    let spent = t
        .post_moving(
            "/v1/purchases",
            &shop.token,
            purchase_body(&card, "300.00", 25_000, &[]),
        )
        .await
        .expect(201);
    assert_eq!(spent["points_discount"], eur("250.00"));
    assert_eq!(spent["tier_discount"], eur("0.00"));
    assert_eq!(spent["discount"], eur("250.00"));
    assert_eq!(spent["payable"], eur("50.00"));
    assert_eq!(lines(&spent), vec![("base_rate".into(), None, 50)]);
    assert_eq!(spent["balance"], 50);
    // And the diet store honours what is left.
    let diet_buy = t
        .post_moving(
            "/v1/purchases",
            &diet.token,
            purchase_body(&card, "10.00", 50, &[]),
        )
        .await
        .expect(201);
    assert_eq!(diet_buy["payable"], eur("9.50"));
    assert_eq!(diet_buy["balance"], 9);
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

#[tokio::test]
async fn rules_are_versioned_validated_and_kept_to_their_programme() {
    let t = spawn_app().await;
    let prog = t.programme("Rules").await;
    let other = t.programme("Other").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    // A window of this hour and the next (UTC), wrapping past midnight at 23:00.
    let hour = chrono::Timelike::hour(&chrono::Utc::now());
    let hours =
        json!({"from": format!("{hour:02}:00"), "to": format!("{:02}:00", (hour + 2) % 24)});
    let created = t
        .post(
            "/v1/rules",
            &prog.admin,
            json!({"name": "Weekday bonus", "priority": 5,
                   "effect": {"kind": "bonus_points", "value": "10"},
                   "conditions": {"days_of_week": [1, 2, 3, 4, 5, 6, 7], "hours": hours},
                   "caps": {"per_purchase": 100}}),
        )
        .await;
    let location = created.headers["location"].to_str().unwrap().to_owned();
    let created = created.expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/rules/{id}"));
    assert_eq!(
        (
            &created["version"],
            &created["active"],
            &created["stackable"]
        ),
        (&json!(1), &json!(true), &json!(true))
    );
    assert_eq!(
        created["funder"],
        json!({"kind": "partner", "partner_id": null})
    );
    assert_eq!(created["conditions"]["hours"], hours);
    assert_eq!(t.get(&location, &prog.admin).await.expect(200), created);

    let (_, card) = t.member_with_card(&gym, "v@example.org").await;
    let before = t.purchase(&gym, &card, "10.00", 0).await;
    // A change is a new version; the old award still names the old one.
    let changed = patch(
        &t,
        &prog.admin,
        &location,
        json!({"effect": {"kind": "bonus_points", "value": "20"}}),
    )
    .await
    .expect(200);
    assert_eq!(
        (&changed["version"], &changed["name"]),
        (&json!(2), &json!("Weekday bonus"))
    );
    let after = t.purchase(&gym, &card, "10.00", 0).await;
    let rule_line = |p: &Value| {
        p["breakdown"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rule_id"] == json!(id))
            .cloned()
            .unwrap()
    };
    assert_eq!(
        (
            rule_line(&before)["rule_version"].clone(),
            rule_line(&before)["points"].clone()
        ),
        (json!(1), json!(10))
    );
    assert_eq!(
        (
            rule_line(&after)["rule_version"].clone(),
            rule_line(&after)["points"].clone()
        ),
        (json!(2), json!(20))
    );
    let v1 = t
        .get(&format!("{location}/versions/1"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(
        (&v1["version"], &v1["effect"]["value"]),
        (&json!(1), &json!("10"))
    );
    t.get(&format!("{location}/versions/3"), &prog.admin)
        .await
        .expect_problem(404, "not_found");

    // Deactivated: no DELETE, and it gives nothing any more.
    patch(&t, &prog.admin, &location, json!({"active": false}))
        .await
        .expect(200);
    let off = t.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(lines(&off), vec![("base_rate".into(), None, 10)]);
    let delete = t
        .call(Method::DELETE, &location, Some(&prog.admin), None, None)
        .await;
    assert_eq!(delete.status, 405);

    // Lists page by cursor.
    rule(
        &t,
        &prog.admin,
        json!({"name": "Second", "effect": {"kind": "multiplier", "value": "2"}}),
    )
    .await;
    let page = t.get("/v1/rules?limit=1", &prog.admin).await.expect(200);
    assert_eq!(page["data"][0]["id"], json!(id));
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = t
        .get(&format!("/v1/rules?limit=1&cursor={cursor}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(rest["data"][0]["name"], "Second");
    assert_eq!(rest["next_cursor"], Value::Null);

    // Another programme sees nothing; a partner may not manage rules.
    for path in [location.clone(), format!("{location}/versions/1")] {
        t.get(&path, &other.admin)
            .await
            .expect_problem(404, "not_found");
        t.get(&path, &gym.token)
            .await
            .expect_problem(403, "insufficient_scope");
    }
    patch(&t, &other.admin, &location, json!({"active": true}))
        .await
        .expect_problem(404, "not_found");
    t.post(
        "/v1/rules",
        &gym.token,
        json!({"name": "Mine", "effect": {"kind": "bonus_points", "value": "1"}}),
    )
    .await
    .expect_problem(403, "insufficient_scope");
    let other_list = t.get("/v1/rules", &other.admin).await.expect(200);
    assert_eq!(other_list["data"], json!([]));

    // Validation names each bad field, and nothing is written.
    let other_partner = t.partner(&other, "Foreign", "1").await;
    let bad = t
        .post(
            "/v1/rules",
            &prog.admin,
            json!({"name": " ", "valid_from": "2026-01-02T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z",
                   "effect": {"kind": "cashback_percent", "value": "150"},
                   "conditions": {"partner_ids": [other_partner.id], "days_of_week": [0, 8],
                                  "hours": {"from": "25:00", "to": "10:00"},
                                  "min_amount": {"amount": "10.00", "currency": "USD"}},
                   "caps": {"per_member_day": -1},
                   "funder": {"kind": "bank", "partner_id": gym.id}}),
        )
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in [
        "name",
        "valid_to",
        "effect.value",
        "conditions.partner_ids",
        "conditions.days_of_week",
        "conditions.hours.from",
        "conditions.min_amount.currency",
        "caps.per_member_day",
        "funder.partner_id",
    ] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    for (body, field) in [
        (
            json!({"name": "x", "effect": {"kind": "double", "value": "2"}}),
            "effect.kind",
        ),
        (
            json!({"name": "x", "effect": {"kind": "multiplier", "value": "1"}}),
            "effect.value",
        ),
        (
            json!({"name": "x", "effect": {"kind": "bonus_points", "value": "1.5"}}),
            "effect.value",
        ),
        (
            json!({"name": "x", "effect": {"kind": "bonus_points", "value": "1"}, "funder": {"kind": "operator", "partner_id": gym.id}}),
            "funder.partner_id",
        ),
        // A missing required field is refused by the body's shape, before any check.
        (json!({"name": "x"}), "body"),
    ] {
        let r = t
            .post("/v1/rules", &prog.admin, body)
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{r}"
        );
    }
    patch(
        &t,
        &prog.admin,
        &location,
        json!({"valid_to": "2000-01-01T00:00:00Z"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    let still = t.get(&location, &prog.admin).await.expect(200);
    assert_eq!(still["version"], 3, "refused changes write no version");
    let all = t.get("/v1/rules", &prog.admin).await.expect(200);
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn each_condition_decides_whether_a_rule_gives_points() {
    let t = spawn_app().await;
    let prog = t.programme("Conditions").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let welcome = rule(
        &t,
        &prog.admin,
        json!({"name": "Welcome to the shop", "effect": {"kind": "bonus_points", "value": "100"},
               "conditions": {"first_purchase_at_partner": true, "partner_ids": [shop.id]},
               "funder": {"kind": "operator"}}),
    )
    .await;
    let protein = rule(
        &t,
        &prog.admin,
        json!({"name": "Protein", "effect": {"kind": "points_per_unit", "value": "2"},
               "conditions": {"purchase_categories": ["protein", "bars"], "min_amount": eur("20.00")}}),
    )
    .await;
    let (_, card) = t.member_with_card(&gym, "c@example.org").await;
    let kinds = |p: &Value| {
        let mut ks: Vec<String> = lines(p).into_iter().map(|(k, _, _)| k).collect();
        ks.sort();
        ks
    };

    // At the gym: no welcome (another partner), protein needs the category and 20.00.
    let p = t.purchase(&gym, &card, "30.00", 0).await;
    assert_eq!(kinds(&p), vec!["base_rate"]);
    let body = purchase_body(&card, "19.99", 0, &["protein"]);
    let p = t
        .post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect(201);
    assert_eq!(kinds(&p), vec!["base_rate"]);
    let body = purchase_body(&card, "20.00", 0, &["shoes", "bars"]);
    let p = t
        .post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect(201);
    assert_eq!(p["points_earned"], 20 + 40);
    assert_eq!(kinds(&p), vec!["base_rate", "points_per_unit"]);

    // First purchase at the shop: the operator's welcome bonus, once.
    let first = t.purchase(&shop, &card, "5.00", 0).await;
    assert_eq!(first["points_earned"], 105);
    let line = first["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rule_id"] == welcome["id"])
        .cloned()
        .unwrap();
    assert_eq!(
        line["funder"],
        json!({"kind": "operator", "partner_id": null})
    );
    let again = t.purchase(&shop, &card, "5.00", 0).await;
    assert_eq!(again["points_earned"], 5);

    // The operator's account funded the welcome bonus, the shop its base points.
    use coalition_domain::AccountKind;
    let funded =
        coalition_app::ledger::posted_balance(&t.app.db, AccountKind::OperatorFunding, prog.id)
            .await
            .unwrap();
    assert_eq!(funded, -100);
    // A full refund claws back from each funder what it gave.
    let refund = t
        .post_moving(
            &format!("/v1/purchases/{}/refunds", first["id"].as_str().unwrap()),
            &shop.token,
            json!({"amount": eur("5.00")}),
        )
        .await
        .expect(201);
    assert_eq!(refund["points_clawed_back"], 105);
    let funded =
        coalition_app::ledger::posted_balance(&t.app.db, AccountKind::OperatorFunding, prog.id)
            .await
            .unwrap();
    assert_eq!(funded, 0);

    // Exclusive vs stackable: an exclusive rule of higher priority applies alone…
    let exclusive = rule(
        &t,
        &prog.admin,
        json!({"name": "Shop week", "priority": 10, "stackable": false,
               "effect": {"kind": "multiplier", "value": "3"},
               "conditions": {"partner_ids": [gym.id]}}),
    )
    .await;
    let body = purchase_body(&card, "20.00", 0, &["protein"]);
    let p = t
        .post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect(201);
    assert_eq!(kinds(&p), vec!["base_rate", "multiplier"]);
    assert_eq!(p["points_earned"], 20 + 40);
    // …and is skipped when a stackable rule comes first.
    patch(
        &t,
        &prog.admin,
        &format!("/v1/rules/{}", protein["id"].as_str().unwrap()),
        json!({"priority": 20}),
    )
    .await
    .expect(200);
    let body = purchase_body(&card, "20.00", 0, &["protein"]);
    let p = t
        .post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect(201);
    assert_eq!(kinds(&p), vec!["base_rate", "points_per_unit"]);
    let _ = exclusive;
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// One random rule, as the API takes it.
fn arb_rule(partner_ids: Vec<Uuid>) -> impl Strategy<Value = Value> {
    (
        0usize..4,
        1u32..5_000,
        -2i32..3,
        any::<bool>(),
        proptest::option::of(1i64..3_000),
        proptest::option::of(1i64..3_000),
        0usize..5,
        any::<bool>(),
    )
        .prop_map(
            move |(kind, n, priority, stackable, per_purchase, per_day, condition, operator)| {
                let (kind, value) = match kind {
                    0 => ("points_per_unit", format!("{}.{:02}", n / 1000, 1 + n % 99)),
                    1 => ("cashback_percent", format!("{}.{}", 1 + n % 99, n % 10)),
                    2 => ("bonus_points", format!("{}", n)),
                    _ => ("multiplier", format!("{}.{:02}", 1 + n % 4, 1 + n % 99)),
                };
                let conditions = match condition {
                    0 => json!({}),
                    1 => json!({"first_purchase_at_partner": true}),
                    2 => json!({"purchase_categories": ["protein"]}),
                    3 => json!({"min_amount": eur("20.00")}),
                    _ => json!({"partner_ids": partner_ids}),
                };
                let funder = if operator {
                    json!({"kind": "operator"})
                } else {
                    json!({"kind": "partner"})
                };
                json!({"name": format!("random {kind}"), "priority": priority, "stackable": stackable,
                       "effect": {"kind": kind, "value": value}, "conditions": conditions,
                       "caps": {"per_purchase": per_purchase, "per_member_day": per_day}, "funder": funder})
            },
        )
}

/// A random purchase: amount in cents, points to redeem (of those earned before), tags.
fn arb_purchase() -> impl Strategy<Value = (i64, i64, bool, bool)> {
    (100i64..50_000, 0i64..3_000, any::<bool>(), any::<bool>())
}

#[tokio::test]
async fn a_quote_shows_exactly_what_the_purchase_then_does() {
    let t = spawn_app().await;
    let mut runner = TestRunner::deterministic();
    for case in 0..16 {
        let prog = t.programme(&format!("Quote {case}")).await;
        let rate = ["0", "1", "1.5", "0.37"][case % 4];
        let seller = t.partner(&prog, "Seller", rate).await;
        let feeder = t.partner(&prog, "Feeder", "1").await;
        let rules = proptest::collection::vec(arb_rule(vec![seller.id]), 0..4)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for r in &rules {
            rule(&t, &prog.admin, r.clone()).await;
        }
        let (cents, redeem, tagged, twice) =
            arb_purchase().new_tree(&mut runner).unwrap().current();
        let (_, card) = t
            .member_with_card(&feeder, &format!("q{case}@example.org"))
            .await;
        t.purchase(&feeder, &card, "30.00", 0).await; // at least 30 points to spend
        if twice {
            t.purchase(&seller, &card, "25.00", 0).await; // not a first purchase any more
        }
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let redeem = redeem.min(30).min(cents);
        let tags: &[&str] = if tagged { &["protein"] } else { &[] };
        let body = purchase_body(&card, &amount, redeem, tags);
        let quote = t
            .post("/v1/purchases/quote", &seller.token, body.clone())
            .await
            .expect(200);
        let bought = t
            .post_moving("/v1/purchases", &seller.token, body)
            .await
            .expect(201);
        for field in [
            "points_earned",
            "points_redeemed",
            "breakdown",
            "tier_discount",
            "points_discount",
            "discount",
            "payable",
            "balance",
        ] {
            assert_eq!(
                quote[field], bought[field],
                "case {case}: {field} differs; rules {rules:?}\nquote {quote}\npurchase {bought}"
            );
        }
        assert_accounts_consistent(&t.app.db, prog.id).await;
    }
}

/// 50 purchases of one member at once, with a rule capped at 1000 points per member per
/// day: exactly 1000 are awarded. On PostgreSQL the purchases go through two server
/// processes (the cap is guarded in the database, not in a process); on SQLite, one.
#[tokio::test]
async fn a_daily_cap_holds_under_fifty_concurrent_purchases() {
    let mut processes = Vec::new();
    let (clients, prog, db) = match (backend_name(), test_redis_url()) {
        ("postgres", Some(redis_url)) => {
            let database_url = fresh_database_url().await;
            let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
            let env = server_env(&database_url, &redis_url, &prefix);
            processes.push(start_server(&env).await);
            processes.push(start_server(&env).await);
            let clients: Vec<Client> = processes.iter().map(|p| spawn_client(&p.base)).collect();
            let prog = create_programme(&env, &clients[0]).await;
            let db = sea_orm::Database::connect(&database_url).await.unwrap();
            (clients, prog, db)
        }
        _ => {
            let t = spawn_app().await;
            let prog = t.programme("Caps").await;
            (vec![spawn_client(&t.base)], prog, t.app.db.clone())
        }
    };
    let c0 = &clients[0];
    let shop = c0.partner(&prog, "Shop", "0").await;
    let capped = rule(
        c0,
        &prog.admin,
        json!({"name": "Daily bonus", "effect": {"kind": "bonus_points", "value": "70"},
               "caps": {"per_member_day": 1000}}),
    )
    .await;
    let (member, card) = c0.member_with_card(&shop, "cap@example.org").await;
    let buys = (0..50).map(|i| {
        let client = &clients[i % clients.len()];
        let body = purchase_body(&card, "10.00", 0, &[]);
        let token = shop.token.clone();
        async move {
            client
                .post_moving("/v1/purchases", &token, body)
                .await
                .expect(201)["points_earned"]
                .as_i64()
                .unwrap()
        }
    });
    let earned: i64 = futures::future::join_all(buys).await.into_iter().sum();
    assert_eq!(earned, 1000, "the cap of 1000 a day holds");
    assert_eq!(c0.points(&shop.token, &member).await, 1000);
    use coalition_store::entities::rule_award;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let capped_id: Uuid = capped["id"].as_str().unwrap().parse().unwrap();
    let awards = rule_award::Entity::find()
        .filter(rule_award::Column::RuleId.eq(capped_id))
        .all(&db)
        .await
        .unwrap();
    assert_eq!(awards.iter().map(|a| a.points).sum::<i64>(), 1000);
    assert_eq!(
        awards.len(),
        15,
        "14 full awards of 70 and one of the 20 left"
    );
    assert_accounts_consistent(&db, prog.id).await;
}

/// Two processes on one database: a rule created, changed or deactivated through one
/// prices the other's purchases within a second, though the other holds the terms in
/// memory.
#[tokio::test]
async fn a_rule_changed_through_one_process_prices_purchases_through_the_other() {
    let Some(two) = two_processes().await else {
        return;
    };
    let (ta, tb, prog) = (&two.a, &two.b, &two.programme);
    let gym = ta.partner(prog, "Gym", "1").await;
    let (_, card) = ta.member_with_card(&gym, "ann@example.org").await;
    // Process b reads the programme's terms and keeps them.
    assert_eq!(
        tb.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        10
    );

    let bonus = rule(
        &ta,
        &prog.admin,
        json!({"name": "Bonus", "effect": {"kind": "bonus_points", "value": "5"}}),
    )
    .await;
    let path = format!("/v1/rules/{}", bonus["id"].as_str().unwrap());
    let second = std::time::Duration::from_secs(1);
    tokio::time::sleep(second).await;
    assert_eq!(
        tb.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        15
    );
    patch(
        &ta,
        &prog.admin,
        &path,
        json!({"effect": {"kind": "bonus_points", "value": "8"}}),
    )
    .await
    .expect(200);
    tokio::time::sleep(second).await;
    let changed = tb.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(changed["points_earned"], 18);
    assert_eq!(changed["breakdown"][1]["rule_version"], 2);
    patch(&ta, &prog.admin, &path, json!({"active": false}))
        .await
        .expect(200);
    tokio::time::sleep(second).await;
    assert_eq!(
        tb.purchase(&gym, &card, "10.00", 0).await["points_earned"],
        10
    );
}

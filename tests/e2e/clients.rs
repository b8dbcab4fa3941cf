//! API clients after creation: listed, read, rotated with an overlap, disabled,
//! re-enabled and deleted — and a cut-off client's tokens stop working on every server
//! process, not at their expiry.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// `POST /oauth/token` with these credentials: the status and body, refused or not.
async fn token_request(t: &Client, client_id: &str, secret: &str) -> (u16, Value) {
    let res = t
        .http
        .post(format!("{}/oauth/token", t.base))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The `id` (not `client_id`) of the client whose `client_id` this is, as the admin sees it.
async fn client_row(t: &Client, admin: &str, client_id: &str) -> Value {
    let list = t.get("/v1/clients?limit=100", admin).await.expect(200);
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == client_id)
        .cloned()
        .unwrap_or_else(|| panic!("{client_id} not listed: {list}"))
}

async fn delete(t: &Client, path: &str, token: &str) -> Resp {
    t.call(Method::DELETE, path, Some(token), None, None).await
}

/// Whether a token still works, asked of a route every scope may read.
async fn token_works(t: &Client, token: &str) -> Resp {
    t.get("/v1/clients", token).await
}

#[tokio::test]
async fn clients_are_listed_without_secrets_and_a_partner_sees_only_its_own() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let other = t.programme("Other").await;

    let all = t.get("/v1/clients", &prog.admin).await.expect(200);
    let text = all.to_string();
    assert_eq!(all["data"].as_array().unwrap().len(), 3, "{all}");
    for secret in [&gym.client_secret, &shop.client_secret, &prog.client_secret] {
        assert!(!text.contains(secret.as_str()));
    }
    assert!(!text.contains("argon2") && !text.contains("secret_hash"));
    let gym_row = client_row(&t, &prog.admin, &gym.client_id).await;
    assert_eq!(
        (&gym_row["status"], &gym_row["scope"]),
        (&json!("active"), &json!("partner"))
    );
    let shop_row = client_row(&t, &prog.admin, &shop.client_id).await;
    let (gym_path, shop_path) = (
        format!("/v1/clients/{}", gym_row["id"].as_str().unwrap()),
        format!("/v1/clients/{}", shop_row["id"].as_str().unwrap()),
    );

    let own = t.get("/v1/clients", &gym.token).await.expect(200);
    let ids: Vec<&Value> = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["client_id"])
        .collect();
    assert_eq!(ids, vec![&json!(gym.client_id)]);
    t.get(&gym_path, &gym.token).await.expect(200);
    t.get(&shop_path, &gym.token)
        .await
        .expect_problem(404, "not_found");
    t.get(&gym_path, &other.admin)
        .await
        .expect_problem(404, "not_found");
    t.post(&format!("{shop_path}/rotate-secret"), &gym.token, json!({}))
        .await
        .expect_problem(404, "not_found");
    t.post(
        &format!("{shop_path}/rotate-secret"),
        &other.admin,
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
    // Managing clients beyond rotation is the operator's.
    for action in ["disable", "enable"] {
        t.call(
            Method::POST,
            &format!("{gym_path}/{action}"),
            Some(&gym.token),
            None,
            None,
        )
        .await
        .expect_problem(403, "insufficient_scope");
    }
    delete(&t, &gym_path, &gym.token)
        .await
        .expect_problem(403, "insufficient_scope");
    t.get("/v1/clients/not-a-uuid", &prog.admin)
        .await
        .expect_problem(404, "not_found");
    t.get("/v1/clients?limit=0", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");

    // Pagination walks every client once.
    let first = t.get("/v1/clients?limit=2", &prog.admin).await.expect(200);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = t
        .get(&format!("/v1/clients?limit=2&cursor={cursor}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn a_disabled_client_is_cut_off_at_once_and_enabling_it_revives_no_old_token() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "ann@example.org").await;
    let path = format!(
        "/v1/clients/{}",
        client_row(&t, &prog.admin, &gym.client_id).await["id"]
            .as_str()
            .unwrap()
    );
    token_works(&t, &gym.token).await.expect(200);

    let disabled = t
        .call(
            Method::POST,
            &format!("{path}/disable"),
            Some(&prog.admin),
            None,
            None,
        )
        .await
        .expect(200);
    assert_eq!(disabled["status"], "disabled");
    let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "r-1", "redeem_points": 0});
    t.post_moving("/v1/purchases", &gym.token, body.clone())
        .await
        .expect_problem(401, "token_revoked");
    let (status, refused) = token_request(&t, &gym.client_id, &gym.client_secret).await;
    assert_eq!((status, &refused["error"]), (401, &json!("invalid_client")));
    // Disabling again changes nothing.
    t.call(
        Method::POST,
        &format!("{path}/disable"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
    .expect(200);

    let enabled = t
        .call(
            Method::POST,
            &format!("{path}/enable"),
            Some(&prog.admin),
            None,
            None,
        )
        .await
        .expect(200);
    assert_eq!(enabled["status"], "active");
    token_works(&t, &gym.token)
        .await
        .expect_problem(401, "token_revoked");
    let fresh = t.token(&gym.client_id, &gym.client_secret).await;
    t.post_moving("/v1/purchases", &fresh, body)
        .await
        .expect(201);
}

#[tokio::test]
async fn a_deleted_client_gets_no_token_and_its_tokens_stop_working() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let path = format!(
        "/v1/clients/{}",
        client_row(&t, &prog.admin, &gym.client_id).await["id"]
            .as_str()
            .unwrap()
    );
    delete(&t, &path, &prog.admin).await.expect(204);
    token_works(&t, &gym.token)
        .await
        .expect_problem(401, "token_revoked");
    let (status, _) = token_request(&t, &gym.client_id, &gym.client_secret).await;
    assert_eq!(status, 401);
    t.get(&path, &prog.admin)
        .await
        .expect_problem(404, "not_found");
    delete(&t, &path, &prog.admin)
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_rotated_secret_overlaps_for_a_while_or_is_cut_at_once() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let path = format!(
        "/v1/clients/{}",
        client_row(&t, &prog.admin, &gym.client_id).await["id"]
            .as_str()
            .unwrap()
    );
    // The partner rotates its own till's secret, with the default overlap.
    let rotated = t
        .post(&format!("{path}/rotate-secret"), &gym.token, json!({}))
        .await;
    assert_eq!(rotated.headers.get("cache-control").unwrap(), "no-store");
    let rotated = rotated.expect(200);
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, gym.client_secret);
    assert!(rotated["client"]["previous_secret_valid_until"].is_string());
    // Both secrets get tokens (the old one was remembered by the earlier grant, too),
    // and the token from before still works.
    t.token(&gym.client_id, &gym.client_secret).await;
    let with_new = t.token(&gym.client_id, &new_secret).await;
    token_works(&t, &gym.token).await.expect(200);
    token_works(&t, &with_new).await.expect(200);

    // A leak: cut at once. The previous and the rotated-out secrets get nothing, and
    // every token issued so far stops working.
    let cut = t
        .post(
            &format!("{path}/rotate-secret"),
            &prog.admin,
            json!({"overlap_seconds": 0}),
        )
        .await
        .expect(200);
    assert!(cut["client"]["previous_secret_valid_until"].is_null());
    let newest = cut["client_secret"].as_str().unwrap();
    for old in [gym.client_secret.as_str(), new_secret.as_str()] {
        let (status, _) = token_request(&t, &gym.client_id, old).await;
        assert_eq!(status, 401, "a rotated-out secret still gets tokens");
    }
    for old in [&gym.token, &with_new] {
        token_works(&t, old)
            .await
            .expect_problem(401, "token_revoked");
    }
    let newest_token = t.token(&gym.client_id, newest).await;
    token_works(&t, &newest_token).await.expect(200);

    for bad in [
        json!({"overlap_seconds": -1}),
        json!({"overlap_seconds": 604801}),
    ] {
        let refused = t
            .post(&format!("{path}/rotate-secret"), &prog.admin, bad)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "overlap_seconds");
    }
}

#[tokio::test]
async fn the_last_operator_client_cannot_be_disabled_or_deleted() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let operator = client_row(&t, &prog.admin, &prog.client_id).await;
    let path = format!("/v1/clients/{}", operator["id"].as_str().unwrap());
    t.call(
        Method::POST,
        &format!("{path}/disable"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
    .expect_problem(409, "last_operator_client");
    delete(&t, &path, &prog.admin)
        .await
        .expect_problem(409, "last_operator_client");
    // With a second operator client, the first may go.
    let second = t
        .post(
            "/v1/clients",
            &prog.admin,
            json!({"name": "Backup operator"}),
        )
        .await
        .expect(201);
    let backup = t
        .token(
            second["client_id"].as_str().unwrap(),
            second["client_secret"].as_str().unwrap(),
        )
        .await;
    delete(&t, &path, &backup).await.expect(204);
    token_works(&t, &prog.admin)
        .await
        .expect_problem(401, "token_revoked");
}

/// Disabled through process A, a token issued by process B stops working on B within
/// the one-second bound (polled, at most ~2 s); deleting does the same.
#[tokio::test]
async fn a_client_cut_off_through_one_process_is_refused_by_the_other() {
    let Some(two) = two_processes().await else {
        return;
    };
    let (ta, tb, prog) = (&two.a, &two.b, &two.programme);
    let gym = ta.partner(prog, "Gym", "1").await;
    let shop = ta.partner(prog, "Shop", "1").await;
    for (partner, cut) in [(&gym, "disable"), (&shop, "delete")] {
        let on_b = tb.token(&partner.client_id, &partner.client_secret).await;
        token_works(tb, &on_b).await.expect(200);
        let path = format!(
            "/v1/clients/{}",
            client_row(ta, &prog.admin, &partner.client_id).await["id"]
                .as_str()
                .unwrap()
        );
        match cut {
            "disable" => ta
                .call(
                    Method::POST,
                    &format!("{path}/disable"),
                    Some(&prog.admin),
                    None,
                    None,
                )
                .await
                .expect(200),
            _ => delete(ta, &path, &prog.admin).await.expect(204),
        };
        let cut_at = std::time::Instant::now();
        let mut refused = None;
        for _ in 0..40 {
            let answer = token_works(tb, &on_b).await;
            if answer.status == 401 {
                refused = Some(answer);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refused
            .unwrap_or_else(|| panic!("{cut}: process b still accepts the token after 2 s"))
            .expect_problem(401, "token_revoked");
        // For the record (BENCHMARKS-style figures), not asserted.
        eprintln!("{cut}: refused by process b after {:?}", cut_at.elapsed());
    }
    // The clients that were not touched keep working on both.
    token_works(tb, &prog.admin).await.expect(200);
}

/// Two operators disabling each other's clients at the same moment: exactly one wins,
/// and the programme keeps exactly one operator client that works.
#[tokio::test]
async fn two_operators_cutting_each_other_off_at_once_leave_one_working() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let second = t
        .post(
            "/v1/clients",
            &prog.admin,
            json!({"name": "Second operator"}),
        )
        .await
        .expect(201);
    let second_token = t
        .token(
            second["client_id"].as_str().unwrap(),
            second["client_secret"].as_str().unwrap(),
        )
        .await;
    let first = client_row(&t, &prog.admin, &prog.client_id).await;
    let (first_path, second_path) = (
        format!("/v1/clients/{}/disable", first["id"].as_str().unwrap()),
        format!("/v1/clients/{}/disable", second["id"].as_str().unwrap()),
    );
    let (a, b) = tokio::join!(
        t.call(Method::POST, &second_path, Some(&prog.admin), None, None),
        t.call(Method::POST, &first_path, Some(&second_token), None, None),
    );
    let won: Vec<bool> = [&a, &b].iter().map(|r| r.status == 200).collect();
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "{} / {}",
        a.body,
        b.body
    );
    for answer in [&a, &b].into_iter().filter(|r| r.status != 200) {
        assert!(
            ["last_operator_client", "token_revoked"].contains(&answer.code()),
            "{}",
            answer.body
        );
    }
    let survivor = if won[0] { &prog.admin } else { &second_token };
    let loser = if won[0] { &second_token } else { &prog.admin };
    let listed = token_works(&t, survivor).await.expect(200);
    let active_operators = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["scope"] == "admin" && c["status"] == "active")
        .count();
    assert_eq!(active_operators, 1);
    token_works(&t, loser)
        .await
        .expect_problem(401, "token_revoked");
}

//! Outbound webhooks, end to end: a real server delivers to a receiver running in the
//! test (a tiny axum server on 127.0.0.1), which checks what a subscriber would check.
//! Delivering to loopback needs `COALITION_WEBHOOKS_ALLOW_INSECURE=true`, which only
//! tests set.

use crate::support::*;
use coalition_store::entities::{outbox_event, webhook_delivery};
use reqwest::Method;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// What a test server needs to deliver to the receiver, quickly.
pub(crate) const DELIVERING: &[(&str, &str)] = &[
    ("COALITION_WEBHOOKS_ALLOW_INSECURE", "true"),
    ("COALITION_WEBHOOKS_INTERVAL_MS", "100"),
];

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: String,
}

impl Received {
    pub(crate) fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a webhook body is JSON")
    }
}

#[derive(Clone, Default)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers to give, in order (status, Retry-After); 200 once they run out.
    answers: Arc<Mutex<VecDeque<(u16, Option<&'static str>)>>>,
    /// A held receiver answers a request only once the test lets it (one permit each,
    /// in the order the requests came).
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// The body of a failure answer, when not the default.
    failure_body: Arc<Mutex<Option<&'static str>>>,
}

/// A webhook receiver on 127.0.0.1.
pub(crate) struct Receiver {
    pub(crate) url: String,
    state: ReceiverState,
}

/// The receiver's one route: notes the request, then answers the next answer in line
/// (once the test lets it, if the receiver is held).
async fn hook(
    axum::extract::State(s): axum::extract::State<ReceiverState>,
    headers: axum::http::HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    s.got.lock().unwrap().push(Received { headers, body });
    let (status, retry_after) = s.answers.lock().unwrap().pop_front().unwrap_or((200, None));
    if let Some(gate) = &s.gate {
        gate.acquire().await.unwrap().forget();
    }
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let failure_body = s.failure_body.lock().unwrap().unwrap_or("not now");
    match retry_after {
        Some(after) => (status, [("retry-after", after)], failure_body).into_response(),
        None if !status.is_success() => (status, failure_body).into_response(),
        None => (status, "thanks").into_response(),
    }
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        Self::start_with(ReceiverState::default()).await
    }

    /// A receiver that holds every request until [`Receiver::release`] lets it answer:
    /// a message being sent right now, as long as the test likes (within the delivery
    /// timeout).
    async fn start_held() -> Self {
        Self::start_with(ReceiverState {
            gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
            ..ReceiverState::default()
        })
        .await
    }

    /// Lets the next `n` held requests (oldest first) answer.
    fn release(&self, n: usize) {
        self.state
            .gate
            .as_ref()
            .expect("a held receiver")
            .add_permits(n);
    }

    async fn start_with(state: ReceiverState) -> Self {
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    fn answer(&self, answers: &[(u16, Option<&'static str>)]) {
        self.state
            .answers
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits up to `seconds` for at least `n` requests.
    pub(crate) async fn wait_for(&self, n: usize, seconds: u64) -> Vec<Received> {
        for _ in 0..seconds * 20 {
            if self.got().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.got()
    }
}

/// Subscribes `url` to `events` as the holder of `token`: (webhook id, secret).
pub(crate) async fn subscribe(
    t: &Client,
    token: &str,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let made = t
        .post("/v1/webhooks", token, json!({"url": url, "events": events}))
        .await;
    assert_eq!(made.headers["cache-control"], "no-store");
    let made = made.expect(201);
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    (made["id"].as_str().unwrap().to_owned(), secret)
}

/// Purchase-path events reach a new subscription within a second (the terms snapshot):
/// tests wait that long before buying.
pub(crate) async fn subscription_settles() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn deliveries(t: &Client, token: &str, webhook: &str) -> Vec<Value> {
    t.get(
        &format!("/v1/webhooks/{webhook}/deliveries?limit=100"),
        token,
    )
    .await
    .expect(200)["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// The clock moves on: every pending delivery is due now (the schedule's waits are
/// minutes to hours; what the schedule said is checked before this is called).
async fn make_due(db: &DatabaseConnection) {
    webhook_delivery::Entity::update_many()
        .col_expr(
            webhook_delivery::Column::NextAttemptAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(webhook_delivery::Column::Status.eq("pending"))
        .exec(db)
        .await
        .unwrap();
}

pub(crate) fn verify(secret: &str, r: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(r.body.as_bytes(), &r.headers)
        .is_ok()
}

#[test]
fn the_standard_webhooks_test_vector_verifies() {
    // The specification's published vector (its reference libraries' tests).
    let signed = coalition_app::webhooks::signature(
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        r#"{"test": 2432232314}"#,
    )
    .unwrap();
    assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[tokio::test]
async fn a_purchase_is_delivered_signed_with_the_receivers_secret() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("Hooks").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let receiver = Receiver::start().await;
    let (hook, secret) = subscribe(&t, &prog.admin, &receiver.url, &["purchase.recorded"]).await;
    subscription_settles().await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    let bought = t.purchase(&gym, &card, "42.50", 0).await;

    let got = receiver.wait_for(1, 10).await;
    assert_eq!(got.len(), 1, "one message");
    let r = &got[0];
    assert!(
        verify(&secret, r),
        "the signature verifies with the receiver's secret"
    );
    let (_, other_secret) = subscribe(
        &t,
        &prog.admin,
        "https://hooks.example.com/x",
        &["tier.changed"],
    )
    .await;
    assert!(!verify(&other_secret, r), "and not with another secret");
    let body = r.json();
    assert_eq!(body["type"], "purchase.recorded");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["purchase_id"], bought["id"]);
    assert_eq!(body["data"]["partner_id"], gym.id.to_string());
    assert_eq!(body["data"]["member_id"], member);
    assert_eq!(body["data"]["points_earned"], 42);
    assert_eq!(body["data"]["amount"]["amount"], "42.50");
    assert!(!r.body.contains(&card), "no card number in a message");
    assert_eq!(r.headers["content-type"], "application/json");

    // The log says delivered, once, under the webhook-id the receiver saw.
    let mut log = deliveries(&t, &prog.admin, &hook).await;
    for _ in 0..20 {
        if log.first().is_some_and(|d| d["status"] == "delivered") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = deliveries(&t, &prog.admin, &hook).await;
    }
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["message_id"], r.id());
    assert_eq!(log[0]["event"], "purchase.recorded");
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["last_status_code"], 200);
    assert_eq!(log[0]["next_attempt_at"], Value::Null);

    // The list shows the endpoint, never its secret; rotation shows a new one once, and
    // the previous one signs beside it during the overlap.
    let listed = t.get("/v1/webhooks", &prog.admin).await.expect(200);
    assert!(!listed.to_string().contains(&secret));
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    let rotated = t
        .post(
            &format!("/v1/webhooks/{hook}/rotate-secret"),
            &prog.admin,
            json!({"overlap_seconds": 600}),
        )
        .await
        .expect(200);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_valid_until"].is_string());
    t.purchase(&gym, &card, "10.00", 0).await;
    let got = receiver.wait_for(2, 10).await;
    assert_eq!(got.len(), 2);
    assert!(verify(&new_secret, &got[1]) && verify(&secret, &got[1]));
    assert_eq!(
        got[1].headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert_ne!(got[1].id(), got[0].id(), "another message, another id");
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_then_succeeds_gets_the_message_once_as_delivered() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("Retries").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, None), (502, None), (503, Some("7200"))]);
    let (hook, secret) = subscribe(&t, &gym.token, &receiver.url, &["purchase.recorded"]).await;
    subscription_settles().await;
    let (_, card) = t.member_with_card(&gym, "bob@example.org").await;
    t.purchase(&gym, &card, "20.00", 0).await;

    // Each failure is retried on the schedule (5 s, then 5 min; then the receiver's
    // Retry-After of 2 h, longer than the schedule's 30 min): checked, then the clock is
    // moved on.
    for (n, wait) in [(1, 5), (2, 300), (3, 7200)] {
        let got = receiver.wait_for(n, 10).await;
        assert_eq!(got.len(), n, "attempt {n} arrived");
        let log = loop {
            let log = deliveries(&t, &gym.token, &hook).await;
            if log[0]["attempts"] == n && log[0]["last_status_code"].is_i64() {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["status"], "pending");
        let last: chrono::DateTime<chrono::Utc> =
            log[0]["last_attempt_at"].as_str().unwrap().parse().unwrap();
        let next: chrono::DateTime<chrono::Utc> =
            log[0]["next_attempt_at"].as_str().unwrap().parse().unwrap();
        let waited = (next - last).num_seconds();
        assert!(
            (wait - 2..=wait + 2).contains(&waited),
            "attempt {n}: waits {waited}s, not {wait}s"
        );
        make_due(&t.app.db).await;
    }
    let got = receiver.wait_for(4, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = receiver.got();
    assert_eq!(got_after.len(), 4, "four attempts, no more: {}", got.len());
    let ids: std::collections::HashSet<String> = got_after.iter().map(Received::id).collect();
    assert_eq!(ids.len(), 1, "webhook-id is the same on every attempt");
    assert!(got_after.iter().all(|r| verify(&secret, r)));
    assert!(
        got_after.iter().all(|r| r.body == got_after[0].body),
        "the same body each time"
    );
    let log = deliveries(&t, &gym.token, &hook).await;
    assert_eq!(log.len(), 1, "exactly once in the log: {log:?}");
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 4);
    assert_eq!(log[0]["last_status_code"], 200);
    assert_eq!(log[0]["message_id"], got_after[0].id());
    assert!(metric(&t, "coalition_webhook_deliveries_total").await >= 1);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_at_once_and_a_redelivery_sends_the_message_again() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("Gone").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(410, None)]);
    let (hook, _) = subscribe(&t, &prog.admin, &receiver.url, &["purchase.recorded"]).await;
    subscription_settles().await;
    let (_, card) = t.member_with_card(&gym, "cy@example.org").await;
    t.purchase(&gym, &card, "5.00", 0).await;
    receiver.wait_for(1, 10).await;
    let endpoint = loop {
        let e = t
            .get(&format!("/v1/webhooks/{hook}"), &prog.admin)
            .await
            .expect(200);
        if e["status"] == "disabled" {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
    let log = deliveries(&t, &prog.admin, &hook).await;
    assert_eq!(
        (
            log[0]["status"].as_str(),
            log[0]["last_status_code"].as_i64()
        ),
        (Some("failed"), Some(410))
    );

    // Disabled: new purchases are not queued for it.
    subscription_settles().await;
    t.purchase(&gym, &card, "6.00", 0).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(deliveries(&t, &prog.admin, &hook).await.len(), 1);
    assert_eq!(receiver.got().len(), 1);

    // Enabled again and redelivered: the same message, the same id, delivered.
    t.post(
        &format!("/v1/webhooks/{hook}/enable"),
        &prog.admin,
        json!({}),
    )
    .await
    .expect(200);
    let delivery = log[0]["id"].as_str().unwrap();
    let again = t
        .call(
            Method::POST,
            &format!("/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"),
            Some(&prog.admin),
            None,
            None,
        )
        .await
        .expect(202);
    assert_eq!(again["status"], "pending");
    assert_eq!(again["attempts"], 0);
    let got = receiver.wait_for(2, 10).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id(), got[1].id());
    for _ in 0..40 {
        if deliveries(&t, &prog.admin, &hook).await[0]["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = deliveries(&t, &prog.admin, &hook).await;
    assert_eq!(
        (log.len(), log[0]["status"].as_str()),
        (1, Some("delivered"))
    );
}

#[tokio::test]
async fn each_subscriber_manages_its_own_endpoints_and_hears_only_what_concerns_it() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("Isolation").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let other = t.programme("Elsewhere").await;
    let (operator_rx, gym_rx, shop_rx) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let all = [
        "purchase.recorded",
        "refund.recorded",
        "settlement.completed",
    ];
    let (operator_hook, _) = subscribe(&t, &prog.admin, &operator_rx.url, &all).await;
    let (gym_hook, _) = subscribe(&t, &gym.token, &gym_rx.url, &all).await;
    let (shop_hook, _) = subscribe(&t, &shop.token, &shop_rx.url, &all).await;

    // Others' endpoints are 404 to everyone else, whatever the operation.
    for (token, foreign) in [
        (&shop.token, &gym_hook),
        (&gym.token, &operator_hook),
        (&prog.admin, &gym_hook),
        (&other.admin, &shop_hook),
    ] {
        for (method, path) in [
            (Method::GET, format!("/v1/webhooks/{foreign}")),
            (Method::GET, format!("/v1/webhooks/{foreign}/deliveries")),
            (
                Method::POST,
                format!("/v1/webhooks/{foreign}/rotate-secret"),
            ),
            (Method::POST, format!("/v1/webhooks/{foreign}/disable")),
            (Method::DELETE, format!("/v1/webhooks/{foreign}")),
        ] {
            let body = (method == Method::POST).then(|| json!({}));
            t.call(method, &path, Some(token), body, None)
                .await
                .expect_problem(404, "not_found");
        }
    }
    let listed = t.get("/v1/webhooks", &gym.token).await.expect(200);
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![gym_hook.as_str()]);
    // A partner may not ask for events about members' whole accounts.
    let refused = t
        .post(
            "/v1/webhooks",
            &gym.token,
            json!({"url": gym_rx.url, "events": ["points.expiring"]}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(refused["errors"][0]["field"], "events");

    subscription_settles().await;
    let began = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (_, card) = t.member_with_card(&gym, "dee@example.org").await;
    let at_gym = t.purchase(&gym, &card, "30.00", 0).await;
    let at_shop = t.purchase(&shop, &card, "12.00", 0).await;
    t.post_moving(
        &format!("/v1/purchases/{}/refunds", at_shop["id"].as_str().unwrap()),
        &shop.token,
        json!({"amount": {"amount": "2.00", "currency": "EUR"}}),
    )
    .await
    .expect(201);
    tokio::time::sleep(Duration::from_millis(50)).await;
    t.post(
        "/v1/settlements",
        &prog.admin,
        json!({"period_start": began.to_rfc3339(), "period_end": chrono::Utc::now().to_rfc3339()}),
    )
    .await
    .expect(201);

    let operator = operator_rx.wait_for(4, 10).await;
    let gym_got = gym_rx.wait_for(2, 10).await;
    let shop_got = shop_rx.wait_for(3, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let types = |got: &[Received]| {
        let mut types: Vec<String> = got
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        types.sort();
        types
    };
    assert_eq!(
        types(&operator),
        [
            "purchase.recorded",
            "purchase.recorded",
            "refund.recorded",
            "settlement.completed"
        ]
    );
    assert_eq!(
        types(&gym_rx.got()),
        ["purchase.recorded", "settlement.completed"],
        "{gym_got:?}"
    );
    assert_eq!(
        types(&shop_rx.got()),
        [
            "purchase.recorded",
            "refund.recorded",
            "settlement.completed"
        ],
        "{shop_got:?}"
    );
    let gym_text: String = gym_rx.got().iter().map(|r| r.body.clone()).collect();
    let shop_text: String = shop_rx.got().iter().map(|r| r.body.clone()).collect();
    assert!(gym_text.contains(at_gym["id"].as_str().unwrap()));
    assert!(
        !gym_text.contains(at_shop["id"].as_str().unwrap()),
        "the gym hears nothing of the shop's sales"
    );
    assert!(
        !gym_text.contains(&shop.id.to_string()),
        "nor of the shop's settlement line"
    );
    assert!(!shop_text.contains(at_gym["id"].as_str().unwrap()));
    assert!(!shop_text.contains(&gym.id.to_string()));
    let settled = shop_rx
        .got()
        .into_iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "settlement.completed")
        .unwrap();
    assert_eq!(settled["data"]["line"]["partner_id"], shop.id.to_string());
    assert!(settled["data"].get("lines").is_none());
    assert!(settled["data"].get("operator_net").is_none());
    let operator_settled = operator
        .iter()
        .map(Received::json)
        .find(|b| b["type"] == "settlement.completed")
        .unwrap();
    assert_eq!(
        operator_settled["data"]["lines"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn purchases_write_no_event_while_nobody_listens_and_do_within_a_second_of_a_subscription() {
    // Delivery off: the events stay in the outbox, where the test counts them.
    let t = spawn_app_with_settings(&[("COALITION_WEBHOOKS_ALLOW_INSECURE", "true")]).await;
    let prog = t.programme("Quiet").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (_, card) = t.member_with_card(&gym, "eve@example.org").await;
    let purchase_events = || async {
        outbox_event::Entity::find()
            .filter(outbox_event::Column::ProgrammeId.eq(prog.id))
            .filter(outbox_event::Column::EventType.eq("purchase.recorded"))
            .all(&t.app.db)
            .await
            .unwrap()
            .len()
    };
    t.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(
        purchase_events().await,
        0,
        "nobody listens: nothing written"
    );
    // The shop's endpoint hears only the shop's sales: the gym's still write nothing.
    subscribe(
        &t,
        &shop.token,
        "http://127.0.0.1:9/hook",
        &["purchase.recorded"],
    )
    .await;
    subscription_settles().await;
    t.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(purchase_events().await, 0);
    t.purchase(&shop, &card, "10.00", 0).await;
    assert_eq!(purchase_events().await, 1);
    // The operator's endpoint hears every sale; also one redeeming points (the
    // step-by-step path on PostgreSQL too).
    subscribe(
        &t,
        &prog.admin,
        "http://127.0.0.1:9/hook",
        &["purchase.recorded"],
    )
    .await;
    subscription_settles().await;
    t.purchase(&gym, &card, "10.00", 0).await;
    t.purchase(&gym, &card, "10.00", 10).await;
    assert_eq!(purchase_events().await, 3);
}

#[tokio::test]
async fn urls_must_be_https_to_public_addresses_unless_the_deployment_allows_otherwise() {
    let t = spawn_app().await;
    let prog = t.programme("Strict").await;
    for url in [
        "http://hooks.example.com/coalition",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
        "https://user:pw@hooks.example.com/hook",
        "not a url",
    ] {
        let refused = t
            .post(
                "/v1/webhooks",
                &prog.admin,
                json!({"url": url, "events": ["tier.changed"]}),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "url", "{url}: {refused}");
    }
    t.post(
        "/v1/webhooks",
        &prog.admin,
        json!({"url": "https://hooks.example.com/coalition", "events": ["nope"]}),
    )
    .await
    .expect_problem(422, "validation_failed");
    subscribe(
        &t,
        &prog.admin,
        "https://hooks.example.com/coalition",
        &["tier.changed"],
    )
    .await;
}

/// Two delivery workers on one database: each message reaches the receiver once. On
/// PostgreSQL these are two `coalition serve` processes (claims with `FOR UPDATE SKIP
/// LOCKED`); on SQLite, the embedded single-process set-up, a server's own loop and a
/// second worker in the test race on the same database.
#[tokio::test]
async fn two_workers_deliver_each_message_once() {
    let receiver = Receiver::start().await;
    if backend_name() == "postgres" {
        let Some(redis_url) = test_redis_url() else {
            eprintln!("needs TEST_REDIS_URL with PostgreSQL");
            return;
        };
        let database_url = fresh_database_url().await;
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        let mut env = server_env(&database_url, &redis_url, &prefix);
        env.push(("COALITION_WEBHOOKS_ALLOW_INSECURE", "true".into()));
        env.push(("COALITION_WEBHOOKS_INTERVAL_MS", "50".into()));
        let first = start_server(&env).await;
        let second = start_server(&env).await;
        let (a, b) = (spawn_client(&first.base), spawn_client(&second.base));
        let prog = create_programme(&env, &a).await;
        let sent = deliver_through(&a, &b, &prog, &receiver).await;
        assert_received_once(&receiver, &sent).await;
        let db = sea_orm::Database::connect(&database_url).await.unwrap();
        assert_all_delivered_once(&db, sent.len()).await;
    } else {
        let t = spawn_app_with_settings(DELIVERING).await;
        let prog = t.programme("Two workers").await;
        let second = t.app.clone();
        let worker = tokio::spawn(async move {
            loop {
                let _ = coalition_app::webhooks::deliver_due(&second, chrono::Utc::now()).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let sent = deliver_through(&t, &t, &prog, &receiver).await;
        assert_received_once(&receiver, &sent).await;
        worker.abort();
        assert_all_delivered_once(&t.app.db, sent.len()).await;
    }
}

/// Subscribes the operator and records purchases through both servers: the purchase ids.
async fn deliver_through(
    a: &Client,
    b: &Client,
    prog: &Programme,
    receiver: &Receiver,
) -> Vec<String> {
    subscribe(a, &prog.admin, &receiver.url, &["purchase.recorded"]).await;
    let gym = a.partner(prog, "Gym", "1").await;
    let (_, card) = a.member_with_card(&gym, "fay@example.org").await;
    subscription_settles().await;
    let mut sent = Vec::new();
    for i in 0..30 {
        let server = if i % 2 == 0 { a } else { b };
        let bought = server.purchase(&gym, &card, "3.00", 0).await;
        sent.push(bought["id"].as_str().unwrap().to_owned());
    }
    sent
}

async fn assert_received_once(receiver: &Receiver, sent: &[String]) {
    receiver.wait_for(sent.len(), 20).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = receiver.got();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *by_id.entry(r.id()).or_default() += 1;
    }
    assert!(
        by_id.values().all(|n| *n == 1),
        "a message arrived twice: {by_id:?}"
    );
    let purchases: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.json()["data"]["purchase_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(purchases.len(), sent.len(), "every purchase arrived");
    assert!(sent.iter().all(|p| purchases.contains(p)));
}

async fn assert_all_delivered_once(db: &DatabaseConnection, n: usize) {
    let rows = webhook_delivery::Entity::find().all(db).await.unwrap();
    assert_eq!(rows.len(), n);
    assert!(
        rows.iter()
            .all(|d| d.status == "delivered" && d.attempts == 1),
        "{rows:?}"
    );
}

/// The checks at subscription are made again when delivering: an endpoint whose name
/// resolves to a private address (or whose URL names one), however it got into the
/// database, is refused then, and nothing reaches the address.
#[tokio::test]
async fn a_private_address_is_refused_at_delivery_too() {
    use coalition_store::entities::webhook_endpoint;
    use sea_orm::ActiveValue::Set;
    let t = spawn_app_with_settings(&[("COALITION_WEBHOOKS_INTERVAL_MS", "100")]).await;
    let prog = t.programme("Rebinding").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let receiver = Receiver::start().await;
    let port = receiver
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/hook")
        .to_owned();
    let now = chrono::Utc::now();
    for url in [
        format!("https://localhost:{port}/hook"),
        format!("https://127.0.0.1:{port}/hook"),
    ] {
        webhook_endpoint::Entity::insert(webhook_endpoint::ActiveModel {
            id: Set(Uuid::now_v7()),
            programme_id: Set(prog.id),
            partner_id: Set(None),
            url: Set(url),
            events: Set(r#"["purchase.recorded"]"#.into()),
            secret: Set("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            previous_secret: Set(None),
            previous_secret_expires_at: Set(None),
            status: Set("enabled".into()),
            disabled_reason: Set(None),
            created_at: Set(now - chrono::Duration::seconds(5)),
            updated_at: Set(now),
        })
        .exec_without_returning(&t.app.db)
        .await
        .unwrap();
    }
    // The endpoints appeared behind the API's back: make the terms snapshot see them.
    coalition_app::terms::bump(&t.app.db, prog.id)
        .await
        .unwrap();
    subscription_settles().await;
    let (_, card) = t.member_with_card(&gym, "gil@example.org").await;
    t.purchase(&gym, &card, "8.00", 0).await;
    let attempted = loop {
        let rows = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::ProgrammeId.eq(prog.id))
            .all(&t.app.db)
            .await
            .unwrap();
        if rows.len() == 2
            && rows
                .iter()
                .all(|d| d.attempts >= 1 && d.last_error.is_some())
        {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for d in &attempted {
        assert_eq!(
            (d.status.as_str(), d.last_status_code),
            ("pending", None),
            "{d:?}"
        );
        assert!(
            d.last_error.as_deref().unwrap().contains("private"),
            "{d:?}"
        );
    }
    assert!(
        receiver.got().is_empty(),
        "nothing reached the private address"
    );
}

/// `overlap_seconds` is optional, and so is the whole body: none at all reads as `{}`.
#[tokio::test]
async fn rotating_a_secret_needs_no_body() {
    let t = spawn_app().await;
    let prog = t.programme("Hooks").await;
    let (hook, secret) = subscribe(
        &t,
        &prog.admin,
        "https://hooks.example.com/x",
        &["purchase.recorded"],
    )
    .await;
    let url = format!("{}/v1/webhooks/{hook}/rotate-secret", t.base);
    let bare = t
        .http
        .post(&url)
        .bearer_auth(&prog.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200, "no body, no Content-Type");
    let rotated: Value = bare.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let until = chrono::DateTime::parse_from_rfc3339(
        rotated["previous_secret_valid_until"].as_str().unwrap(),
    )
    .unwrap();
    let overlap = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        (3500..=3600).contains(&overlap.num_seconds()),
        "the default overlap, an hour: {overlap}"
    );
    // An empty body named JSON reads as `{}` too.
    let empty = t
        .http
        .post(&url)
        .bearer_auth(&prog.admin)
        .header("content-type", "application/json")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 200, "an empty JSON body");
    // A body that is there must still be JSON, named as such.
    let text = t
        .http
        .post(&url)
        .bearer_auth(&prog.admin)
        .body("overlap_seconds=0")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
}

/// Waits (up to 10 s) until the endpoint's only delivery satisfies `done`: the log then.
async fn log_until(t: &Client, token: &str, hook: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let log = deliveries(t, token, hook).await;
        if log.len() == 1 && done(&log[0]) {
            return log[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the delivery never got there: {:?}",
        deliveries(t, token, hook).await
    );
}

async fn redeliver(t: &Client, token: &str, hook: &str, delivery: &str) -> Resp {
    t.call(
        Method::POST,
        &format!("/v1/webhooks/{hook}/deliveries/{delivery}/redeliver"),
        Some(token),
        None,
        None,
    )
    .await
}

/// A redelivery of a message a worker is sending right now would reset it under the
/// sender's feet (its answer, recorded after, would land on a message started over):
/// it is refused while the sender's lease runs, and accepted once the sender is done.
#[tokio::test]
async fn a_message_being_sent_is_not_redelivered_under_its_sender() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("In flight").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let receiver = Receiver::start_held().await;
    let (hook, _) = subscribe(&t, &prog.admin, &receiver.url, &["purchase.recorded"]).await;
    subscription_settles().await;
    let (_, card) = t.member_with_card(&gym, "hal@example.org").await;
    t.purchase(&gym, &card, "9.00", 0).await;
    assert_eq!(
        receiver.wait_for(1, 10).await.len(),
        1,
        "the message is on its way"
    );

    let sending = log_until(&t, &prog.admin, &hook, |d| d["attempts"] == 1).await;
    assert_eq!(sending["status"], "pending");
    let delivery = sending["id"].as_str().unwrap().to_owned();
    let refused = redeliver(&t, &prog.admin, &hook, &delivery)
        .await
        .expect_problem(409, "delivery_in_flight");
    assert!(
        refused["detail"].as_str().unwrap().contains("being sent"),
        "{refused}"
    );
    let unchanged = deliveries(&t, &prog.admin, &hook).await;
    assert_eq!(
        (
            unchanged[0]["status"].as_str(),
            unchanged[0]["attempts"].as_i64()
        ),
        (Some("pending"), Some(1)),
        "the refusal changed nothing"
    );

    // The sender's answer is recorded as its own; then a redelivery is accepted.
    receiver.release(1);
    let done = log_until(&t, &prog.admin, &hook, |d| d["status"] == "delivered").await;
    assert_eq!(
        (done["attempts"].as_i64(), done["last_status_code"].as_i64()),
        (Some(1), Some(200))
    );
    receiver.release(1);
    let again = redeliver(&t, &prog.admin, &hook, &delivery)
        .await
        .expect(202);
    assert_eq!(
        (again["status"].as_str(), again["attempts"].as_i64()),
        (Some("pending"), Some(0))
    );
    let got = receiver.wait_for(2, 10).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id(), got[1].id(), "the same webhook-id");
    log_until(&t, &prog.admin, &hook, |d| {
        d["status"] == "delivered" && d["attempts"] == 1
    })
    .await;
}

/// A sender whose lease ran out (it hung past it) may still get its answer; by then the
/// message was redelivered and claimed by another worker. The stale sender's answer is not
/// recorded: the newer claim's state stands, and its own answer is the one recorded.
#[tokio::test]
async fn a_sender_whose_lease_ran_out_cannot_overwrite_a_newer_claim() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("Stale sender").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let receiver = Receiver::start_held().await;
    // The stale sender hears 200, the newer one 500.
    receiver.answer(&[(200, None), (500, None)]);
    let (hook, _) = subscribe(&t, &prog.admin, &receiver.url, &["purchase.recorded"]).await;
    subscription_settles().await;
    let (_, card) = t.member_with_card(&gym, "ida@example.org").await;
    t.purchase(&gym, &card, "9.00", 0).await;
    assert_eq!(
        receiver.wait_for(1, 10).await.len(),
        1,
        "the first sender's request"
    );
    let first = log_until(&t, &prog.admin, &hook, |d| d["attempts"] == 1).await;
    let delivery = first["id"].as_str().unwrap().to_owned();

    // The first sender's lease runs out (the clock moves on past it): the message may be
    // redelivered, and another worker claims it (the server's own loop is still waiting
    // on the first sender).
    make_due(&t.app.db).await;
    redeliver(&t, &prog.admin, &hook, &delivery)
        .await
        .expect(202);
    let second = t.app.clone();
    let worker = tokio::spawn(async move {
        loop {
            let _ = coalition_app::webhooks::deliver_due(&second, chrono::Utc::now()).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    assert_eq!(
        receiver.wait_for(2, 10).await.len(),
        2,
        "the second sender's request"
    );
    let claimed = log_until(&t, &prog.admin, &hook, |d| d["attempts"] == 1).await;
    assert_eq!(claimed["status"], "pending");

    // The stale sender gets its 200 now: nothing of it is recorded, and the message is
    // still the second sender's (a redelivery is still refused).
    receiver.release(1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after_stale = deliveries(&t, &prog.admin, &hook).await;
    assert_eq!(
        (
            after_stale[0]["status"].as_str(),
            after_stale[0]["attempts"].as_i64(),
            after_stale[0]["last_status_code"].as_i64(),
        ),
        (Some("pending"), Some(1), None),
        "the stale sender overwrote the newer claim: {after_stale:?}"
    );
    redeliver(&t, &prog.admin, &hook, &delivery)
        .await
        .expect_problem(409, "delivery_in_flight");

    // The second sender's 500 is what the log keeps: a retry in 5 s.
    receiver.release(1);
    let failed = log_until(&t, &prog.admin, &hook, |d| d["last_status_code"] == 500).await;
    worker.abort();
    assert_eq!(
        (failed["status"].as_str(), failed["attempts"].as_i64()),
        (Some("pending"), Some(1))
    );
    let last: chrono::DateTime<chrono::Utc> =
        failed["last_attempt_at"].as_str().unwrap().parse().unwrap();
    let next: chrono::DateTime<chrono::Utc> =
        failed["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!((3..=7).contains(&(next - last).num_seconds()), "{failed}");
}

#[tokio::test]
async fn no_card_number_reaches_the_database_by_a_url_or_a_receivers_answer() {
    let t = spawn_app_with_settings(DELIVERING).await;
    let prog = t.programme("Hooks").await;
    // The URL parser decodes the host and drops soft hyphens and dot segments: the
    // stored form is what counts.
    for url in [
        "https://4111%C2%AD1111%C2%AD1111%C2%AD1111.example/hook",
        "https://x.example/4111111111/a/../111111",
    ] {
        t.post(
            "/v1/webhooks",
            &prog.admin,
            json!({"url": url, "events": ["purchase.recorded"]}),
        )
        .await
        .expect_problem(422, "pan_not_allowed");
    }
    // A receiver echoing a card number in its error answer: the log keeps none of it.
    let gym = t.partner(&prog, "Gym", "1").await;
    let (_, card) = t.member_with_card(&gym, "echo@example.org").await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(400, None)]);
    *receiver.state.failure_body.lock().unwrap() = Some("unknown card 4111 1111 1111 1111");
    let (hook, _) = subscribe(&t, &prog.admin, &receiver.url, &["purchase.recorded"]).await;
    subscription_settles().await;
    t.purchase(&gym, &card, "10.00", 0).await;
    receiver.wait_for(1, 10).await;
    let log = log_until(&t, &prog.admin, &hook, |d| d["last_error"].is_string()).await;
    let error = log["last_error"].as_str().unwrap();
    assert!(error.starts_with("(withheld"), "{error}");
    let events: Vec<String> = (0..5000).map(|i| format!("x{i}")).collect();
    let huge = t
        .post(
            "/v1/webhooks",
            &prog.admin,
            json!({"url": "https://hooks.example.com/x", "events": events}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        huge["errors"].as_array().unwrap().len(),
        1,
        "one error, not 5,000"
    );
}

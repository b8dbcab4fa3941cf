//! Logs, metrics and traces of a real `coalition serve` process: one access-log line per
//! request (JSON or plain text, never a token, secret or card number), `x-request-id`,
//! `/metrics` counting requests, purchases, refunds, points and jobs, and a purchase's
//! trace reaching an OTLP/HTTP receiver.
//!
//! Each test runs its own server process: the counters are per process, and the test
//! binary runs many tests in one process.

use crate::expiry::backdate_lots;
use crate::support::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// The environment of a server on a fresh database of the backend under test.
async fn server_settings(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", fresh_database_url().await),
        ("COALITION_DB_MAX_CONNECTIONS", "10".to_owned()),
        ("COALITION_JOBS_INTERVAL_SECONDS", "0".to_owned()),
    ];
    if let Some(redis_url) = test_redis_url() {
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        env.push(("REDIS_URL", redis_url));
        env.push(("COALITION_REDIS_PREFIX", prefix));
    }
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

fn log_file() -> (PathBuf, Stdio) {
    let path = std::env::temp_dir().join(format!("coalition-log-{}.log", Uuid::new_v4()));
    let file = std::fs::File::create(&path).expect("log file");
    (path, Stdio::from(file))
}

/// One request with an `x-request-id` of our own (or none): (status, the returned id).
async fn call_with_id(
    t: &Client,
    method: Method,
    path: &str,
    token: Option<&str>,
    request_id: Option<&str>,
) -> (u16, String) {
    let mut request = t.http.request(method, format!("{}{path}", t.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.expect("request");
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.status().as_u16(), id)
}

/// An access line the test expects: (request id, method, route, status, client id).
type Expected = (String, &'static str, &'static str, u16, Option<String>);

#[tokio::test]
async fn every_request_leaves_one_json_access_line_with_its_route_and_no_secret() {
    let env = server_settings(&[("COALITION_LOG_FORMAT", "json"), ("COALITION_LOG", "info")]).await;
    let (log_path, log) = log_file();
    let server = start_server_logging_to(&env, log).await;
    let t = spawn_client(&server.base);
    let prog = create_programme(&env, &t).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (_member, card) = t.member_with_card(&shop, "log@example.org").await;
    let mut expected: Vec<Expected> = vec![];
    let shop_client = Some(shop.client_id.clone());

    let card_path = format!("/v1/cards/{card}");
    let (status, id) = call_with_id(&t, Method::GET, &card_path, Some(&shop.token), None).await;
    assert_eq!(status, 200);
    assert!(
        Uuid::parse_str(&id).is_ok(),
        "a made request id is a uuid: {id}"
    );
    expected.push((id, "GET", "/v1/cards/{number}", 200, shop_client.clone()));

    // A sane id of the caller's is kept and returned.
    let balance = format!("/v1/cards/{card}/balance");
    let mine = Some("till-7:req-0042");
    let (status, id) = call_with_id(&t, Method::GET, &balance, Some(&shop.token), mine).await;
    assert_eq!((status, id.as_str()), (200, "till-7:req-0042"));
    expected.push((
        id,
        "GET",
        "/v1/cards/{number}/balance",
        200,
        shop_client.clone(),
    ));

    // An odd one is replaced, not logged.
    let odd = format!("{card} x");
    let (status, id) = call_with_id(&t, Method::GET, &card_path, Some(&shop.token), None).await;
    assert_eq!(status, 200);
    expected.push((id, "GET", "/v1/cards/{number}", 200, shop_client.clone()));
    let response = t
        .http
        .get(format!("{}{card_path}", t.base))
        .bearer_auth(&shop.token)
        .header("x-request-id", odd.as_bytes())
        .send()
        .await
        .unwrap();
    let replaced = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    expected.push((
        replaced,
        "GET",
        "/v1/cards/{number}",
        200,
        shop_client.clone(),
    ));

    // A refused token: 401, the request id returned all the same, no client id logged.
    let forged = "forged.token-SECRET-0123456789";
    let (status, id) = call_with_id(&t, Method::GET, &card_path, Some(forged), None).await;
    assert_eq!(status, 401);
    expected.push((id, "GET", "/v1/cards/{number}", 401, None));

    // No route: the path (a card number here) is not the label.
    let nowhere = format!("/nowhere/{card}");
    let (status, id) = call_with_id(&t, Method::GET, &nowhere, None, None).await;
    assert_eq!(status, 404);
    expected.push((id, "GET", "unmatched", 404, None));

    // A purchase, its request id taken from the answer.
    let body = json!({"card_number": card, "amount": {"amount": "12.00", "currency": "EUR"}, "external_ref": "log-1"});
    let key = Uuid::new_v4().to_string();
    let purchase = t
        .call(
            Method::POST,
            "/v1/purchases",
            Some(&shop.token),
            Some(body),
            Some(&key),
        )
        .await;
    let id = purchase.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(purchase.status, 201, "{}", purchase.body);
    expected.push((id, "POST", "/v1/purchases", 201, shop_client.clone()));

    let log = std::fs::read_to_string(&log_path).unwrap();
    drop(server);
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "coalition::access")
        .collect();
    for (id, method, route, status, client_id) in &expected {
        let of_request: Vec<_> = access.iter().filter(|l| l["request_id"] == *id).collect();
        assert_eq!(of_request.len(), 1, "one access line for {id}:\n{log}");
        let line = of_request[0];
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert_eq!(
            (&line["method"], &line["route"], &line["status"]),
            (&json!(method), &json!(route), &json!(status)),
            "{line}"
        );
        assert_eq!(
            line.get("client_id"),
            client_id.as_ref().map(|c| json!(c)).as_ref()
        );
        assert!(
            line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{line}"
        );
    }
    let mut ids: Vec<_> = access.iter().map(|l| l["request_id"].to_string()).collect();
    let logged = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), logged, "one line per request:\n{log}");
    assert!(
        logged >= expected.len() + 6,
        "the setup's requests are logged too"
    );
    for secret in [
        card.as_str(),
        shop.token.as_str(),
        prog.admin.as_str(),
        shop.client_secret.as_str(),
        forged,
    ] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[tokio::test]
async fn text_logs_have_no_colours_when_not_written_to_a_terminal() {
    let env = server_settings(&[("COALITION_LOG", "info")]).await;
    let (log_path, log) = log_file();
    let server = start_server_logging_to(&env, log).await;
    let t = spawn_client(&server.base);
    let (status, id) = call_with_id(&t, Method::GET, "/v1/cards/7", None, Some("plain-1")).await;
    assert_eq!((status, id.as_str()), (401, "plain-1"));
    let log = std::fs::read_to_string(&log_path).unwrap();
    drop(server);
    let _ = std::fs::remove_file(&log_path);
    assert!(!log.contains('\u{1b}'), "colour codes in:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("request_id=\"plain-1\"") || l.contains("request_id=plain-1"))
        .unwrap_or_else(|| panic!("no access line for plain-1:\n{log}"));
    assert!(line.contains("coalition::access"), "{line}");
    assert!(line.contains("route=\"/v1/cards/{number}\""), "{line}");
    assert!(line.contains("status=401"), "{line}");
}

#[tokio::test]
async fn a_bad_log_format_stops_start_up_naming_the_setting() {
    let env = server_settings(&[("COALITION_LOG_FORMAT", "xml")]).await;
    let out = coalition(&env).arg("serve").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("COALITION_LOG_FORMAT"), "{stderr}");
}

/// `/metrics` parsed: every sample `name{labels} value`, each name declared by a
/// `# TYPE` line before it (a histogram's series by the histogram's name).
async fn scrape(t: &Client) -> HashMap<String, f64> {
    let text = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut declared: Vec<String> = vec![];
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.push(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                for label in labels.split("\",") {
                    let (key, quoted) = label.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                        "{line}"
                    );
                    assert!(!quoted.trim_end_matches('"').contains('"'), "{line}");
                }
                name
            }
            None => series,
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty(),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| declared.iter().any(|d| d == base))
            .unwrap_or(name);
        assert!(declared.iter().any(|d| d == family), "undeclared: {line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

#[tokio::test]
async fn metrics_count_requests_purchases_refunds_points_and_jobs() {
    let env = server_settings(&[("COALITION_JOBS_INTERVAL_SECONDS", "1")]).await;
    let server = start_server(&env).await;
    let t = spawn_client(&server.base);
    let prog = create_programme(&env, &t).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "metrics@example.org").await;
    let before = scrape(&t).await;
    for counter in [
        "purchases",
        "refunds",
        "points_issued",
        "points_redeemed",
        "points_expired",
    ] {
        assert_eq!(sample(&before, &format!("coalition_{counter}_total")), 0.0);
    }

    let first = t.purchase(&shop, &card, "40.00", 0).await;
    let second = t.purchase(&shop, &card, "10.00", 5).await;
    // A replay answers again and counts nothing.
    let body = json!({"card_number": card, "amount": {"amount": "3.00", "currency": "EUR"}, "external_ref": "replayed"});
    let key = Uuid::new_v4().to_string();
    let mut replays = vec![];
    for _ in 0..2 {
        let path = "/v1/purchases";
        let answer = t
            .call(
                Method::POST,
                path,
                Some(&shop.token),
                Some(body.clone()),
                Some(&key),
            )
            .await;
        replays.push(answer.expect(201));
    }
    assert_eq!(replays[0], replays[1]);
    let refund_path = format!("/v1/purchases/{}/refunds", first["id"].as_str().unwrap());
    let refund = json!({"amount": {"amount": "10.00", "currency": "EUR"}});
    t.post_moving(&refund_path, &shop.token, refund)
        .await
        .expect(201);
    for _ in 0..2 {
        t.get(&format!("/v1/cards/{card}"), &shop.token)
            .await
            .expect(200);
    }
    t.get("/definitely/not/here", &shop.token)
        .await
        .expect_problem(404, "not_found");

    let earned: i64 = [&first, &second, &replays[0]]
        .iter()
        .map(|p| p["points_earned"].as_i64().unwrap())
        .sum();
    assert!(earned > 0);
    let after = scrape(&t).await;
    assert_eq!(sample(&after, "coalition_purchases_total"), 3.0);
    assert_eq!(sample(&after, "coalition_refunds_total"), 1.0);
    assert_eq!(
        sample(&after, "coalition_points_issued_total"),
        earned as f64
    );
    assert_eq!(sample(&after, "coalition_points_redeemed_total"), 5.0);
    let purchases = "route=\"/v1/purchases\",method=\"POST\",status=\"201\"";
    assert_eq!(
        sample(
            &after,
            &format!("coalition_http_requests_total{{{purchases}}}")
        ),
        4.0
    );
    let cards = "route=\"/v1/cards/{number}\",method=\"GET\",status=\"200\"";
    assert_eq!(
        sample(&after, &format!("coalition_http_requests_total{{{cards}}}")),
        2.0
    );
    let unmatched = "route=\"unmatched\",method=\"GET\",status=\"404\"";
    assert_eq!(
        sample(
            &after,
            &format!("coalition_http_requests_total{{{unmatched}}}")
        ),
        1.0
    );
    let latency = "coalition_http_request_duration_seconds";
    let route = "route=\"/v1/purchases\"";
    assert_eq!(sample(&after, &format!("{latency}_count{{{route}}}")), 4.0);
    assert_eq!(
        sample(&after, &format!("{latency}_bucket{{{route},le=\"+Inf\"}}")),
        4.0
    );
    assert!(sample(&after, &format!("{latency}_sum{{{route}}}")) > 0.0);
    assert!(
        after.keys().all(|series| !series.contains(&card)),
        "a card number is a label"
    );
    let in_use = sample(&after, "coalition_db_pool_connections{state=\"in_use\"}");
    let idle = sample(&after, "coalition_db_pool_connections{state=\"idle\"}");
    let max = sample(&after, "coalition_db_pool_max_connections");
    assert!(
        in_use + idle >= 1.0 && in_use + idle <= max,
        "{in_use} + {idle} of {max}"
    );

    // The server's scheduler expires what is left once the lots are past their expiry.
    let balance = t.points(&shop.token, &member).await;
    assert!(balance > 0);
    let database_url = &env.iter().find(|(k, _)| *k == "DATABASE_URL").unwrap().1;
    let db = coalition_store::connect(database_url, 2).await.unwrap();
    backdate_lots(&db, &member, 10_000).await;
    let mut expired = 0.0;
    for _ in 0..150 {
        expired = sample(&scrape(&t).await, "coalition_points_expired_total");
        if expired >= balance as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(expired, balance as f64, "points expired by the scheduler");
    assert_eq!(t.points(&shop.token, &member).await, 0);
    let jobs = scrape(&t).await;
    let expire_runs = "coalition_job_runs_total{job=\"expire\",outcome=\"ok\"}";
    assert!(sample(&jobs, expire_runs) >= 1.0);
    for job in ["release-holds", "requalify", "remind"] {
        let failed = format!("coalition_job_runs_total{{job=\"{job}\",outcome=\"failed\"}}");
        assert_eq!(sample(&jobs, &failed), 0.0);
    }
}

/// A collector's OTLP/HTTP endpoint: every span posted to `/v1/traces`.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let received = spans.clone();
    let export = move |body: axum::body::Bytes| {
        let received = received.clone();
        async move {
            let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
            let mut spans = received.lock().unwrap();
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }
    };
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(export));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, spans)
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.clone())
}

/// The purchase's request span, its use-case span, and a database span under that.
fn purchase_trace(spans: &[Span]) -> Option<(&Span, &Span, &Span)> {
    let request = spans.iter().find(|s| s.name == "POST /v1/purchases")?;
    let use_case = spans
        .iter()
        .find(|s| s.name == "purchase.record" && s.parent_span_id == request.span_id)?;
    let database = spans
        .iter()
        .find(|s| s.parent_span_id == use_case.span_id && attribute(s, "db.system").is_some())?;
    Some((request, use_case, database))
}

#[tokio::test]
async fn a_purchase_is_traced_to_an_otlp_receiver() {
    let (endpoint, spans) = otlp_receiver().await;
    let env = server_settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let server = start_server(&env).await;
    let t = spawn_client(&server.base);
    let prog = create_programme(&env, &t).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (_, card) = t.member_with_card(&shop, "traced@example.org").await;
    t.purchase(&shop, &card, "25.00", 0).await;
    let mut traced = None;
    for _ in 0..150 {
        if let Some((request, use_case, database)) = purchase_trace(&spans.lock().unwrap()) {
            traced = Some((request.clone(), use_case.clone(), database.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let (request, use_case, database) =
        traced.unwrap_or_else(|| panic!("no purchase trace among {names:?}"));
    assert_eq!(request.trace_id.len(), 16);
    assert!(request.trace_id.iter().any(|b| *b != 0));
    assert_eq!(use_case.trace_id, request.trace_id);
    assert_eq!(database.trace_id, request.trace_id);
    let string = |s: &str| Some(AnyValue::StringValue(s.to_owned()));
    assert_eq!(attribute(&request, "http.route"), string("/v1/purchases"));
    assert_eq!(attribute(&request, "http.request.method"), string("POST"));
    assert_eq!(
        attribute(&request, "http.response.status_code"),
        Some(AnyValue::IntValue(201))
    );
    let system = if backend_name() == "postgres" {
        "postgresql"
    } else {
        "sqlite"
    };
    assert_eq!(attribute(&database, "db.system"), string(system));
    // Nothing of the card travels with the trace.
    let spans = spans.lock().unwrap();
    let exported = format!("{:?}", *spans);
    assert!(!exported.contains(&card), "the card number is in a span");
    assert!(!exported.contains(&shop.token), "the token is in a span");
}

//! The token endpoint driven by the `oauth2` crate, as a partner's integration would.

use crate::support::*;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};

#[tokio::test]
async fn oauth2_client_credentials_with_basic_and_post_authentication() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let http = oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token_url = TokenUrl::new(format!("{}/oauth/token", t.base)).unwrap();

    for (n, auth_type) in [AuthType::BasicAuth, AuthType::RequestBody]
        .into_iter()
        .enumerate()
    {
        let client = BasicClient::new(ClientId::new(gym.client_id.clone()))
            .set_client_secret(ClientSecret::new(gym.client_secret.clone()))
            .set_token_uri(token_url.clone())
            .set_auth_type(auth_type);
        let token = client
            .exchange_client_credentials()
            .add_scope(Scope::new("partner".into()))
            .request_async(&http)
            .await
            .expect("token");
        assert_eq!(
            token.scopes().map(|s| s[0].to_string()),
            Some("partner".to_owned())
        );
        assert!(token.expires_in().is_some());
        // The token works on a partner route.
        let access = token.access_token().secret().clone();
        t.post(
            "/v1/members",
            &access,
            serde_json::json!({"name": "Bo", "email": format!("bo{n}@example.org")}),
        )
        .await
        .expect(201);
    }

    let wrong = BasicClient::new(ClientId::new(gym.client_id.clone()))
        .set_client_secret(ClientSecret::new("cs_wrong".into()))
        .set_token_uri(token_url.clone());
    match wrong
        .exchange_client_credentials()
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient)
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }
    let too_much = BasicClient::new(ClientId::new(gym.client_id.clone()))
        .set_client_secret(ClientSecret::new(gym.client_secret.clone()))
        .set_token_uri(token_url);
    match too_much
        .exchange_client_credentials()
        .add_scope(Scope::new("admin".into()))
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidScope)
        }
        other => panic!("expected invalid_scope, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_bad_and_foreign_tokens_are_refused() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    t.call(reqwest::Method::GET, "/v1/partners", None, None, None)
        .await
        .expect_problem(401, "unauthorized");
    t.get("/v1/partners", "not.a.token")
        .await
        .expect_problem(401, "unauthorized");
    // A partner token on an operator route is a scope problem, not an existence one.
    t.get("/v1/partners", &gym.token)
        .await
        .expect_problem(403, "insufficient_scope");
    let res = t
        .http
        .post(format!("{}/oauth/token", t.base))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
}

/// The token endpoint from a client bound to `local` (127.0.0.2 is another address on
/// the loopback interface: the server sees a different source).
fn client_from(local: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(local))
        .build()
        .unwrap()
}

const ATTACKER: [u8; 4] = [127, 0, 0, 2];

async fn token_request(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> Resp {
    let res = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("the server answers");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    Resp {
        status,
        body,
        headers,
    }
}

#[track_caller]
fn expect_oauth_error(res: &Resp, status: u16, error: &str) {
    assert_eq!(
        (res.status.as_u16(), res.body["error"].as_str()),
        (status, Some(error)),
        "{}",
        res.body
    );
    assert_eq!(res.headers["cache-control"], "no-store");
}

/// Limited: 429 with the seconds to wait, in the token endpoint's own error format.
#[track_caller]
fn expect_limited(res: &Resp) {
    expect_oauth_error(res, 429, "too_many_requests");
    let wait: u64 = res.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
}

#[tokio::test]
async fn basic_credentials_that_split_a_character_are_refused_and_the_server_keeps_serving() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    // reqwest sends `Basic base64("%aé:x")`: an escape whose second digit is the first
    // byte of `é`. The old decoder sliced the text there and panicked.
    let res = token_request(&t.http, &t.base, "%aé", "x").await;
    expect_oauth_error(&res, 401, "invalid_client");
    assert_eq!(res.headers["www-authenticate"], "Basic realm=\"coalition\"");
    // Escapes that decode to invalid UTF-8 name no client either.
    let res = token_request(&t.http, &t.base, "%C3%28", "x").await;
    expect_oauth_error(&res, 401, "invalid_client");
    // The server is still there, on the same client's connection pool and on new ones.
    let admin = t.token(&prog.client_id, &prog.client_secret).await;
    t.get("/v1/partners", &admin).await.expect(200);
}

#[tokio::test]
async fn wrong_secrets_limit_their_client_id_but_not_other_clients_or_addresses() {
    let t = spawn_app_with_settings(&[
        ("COALITION_TOKEN_FAILURES_PER_MINUTE", "3"),
        ("COALITION_TOKEN_ADDRESS_FAILURES_PER_MINUTE", "1000"),
    ])
    .await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let attacker = client_from(ATTACKER);
    // A second till of the gym whose secret nobody has used yet.
    let (fresh_id, fresh_secret) = new_client(&t, &prog, gym.id).await;
    for _ in 0..3 {
        let res = token_request(&attacker, &t.base, &fresh_id, "cs_guess").await;
        expect_oauth_error(&res, 401, "invalid_client");
    }
    let hashes = t.app.token_guard.secret_hashes();
    for _ in 0..5 {
        expect_limited(&token_request(&attacker, &t.base, &fresh_id, "cs_guess").await);
    }
    // While limited the id is refused whatever the secret and wherever from, unless the
    // secret was verified lately: a guess that happened to be right would stand out.
    expect_limited(&token_request(&t.http, &t.base, &fresh_id, &fresh_secret).await);
    // None of the refusals hashed anything.
    assert_eq!(t.app.token_guard.secret_hashes(), hashes);
    // Knowing a till's client id is not enough to lock it out: a secret verified in the
    // last hour is recognised without a hash while its id is limited.
    for _ in 0..4 {
        token_request(&attacker, &t.base, &gym.client_id, "cs_guess").await;
    }
    expect_limited(&token_request(&attacker, &t.base, &gym.client_id, "cs_guess").await);
    let hashes = t.app.token_guard.secret_hashes();
    let res = token_request(&t.http, &t.base, &gym.client_id, &gym.client_secret).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(t.app.token_guard.secret_hashes(), hashes);
    // Other clients are served, from any address, the attacker's included.
    for http in [&t.http, &attacker] {
        let res = token_request(http, &t.base, &shop.client_id, &shop.client_secret).await;
        assert_eq!(res.status, 200, "{}", res.body);
    }
    // A standard OAuth2 client reads the refusal as an error response.
    let limited = BasicClient::new(ClientId::new(fresh_id.clone()))
        .set_client_secret(ClientSecret::new(fresh_secret.clone()))
        .set_token_uri(TokenUrl::new(format!("{}/oauth/token", t.base)).unwrap());
    let http = oauth2::reqwest::Client::new();
    match limited
        .exchange_client_credentials()
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => assert_eq!(
            *e.error(),
            BasicErrorResponseType::Extension("too_many_requests".into())
        ),
        other => panic!("expected too_many_requests, got {other:?}"),
    }
}

#[tokio::test]
async fn an_address_guessing_unknown_client_ids_is_limited_before_any_hashing() {
    let t = spawn_app_with_settings(&[
        ("COALITION_TOKEN_FAILURES_PER_MINUTE", "1000"),
        ("COALITION_TOKEN_ADDRESS_FAILURES_PER_MINUTE", "5"),
    ])
    .await;
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let attacker = client_from(ATTACKER);
    let unknown = || format!("cl_{}", random_letters());
    // 20 attempts at once: all pass the first check, but they take turns to hash, and
    // each asks again at its turn, so five are hashed (and fail) and the rest refused.
    let hashes = t.app.token_guard.secret_hashes();
    let ids: Vec<String> = (0..20).map(|_| unknown()).collect();
    let burst = ids
        .iter()
        .map(|id| token_request(&attacker, &t.base, id, "cs_guess"));
    let answers = futures::future::join_all(burst).await;
    let count = |status: u16| answers.iter().filter(|r| r.status == status).count();
    assert_eq!((count(401), count(429)), (5, 15));
    assert_eq!(t.app.token_guard.secret_hashes() - hashes, 5);
    let hashes = t.app.token_guard.secret_hashes();
    // The attacker keeps going, and a partner's till asks for tokens meanwhile, from its
    // own address: every one of its requests is served.
    let attack = async {
        for _ in 0..20 {
            expect_limited(&token_request(&attacker, &t.base, &unknown(), "cs_guess").await);
        }
    };
    let till = async {
        for _ in 0..5 {
            let res = token_request(&t.http, &t.base, &gym.client_id, &gym.client_secret).await;
            assert_eq!(res.status, 200, "{}", res.body);
        }
    };
    tokio::join!(attack, till);
    // The limited address is refused a secret it has not verified lately, valid or not;
    // a till behind the same address (a proxy) whose secret was verified is still served.
    let (fresh_id, fresh_secret) = new_client(&t, &prog, gym.id).await;
    expect_limited(&token_request(&attacker, &t.base, &fresh_id, &fresh_secret).await);
    let res = token_request(&attacker, &t.base, &gym.client_id, &gym.client_secret).await;
    assert_eq!(res.status, 200, "{}", res.body);
    // 20 unknown ids cost no hash, nor did the till: it was verified when `partner`
    // asked for its token, seconds ago, and is remembered for an hour.
    assert_eq!(t.app.token_guard.secret_hashes(), hashes);
}

/// A token signed with the server's own key, with this header and these claims.
fn sign(alg: jsonwebtoken::Algorithm, typ: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.typ = typ.map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

const JWT_SECRET: &str = "e2e-signing-key-0123456789abcdef-0123456789";

#[tokio::test]
async fn only_at_jwt_tokens_whose_lifetime_has_begun_are_accepted() {
    use jsonwebtoken::Algorithm::{HS256, HS512};
    let t = spawn_app_with_settings(&[("COALITION_JWT_SECRET", JWT_SECRET)]).await;
    let prog = t.programme("Coalition").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({
            "iss": "coalition", "aud": "coalition-api", "sub": prog.client_id,
            "client_id": prog.client_id, "scope": "admin", "programme_id": prog.id,
            "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };
    let plain = claims(serde_json::json!({}));
    let accepted = [
        sign(HS256, Some("at+jwt"), &plain),
        sign(HS256, Some("application/AT+JWT"), &plain),
        sign(
            HS256,
            Some("at+jwt"),
            &claims(serde_json::json!({"nbf": now - 60})),
        ),
    ];
    for token in &accepted {
        t.get("/v1/partners", token).await.expect(200);
    }
    let refused = [
        ("typ JWT", sign(HS256, Some("JWT"), &plain)),
        ("no typ", sign(HS256, None, &plain)),
        ("another typ", sign(HS256, Some("at+jwt+x"), &plain)),
        (
            "nbf in a minute",
            sign(
                HS256,
                Some("at+jwt"),
                &claims(serde_json::json!({"nbf": now + 60})),
            ),
        ),
        ("HS512", sign(HS512, Some("at+jwt"), &plain)),
    ];
    for (what, token) in &refused {
        let res = t.get("/v1/partners", token).await;
        assert_eq!(res.status, 401, "{what}: {}", res.body);
        res.expect_problem(401, "unauthorized");
    }
}

/// Sends a token request for an unknown client id from the attacker's address over a
/// raw connection, waits until the server is hashing its secret, and hangs up.
async fn hang_up_mid_hash(t: &TestApp) {
    use tokio::io::AsyncWriteExt;
    let id = format!("cl_{}", random_letters());
    let url = format!("{}/oauth/token", t.base);
    let authorization = reqwest::Client::new()
        .post(&url)
        .basic_auth(id, Some("cs_guess"))
        .build()
        .unwrap()
        .headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = "grant_type=client_credentials";
    let request = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: coalition\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(ATTACKER), 0).into())
        .unwrap();
    let server = t.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let hashes = t.app.token_guard.secret_hashes();
    stream.write_all(request.as_bytes()).await.unwrap();
    for _ in 0..1000 {
        if t.app.token_guard.secret_hashes() > hashes {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(t.app.token_guard.secret_hashes() > hashes, "never hashed");
    drop(stream);
}

#[tokio::test]
async fn hanging_up_while_the_secret_is_hashed_still_counts_the_failure() {
    let t = spawn_app_with_settings(&[
        ("COALITION_TOKEN_FAILURES_PER_MINUTE", "1000"),
        ("COALITION_TOKEN_ADDRESS_FAILURES_PER_MINUTE", "3"),
    ])
    .await;
    for _ in 0..3 {
        hang_up_mid_hash(&t).await;
    }
    // The failures of the three who hung up count: the address is at its limit.
    let unknown = format!("cl_{}", random_letters());
    let attacker = client_from(ATTACKER);
    expect_limited(&token_request(&attacker, &t.base, &unknown, "cs_guess").await);
}

/// A new API client of `partner_id`: (client id, secret), its secret not yet used.
async fn new_client(t: &TestApp, prog: &Programme, partner_id: uuid::Uuid) -> (String, String) {
    let created = t
        .post(
            "/v1/clients",
            &prog.admin,
            serde_json::json!({"name": "Second till", "partner_id": partner_id}),
        )
        .await
        .expect(201);
    (
        created["client_id"].as_str().unwrap().to_owned(),
        created["client_secret"].as_str().unwrap().to_owned(),
    )
}

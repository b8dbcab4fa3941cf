//! Members through partners' apps: OAuth 2.0 authorization code + PKCE and OpenID
//! Connect, end to end over HTTP — a stock relying party (the `openidconnect` crate)
//! completing the flow, and the attacks a hostile app or a thief of a code would try.

use crate::support::oidc::{
    authorize, browser, code_for, exchange, partner_app, pkce, request_params, see_other, sign_in,
    sign_in_from, spawn_app_with_mail, token_request, PartnerApp, REDIRECT_URI,
};
use crate::support::smtp::SmtpSink;
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A server that mails sign-in codes to `SmtpSink`, a programme, a partner and its app.
async fn setup() -> (TestApp, SmtpSink, Programme, Partner, PartnerApp) {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Iron Coalition").await;
    let partner = t.partner(&programme, "Iron Gym", "1").await;
    let app = partner_app(&t, &programme, &partner).await;
    (t, sink, programme, partner, app)
}

/// `GET /oauth/userinfo` with a bearer token: (status, body, code).
async fn userinfo(t: &TestApp, token: &str) -> Resp {
    t.get("/oauth/userinfo", token).await
}

#[tokio::test]
async fn discovery_and_jwks_describe_the_issuer_and_its_es256_key() {
    let t = spawn_app().await;
    let config = t
        .http
        .get(format!("{}/.well-known/openid-configuration", t.base))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(config["issuer"], t.base.as_str());
    assert_eq!(
        config["authorization_endpoint"],
        format!("{}/oauth/authorize", t.base)
    );
    assert_eq!(config["token_endpoint"], format!("{}/oauth/token", t.base));
    assert_eq!(
        config["jwks_uri"],
        format!("{}/.well-known/jwks.json", t.base)
    );
    assert_eq!(config["response_types_supported"], json!(["code"]));
    assert_eq!(config["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(config["subject_types_supported"], json!(["public"]));
    assert_eq!(config["scopes_supported"], json!(["openid", "member"]));
    let grants = config["grant_types_supported"].as_array().unwrap();
    for grant in ["authorization_code", "refresh_token"] {
        assert!(grants.contains(&json!(grant)), "{grant}");
    }
    let response = t
        .http
        .get(format!("{}/.well-known/jwks.json", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/jwk-set+json"
    );
    let jwks: Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        )
    );
    assert!(
        key.get("d").is_none(),
        "the private part is never published"
    );
    // The kid is the RFC 7638 thumbprint, computed here independently.
    use base64::Engine;
    use sha2::Digest;
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap()
    );
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(canonical.as_bytes()));
    assert_eq!(key["kid"], thumbprint.as_str());

    // A stock relying party discovers the provider (metadata and keys) without complaint.
    let issuer = openidconnect::IssuerUrl::new(t.base.clone()).unwrap();
    let metadata = openidconnect::core::CoreProviderMetadata::discover_async(issuer, &browser())
        .await
        .expect("openidconnect discovery");
    assert_eq!(metadata.jwks().keys().len(), 1);
}

#[tokio::test]
async fn the_signing_key_is_kept_with_the_data_and_survives_a_restart() {
    let t = spawn_app().await;
    let first = t.app.member_tokens.kid().to_owned();
    // Another server on the same database: the same key (insert-then-read).
    let again = coalition_app::auth::member_tokens::MemberTokenKeys::load_or_generate(
        &t.app.db, None, &t.base,
    )
    .await
    .unwrap();
    assert_eq!(again.kid(), first);
}

#[tokio::test]
async fn redirect_uris_are_registered_checked_listed_and_replaced() {
    let t = spawn_app().await;
    let programme = t.programme("Uris").await;
    let partner = t.partner(&programme, "Gym", "1").await;
    let bad = json!({
        "name": "App", "partner_id": partner.id,
        "redirect_uris": [
            "https://ok.example/cb",
            "http://app.example/cb",
            "https://app.example/cb#x",
            "/relative",
            "https://ok.example/cb",
        ],
    });
    let problem = t
        .post("/v1/clients", &programme.admin, bad)
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in [
        "redirect_uris[1]",
        "redirect_uris[2]",
        "redirect_uris[3]",
        "redirect_uris[4]",
    ] {
        assert!(fields.contains(&field), "{field} in {problem}");
    }
    assert!(!fields.contains(&"redirect_uris[0]"), "{problem}");
    let eleven: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
    t.post(
        "/v1/clients",
        &programme.admin,
        json!({"name": "App", "partner_id": partner.id, "redirect_uris": eleven}),
    )
    .await
    .expect_problem(422, "validation_failed");
    // An operator client signs nobody in.
    t.post(
        "/v1/clients",
        &programme.admin,
        json!({"name": "Ops", "redirect_uris": ["https://ops.example/cb"]}),
    )
    .await
    .expect_problem(422, "validation_failed");
    // Nothing of the refused requests was written.
    let listed = t
        .get("/v1/clients?limit=100", &programme.admin)
        .await
        .expect(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");

    let created = t
        .post(
            "/v1/clients",
            &programme.admin,
            json!({"name": "App", "partner_id": partner.id,
                   "redirect_uris": ["https://app.example/cb", "http://localhost:3000/cb"]}),
        )
        .await
        .expect(201);
    assert_eq!(
        created["redirect_uris"],
        json!(["https://app.example/cb", "http://localhost:3000/cb"])
    );
    let id = created["id"].as_str().unwrap();
    let got = t
        .get(&format!("/v1/clients/{id}"), &programme.admin)
        .await
        .expect(200);
    assert_eq!(got["redirect_uris"], created["redirect_uris"]);
    let replaced = t
        .call(
            reqwest::Method::PUT,
            &format!("/v1/clients/{id}/redirect-uris"),
            Some(&programme.admin),
            Some(json!({"redirect_uris": ["https://app.example/v2/cb"]})),
            None,
        )
        .await
        .expect(200);
    assert_eq!(
        replaced["redirect_uris"],
        json!(["https://app.example/v2/cb"])
    );
    // A partner may not change them, and another programme's admin does not find the client.
    t.call(
        reqwest::Method::PUT,
        &format!("/v1/clients/{id}/redirect-uris"),
        Some(&partner.token),
        Some(json!({"redirect_uris": []})),
        None,
    )
    .await
    .expect_problem(403, "insufficient_scope");
    let other = t.programme("Other").await;
    t.call(
        reqwest::Method::PUT,
        &format!("/v1/clients/{id}/redirect-uris"),
        Some(&other.admin),
        Some(json!({"redirect_uris": []})),
        None,
    )
    .await
    .expect_problem(404, "not_found");
}

/// Errors before the client and redirect URI are trusted are shown, never redirected:
/// the endpoint must be no open redirector.
#[tokio::test]
async fn an_untrusted_client_or_redirect_uri_gets_a_page_not_a_redirect() {
    let (t, _sink, programme, _partner, app) = setup().await;
    let pkce = pkce();
    let good = request_params(&app, &pkce);
    let with = |name: &str, value: Option<&str>| {
        let mut params: Vec<(String, String)> = good
            .iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(value) = value {
            params.push((name.to_owned(), value.to_owned()));
        }
        params
    };
    let operator_client = programme.client_id.clone();
    let cases = vec![
        ("unknown client", with("client_id", Some("cl_nobody"))),
        (
            "operator client",
            with("client_id", Some(operator_client.as_str())),
        ),
        ("no client", with("client_id", None)),
        ("no redirect_uri", with("redirect_uri", None)),
        (
            "extra path",
            with("redirect_uri", Some("https://app.example/callback/x")),
        ),
        (
            "extra query",
            with("redirect_uri", Some("https://app.example/callback?x=1")),
        ),
        (
            "trailing slash",
            with("redirect_uri", Some("https://app.example/callback/")),
        ),
        (
            "other host",
            with("redirect_uri", Some("https://evil.example/callback")),
        ),
        (
            "prefix only",
            with("redirect_uri", Some("https://app.example/")),
        ),
        (
            "upper case",
            with("redirect_uri", Some("https://APP.example/callback")),
        ),
        (
            "fragment",
            with("redirect_uri", Some("https://app.example/callback#x")),
        ),
    ];
    for (case, params) in cases {
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let response = authorize(&t, None, &pairs).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        assert!(response.headers().get("location").is_none(), "{case}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{case}: {content_type}"
        );
        let page = response.text().await.unwrap();
        assert!(
            !page.contains("evil.example"),
            "{case}: the page quotes no input"
        );
    }
    // Twice the same client_id is not trusted either.
    let mut twice = good.clone();
    twice.push(("client_id", "cl_other"));
    assert_eq!(authorize(&t, None, &twice).await.status(), 400);
    // An API client asking for JSON gets the refusal as a problem.
    let response = browser()
        .get(format!("{}/oauth/authorize", t.base))
        .header("accept", "application/json")
        .query(&with("client_id", Some("cl_nobody")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_client");
    // A disabled client is unknown here.
    let disabled = t
        .post(
            &format!("/v1/clients/{}/disable", app.id),
            &programme.admin,
            json!({}),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(authorize(&t, None, &good).await.status(), 400);
}

/// Once the redirect URI is trusted, errors go back to the app with its state
/// (RFC 6749 §4.1.2.1), so the app can tell its member what happened.
#[tokio::test]
async fn later_errors_go_back_to_the_app_with_its_state() {
    let (t, _sink, _programme, _partner, app) = setup().await;
    let pkce = pkce();
    let good = request_params(&app, &pkce);
    let replace = |name: &'static str, value: Option<&str>| {
        let mut params: Vec<(&str, String)> = good
            .iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        if let Some(value) = value {
            params.push((name, value.to_owned()));
        }
        params
    };
    let cases = vec![
        ("no state", replace("state", None), "invalid_request", None),
        (
            "plain PKCE",
            replace("code_challenge_method", Some("plain")),
            "invalid_request",
            Some("st-123"),
        ),
        (
            "no PKCE method",
            replace("code_challenge_method", None),
            "invalid_request",
            Some("st-123"),
        ),
        (
            "no challenge",
            replace("code_challenge", None),
            "invalid_request",
            Some("st-123"),
        ),
        (
            "short challenge",
            replace("code_challenge", Some("abc")),
            "invalid_request",
            Some("st-123"),
        ),
        (
            "token flow",
            replace("response_type", Some("token")),
            "unsupported_response_type",
            Some("st-123"),
        ),
        (
            "no scope",
            replace("scope", None),
            "invalid_scope",
            Some("st-123"),
        ),
        (
            "unknown scope",
            replace("scope", Some("openid admin")),
            "invalid_scope",
            Some("st-123"),
        ),
        (
            "prompt none, no session",
            replace("prompt", Some("none")),
            "login_required",
            Some("st-123"),
        ),
        (
            "prompt login",
            replace("prompt", Some("login")),
            "login_required",
            Some("st-123"),
        ),
        (
            "prompt consent",
            replace("prompt", Some("consent")),
            "consent_required",
            Some("st-123"),
        ),
        (
            "unknown prompt",
            replace("prompt", Some("maybe")),
            "invalid_request",
            Some("st-123"),
        ),
        (
            "twice the state",
            {
                let mut p = replace("nonce", None);
                p.push(("state", "other".into()));
                p
            },
            "invalid_request",
            None,
        ),
    ];
    for (case, params, error, state) in cases {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = authorize(&t, None, &pairs).await;
        let (location, query) = see_other(&response);
        assert!(location.starts_with(REDIRECT_URI), "{case}: {location}");
        assert_eq!(
            query.get("error").map(String::as_str),
            Some(error),
            "{case}: {location}"
        );
        assert_eq!(
            query.get("state").map(String::as_str),
            state,
            "{case}: {location}"
        );
        assert_eq!(query.get("iss"), Some(&t.base), "{case}: RFC 9207 iss");
        assert!(!query.contains_key("code"), "{case}");
    }
}

#[tokio::test]
async fn without_a_session_the_member_is_sent_to_the_portal_sign_in_of_the_apps_partner() {
    let (t, _sink, _programme, partner, app) = setup().await;
    let pkce = pkce();
    let response = authorize(&t, None, &request_params(&app, &pkce)).await;
    let original = response.url().clone();
    let (location, query) = see_other(&response);
    assert!(location.starts_with("/portal/sign-in?"), "{location}");
    assert_eq!(query["partner"], partner.id.to_string());
    let next = &query["next"];
    assert_eq!(
        next.as_str(),
        format!("/oauth/authorize?{}", original.query().unwrap()),
        "the sign-in comes back to the same request"
    );
    // A cookie that names no session is no session.
    let response = authorize(&t, Some("forged"), &request_params(&app, &pkce)).await;
    let (location, _) = see_other(&response);
    assert!(location.starts_with("/portal/sign-in?"), "{location}");
}

/// A member token opens `/v1/me` routes only: partner and admin routes refuse it, and a
/// partner's token is no member token.
#[tokio::test]
async fn a_member_token_never_reaches_a_partner_or_admin_route() {
    let (t, _sink, programme, partner, app) = setup().await;
    let member_id = enrol(&t, &partner, "mia@example.com").await;
    // A genuine member token, as the token endpoint would sign it.
    let token = t
        .app
        .member_tokens
        .issue_access(&coalition_app::auth::member_tokens::AccessGrant {
            programme_id: programme.id,
            member_id: member_id.parse().unwrap(),
            client_id: &app.client_id,
            client_generation: 0,
            grant_id: uuid::Uuid::new_v4(),
            scope: "openid member",
        })
        .unwrap();
    t.get("/v1/partners", &token)
        .await
        .expect_problem(401, "unauthorized");
    t.get(&format!("/v1/members/{member_id}"), &token)
        .await
        .expect_problem(401, "unauthorized");
    t.get(&format!("/v1/members/{member_id}/balance"), &token)
        .await
        .expect_problem(401, "unauthorized");
    t.post(
        "/v1/members",
        &token,
        json!({"name": "X", "email": "x@example.com"}),
    )
    .await
    .expect_problem(401, "unauthorized");
    // Partner and operator tokens do not open the member's routes.
    userinfo(&t, &partner.token)
        .await
        .expect_problem(403, "member_token_required");
    userinfo(&t, &programme.admin)
        .await
        .expect_problem(403, "member_token_required");
    userinfo(&t, "junk")
        .await
        .expect_problem(401, "unauthorized");
    // A token of no grant (minted outside a sign-in) opens nothing either.
    userinfo(&t, &token)
        .await
        .expect_problem(401, "token_revoked");
}

// ---------------------------------------------------------------------------------
// With a signed-in member (the portal's one-time code sign-in)

/// The stock relying party: discovery, an authorization URL with PKCE S256 and a nonce,
/// the member's sign-in, the code exchange, the ID token verified with the JWKS, the
/// refresh.
#[tokio::test]
async fn a_partner_app_signs_a_member_in_with_a_stock_openid_connect_library() {
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    };
    use openidconnect::{
        AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
        OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
    };
    let (t, sink, _programme, partner, app) = setup().await;
    let member_id = enrol(&t, &partner, "ana@example.com").await;
    let http = browser();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(t.base.clone()).unwrap(), &http)
            .await
            .expect("discovery");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(app.client_id.clone()),
        Some(ClientSecret::new(app.client_secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(app.redirect_uri.clone()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("member".into()))
        .set_pkce_challenge(challenge)
        .url();
    // Not signed in: to the portal's sign-in, and back to the same request afterwards.
    let first = http.get(url.clone()).send().await.unwrap();
    let (location, _) = see_other(&first);
    assert!(location.starts_with("/portal/sign-in"), "{location}");
    let (back_to, cookie) = sign_in_from(&t, &sink, &location, "ana@example.com").await;
    assert_eq!(
        back_to,
        format!("{}?{}", url.path(), url.query().unwrap()),
        "the sign-in returns to the authorization request"
    );
    let back = http
        .get(format!("{}{back_to}", t.base))
        .header("cookie", format!("coalition_session={cookie}"))
        .send()
        .await
        .unwrap();
    let (location, query) = see_other(&back);
    assert!(location.starts_with(&app.redirect_uri), "{location}");
    assert_eq!(&query["state"], state.secret());
    let tokens = client
        .exchange_code(AuthorizationCode::new(query["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = tokens
        .id_token()
        .expect("an ID token for scope openid")
        .claims(&verifier, &nonce)
        .expect("the ID token verifies with the JWKS");
    assert_eq!(claims.subject().as_str(), member_id);
    assert_eq!(claims.issuer().as_str(), t.base);
    let scopes: Vec<String> = tokens
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(scopes, ["openid", "member"]);
    let access = tokens.access_token().secret().clone();
    let me = userinfo(&t, &access).await.expect(200);
    assert_eq!(me["sub"], member_id.as_str());
    // The access token is an RFC 9068 JWT for this API, naming the member and the app.
    let header = jsonwebtoken::decode_header(&access).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);

    // Refresh: a new access token and a new refresh token.
    let refresh = tokens.refresh_token().expect("a refresh token").clone();
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    let next = refreshed.refresh_token().expect("rotated").secret().clone();
    assert_ne!(&next, refresh.secret());
    userinfo(&t, refreshed.access_token().secret())
        .await
        .expect(200);
}

#[tokio::test]
async fn a_code_is_good_once_for_its_app_with_its_verifier_and_redirect_uri() {
    let (t, sink, programme, partner, app) = setup().await;
    enrol(&t, &partner, "li@example.com").await;
    let cookie = sign_in(&t, &sink, partner.id, "li@example.com").await;
    let pkce_pair = pkce();
    let code = code_for(&t, &app, &cookie, &pkce_pair).await;

    // Another partner's app holding this code gets nothing, and spoils nothing.
    let other_partner = t.partner(&programme, "Shoe Shop", "1").await;
    let other_app = partner_app(&t, &programme, &other_partner).await;
    let (status, body) = exchange(&t, &other_app, &code, &pkce_pair.verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // A wrong verifier, a redirect_uri not exactly the one asked: refused.
    let (status, body) = exchange(&t, &app, &code, &pkce().verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    for redirect in [
        "https://app.example/callback/",
        "http://127.0.0.1:8765/cb",
        "https://app.example/callback?x=1",
    ] {
        let (status, body) = token_request(
            &t,
            &app,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", &pkce_pair.verifier),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{redirect}"
        );
    }
    // Wrong client secret: 401 invalid_client, before the code is looked at.
    let mut thief = app.clone();
    thief.client_secret = "cs_wrong".into();
    let (status, body) = exchange(&t, &thief, &code, &pkce_pair.verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // The real exchange still works after all that.
    let (status, first) = exchange(&t, &app, &code, &pkce_pair.verifier).await;
    assert_eq!(status, 200, "{first}");
    let access = first["access_token"].as_str().unwrap();
    userinfo(&t, access).await.expect(200);
    // A replay: refused, and everything the code gave is revoked.
    let (status, body) = exchange(&t, &app, &code, &pkce_pair.verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    userinfo(&t, access)
        .await
        .expect_problem(401, "token_revoked");
    let (status, body) = token_request(
        &t,
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

async fn refresh(t: &TestApp, app: &PartnerApp, token: &str) -> (u16, Value) {
    token_request(
        t,
        app,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

#[tokio::test]
async fn a_rotated_refresh_token_used_again_revokes_the_sign_in() {
    let (t, sink, programme, partner, app) = setup().await;
    enrol(&t, &partner, "ro@example.com").await;
    let cookie = sign_in(&t, &sink, partner.id, "ro@example.com").await;
    let pair = pkce();
    let code = code_for(&t, &app, &cookie, &pair).await;
    let (_, first) = exchange(&t, &app, &code, &pair.verifier).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    // Another app cannot use it.
    let other = partner_app(&t, &programme, &partner).await;
    let (status, body) = token_request(
        &t,
        &other,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, second) = refresh(&t, &app, &r1).await;
    assert_eq!(status, 200, "{second}");
    assert!(second.get("id_token").is_none());
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    let access2 = second["access_token"].as_str().unwrap().to_owned();
    userinfo(&t, &access2).await.expect(200);
    // The thief replays r1: refused, and r2 and every access token die with the grant.
    let (status, body) = refresh(&t, &app, &r1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = refresh(&t, &app, &r2).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    userinfo(&t, &access2)
        .await
        .expect_problem(401, "token_revoked");
    // A new sign-in works again.
    let pair = pkce();
    let code = code_for(&t, &app, &cookie, &pair).await;
    let (status, _) = exchange(&t, &app, &code, &pair.verifier).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_session_of_another_programme_gets_no_code_and_an_erased_member_no_access() {
    let (t, sink, programme, partner, app) = setup().await;
    // Signed in at another programme's partner: no session for this app's programme.
    let elsewhere = t.programme("Elsewhere").await;
    let other_partner = t.partner(&elsewhere, "Far Gym", "1").await;
    enrol(&t, &other_partner, "zoe@example.com").await;
    let foreign = sign_in(&t, &sink, other_partner.id, "zoe@example.com").await;
    let response = authorize(&t, Some(&foreign), &request_params(&app, &pkce())).await;
    let (location, query) = see_other(&response);
    assert!(location.starts_with("/portal/sign-in?"), "{location}");
    assert_eq!(query["partner"], partner.id.to_string());

    // A member's token stops working when the member is erased, and so does the refresh.
    let member_id = enrol(&t, &partner, "eve@example.com").await;
    let cookie = sign_in(&t, &sink, partner.id, "eve@example.com").await;
    let pair = pkce();
    let code = code_for(&t, &app, &cookie, &pair).await;
    let (_, tokens) = exchange(&t, &app, &code, &pair.verifier).await;
    let access = tokens["access_token"].as_str().unwrap();
    userinfo(&t, access).await.expect(200);
    t.call(
        reqwest::Method::DELETE,
        &format!("/v1/members/{member_id}"),
        Some(&programme.admin),
        None,
        None,
    )
    .await
    .expect(204);
    userinfo(&t, access)
        .await
        .expect_problem(401, "unauthorized");
    let (status, _) = token_request(
        &t,
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, 400);

    // Disabling the app's client cuts its members' tokens too.
    enrol(&t, &partner, "kai@example.com").await;
    let cookie = sign_in(&t, &sink, partner.id, "kai@example.com").await;
    let pair = pkce();
    let code = code_for(&t, &app, &cookie, &pair).await;
    let (_, tokens) = exchange(&t, &app, &code, &pair.verifier).await;
    let access = tokens["access_token"].as_str().unwrap();
    userinfo(&t, access).await.expect(200);
    t.post(
        &format!("/v1/clients/{}/disable", app.id),
        &programme.admin,
        json!({}),
    )
    .await
    .expect(200);
    userinfo(&t, access)
        .await
        .expect_problem(401, "token_revoked");
}

#[tokio::test]
async fn client_credentials_answers_exactly_as_before() {
    let t = spawn_app().await;
    let programme = t.programme("Same").await;
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", t.base))
        .basic_auth(&programme.client_id, Some(&programme.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["access_token", "expires_in", "scope", "token_type"]);
    // The member grants need their parameters.
    for form in [
        vec![("grant_type", "authorization_code")],
        vec![("grant_type", "refresh_token")],
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}/oauth/token", t.base))
            .basic_auth(&programme.client_id, Some(&programme.client_secret))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    // An unknown code from a real client is invalid_grant, never a 500.
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", t.base))
        .basic_auth(&programme.client_id, Some(&programme.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "nope"),
            ("redirect_uri", "https://x.example/cb"),
            ("code_verifier", "v"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn the_forget_job_deletes_ended_codes_tokens_grants_and_sessions_and_keeps_live_ones() {
    let (t, sink, _programme, partner, app) = setup().await;
    let ann = "ann@example.org";
    t.member_with_card(&partner, ann).await;
    t.member_with_card(&partner, "bob@example.org").await;
    let cookie = sign_in(&t, &sink, partner.id, ann).await;
    // One code exchanged (its grant gets a refresh token), one never exchanged.
    let used = pkce();
    let code = code_for(&t, &app, &cookie, &used).await;
    let (status, tokens) = exchange(&t, &app, &code, &used.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    code_for(&t, &app, &cookie, &pkce()).await;
    // Bob asks for a sign-in code and never uses it.
    let mut bob = crate::support::portal::Browser::new(&t);
    bob.request_code(
        crate::support::portal::Via::Partner(partner.id),
        "bob@example.org",
    )
    .await;
    sink.wait_for("bob@example.org", 0).await;
    let forget = |at: chrono::DateTime<chrono::Utc>| {
        let app = t.app.clone();
        async move {
            coalition_app::jobs::run(&app, "forget-sign-ins", at)
                .await
                .unwrap()
        }
    };
    let now = chrono::Utc::now();

    // Now, nothing has ended.
    let report = forget(now).await;
    for field in [
        "codes",
        "sessions",
        "oauth_codes",
        "refresh_tokens",
        "grants",
    ] {
        assert_eq!(report[field], 0, "{field}: {report}");
    }
    // In 11 minutes: Bob's sign-in code and both authorization codes have ended, and
    // with them the grant whose code was never exchanged; the other keeps its token.
    let report = forget(now + chrono::Duration::minutes(11)).await;
    assert_eq!(
        (&report["codes"], &report["oauth_codes"], &report["grants"]),
        (&json!(1), &json!(2), &json!(1)),
        "{report}"
    );
    assert_eq!(report["refresh_tokens"], 0);
    let (status, refreshed) = refresh(&t, &app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "the live grant still refreshes: {refreshed}");
    assert_eq!(
        t.get("/v1/me", refreshed["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
    // In 31 days: the refresh tokens (used and new) and their grant are gone, so are
    // the request counters and (kept in the database) Ann's session.
    let report = forget(now + chrono::Duration::days(31)).await;
    assert_eq!(
        (&report["refresh_tokens"], &report["grants"]),
        (&json!(2), &json!(1)),
        "{report}"
    );
    assert!(
        report["request_counters"].as_u64().unwrap() >= 2,
        "{report}"
    );
    let sessions_in_database = if t.redis_prefix.is_some() { 0 } else { 1 };
    assert_eq!(report["sessions"], sessions_in_database, "{report}");
    let (status, _) = refresh(&t, &app, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "a forgotten token is an unknown one");
}

#[tokio::test]
async fn no_refresh_goes_past_ninety_days_after_the_sign_in() {
    use coalition_store::entities::{oauth_grant, oauth_refresh_token};
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let (t, sink, _programme, partner, app) = setup().await;
    enrol(&t, &partner, "old@example.com").await;
    let cookie = sign_in(&t, &sink, partner.id, "old@example.com").await;
    let pair = pkce();
    let code = code_for(&t, &app, &cookie, &pair).await;
    let (_, first) = exchange(&t, &app, &code, &pair.verifier).await;
    let signed_in_at = |at: chrono::DateTime<chrono::Utc>| {
        let db = t.app.db.clone();
        async move {
            oauth_grant::Entity::update_many()
                .col_expr(oauth_grant::Column::AuthTime, Expr::value(at))
                .exec(&db)
                .await
                .unwrap();
        }
    };
    // Signed in 89 days and 23 hours ago: the refresh works, and the new refresh token
    // ends when the 90 days do, not 30 days from now.
    let now = chrono::Utc::now();
    let ninety_days_end = now + chrono::Duration::hours(1);
    signed_in_at(ninety_days_end - chrono::Duration::days(90)).await;
    let (status, second) = refresh(&t, &app, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{second}");
    let newest = oauth_refresh_token::Entity::find()
        .filter(oauth_refresh_token::Column::UsedAt.is_null())
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap();
    let off = (newest.expires_at - ninety_days_end).num_seconds().abs();
    assert!(off <= 2, "ends {} s away from the 90 days", off);
    // A sign-in older than 90 days refreshes no more, whatever the token says.
    signed_in_at(now - chrono::Duration::days(91)).await;
    let (status, body) = refresh(&t, &app, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn the_id_token_says_when_the_member_entered_her_code_and_max_age_holds_to_it() {
    use base64::Engine;
    let (t, sink, _programme, partner, app) = setup().await;
    enrol(&t, &partner, "at@example.com").await;
    let before = chrono::Utc::now().timestamp();
    let cookie = sign_in(&t, &sink, partner.id, "at@example.com").await;
    let after = chrono::Utc::now().timestamp();
    // The app asks for a code later, on the same portal session (past the 5 seconds
    // in which a sign-in meets any max_age).
    tokio::time::sleep(std::time::Duration::from_millis(5100)).await;
    let pair = pkce();
    // A sign-in older than max_age is refused back to the app (it cannot be renewed
    // here); a max_age that is no number of seconds is a bad request.
    for (max_age, error) in [("1", "login_required"), ("soon", "invalid_request")] {
        let mut params = request_params(&app, &pair);
        params.push(("max_age", max_age));
        let (location, query) = see_other(&authorize(&t, Some(&cookie), &params).await);
        assert!(location.starts_with(&app.redirect_uri), "{location}");
        assert_eq!(
            (query["error"].as_str(), query["state"].as_str()),
            (error, "st-123"),
            "max_age={max_age}"
        );
    }
    let mut params = request_params(&app, &pair);
    params.push(("max_age", "3600"));
    let (_, query) = see_other(&authorize(&t, Some(&cookie), &params).await);
    assert!(query.contains_key("code"), "{query:?}");
    let code = code_for(&t, &app, &cookie, &pair).await;
    let (status, tokens) = exchange(&t, &app, &code, &pair.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let payload = tokens["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&auth_time),
        "auth_time {auth_time} is the sign-in ({before}..={after})"
    );
    assert!(claims["iat"].as_i64().unwrap() >= after + 2, "{claims}");
}

//! A partner's app signing members in (OAuth 2.0 authorization code + PKCE), as tests
//! need it: the app's client, PKCE pairs, authorization requests that are not followed
//! (the test reads each redirect), the portal sign-in that yields a session cookie, and
//! [`member_token`], the whole flow down to a member access token.

use super::{Partner, Programme, TestApp};
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// The redirect URI test apps register. Never contacted: tests read the Location.
pub const REDIRECT_URI: &str = "https://app.example/callback";

/// A partner's app: a client of the partner with a registered redirect URI.
#[derive(Clone)]
pub struct PartnerApp {
    pub id: Uuid,
    pub client_id: String,
    pub client_secret: String,
    pub partner_id: Uuid,
    pub redirect_uri: String,
}

pub async fn partner_app(t: &TestApp, programme: &Programme, partner: &Partner) -> PartnerApp {
    let body = json!({
        "name": "Member app",
        "partner_id": partner.id,
        "redirect_uris": [REDIRECT_URI, "http://127.0.0.1:8765/cb"],
    });
    let client = t.post("/v1/clients", &programme.admin, body).await.expect(201);
    PartnerApp {
        id: client["id"].as_str().unwrap().parse().unwrap(),
        client_id: client["client_id"].as_str().unwrap().to_owned(),
        client_secret: client["client_secret"].as_str().unwrap().to_owned(),
        partner_id: partner.id,
        redirect_uri: REDIRECT_URI.to_owned(),
    }
}

/// An HTTP client that does not follow redirects: each step of the flow is looked at.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

/// A fresh PKCE pair (RFC 7636: S256), computed here independently of the server.
pub fn pkce() -> Pkce {
    let verifier = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// `GET /oauth/authorize?<params>` with the session cookie, if any; not followed.
pub async fn authorize(
    t: &TestApp,
    cookie: Option<&str>,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser()
        .get(format!("{}/oauth/authorize", t.base))
        .query(params);
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("coalition_session={cookie}"));
    }
    request.send().await.expect("authorize")
}

/// The standard parameters of a good request of `app`, with this challenge.
pub fn request_params<'a>(app: &'a PartnerApp, pkce: &'a Pkce) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", app.client_id.as_str()),
        ("redirect_uri", app.redirect_uri.as_str()),
        ("scope", "openid member"),
        ("state", "st-123"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("nonce", "n-456"),
    ]
}

/// The Location of a 303, with its query parameters.
#[track_caller]
pub fn see_other(response: &reqwest::Response) -> (String, HashMap<String, String>) {
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "not a 303");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let absolute = if location.starts_with('/') {
        format!("http://server{location}")
    } else {
        location.clone()
    };
    let url = reqwest::Url::parse(&absolute).unwrap();
    let params = url.query_pairs().into_owned().collect();
    (location, params)
}

/// The code the server sends the app back with, for a member signed in as `cookie`.
pub async fn code_for(t: &TestApp, app: &PartnerApp, cookie: &str, pkce: &Pkce) -> String {
    let response = authorize(t, Some(cookie), &request_params(app, pkce)).await;
    let (location, params) = see_other(&response);
    assert!(location.starts_with(&app.redirect_uri), "{location}");
    assert_eq!(params.get("state").map(String::as_str), Some("st-123"), "{location}");
    params.get("code").cloned().unwrap_or_else(|| panic!("no code: {location}"))
}

/// `POST /oauth/token` as the app (client_secret_basic) with these form fields.
pub async fn token_request(t: &TestApp, app: &PartnerApp, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/oauth/token", t.base))
        .basic_auth(&app.client_id, Some(&app.client_secret))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn exchange(t: &TestApp, app: &PartnerApp, code: &str, verifier: &str) -> (u16, Value) {
    token_request(
        t,
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &app.redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// The member signs in on the portal (one-time code by e-mail): the session cookie.
pub async fn sign_in(t: &TestApp, partner_id: Uuid, email: &str) -> String {
    let _ = (t, partner_id, email);
    unimplemented!("needs the portal's sign-in (branch portal) merged")
}

/// The whole flow for the enrolled member with this e-mail: a partner's app of
/// `partner` is registered, the member signs in on the portal, the app gets a code and
/// exchanges it. The member access token (scope `openid member`).
pub async fn member_token(
    t: &TestApp,
    programme: &Programme,
    partner: &Partner,
    email: &str,
) -> String {
    let app = partner_app(t, programme, partner).await;
    let cookie = sign_in(t, partner.id, email).await;
    let pkce = pkce();
    let code = code_for(t, &app, &cookie, &pkce).await;
    let (status, body) = exchange(t, &app, &code, &pkce.verifier).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

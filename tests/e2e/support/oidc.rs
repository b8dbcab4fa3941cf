//! A partner's app signing members in (OAuth 2.0 authorization code + PKCE), as tests
//! need it: the app's client, PKCE pairs, authorization requests that are not followed
//! (the test reads each redirect), the portal sign-in that yields a session cookie, and
//! [`member_token`], the whole flow down to a member access token.

use super::portal::{Browser, Via};
use super::smtp::SmtpSink;
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
    pub redirect_uri: String,
}

pub async fn partner_app(t: &TestApp, programme: &Programme, partner: &Partner) -> PartnerApp {
    let body = json!({
        "name": "Member app",
        "partner_id": partner.id,
        "redirect_uris": [REDIRECT_URI, "http://127.0.0.1:8765/cb"],
    });
    let client = t
        .post("/v1/clients", &programme.admin, body)
        .await
        .expect(201);
    PartnerApp {
        id: client["id"].as_str().unwrap().parse().unwrap(),
        client_id: client["client_id"].as_str().unwrap().to_owned(),
        client_secret: client["client_secret"].as_str().unwrap().to_owned(),
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
    assert_eq!(
        params.get("state").map(String::as_str),
        Some("st-123"),
        "{location}"
    );
    params
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {location}"))
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

/// A server that mails sign-in codes to a loopback SMTP sink (support::smtp), so that
/// members can sign in on the portal.
pub async fn spawn_app_with_mail() -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = super::spawn_app_with_settings(&[("COALITION_SMTP_URL", url.as_str())]).await;
    (app, sink)
}

/// The member signs in on the portal through `partner_id`'s link, with the one-time
/// code mailed to `email`: the session cookie's value.
pub async fn sign_in(t: &TestApp, sink: &SmtpSink, partner_id: Uuid, email: &str) -> String {
    super::portal::sign_in(t, sink, Via::Partner(partner_id), email).await
}

/// Follows the portal's sign-in that `/oauth/authorize` sent the member to (`location`,
/// `/portal/sign-in?next=…&partner=…`) as a browser would, with the code mailed to
/// `email`: the portal's answer to the code (a 303 back to `next`) and the session.
pub async fn sign_in_from(
    t: &TestApp,
    sink: &SmtpSink,
    location: &str,
    email: &str,
) -> (String, String) {
    let url = reqwest::Url::parse(&format!("http://server{location}")).unwrap();
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let (next, partner) = (query["next"].clone(), query["partner"].clone());
    let mut browser = Browser::new(t);
    let form = browser.get(location).await;
    assert_eq!(form.status, 200, "sign-in page: {}", form.body);
    let csrf = form.csrf().expect("a csrf field");
    let seen = sink.messages_to(email).len();
    let fields = [
        ("email", email),
        ("csrf", csrf.as_str()),
        ("next", next.as_str()),
        ("partner", partner.as_str()),
    ];
    let page = browser.post("/portal/sign-in", &fields).await;
    assert_eq!(page.status, 200, "code page: {}", page.body);
    let code = sink.next_code_for(email, seen).await;
    let csrf = browser
        .cookies
        .get("coalition_csrf")
        .cloned()
        .expect("csrf cookie");
    let fields = [
        ("email", email),
        ("code", code.as_str()),
        ("csrf", csrf.as_str()),
        ("next", next.as_str()),
        ("partner", partner.as_str()),
    ];
    let done = browser.post("/portal/sign-in/code", &fields).await;
    assert_eq!(done.status, 303, "sign-in: {}", done.body);
    let back = done
        .location()
        .expect("a redirect after sign-in")
        .to_owned();
    let session = browser.session().expect("a session cookie").to_owned();
    (back, session)
}

/// The whole flow for the enrolled member with this e-mail, on a server started by
/// [`spawn_app_with_mail`] with this `sink`: a partner's app of `partner` is
/// registered, the member signs in on the portal, the app gets a code and exchanges
/// it. The member access token (scope `openid member`).
#[allow(dead_code)] // the lead's /v1/me tests use it
pub async fn member_token(
    t: &TestApp,
    sink: &SmtpSink,
    programme: &Programme,
    partner: &Partner,
    email: &str,
) -> String {
    let app = partner_app(t, programme, partner).await;
    let cookie = sign_in(t, sink, partner.id, email).await;
    let pkce = pkce();
    let code = code_for(t, &app, &cookie, &pkce).await;
    let (status, body) = exchange(t, &app, &code, &pkce.verifier).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

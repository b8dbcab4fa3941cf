//! Sign-in pages: the e-mail form, the code form, sign-out. The rules (codes, limits,
//! sessions) are `coalition_app::signin` and `coalition_app::member_sessions`.

use super::{
    append_cookie, cookie, csrf_ok, html, language, local_path, parse_form, secure_attribute,
    texts::texts, url_encode, Chrome, CSRF_COOKIE,
};
use crate::portal::pages::{error_page, message_page};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use coalition_app::member_sessions;
use coalition_app::signin::{self, Entry, Requested, Verified};
use coalition_app::App;
use rand::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use uuid::Uuid;

/// `/portal/sign-in?next=<next>&partner=<partner>`.
pub fn sign_in_path(next: &str, partner: Option<Uuid>) -> String {
    let mut path = format!("/portal/sign-in?next={}", url_encode(next));
    if let Some(partner) = partner {
        path.push_str(&format!("&partner={partner}"));
    }
    path
}

/// The fields that travel through both forms.
struct Carried {
    next: String,
    partner: String,
    programme: String,
}

impl Carried {
    fn from(fields: &HashMap<String, String>) -> Carried {
        let get = |k: &str| {
            fields
                .get(k)
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        Carried {
            next: local_path(fields.get("next").map(String::as_str)),
            partner: get("partner"),
            programme: get("programme"),
        }
    }

    /// The programme these fields name; `Err` for an id that is not a UUID (which
    /// names no programme either).
    async fn entry(&self, app: &App) -> Result<Option<Entry>, coalition_app::AppError> {
        let parse = |text: &str| -> Result<Option<Uuid>, ()> {
            if text.is_empty() {
                Ok(None)
            } else {
                text.parse().map(Some).map_err(|_| ())
            }
        };
        let (Ok(partner), Ok(programme)) = (parse(&self.partner), parse(&self.programme)) else {
            return Ok(None);
        };
        signin::entry(app, partner, programme).await
    }
}

#[derive(Template)]
#[template(path = "portal/sign_in.html")]
struct SignInPage {
    c: Chrome,
    next: String,
    partner: String,
    programme: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/code.html")]
struct CodePage {
    c: Chrome,
    next: String,
    partner: String,
    programme: String,
    email: String,
    error: Option<String>,
}

fn chrome(
    headers: &HeaderMap,
    entry: &Entry,
    csrf: &str,
    title: &'static str,
    here: &str,
) -> Chrome {
    let t = texts(language(headers));
    let brand = entry
        .partner
        .as_ref()
        .map_or_else(|| entry.programme_name.clone(), |p| p.name.clone());
    Chrome::new(
        t,
        title,
        brand,
        entry.partner.as_ref().map(|p| p.id),
        csrf.to_owned(),
        false,
        "",
        here,
    )
}

/// The double-submit token: the one the browser holds when it looks like ours, else a
/// new one (set on the answer).
fn form_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, CSRF_COOKIE) {
        Some(v) if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (v.to_owned(), false)
        }
        _ => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            (hex::encode(bytes), true)
        }
    }
}

fn with_form_token(
    app: &App,
    mut response: Response,
    headers: &HeaderMap,
    token: &str,
    fresh: bool,
) -> Response {
    if fresh {
        let cookie = format!(
            "{CSRF_COOKIE}={token}; Path=/portal; HttpOnly; SameSite=Lax{}",
            secure_attribute(app, headers)
        );
        append_cookie(&mut response, &cookie);
    }
    response
}

fn no_programme(headers: &HeaderMap) -> Response {
    let t = texts(language(headers));
    message_page(
        headers,
        StatusCode::NOT_FOUND,
        t.no_programme_title,
        t.no_programme,
        None,
    )
}

/// `GET /portal/sign-in`: the e-mail form (or, signed in already, straight on to `next`).
pub async fn form(State(app): State<App>, headers: HeaderMap, uri: Uri) -> Response {
    let fields = parse_form(uri.query().unwrap_or("").as_bytes());
    let carried = Carried::from(&fields);
    match super::session(&app, &headers).await {
        Err(response) => return response,
        Ok(Some(_)) => return Redirect::to(&carried.next).into_response(),
        Ok(None) => {}
    }
    let entry = match carried.entry(&app).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return no_programme(&headers),
        Err(e) => return error_page(&headers, e),
    };
    let (token, fresh) = form_token(&headers);
    let here = uri
        .path_and_query()
        .map_or("/portal/sign-in", |p| p.as_str());
    let t = texts(language(&headers));
    let page = SignInPage {
        c: chrome(&headers, &entry, &token, t.signin_title, here),
        next: carried.next,
        partner: carried.partner,
        programme: carried.programme,
        email: String::new(),
        error: None,
    };
    with_form_token(
        &app,
        html(StatusCode::OK, page.render()),
        &headers,
        &token,
        fresh,
    )
}

fn csrf_refused(headers: &HeaderMap) -> Response {
    let t = texts(language(headers));
    message_page(
        headers,
        StatusCode::FORBIDDEN,
        t.csrf_title,
        t.csrf_text,
        None,
    )
}

/// `POST /portal/sign-in` (`email`, `csrf`, `next`, `partner` or `programme`): asks for
/// a code. The answer is the code form whether or not the address is enrolled.
pub async fn request_code(
    State(app): State<App>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = parse_form(&body);
    let expected = cookie(&headers, CSRF_COOKIE);
    if !csrf_ok(&headers, expected, fields.get("csrf").map(String::as_str)) {
        return csrf_refused(&headers);
    }
    let token = expected.unwrap_or_default().to_owned();
    let carried = Carried::from(&fields);
    let entry = match carried.entry(&app).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return no_programme(&headers),
        Err(e) => return error_page(&headers, e),
    };
    let lang = language(&headers);
    let t = texts(lang);
    let sent = fields.get("email").cloned().unwrap_or_default();
    let here = "/portal/sign-in";
    let again = |status: StatusCode, error: String| {
        let page = SignInPage {
            c: chrome(&headers, &entry, &token, t.signin_title, here),
            next: carried.next.clone(),
            partner: carried.partner.clone(),
            programme: carried.programme.clone(),
            email: sent.chars().take(254).collect(),
            error: Some(error),
        };
        html(status, page.render())
    };
    let Some(email) = signin::normalise_email(&sent) else {
        return again(StatusCode::UNPROCESSABLE_ENTITY, t.email_invalid.to_owned());
    };
    let source = connection.map(|Extension(ConnectInfo(address))| address.ip());
    match signin::request_code(&app, &entry, &email, source, lang).await {
        Err(e) => error_page(&headers, e),
        Ok(Requested::Limited {
            retry_after_seconds,
        }) => {
            let minutes = retry_after_seconds.div_ceil(60);
            let mut response = again(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{} {minutes} {}.", t.rate_limited, t.minutes),
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Ok(Requested::Accepted) => {
            let page = CodePage {
                c: chrome(&headers, &entry, &token, t.code_title, here),
                next: carried.next,
                partner: carried.partner,
                programme: carried.programme,
                email,
                error: None,
            };
            html(StatusCode::OK, page.render())
        }
    }
}

/// `POST /portal/sign-in/code` (`code`, `email`, `csrf`, `next`, `partner` or
/// `programme`): a right code sets the session cookie and goes on to `next`.
pub async fn submit_code(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = parse_form(&body);
    let expected = cookie(&headers, CSRF_COOKIE);
    if !csrf_ok(&headers, expected, fields.get("csrf").map(String::as_str)) {
        return csrf_refused(&headers);
    }
    let token = expected.unwrap_or_default().to_owned();
    let carried = Carried::from(&fields);
    let entry = match carried.entry(&app).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return no_programme(&headers),
        Err(e) => return error_page(&headers, e),
    };
    let t = texts(language(&headers));
    let sent = fields.get("email").cloned().unwrap_or_default();
    let email = signin::normalise_email(&sent);
    let code = fields.get("code").map(String::as_str).unwrap_or("");
    let outcome = match &email {
        Some(email) => signin::verify_code(&app, &entry, email, code).await,
        None => Ok(Verified::Refused),
    };
    match outcome {
        Err(e) => error_page(&headers, e),
        Ok(Verified::SignedIn { cookie, .. }) => {
            let mut response = Redirect::to(&carried.next).into_response();
            let value = format!(
                "{}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
                member_sessions::COOKIE,
                member_sessions::ABSOLUTE.num_seconds(),
                secure_attribute(&app, &headers)
            );
            append_cookie(&mut response, &value);
            response
        }
        Ok(Verified::Refused) => {
            let page = CodePage {
                c: chrome(&headers, &entry, &token, t.code_title, "/portal/sign-in"),
                next: carried.next,
                partner: carried.partner,
                programme: carried.programme,
                email: email.unwrap_or_default(),
                error: Some(t.code_refused.to_owned()),
            };
            html(StatusCode::UNPROCESSABLE_ENTITY, page.render())
        }
    }
}

/// `POST /portal/sign-out` (`csrf`): ends the session and clears the cookie.
pub async fn sign_out(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = parse_form(&body);
    let session = match super::session(&app, &headers).await {
        Err(response) => return response,
        Ok(session) => session,
    };
    if let Some(session) = &session {
        let sent = fields.get("csrf").map(String::as_str);
        if !csrf_ok(&headers, Some(&session.csrf_token), sent) {
            return csrf_refused(&headers);
        }
        if let Err(e) = member_sessions::end(&app, &session).await {
            return error_page(&headers, e);
        }
    }
    let partner = session.and_then(|s| s.partner_id);
    let mut response = Redirect::to(&sign_in_path("/portal", partner)).into_response();
    let value = format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        member_sessions::COOKIE,
        secure_attribute(&app, &headers)
    );
    append_cookie(&mut response, &value);
    response
}

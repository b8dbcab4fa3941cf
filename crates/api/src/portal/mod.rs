//! The member portal: server-rendered pages under `/portal` (askama templates compiled
//! into the binary, one stylesheet served by it — no CDN, no script, no external font).
//!
//! - Sign-in by one-time code (`signin.rs`, rules in `coalition_app::signin`), then a
//!   server-side session in the `coalition_session` cookie (HttpOnly, SameSite=Lax,
//!   Path=/, Secure when the request came over HTTPS as told by `X-Forwarded-Proto`).
//! - CSRF: every form carries a token; with a session, the session's (derived from its
//!   cookie); before one exists, a double-submit token (the `coalition_csrf` cookie and
//!   the form field must be equal). A POST without a valid token, or whose `Origin` is
//!   another site, is a 403 page. SameSite=Lax keeps the session cookie off cross-site
//!   POSTs as a second line.
//! - Language: the `lang` cookie (set by `/portal/lang?set=ro&next=…`), else
//!   `Accept-Language`, else English. Texts live in `texts.rs`, one value per language.
//! - Branding: a partner's link (`?partner=<id>`) shows that partner's name and a colour
//!   derived from its id (stable, no configuration); the content is the whole coalition.
//!   The partner is kept in the session.
//! - These are HTML pages for people, not API resources: they are not in the OpenAPI
//!   document; the JSON behind them is `/v1/me/...`.

mod pages;
mod signin;
pub mod texts;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use coalition_app::member_sessions::{self, MemberSession};
use coalition_app::signin::Lang;
use coalition_app::App;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use texts::Texts;
use uuid::Uuid;

pub use signin::sign_in_path;

/// The double-submit CSRF cookie of the sign-in forms (before a session exists).
pub const CSRF_COOKIE: &str = "coalition_csrf";
/// The language choice.
pub const LANG_COOKIE: &str = "lang";

const CSS: &str = include_str!("../../static/portal.css");

pub fn router() -> Router<App> {
    Router::new()
        .route("/portal", get(pages::home))
        .route("/portal/", get(pages::home))
        .route("/portal/history", get(pages::history))
        .route("/portal/partners", get(pages::partners))
        .route("/portal/offers", get(pages::offers))
        .route("/portal/cards", get(pages::cards))
        .route(
            "/portal/cards/{id}/block",
            get(pages::block_confirm).post(pages::block),
        )
        .route("/portal/profile", get(pages::profile))
        .route("/portal/profile/marketing", post(pages::marketing))
        .route(
            "/portal/profile/erase",
            get(pages::erase_confirm).post(pages::erase),
        )
        .route(
            "/portal/sign-in",
            get(signin::form).post(signin::request_code),
        )
        .route("/portal/sign-in/code", post(signin::submit_code))
        .route("/portal/sign-out", post(signin::sign_out))
        .route("/portal/lang", get(switch_language))
        .route("/portal/static/portal.css", get(stylesheet))
        // An HTML 404 under /portal (the router's own fallback answers problem+json).
        .route("/portal/{*rest}", get(pages::not_found))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// `/portal/lang?set=ro&next=/portal/history`: remembers the language (a year) and goes
/// back. Setting a language changes nothing else, so a plain link (a GET) does it.
async fn switch_language(State(app): State<App>, request: Request) -> Response {
    let query = parse_form(request.uri().query().unwrap_or("").as_bytes());
    let next = local_path(query.get("next").map(String::as_str));
    let mut response = Redirect::to(&next).into_response();
    if let Some(lang) = query.get("set").and_then(|l| Lang::parse(l)) {
        let cookie = format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax{}",
            lang.code(),
            secure_attribute(&app, request.headers())
        );
        append_cookie(&mut response, &cookie);
    }
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

/// Fields of a form body or a query string; the first of a repeated name wins. A name
/// or value that is not UTF-8 after decoding is left out.
pub(crate) fn parse_form(bytes: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    for pair in bytes.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if let (Some(name), Some(value)) = (
            crate::extract::form_urldecode(name),
            crate::extract::form_urldecode(value),
        ) {
            fields.entry(name).or_insert(value);
        }
    }
    fields
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `next` when it is a path on this site (one leading `/`, not `//` nor `/\`, no
/// control characters), else `/portal`: a sign-in never sends anyone elsewhere. Bytes
/// outside visible ASCII (a space, UTF-8) are percent-encoded, so that the path is a
/// valid `Location` header.
pub(crate) fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            let mut out = String::with_capacity(path.len());
            for b in path.bytes() {
                if (0x21..0x7f).contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
        _ => "/portal".to_owned(),
    }
}

/// The value of cookie `name` in the request, if any (the first one).
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Did the request come over HTTPS? The server's public URL is https (it is only
/// reached through TLS), or the proxy in front says so (`X-Forwarded-Proto`).
pub(crate) fn over_https(app: &App, headers: &HeaderMap) -> bool {
    app.member_tokens.issuer().starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("https")
            })
}

pub(crate) fn secure_attribute(app: &App, headers: &HeaderMap) -> &'static str {
    if over_https(app, headers) {
        "; Secure"
    } else {
        ""
    }
}

pub(crate) fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The language of the request: the `lang` cookie, else the best of `Accept-Language`
/// we speak, else English.
pub(crate) fn language(headers: &HeaderMap) -> Lang {
    if let Some(lang) = cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
        return lang;
    }
    let Some(accept) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Lang::En;
    };
    let mut best: Option<(f32, Lang)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        let Some(lang) = Lang::parse(primary) else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map_or(Lang::En, |(_, lang)| lang)
}

/// A partner's colour: a hue from its id, at a saturation and lightness that keep white
/// text readable (contrast above 4.5:1). Stable, and needs no configuration.
pub(crate) fn brand_colour(partner_id: Option<Uuid>) -> String {
    match partner_id {
        None => "hsl(222, 47%, 28%)".to_owned(),
        Some(id) => {
            let digest = Sha256::digest(id.as_bytes());
            let hue = u16::from_be_bytes([digest[0], digest[1]]) % 360;
            format!("hsl({hue}, 55%, 30%)")
        }
    }
}

/// Whether a POST may be acted on: an `Origin` header, when sent, names this site (the
/// `Host` the request was sent to), and `expected` equals the form's `csrf` field.
pub(crate) fn csrf_ok(headers: &HeaderMap, expected: Option<&str>, sent: Option<&str>) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        match (origin_host, host) {
            (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => {}
            _ => return false,
        }
    }
    match (expected, sent) {
        (Some(expected), Some(sent)) if !expected.is_empty() => {
            member_sessions::constant_time_eq(expected.as_bytes(), sent.as_bytes())
        }
        _ => false,
    }
}

/// What every page shows around its content.
pub struct Chrome {
    pub t: &'static Texts,
    pub title: String,
    /// The name in the header: the partner's (from its link), or the programme's.
    pub brand_name: String,
    pub brand_colour: String,
    /// The form token of this page (the session's, or the sign-in's double-submit one).
    pub csrf: String,
    pub signed_in: bool,
    /// Which navigation entry is the current page.
    pub current: &'static str,
    /// The language switch's link (back to this page in the other language).
    pub switch_href: String,
}

impl Chrome {
    pub fn new(
        t: &'static Texts,
        title: &str,
        brand_name: String,
        partner_id: Option<Uuid>,
        csrf: String,
        signed_in: bool,
        current: &'static str,
        here: &str,
    ) -> Chrome {
        Chrome {
            t,
            title: title.to_owned(),
            brand_name,
            brand_colour: brand_colour(partner_id),
            csrf,
            signed_in,
            current,
            switch_href: format!(
                "/portal/lang?set={}&next={}",
                t.other_lang,
                url_encode(here)
            ),
        }
    }

    pub fn nav(&self) -> Vec<NavItem> {
        let t = self.t;
        [
            ("home", "/portal", t.nav_home),
            ("history", "/portal/history", t.nav_history),
            ("partners", "/portal/partners", t.nav_partners),
            ("offers", "/portal/offers", t.nav_offers),
            ("cards", "/portal/cards", t.nav_cards),
            ("profile", "/portal/profile", t.nav_profile),
        ]
        .into_iter()
        .map(|(id, href, label)| NavItem {
            id,
            href,
            label,
            current: id == self.current,
        })
        .collect()
    }
}

pub struct NavItem {
    pub id: &'static str,
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// An HTML answer with the headers every portal page carries: no caching (pages show
/// personal data), no framing, no referrer, a policy that allows only our stylesheet
/// (and the brand colour's inline style attribute). No `form-action`: browsers apply it
/// to the redirects after a form too, and the sign-in's redirect to `/oauth/authorize`
/// goes on to the partner app's registered redirect URI.
pub(crate) fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a portal template failed to render");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // same-origin, not no-referrer: under no-referrer browsers send `Origin: null` on
    // every form POST, which `csrf_ok` rightly refuses (found by the browser tests).
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

/// The session of the request's cookie, if live.
pub(crate) async fn session(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<MemberSession>, Response> {
    let Some(value) = cookie(headers, member_sessions::COOKIE) else {
        return Ok(None);
    };
    member_sessions::find(app, value)
        .await
        .map_err(|e| pages::error_page(headers, e))
}

/// Where someone not signed in is sent: the sign-in, coming back here afterwards.
pub(crate) fn to_sign_in(here: &str) -> Response {
    Redirect::to(&sign_in_path(here, None)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(
            local_path(Some("/portal/history?cursor=x")),
            "/portal/history?cursor=x"
        );
        assert_eq!(
            local_path(Some("/oauth/authorize?a=1")),
            "/oauth/authorize?a=1"
        );
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "portal",
            "/a\nb",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/portal", "{bad:?}");
        }
        assert_eq!(local_path(None), "/portal");
        assert_eq!(local_path(Some("/portal/ä b")), "/portal/%C3%A4%20b");
    }

    #[test]
    fn the_language_comes_from_the_cookie_then_accept_language() {
        let mut headers = HeaderMap::new();
        assert_eq!(language(&headers), Lang::En);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("fr-FR, ro;q=0.8, en;q=0.5"),
        );
        assert_eq!(language(&headers), Lang::Ro);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("ro;q=0.3, en-GB"),
        );
        assert_eq!(language(&headers), Lang::En);
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b; lang=ro"));
        assert_eq!(language(&headers), Lang::Ro);
    }

    #[test]
    fn forms_and_cookies_parse() {
        let f = parse_form(b"email=ann%40example.org&next=%2Fportal&next=%2F%2Fevil&x");
        assert_eq!(f["email"], "ann@example.org");
        assert_eq!(f["next"], "/portal");
        assert_eq!(f["x"], "");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("coalition_session=abc; lang=en"),
        );
        assert_eq!(cookie(&headers, "coalition_session"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(url_encode("/a b?c=d&e"), "%2Fa%20b%3Fc%3Dd%26e");
    }

    #[test]
    fn csrf_needs_the_token_and_a_same_site_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("rewards.example.org"),
        );
        assert!(csrf_ok(&headers, Some("t"), Some("t")));
        assert!(!csrf_ok(&headers, Some("t"), Some("u")));
        assert!(!csrf_ok(&headers, Some("t"), None));
        assert!(!csrf_ok(&headers, None, None));
        assert!(!csrf_ok(&headers, Some(""), Some("")));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://rewards.example.org"),
        );
        assert!(csrf_ok(&headers, Some("t"), Some("t")));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!csrf_ok(&headers, Some("t"), Some("t")));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!csrf_ok(&headers, Some("t"), Some("t")));
    }
}

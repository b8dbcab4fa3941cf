//! OpenID Connect for members through partners' apps: discovery, the JWKS of member
//! tokens, and the authorization endpoint (authorization code + PKCE S256). The token
//! endpoint's member grants live with the others in `oauth.rs`; the rules in
//! `coalition_app::oidc`.

use crate::extract::{form_urldecode, MemberAuth};
use crate::problem::Problem;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coalition_app::oidc::{self, Authorize, AuthorizeRequest};
use coalition_app::App;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The portal session cookie (helper PORTAL's `member_sessions`).
pub const SESSION_COOKIE: &str = "coalition_session";

/// OpenID Provider metadata (OpenID Connect Discovery 1.0 §3).
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: String,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub claims_supported: Vec<String>,
    pub prompt_values_supported: Vec<String>,
    /// RFC 9207: authorization responses carry `iss`.
    pub authorization_response_iss_parameter_supported: bool,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// OpenID Connect discovery: where a partner's app signs members in.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "auth",
    responses((status = 200, body = OpenIdConfiguration)))]
pub async fn openid_configuration(State(app): State<App>) -> Response {
    let issuer = app.member_tokens.issuer().to_owned();
    let body = OpenIdConfiguration {
        authorization_endpoint: format!("{issuer}/oauth/authorize"),
        token_endpoint: format!("{issuer}/oauth/token"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        userinfo_endpoint: format!("{issuer}/oauth/userinfo"),
        issuer,
        response_types_supported: strings(&["code"]),
        response_modes_supported: strings(&["query"]),
        grant_types_supported: strings(&[
            "authorization_code",
            "refresh_token",
            "client_credentials",
        ]),
        subject_types_supported: strings(&["public"]),
        id_token_signing_alg_values_supported: strings(&["ES256"]),
        code_challenge_methods_supported: strings(&["S256"]),
        token_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
        ]),
        scopes_supported: strings(&oidc::SUPPORTED_SCOPES),
        claims_supported: strings(&[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "azp",
        ]),
        prompt_values_supported: strings(&["none"]),
        authorization_response_iss_parameter_supported: true,
    };
    // Changes only with the deployment; relying parties may cache it for a while.
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(body)).into_response()
}

/// A JWK Set (RFC 7517) holding the ES256 public key of member tokens and ID tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    pub x: String,
    pub y: String,
    /// The RFC 7638 thumbprint; member tokens name it in their header.
    pub kid: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// `ES256`.
    pub alg: String,
}

/// The public key that verifies member access tokens and ID tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, body = Jwks, content_type = "application/jwk-set+json")))]
pub async fn jwks(State(app): State<App>) -> Response {
    let mut response = (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(app.member_tokens.jwks()),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    response
}

/// The query of an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OpenID
/// Connect Core §3.1.2.1). Each parameter at most once.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuthorizeParams {
    /// `code`.
    response_type: String,
    /// A partner's client with registered redirect URIs.
    client_id: String,
    /// Exactly one of the client's registered redirect URIs.
    redirect_uri: String,
    /// `openid` and/or `member`, space-separated.
    scope: String,
    /// Required; returned unchanged with the code or the error.
    state: String,
    /// base64url(SHA-256(code_verifier)), 43 characters.
    code_challenge: String,
    /// `S256` (plain is refused).
    code_challenge_method: String,
    /// Returned in the ID token.
    nonce: Option<String>,
    /// `none`: answer `login_required` instead of showing the sign-in. (`login`,
    /// `consent` and `select_account` cannot be honoured and answer their OIDC errors.)
    prompt: Option<String>,
    /// Seconds: a member who signed in longer ago than this gets `login_required` back
    /// (a new sign-in cannot be forced here); the ID token's `auth_time` says when. A
    /// sign-in of the last 5 seconds (the one this request sent her through) meets any.
    max_age: Option<u32>,
}

/// The authorization endpoint. Signed in on the portal (cookie `coalition_session`) for
/// the client's programme: 303 to the redirect URI with `code`, `state` and `iss`. Not
/// signed in: 303 to `/portal/sign-in?next=…&partner=…`, which comes back here. A bad
/// `client_id` or `redirect_uri` is shown (400), never redirected; any other error goes
/// back to the redirect URI as `error=` with `state`.
#[utoipa::path(get, path = "/oauth/authorize", tag = "auth", params(AuthorizeParams),
    responses(
        (status = 303, description = "to the client's redirect_uri (with code and state, or error and state), or to the portal's sign-in",
            headers(("Location" = String, description = "where to go next"))),
        (status = 400, description = "the client or the redirect_uri cannot be trusted: a page (or a problem when the request accepts JSON only)",
            content((String = "text/html"), (Problem = "application/problem+json"))),
    ))]
pub async fn authorize(
    State(app): State<App>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (form_urldecode(k.as_bytes()), form_urldecode(v.as_bytes())) {
            (Some(k), Some(v)) => params.push((k, v)),
            _ => {
                return refused_page(
                    &headers,
                    "invalid_request",
                    "the query does not decode to UTF-8 text",
                )
            }
        }
    }
    let request = AuthorizeRequest::new(params);
    let cookie = session_cookie(&headers);
    let outcome = match oidc::authorize(&app, &request, cookie.as_deref()).await {
        Ok(outcome) => outcome,
        Err(e) => return crate::problem::ApiError::App(e).into_response(),
    };
    match outcome {
        Authorize::Refused { error, description } => refused_page(&headers, error, &description),
        Authorize::Redirect { location } => see_other(&location),
        Authorize::SignIn { partner_id } => {
            let next = format!("/oauth/authorize?{query}");
            let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            see_other(&format!("/portal/sign-in?next={next}&partner={partner_id}"))
        }
    }
}

fn see_other(location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(location) else {
        return crate::problem::ApiError::App(coalition_app::AppError::Internal(
            "a redirect location is not a header value".into(),
        ))
        .into_response();
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The code is in the URL the browser goes to next; no Referer takes it further.
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// The value of the `coalition_session` cookie, from any `Cookie` header.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// A refusal the member sees: a small page, or a problem for a caller that accepts JSON
/// and not HTML (an API client probing the endpoint).
fn refused_page(headers: &HeaderMap, error: &str, description: &str) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("json") && !accept.contains("text/html") {
        let mut response = crate::problem::problem_response(
            StatusCode::BAD_REQUEST,
            error,
            "Authorization request refused",
            description.to_owned(),
            vec![],
        );
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in request refused</title></head>\n<body>\
         <main><h1>This sign-in request cannot be completed</h1>\
         <p>The app that sent you here is not set up to sign you in this way. \
         Go back to it and try again, or contact its support.</p>\
         <p><small>Error: <code>{}</code> — {}</small></p></main></body></html>\n",
        escape(error),
        escape(description)
    );
    let mut response = (StatusCode::BAD_REQUEST, page).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'"),
    );
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The member a member token speaks for (OpenID Connect UserInfo): only `sub`, the
/// member's id — profile data is at `/v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    pub sub: String,
}

/// OpenID Connect UserInfo for a member access token (scope `member`). A partner's or
/// the operator's token is a 403 `member_token_required`.
#[utoipa::path(get, path = "/oauth/userinfo", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserInfo),
        (status = 401, body = Problem, description = "`token_revoked`: the sign-in was revoked (a replayed code or refresh token), or the app's client disabled; `unauthorized`: the member was erased"),
        (status = 403, body = Problem, description = "`member_token_required`: a partner's or the operator's token")))]
pub async fn userinfo(MemberAuth(member): MemberAuth) -> Response {
    let body = UserInfo {
        sub: member.member_id.to_string(),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(userinfo))
        .routes(routes!(openid_configuration))
        .routes(routes!(jwks))
        .routes(routes!(authorize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; coalition_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        let mut none = HeaderMap::new();
        none.append(
            header::COOKIE,
            HeaderValue::from_static("xcoalition_session=abc"),
        );
        assert_eq!(session_cookie(&none), None);
    }

    #[test]
    fn the_refusal_page_escapes_what_it_quotes() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}

//! OAuth2 token endpoint: the client-credentials grant (RFC 6749 §4.4) for partners and
//! operators, and for members through a partner's app the authorization-code grant
//! (with PKCE, RFC 7636) and the refresh-token grant (`coalition_app::oidc`).

use crate::extract::form_urldecode;
use crate::problem::ApiError;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use coalition_app::{App, AppError};
use serde::Serialize;
use std::net::SocketAddr;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The form fields; `client_id` and `client_secret` here or in HTTP Basic, not both.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct TokenForm {
    #[schema(value_type = String, pattern = "^(client_credentials|authorization_code|refresh_token)$")]
    grant_type: Option<String>,
    #[schema(value_type = String, required = false)]
    client_id: Option<String>,
    #[schema(value_type = String, required = false)]
    client_secret: Option<String>,
    /// client_credentials: `admin`, `partner` or `bank`; the client's own scope when
    /// omitted. refresh_token: a narrower scope than granted, optionally.
    #[schema(value_type = String, required = false)]
    scope: Option<String>,
    /// authorization_code: the code from `/oauth/authorize`.
    #[schema(value_type = String, required = false)]
    code: Option<String>,
    /// authorization_code: the redirect_uri of the authorization request, exactly.
    #[schema(value_type = String, required = false)]
    redirect_uri: Option<String>,
    /// authorization_code: the PKCE verifier whose S256 was the code_challenge.
    #[schema(value_type = String, required = false)]
    code_verifier: Option<String>,
    /// refresh_token: the last refresh token (each is good once).
    #[schema(value_type = String, required = false)]
    refresh_token: Option<String>,
}

/// The member grants this endpoint takes besides client credentials.
enum MemberGrant {
    Code {
        code: String,
        redirect_uri: String,
        verifier: String,
    },
    Refresh {
        token: String,
    },
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(OAuthError {
            error: error.into(),
            error_description: description.into(),
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"coalition\""),
        );
    }
    response
}

/// Client credentials from an `Authorization: Basic` header that does not decode to
/// them: refused as `invalid_client` (RFC 6749 §5.2: the client tried to authenticate
/// with the header, so the answer is a 401), without looking anything up or hashing.
#[derive(Debug, PartialEq, Eq)]
struct MalformedBasic;

/// `client_secret_basic` (RFC 6749 §2.3.1): `Basic base64(urlencode(id) ":" urlencode(secret))`.
/// `None` when the request has no Basic authorization. Each half is form-urldecoded
/// byte by byte and must then be UTF-8 (our ids and secrets are ASCII, so anything else
/// names no client).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, MalformedBasic> {
    use base64::Engine;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.as_bytes();
    let scheme_is_basic = value.len() > 6 && value[..6].eq_ignore_ascii_case(b"basic ");
    if !scheme_is_basic {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value[6..].trim_ascii())
        .map_err(|_| MalformedBasic)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(MalformedBasic)?;
    let id = form_urldecode(&decoded[..colon]).ok_or(MalformedBasic)?;
    let secret = form_urldecode(&decoded[colon + 1..]).ok_or(MalformedBasic)?;
    Ok(Some((id, secret)))
}

/// OAuth2 token endpoint: client credentials (partners, operators, banks), and for a
/// partner's app signing members in, authorization_code (with the PKCE code_verifier
/// and the same redirect_uri; answers a member access token, a refresh token, and an ID
/// token when `openid` was asked) and refresh_token (rotated: the answer holds the next
/// one; a used one presented again revokes the sign-in).
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded",
        description = "grant_type=client_credentials (optional scope), authorization_code (code, redirect_uri, code_verifier) or refresh_token (refresh_token, optional scope); client_id and client_secret in the body or HTTP Basic"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = OAuthError, description = "invalid_request, unsupported_grant_type, invalid_scope, or invalid_grant (a code or refresh token that is unknown, expired, used, another client's, or whose code_verifier or redirect_uri does not match; a revoked sign-in; a refresh more than 90 days after the member signed in)"),
        (status = 401, body = OAuthError, description = "invalid_client"),
        (status = 429, body = OAuthError, description = "too_many_requests: too many failed attempts for this client id or from this address; Retry-After gives the seconds to wait",
            headers(("Retry-After" = u64, description = "seconds until the limit ends"))),
    ))]
pub async fn token(
    State(app): State<App>,
    connection: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<axum::Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send a form-encoded body",
        );
    };
    let member_grant =
        match form.grant_type.as_deref() {
            Some("client_credentials") => None,
            Some("authorization_code") => {
                match (
                    form.code.clone(),
                    form.redirect_uri.clone(),
                    form.code_verifier.clone(),
                ) {
                    (Some(code), Some(redirect_uri), Some(verifier)) => Some(MemberGrant::Code {
                        code,
                        redirect_uri,
                        verifier,
                    }),
                    _ => return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "grant_type=authorization_code needs code, redirect_uri and code_verifier",
                    ),
                }
            }
            Some("refresh_token") => match form.refresh_token.clone() {
                Some(token) => Some(MemberGrant::Refresh { token }),
                None => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "grant_type=refresh_token needs refresh_token",
                    )
                }
            },
            other => {
                let error = if other.is_none() {
                    "invalid_request"
                } else {
                    "unsupported_grant_type"
                };
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    error,
                    "grant_type must be client_credentials, authorization_code or refresh_token",
                );
            }
        };
    let Ok(basic) = basic_credentials(&headers) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the Basic credentials are malformed",
        );
    };
    let credentials = match (basic, form.client_id, form.client_secret) {
        (Some(basic), None, None) => basic,
        (None, Some(id), Some(secret)) => (id, secret),
        (Some(_), _, _) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method",
            )
        }
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client credentials are missing",
            )
        }
    };
    // A PAN is never taken in (the failure counters would keep a client id): refused in
    // the endpoint's own error format before anything looks the client up.
    let pan = [&credentials.0, &credentials.1]
        .into_iter()
        .chain(form.scope.as_ref())
        .any(|v| coalition_domain::bank::contains_pan(v));
    if pan {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "a value looks like a payment card number (PAN), which is never accepted",
        );
    }
    let source = connection.map(|Extension(ConnectInfo(address))| address.ip());
    let answer = match member_grant {
        None => coalition_app::auth::client_credentials_grant(
            &app,
            &credentials.0,
            &credentials.1,
            form.scope.as_deref(),
            source,
        )
        .await
        .map(|t| TokenResponse {
            access_token: t.access_token,
            token_type: "Bearer".into(),
            expires_in: t.expires_in,
            scope: t.scope,
            refresh_token: None,
            id_token: None,
        }),
        Some(grant) => {
            member_grant_answer(&app, &credentials, source, grant, form.scope.as_deref()).await
        }
    };
    match answer {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response(),
        Err(AppError::InvalidGrant(description)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &description)
        }
        Err(AppError::InvalidClient) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ),
        Err(AppError::RateLimited {
            retry_after_seconds,
        }) => {
            let mut response = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                &format!(
                    "too many failed attempts for this client or from this address; retry in {retry_after_seconds} s"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            response
        }
        Err(AppError::InvalidScope) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is not granted to this client",
        ),
        Err(other) => ApiError::App(other).into_response(),
    }
}

/// Authenticates the client as for client credentials, then runs the member grant.
async fn member_grant_answer(
    app: &App,
    credentials: &(String, String),
    source: Option<std::net::IpAddr>,
    grant: MemberGrant,
    scope: Option<&str>,
) -> Result<TokenResponse, AppError> {
    let client =
        coalition_app::auth::authenticate_client(app, &credentials.0, &credentials.1, source)
            .await?;
    let tokens = match grant {
        MemberGrant::Code {
            code,
            redirect_uri,
            verifier,
        } => {
            coalition_app::oidc::exchange_code(app, &client, &code, &redirect_uri, &verifier)
                .await?
        }
        MemberGrant::Refresh { token } => {
            coalition_app::oidc::refresh(app, &client, &token, scope).await?
        }
    };
    Ok(TokenResponse {
        access_token: tokens.access_token,
        token_type: "Bearer".into(),
        expires_in: tokens.expires_in,
        scope: tokens.scope,
        refresh_token: Some(tokens.refresh_token),
        id_token: tokens.id_token,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
    /// Member grants: the next refresh token (good once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// authorization_code with scope `openid`: the OpenID Connect ID token (ES256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// RFC 6749 §5.2 error code.
    pub error: String,
    pub error_description: String,
}

pub fn router() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(raw: &[u8]) -> Result<Option<(String, String)>, MalformedBasic> {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        basic_credentials(&headers)
    }

    fn pair(id: &str, secret: &str) -> Result<Option<(String, String)>, MalformedBasic> {
        Ok(Some((id.to_owned(), secret.to_owned())))
    }

    #[test]
    fn escapes_next_to_multibyte_characters_do_not_split_them() {
        // The reviewer's request: `%` then `a` then a two-byte character.
        assert_eq!(basic("%aé:x".as_bytes()), pair("%aé", "x"));
        assert_eq!(basic("é%:%é".as_bytes()), pair("é%", "%é"));
        assert_eq!(basic("%é%:x".as_bytes()), pair("%é%", "x"));
    }

    #[test]
    fn form_encoding_is_undone_up_to_the_last_byte() {
        assert_eq!(basic(b"cl%3Aa+b:s%41"), pair("cl:a b", "sA"));
        assert_eq!(basic(b"id:%4"), pair("id", "%4"));
        assert_eq!(basic(b"id:%zz%"), pair("id", "%zz%"));
        assert_eq!(basic(b"id:a:b"), pair("id", "a:b"));
        assert_eq!(basic(b"%C3%A9:x"), pair("é", "x"));
    }

    #[test]
    fn credentials_that_do_not_decode_to_text_are_malformed() {
        assert_eq!(basic(b"%C3%28:x"), Err(MalformedBasic));
        assert_eq!(basic(b"\xff:x"), Err(MalformedBasic));
        assert_eq!(basic(b"no-colon"), Err(MalformedBasic));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic ***"));
        assert_eq!(basic_credentials(&headers), Err(MalformedBasic));
    }

    #[test]
    fn other_schemes_are_not_basic_credentials() {
        let mut headers = HeaderMap::new();
        assert_eq!(basic_credentials(&headers), Ok(None));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&headers), Ok(None));
        let encoded = base64::engine::general_purpose::STANDARD.encode("a:b");
        let lower = HeaderValue::from_str(&format!("basic {encoded}")).unwrap();
        headers.insert(header::AUTHORIZATION, lower);
        assert_eq!(basic_credentials(&headers), pair("a", "b"));
    }

    /// Every string of five bytes from an alphabet of the troublesome ones decodes or is
    /// refused; none panics (the old decoder sliced a &str at byte offsets).
    #[test]
    fn any_bytes_decode_or_are_refused() {
        let alphabet: &[u8] = b"%+:aF9\xc3\xa9\xff";
        let mut input = Vec::new();
        for n in 0..alphabet.len().pow(5) {
            input.clear();
            let mut k = n;
            for _ in 0..5 {
                input.push(alphabet[k % alphabet.len()]);
                k /= alphabet.len();
            }
            let _ = form_urldecode(&input);
            let _ = basic(&input);
        }
    }
}

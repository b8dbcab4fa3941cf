//! OAuth2 token endpoint: the client-credentials grant (RFC 6749 §4.4).

use crate::problem::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use coalition_app::{App, AppError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The form fields; `client_id` and `client_secret` here or in HTTP Basic, not both.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct TokenForm {
    #[schema(value_type = String, pattern = "^client_credentials$")]
    grant_type: Option<String>,
    #[schema(value_type = String, required = false)]
    client_id: Option<String>,
    #[schema(value_type = String, required = false)]
    client_secret: Option<String>,
    /// `admin`, `partner` or `bank`; the client's own scope when omitted.
    #[schema(value_type = String, required = false)]
    scope: Option<String>,
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

/// `client_secret_basic`: credentials in the Authorization header (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((percent_decode(id), percent_decode(secret)))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// OAuth2 token endpoint (client credentials grant).
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded",
        description = "grant_type=client_credentials, optional scope; client_id and client_secret in the body or HTTP Basic"),
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = OAuthError, description = "invalid_request, unsupported_grant_type or invalid_scope"),
        (status = 401, body = OAuthError, description = "invalid_client"),
    ))]
pub async fn token(
    State(app): State<App>,
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
    if form.grant_type.as_deref() != Some("client_credentials") {
        let error = if form.grant_type.is_none() {
            "invalid_request"
        } else {
            "unsupported_grant_type"
        };
        return oauth_error(
            StatusCode::BAD_REQUEST,
            error,
            "only grant_type=client_credentials is supported",
        );
    }
    let credentials = match (
        basic_credentials(&headers),
        form.client_id,
        form.client_secret,
    ) {
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
    match coalition_app::auth::client_credentials_grant(
        &app,
        &credentials.0,
        &credentials.1,
        form.scope.as_deref(),
    )
    .await
    {
        Ok(t) => {
            let body = TokenResponse {
                access_token: t.access_token,
                token_type: "Bearer".into(),
                expires_in: t.expires_in,
                scope: t.scope,
            };
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        Err(AppError::InvalidClient) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ),
        Err(AppError::InvalidScope) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the requested scope is not granted to this client",
        ),
        Err(other) => ApiError::App(other).into_response(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
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

//! Extractors whose refusals use the problem format: JSON bodies (with a canonical form
//! for idempotency hashing), bearer tokens, Idempotency-Key, ids in paths, list queries.

use crate::observe::RequestFacts;
use crate::problem::{validation, ApiError};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use coalition_app::idempotency::IdempotencyKey;
use coalition_app::{App, Caller, FieldError};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body, with its canonical text (sorted keys, no spacing) kept for hashing.
pub struct JsonBody<T> {
    pub value: T,
    pub canonical: String,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawJson(bytes) = RawJson::from_request(req, state).await?;
        parse_json(&bytes)
    }
}

/// A JSON body's bytes as sent (for a signature over them), its media type checked.
pub struct RawJson(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        Ok(Self(bytes))
    }
}

/// A JSON body whose fields are all optional: no body at all (empty, with or without a
/// `Content-Type`) reads as `{}`.
pub struct OptionalJsonBody<T>(pub JsonBody<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let named = req.headers().contains_key(header::CONTENT_TYPE);
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if bytes.is_empty() {
            return parse_json(b"{}").map(Self);
        }
        if !named {
            return Err(ApiError::UnsupportedMediaType);
        }
        let again = Request::from_parts(parts, axum::body::Body::from(bytes));
        JsonBody::from_request(again, state).await.map(Self)
    }
}

/// Parses a JSON body: refuses a PAN anywhere in it (`pan`) before anything else reads
/// it, then deserializes, naming the offending field on a mismatch.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let mut tree: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    crate::pan::refuse_in_json(&tree)?;
    crate::pan::refuse_in_raw_json(bytes)?;
    // Every body of this API is an object; serde would also read a struct from an
    // array of its fields in order.
    if !tree.is_object() {
        return Err(validation(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )]));
    }
    whole_numbers_as_integers(&mut tree);
    let canonical = tree.to_string();
    let value = serde_path_to_error::deserialize(tree).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "body".to_owned()
        } else {
            field
        };
        validation(vec![FieldError::new(
            &field,
            plain_words(&e.inner().to_string()),
        )])
    })?;
    Ok(JsonBody { value, canonical })
}

/// serde's message with the Rust names in it said in JSON's words: callers never see
/// an internal type name (`expected i64`, `expected struct RotateSecretRequest`).
fn plain_words(message: &str) -> String {
    const INTEGERS: [&str; 10] = [
        "i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "usize", "isize",
    ];
    let mut out = message.to_owned();
    if let Some(at) = out.find("expected struct ") {
        let name_end = out[at + 16..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(out.len(), |i| at + 16 + i);
        out.replace_range(at..name_end, "expected an object");
    }
    for integer in INTEGERS {
        let rust = format!("expected {integer}");
        if let Some(at) = out.find(&rust) {
            let end = at + rust.len();
            if !out[end..].starts_with(|c: char| c.is_alphanumeric()) {
                out.replace_range(at..end, "expected an integer");
            }
        }
    }
    out.replace("expected f64", "expected a number")
}

/// JSON Schema (and so the OpenAPI document) counts `5.0` and `5e0` as integers; serde
/// would refuse them for an integer field, so such numbers become integers first. Money
/// is unaffected: a JSON number there is refused whatever it looks like.
fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // i64::MAX is not exactly representable; 2^63 would saturate, so stop below it.
            if f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0 {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// The verified caller from `Authorization: Bearer …`.
pub struct Auth(pub Caller);

impl FromRequestParts<App> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| {
                ApiError::App(coalition_app::AppError::Unauthorized(
                    "a bearer access token is required".into(),
                ))
            })?;
        let caller = coalition_app::credentials::authenticate(app, token).await?;
        if let Some(facts) = parts.extensions.get::<Arc<RequestFacts>>() {
            facts.caller(&caller.client_id);
        }
        Ok(Auth(caller))
    }
}

/// The member of `Authorization: Bearer <member access token>`, for `/v1/me` routes: a
/// member token (ES256, scope `member`) whose client is still active, whose sign-in was
/// not revoked and whose member still exists, unerased, in the token's programme
/// (`coalition_app::oidc::authenticate_member`). A partner's or the operator's token is
/// a 403 `member_token_required`; anything else a 401.
pub struct MemberAuth(pub coalition_app::me::MemberPrincipal);

impl FromRequestParts<App> for MemberAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| {
                ApiError::App(coalition_app::AppError::Unauthorized(
                    "a member's bearer access token is required".into(),
                ))
            })?;
        let principal = coalition_app::oidc::authenticate_member(app, token).await?;
        Ok(MemberAuth(principal))
    }
}

/// The token of `Bearer <token>`. The scheme is case-insensitive (RFC 9110 §11.1): a
/// client that writes `BEARER` or `bearer` sends the same credentials.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The idempotency identity of a request: the caller's client, the key, and a hash of
/// what was asked (so a different body under the same key is caught).
pub fn idempotency_key(
    caller: &Caller,
    headers: &HeaderMap,
    operation: &str,
    canonical_body: &str,
) -> Result<IdempotencyKey, ApiError> {
    let key = headers
        .get("idempotency-key")
        .ok_or(ApiError::MissingIdempotencyKey)?;
    let key = key.to_str().map_err(|_| ApiError::InvalidIdempotencyKey)?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    let mut hash = Sha256::new();
    hash.update(operation.as_bytes());
    hash.update([0]);
    hash.update(canonical_body.as_bytes());
    Ok(IdempotencyKey {
        client_id: caller.client_id.clone(),
        key: key.to_owned(),
        request_hash: hex::encode(hash.finalize()),
    })
}

/// One path segment as text. A segment axum cannot take as text (`%FF` decodes to no
/// UTF-8) names nothing: a 404 problem, not axum's plain-text 400.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(text)| Self(text))
            .map_err(|_| ApiError::App(coalition_app::AppError::NotFound("resource")))
    }
}

/// An id from a path: anything that is not a UUID names nothing, so it is a 404.
pub fn path_id(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::App(coalition_app::AppError::NotFound(what)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// `limit` and `cursor` from a query string, each name and value form-urldecoded (a
/// client may escape any character: `limit=%31` is `limit=1`). A value that does not
/// decode to text is refused like any other bad value.
pub fn list_params(
    query: Option<&str>,
) -> Result<coalition_app::pagination::PageRequest, ApiError> {
    let pairs: Vec<(String, Option<String>)> = query
        .map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    let name = form_urldecode(k.as_bytes())?;
                    Some((name, form_urldecode(v.as_bytes())))
                })
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let limit =
        match get("limit") {
            None => None,
            Some(text) => Some(text.and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
                validation(vec![FieldError::new("limit", "must be a whole number")])
            })?),
        };
    let cursor = match get("cursor") {
        None => None,
        Some(Some(text)) => Some(text),
        Some(None) => {
            return Err(validation(vec![FieldError::new(
                "cursor",
                "is not a cursor from this list",
            )]))
        }
    };
    Ok(coalition_app::pagination::PageRequest::new(limit, cursor)?)
}

/// application/x-www-form-urlencoded decoding of one value: `+` is a space, `%XX` a byte;
/// a `%` not followed by two hex digits stays as it is (as form parsers do). Works on
/// bytes throughout, so no input can split a character; `None` if the result is not UTF-8.
pub(crate) fn form_urldecode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = match (b, tail) {
            (b'%', [high, low, ..]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match escaped {
            Some((high, low)) => {
                out.push(high << 4 | low);
                rest = &tail[2..];
            }
            None => {
                out.push(if b == b'+' { b' ' } else { b });
                rest = tail;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn serde_messages_name_no_rust_types() {
        assert_eq!(
            plain_words("invalid type: string \"5\", expected i64"),
            "invalid type: string \"5\", expected an integer"
        );
        assert_eq!(
            plain_words("invalid type: integer `3`, expected struct MemberChangeRequest"),
            "invalid type: integer `3`, expected an integer".replace("an integer", "an object")
        );
        assert_eq!(
            plain_words("expected u32 or null"),
            "expected an integer or null"
        );
        assert_eq!(plain_words("unknown field `x`"), "unknown field `x`");
    }
}

//! What every request leaves behind: its `x-request-id` (taken from the caller when sane,
//! made otherwise, returned on every answer), one access-log line, its HTTP metrics, and
//! the request span that traces hang from.
//!
//! Only the matched route template is ever logged or used as a label, never the path:
//! card numbers are in paths (`/v1/cards/{number}/...`). Tokens are never logged; the
//! access line names the caller by client id, once its token was verified.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longer incoming ids are replaced: they are logged with every request.
const MAX_REQUEST_ID_LEN: usize = 128;
/// The route of a request no route matched (a bounded label, whatever the path was).
pub const UNMATCHED: &str = "unmatched";

/// Learnt while the request is handled, read once it is answered. Inserted by
/// [`observe`], outside the routing, so a panic or a refusal still finds what was known.
pub struct RequestFacts {
    request_id: HeaderValue,
    route: OnceLock<MatchedPath>,
    client_id: OnceLock<String>,
}

impl RequestFacts {
    /// The verified caller's client id (never its token).
    pub fn caller(&self, client_id: &str) {
        let _ = self.client_id.set(client_id.to_owned());
    }

    fn route(&self) -> &str {
        self.route.get().map_or(UNMATCHED, MatchedPath::as_str)
    }

    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }
}

/// The caller's `x-request-id` when it is 1 to 128 visible ASCII characters, so that a
/// log line cannot be forged or flooded through it — and holds nothing like a payment
/// card number, which must never reach a log (`pan`).
fn incoming_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(&REQUEST_ID)?;
    let bytes = value.as_bytes();
    let sane = (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        && !value
            .to_str()
            .is_ok_and(coalition_domain::bank::contains_pan);
    sane.then(|| value.clone())
}

/// The method as a label: a client may send any token as a method, and each would
/// otherwise be a new series kept for the life of the process.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

fn new_request_id() -> HeaderValue {
    let id = uuid::Uuid::now_v7().to_string();
    HeaderValue::from_str(&id).expect("a uuid is a valid header value")
}

/// The outermost layer: request id, access log and HTTP metrics, for every answer
/// (refusals, unknown paths and panics included).
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = incoming_request_id(request.headers()).unwrap_or_else(new_request_id);
    let facts = Arc::new(RequestFacts {
        request_id: request_id.clone(),
        route: OnceLock::new(),
        client_id: OnceLock::new(),
    });
    request.extensions_mut().insert(facts.clone());
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let elapsed = started.elapsed();
    let (route, status) = (facts.route(), response.status().as_u16());
    crate::metrics::HTTP.observe(route, method_label(&method), status, elapsed);
    tracing::info!(
        target: "coalition::access",
        method = method.as_str(),
        route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id = facts.request_id(),
        client_id = facts.client_id.get().map(String::as_str),
        "request"
    );
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// Inside the routing (`Router::layer`), where the matched route is known: remembers it
/// for [`observe`] and opens the request's span, named after the route (a trace's span
/// name is fixed once a child span starts, so it is named when it opens).
pub async fn remember_route(request: Request, next: Next) -> Response {
    let extensions = request.extensions();
    let Some(facts) = extensions.get::<Arc<RequestFacts>>().cloned() else {
        return next.run(request).await;
    };
    if let Some(route) = extensions.get::<MatchedPath>() {
        let _ = facts.route.set(route.clone());
    }
    let (method, route) = (request.method().clone(), facts.route());
    let span = tracing::info_span!(
        target: "coalition::request",
        "request",
        otel.name = format!("{} {route}", method_label(&method)),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method.as_str(),
        http.route = route,
        http.response.status_code = Empty,
        request_id = facts.request_id(),
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn a_sane_request_id_is_kept_and_an_odd_one_replaced() {
        let kept = incoming_request_id(&with_id(b"req-42_abc.DEF:9"));
        assert_eq!(kept.unwrap(), "req-42_abc.DEF:9");
        for odd in [
            &b"has space"[..],
            &[b'a'; MAX_REQUEST_ID_LEN + 1][..],
            "caf\u{e9}".as_bytes(),
            b"tab\there",
            b"",
        ] {
            assert!(incoming_request_id(&with_id(odd)).is_none(), "{odd:?}");
        }
        assert!(incoming_request_id(&with_id(&[b'a'; MAX_REQUEST_ID_LEN])).is_some());
        assert!(incoming_request_id(&HeaderMap::new()).is_none());
    }

    #[test]
    fn an_unknown_method_is_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let odd = Method::from_bytes(b"FOO-123").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}

//! No payment card number (PAN) is ever accepted, stored or logged: a value that holds
//! 13 to 19 digits passing the Luhn check (`coalition_domain::bank::contains_pan`) is
//! refused with `422 pan_not_allowed` wherever it appears — any string or number of a
//! JSON body (keys included), any path segment, any query name or value, the
//! `Idempotency-Key` header — before a handler runs, so nothing reads, stores or logs it.
//! The refusal names the field, never the value. (The access log records route
//! templates, not paths; a PAN-like `x-request-id` is replaced, not logged.)
//!
//! The programme's own card numbers are 16 digits with a Luhn check digit too: they are
//! let through only where our card numbers belong — a `card_number` field of a body, and
//! path segments (`/v1/cards/{number}`; a path stores nothing) — and only when they have
//! our format (`is_own_card_number`: they start with 7, which no payment network a bank
//! would send issues under). In any other field our card number is refused like a PAN.

use crate::extract::form_urldecode;
use crate::problem::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use coalition_app::AppError;
use coalition_domain::bank::{contains_foreign_pan, contains_pan, number_is_pan};
use serde_json::Value;

fn refused(field: &str) -> ApiError {
    ApiError::App(AppError::PanNotAllowed(format!(
        "{field} holds what looks like a payment card number (PAN), which is never \
         accepted; send the bank's card token, BIN and last four digits instead"
    )))
}

/// The first field of a JSON body holding a PAN, as a dotted path.
pub fn find_in_json(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &str, key: Option<&str>) -> Option<String> {
        let here = || {
            if path.is_empty() {
                "body".to_owned()
            } else {
                path.to_owned()
            }
        };
        match value {
            Value::String(text) if key == Some("card_number") => {
                contains_foreign_pan(text).then(here)
            }
            Value::String(text) => contains_pan(text).then(here),
            Value::Number(n) => number_is_pan(&n.to_string()).then(here),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"), None)),
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                let field = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if contains_pan(k) {
                    return Some(here());
                }
                walk(v, &field, Some(k))
            }),
            _ => None,
        }
    }
    walk(value, "", None)
}

/// Refuses a JSON body holding a PAN.
pub fn refuse_in_json(value: &Value) -> Result<(), ApiError> {
    match find_in_json(value) {
        Some(field) => Err(refused(&field)),
        None => Ok(()),
    }
}

/// Refuses a JSON body holding a PAN anywhere as sent, duplicate keys included (a parsed
/// tree keeps only the last value of a repeated key).
pub fn refuse_in_raw_json(bytes: &[u8]) -> Result<(), ApiError> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;
    /// Walks every value; `found` gets the first offending path.
    struct Scan<'a> {
        path: String,
        key: Option<String>,
        found: &'a std::cell::RefCell<Option<String>>,
    }
    impl Scan<'_> {
        fn hit(&self, pan: bool) {
            if pan && self.found.borrow().is_none() {
                let path = if self.path.is_empty() {
                    "body".to_owned()
                } else {
                    self.path.clone()
                };
                *self.found.borrow_mut() = Some(path);
            }
        }
        fn child(&self, path: String, key: Option<String>) -> Self {
            Scan {
                path,
                key,
                found: self.found,
            }
        }
    }
    impl<'de> DeserializeSeed<'de> for Scan<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            let pan = if self.key.as_deref() == Some("card_number") {
                contains_foreign_pan(v)
            } else {
                contains_pan(v)
            };
            self.hit(pan);
            Ok(())
        }
        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            self.hit(number_is_pan(&v.to_string()));
            Ok(())
        }
        fn visit_i64<E>(self, v: i64) -> Result<(), E> {
            self.hit(number_is_pan(&v.to_string()));
            Ok(())
        }
        fn visit_f64<E>(self, v: f64) -> Result<(), E> {
            self.hit(number_is_pan(&v.to_string()));
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(self.child(format!("{}[{i}]", self.path), None))?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                self.hit(contains_pan(&key));
                map.next_value_seed(self.child(path, Some(key)))?;
            }
            Ok(())
        }
    }
    let found = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let scan = Scan {
        path: String::new(),
        key: None,
        found: &found,
    };
    if scan.deserialize(&mut de).is_err() {
        return Ok(()); // not JSON: the parse that follows refuses it
    }
    match found.into_inner() {
        Some(field) => Err(refused(&field)),
        None => Ok(()),
    }
}

/// The first place of a request's path, query or `Idempotency-Key` holding a PAN.
fn find_in_request(request: &Request) -> Option<String> {
    let uri = request.uri();
    // Our card numbers are let through in any path segment: a path stores nothing, and
    // an unknown route or a card number with junk around it is then answered as before.
    // Text that does not decode is checked as sent (it must not slip through).
    let decoded = |raw: &str| form_urldecode(raw.as_bytes()).unwrap_or_else(|| raw.to_owned());
    for raw in uri.path().split('/') {
        if contains_foreign_pan(&decoded(&raw.replace('+', "%2B"))) {
            return Some("the path".into());
        }
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if [k, v].iter().any(|raw| contains_pan(&decoded(raw))) {
                return Some("a query parameter".into());
            }
        }
    }
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    if key.is_some_and(contains_pan) {
        return Some("the Idempotency-Key header".into());
    }
    None
}

/// Middleware: refuses a request whose path, query or `Idempotency-Key` holds a PAN.
pub async fn guard(request: Request, next: Next) -> Response {
    match find_in_request(&request) {
        Some(place) => refused(&place).into_response(),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pans_anywhere_in_a_body_are_found_but_our_card_numbers_are_not() {
        let ours = coalition_domain::card_number::from_random_digits(42);
        assert_eq!(find_in_json(&json!({"card_number": ours})), None);
        assert_eq!(
            find_in_json(&json!({"external_ref": ours})).as_deref(),
            Some("external_ref"),
            "our numbers are exempt only where card numbers belong"
        );
        assert_eq!(
            find_in_json(&json!({"card_number": "4111111111111111"})).as_deref(),
            Some("card_number")
        );
        assert_eq!(
            find_in_json(&json!({"a": {"b": [1, "x", 4111111111111111u64]}})).as_deref(),
            Some("a.b[2]")
        );
        assert_eq!(
            find_in_json(&json!({"merchant": {"name": "card 4111 1111 1111 1111"}})).as_deref(),
            Some("merchant.name")
        );
        assert_eq!(
            find_in_json(&json!({"amount": {"amount": "12.50"}, "n": 42})),
            None
        );
    }
}

//! Completes every operation of the generated document from what the operation itself
//! declares, so the document says what the server answers without each route repeating
//! the answers every route shares (and without a new route forgetting them):
//!
//! - a security requirement → 401 `unauthorized`, 403 `insufficient_scope`;
//! - a path parameter → 404 `not_found`;
//! - a JSON request body → 400 `malformed_json`, 413, 415, 422 `validation_failed`;
//! - an `Idempotency-Key` header → required, 1–255 visible ASCII, its 400s and 422;
//! - a `limit` query parameter → an integer 1–100, and the 422 for a bad one;
//! - any path or query parameter or body → 422 `pan_not_allowed` (`crate::pan`);
//! - anything that reaches the database → 500 `internal_error`;
//! - every answer whose body is a `Problem` → `application/problem+json` (extract.rs and
//!   problem.rs are where the server does all of this).
//!
//! It runs on the assembled document (`crate::openapi()`), after the routers are merged:
//! a modifier on the `#[derive(OpenApi)]` struct would run before any route is in it.

use crate::extract::MAX_BODY_BYTES;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::{
    Content, Object, ObjectBuilder, OpenApi, Ref, RefOr, Required, Response, Schema, Type,
};

pub const PROBLEM_JSON: &str = "application/problem+json";
const JSON: &str = "application/json";
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Visible ASCII (`!` to `~`), as `extract::idempotency_key` checks it.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

/// The completion as a utoipa modifier.
pub struct Complete;

impl utoipa::Modify for Complete {
    fn modify(&self, openapi: &mut OpenApi) {
        complete(openapi);
    }
}

/// Applies the completion to every operation of `openapi`.
pub fn complete(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        for operation in operations(item) {
            complete_operation(operation);
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// One answer the server may give: status, stable code, when.
type Answer = (u16, &'static str, &'static str);

fn complete_operation(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let json_body = op
        .request_body
        .as_ref()
        .is_some_and(|b| b.content.contains_key(JSON));
    let params = op.parameters.get_or_insert_with(Vec::new);
    let has_path_param = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    // What the PAN guard (`crate::pan`) reads before any handler: path, query, body.
    let takes_values = op.request_body.is_some()
        || params
            .iter()
            .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    let idempotent = params.iter_mut().any(idempotency_key_param);
    let listed = params.iter_mut().any(limit_param);
    if params.is_empty() {
        op.parameters = None;
    }

    let mut answers: Vec<Answer> = Vec::new();
    if secured {
        answers.push((401, "unauthorized", "no, expired or invalid bearer token"));
        answers.push((
            403,
            "insufficient_scope",
            "the token's scope may not call this operation",
        ));
    }
    if has_path_param {
        answers.push((
            404,
            "not_found",
            "unknown id, or one the caller may not see",
        ));
    }
    if json_body {
        answers.extend(json_body_answers());
    }
    if idempotent {
        answers.push((400, "idempotency_key_missing", "no Idempotency-Key header"));
        answers.push((
            400,
            "idempotency_key_invalid",
            "the Idempotency-Key is not 1 to 255 visible ASCII characters",
        ));
        answers.push((
            422,
            "idempotency_key_reused",
            "the key was used for a different request",
        ));
    }
    if listed {
        answers.push((
            422,
            "validation_failed",
            "`limit` outside 1–100 or not a whole number, or `cursor` not one this list gave",
        ));
    }
    if takes_values {
        answers.push((
            422,
            "pan_not_allowed",
            "a value looks like a payment card number (PAN), which is never accepted",
        ));
    }
    if secured || op.request_body.is_some() {
        answers.push((
            500,
            "internal_error",
            "the server failed; nothing was changed",
        ));
    }
    for answer in answers {
        add_problem(op, answer);
    }
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response {
            serve_problems_as_problem_json(response);
            if status == "401" && secured {
                response
                    .headers
                    .entry("WWW-Authenticate".into())
                    .or_insert_with(|| {
                        HeaderBuilder::new()
                            .schema(Object::with_type(Type::String))
                            .description(Some("`Bearer`"))
                            .build()
                    });
            }
        }
    }
    if let Some(body) = op.request_body.as_mut() {
        require_body(body);
    }
}

fn json_body_answers() -> [Answer; 4] {
    [
        (400, "malformed_json", "the body is not JSON"),
        (413, "payload_too_large", body_limit_text()),
        (
            415,
            "unsupported_media_type",
            "the body is not sent as application/json",
        ),
        (
            422,
            "validation_failed",
            "invalid fields, listed in `errors[]`",
        ),
    ]
}

fn body_limit_text() -> &'static str {
    const _: () = assert!(MAX_BODY_BYTES == 64 * 1024, "update the 413 text");
    "the body is over 64 KiB"
}

/// Adds `code` to the problem answer with `status`, creating the answer if the route
/// did not document it.
fn add_problem(op: &mut Operation, (status, code, when): Answer) {
    let entry = op
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(problem_response(String::new())));
    let RefOr::T(response) = entry else { return };
    let documented = response.content.values().any(is_problem);
    if !documented {
        response
            .content
            .insert(PROBLEM_JSON.into(), problem_content());
    }
    if !response.description.contains(code) {
        let line = format!("`{code}`: {when}");
        response.description = if response.description.is_empty() {
            line
        } else {
            format!("{}; {line}", response.description)
        };
    }
}

fn problem_content() -> Content {
    Content::new(Some(Ref::from_schema_name("Problem")))
}

fn problem_response(description: String) -> Response {
    let mut response = Response::new(description);
    response
        .content
        .insert(PROBLEM_JSON.into(), problem_content());
    response
}

fn is_problem(content: &Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem")
}

/// Refusals are served as `application/problem+json` (problem.rs), whatever the route
/// annotation said.
fn serve_problems_as_problem_json(response: &mut Response) {
    if response.content.get(JSON).is_some_and(is_problem) {
        let content = response.content.shift_remove(JSON).expect("checked");
        response.content.insert(PROBLEM_JSON.into(), content);
    }
}

fn require_body(body: &mut RequestBody) {
    if body.required.is_none() {
        body.required = Some(Required::True);
    }
}

/// Makes an `Idempotency-Key` header parameter say what extract.rs accepts; true if
/// this is one.
fn idempotency_key_param(param: &mut Parameter) -> bool {
    if param.parameter_in != ParameterIn::Header
        || !param.name.eq_ignore_ascii_case(IDEMPOTENCY_KEY)
    {
        return false;
    }
    param.required = Required::True;
    if param.description.is_none() {
        param.description = Some(
            "Unique per request of this client (a till receipt, a UUID); a retry with the same \
             key and body replays the first answer."
                .into(),
        );
    }
    param.schema = Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(255))
            .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
            .into(),
    );
    true
}

/// Makes a `limit` query parameter say what `extract::list_params` accepts; true if
/// this is one.
fn limit_param(param: &mut Parameter) -> bool {
    if param.parameter_in != ParameterIn::Query || param.name != "limit" {
        return false;
    }
    param.schema = Some(RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(100))
            .default(Some(20.into()))
            .build(),
    )));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, PathsBuilder};
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{OpenApiBuilder, ResponseBuilder};

    fn document(op: Operation) -> OpenApi {
        OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path("/v1/things/{id}", PathItem::new(HttpMethod::Post, op))
                    .build(),
            )
            .build()
    }

    fn answer(doc: &OpenApi, status: &str) -> Option<Response> {
        let item = &doc.paths.paths["/v1/things/{id}"];
        match item.post.as_ref()?.responses.responses.get(status)? {
            RefOr::T(r) => Some(r.clone()),
            RefOr::Ref(_) => None,
        }
    }

    #[test]
    fn an_operation_that_declares_nothing_gains_nothing() {
        let mut doc = document(
            OperationBuilder::new()
                .response("200", ResponseBuilder::new().description("ok"))
                .build(),
        );
        complete(&mut doc);
        let item = &doc.paths.paths["/v1/things/{id}"];
        let statuses: Vec<&String> = item
            .post
            .as_ref()
            .unwrap()
            .responses
            .responses
            .keys()
            .collect();
        assert_eq!(statuses, ["200"]);
    }

    #[test]
    fn security_path_ids_bodies_and_keys_bring_their_answers() {
        let body = RequestBody::new();
        let mut body = body;
        body.content
            .insert(JSON.into(), Content::new(Some(Ref::from_schema_name("X"))));
        let op = OperationBuilder::new()
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            )
            .parameter(
                ParameterBuilder::new()
                    .name("Idempotency-Key")
                    .parameter_in(ParameterIn::Header),
            )
            .request_body(Some(body))
            .response(
                "409",
                ResponseBuilder::new()
                    .description("card_blocked")
                    .content(JSON, problem_content()),
            )
            .build();
        let mut doc = document(op);
        complete(&mut doc);
        for status in [
            "400", "401", "403", "404", "409", "413", "415", "422", "500",
        ] {
            let response = answer(&doc, status).unwrap_or_else(|| panic!("{status} missing"));
            assert_eq!(
                response.content.keys().collect::<Vec<_>>(),
                [PROBLEM_JSON],
                "{status} is a problem"
            );
        }
        let bad_request = answer(&doc, "400").unwrap().description;
        for code in [
            "malformed_json",
            "idempotency_key_missing",
            "idempotency_key_invalid",
        ] {
            assert!(bad_request.contains(code), "{bad_request}");
        }
        assert!(answer(&doc, "409")
            .unwrap()
            .description
            .starts_with("card_blocked"));
        assert!(answer(&doc, "401")
            .unwrap()
            .headers
            .contains_key("WWW-Authenticate"));
        let op = doc.paths.paths["/v1/things/{id}"].post.clone().unwrap();
        let key = &op.parameters.unwrap()[1];
        assert!(key.required == Required::True);
        let schema = serde_json::to_value(&key.schema).unwrap();
        assert_eq!(
            (
                &schema["minLength"],
                &schema["maxLength"],
                &schema["pattern"]
            ),
            (&1.into(), &255.into(), &IDEMPOTENCY_KEY_PATTERN.into())
        );
    }
}

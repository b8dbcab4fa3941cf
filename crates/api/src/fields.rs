//! Schemas of the request fields whose rules the server checks beyond their JSON type
//! (crates/app's `text_field`, email and phone checks; crates/domain's decimals and
//! currencies), for `#[schema(schema_with = …)]` on the request types. Each says exactly
//! what the server accepts, no more and no less, so a client (or a fuzzer) that follows
//! the document is not refused, and what the document calls invalid is refused.
//!
//! Patterns are written for ECMA-262 and Python regexes alike (explicit classes, no `\s`:
//! the flavours disagree on what white space is).

use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
use utoipa::openapi::{ArrayBuilder, ObjectBuilder, RefOr, Schema, Type};

/// Exactly what Rust's `char::is_control` treats as a control character (Unicode Cc).
const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

/// Exactly what Rust's `char::is_whitespace` (and so `str::trim`) treats as white space.
const WHITE_SPACE: &str =
    r"\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

fn string(nullable: bool) -> ObjectBuilder {
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new().schema_type(ty)
}

/// `text_field`: at most `max` characters, some of them not white space, no control
/// characters.
fn text(max: usize, nullable: bool) -> RefOr<Schema> {
    string(nullable)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(format!(
            r"^[^{CONTROL}]*[^{CONTROL}{WHITE_SPACE}][^{CONTROL}]*$"
        )))
        .description(Some(format!(
            "1 to {max} characters, not all white space (it is trimmed), no control characters"
        )))
        .into()
}

pub fn name() -> RefOr<Schema> {
    text(200, false)
}

/// `EffectKind::parse`.
pub fn effect_kind() -> RefOr<Schema> {
    string(false)
        .enum_values(Some([
            "points_per_unit",
            "cashback_percent",
            "bonus_points",
            "multiplier",
        ]))
        .into()
}

/// `rules::funder`'s kinds.
pub fn funder_kind() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(["partner", "bank", "operator"]))
        .into()
}

pub fn category() -> RefOr<Schema> {
    text(100, false)
}

/// A list of category tags, each as `category`.
fn categories(min_items: usize, max_items: usize, nullable: bool) -> RefOr<Schema> {
    let ty = if nullable {
        SchemaType::from_iter([Type::Array, Type::Null])
    } else {
        SchemaType::Type(Type::Array)
    };
    ArrayBuilder::new()
        .schema_type(ty)
        .items(category())
        .min_items(Some(min_items))
        .max_items(Some(max_items))
        .into()
}

/// A purchase's `categories`: up to 20 tags.
pub fn purchase_categories() -> RefOr<Schema> {
    categories(0, 20, true)
}

/// A rule condition's category list: 1 to 100 tags (omit it for no condition).
pub fn condition_categories() -> RefOr<Schema> {
    categories(1, 100, true)
}

/// A bank's card token: 1 to 128 characters of text (never a card number).
pub fn card_token() -> RefOr<Schema> {
    text(128, false)
}

/// A partner's `merchant_ids`: up to 100 distinct MIDs of 1 to 64 characters each.
pub fn merchant_ids() -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(text(64, false))
        .max_items(Some(100))
        .unique_items(true)
        .description(Some(
            "The card-network merchant ids (MIDs) the bank sees for this partner; replaces \
             the list (empty: none). Each names one partner of the programme.",
        ))
        .into()
}

/// A rule condition's days of the week: ISO numbers, Monday 1 to Sunday 7.
pub fn days_of_week() -> RefOr<Schema> {
    let day = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(7));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(day)
        .min_items(Some(1))
        .max_items(Some(100))
        .description(Some("ISO days of the week (UTC): Monday 1 … Sunday 7"))
        .into()
}

/// A field of a partial update: absent or `null` leaves the value as it is.
pub fn optional_name() -> RefOr<Schema> {
    text(200, true)
}

pub fn optional_category() -> RefOr<Schema> {
    text(100, true)
}

/// A partner's own reference (receipt, store, staff).
pub fn reference() -> RefOr<Schema> {
    text(128, false)
}

pub fn optional_reference() -> RefOr<Schema> {
    text(128, true)
}

/// `text_field` and `cards::check_number`: 16 digits, with white space around them
/// (trimmed) but no control characters, at most 32 characters in all. The check digit
/// is checked too, which no pattern can say.
pub fn card_number() -> RefOr<Schema> {
    let around = r"[ \xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*";
    string(false)
        .min_length(Some(16))
        .max_length(Some(32))
        .pattern(Some(format!("^{around}[0-9]{{16}}{around}$")))
        .description(Some(
            "A card number: 16 digits, the last a Luhn check digit".to_owned(),
        ))
        .into()
}

/// `members::valid_email` after trimming: something, `@`, a dotted domain, no white space.
pub fn email() -> RefOr<Schema> {
    email_schema(false)
}

pub fn optional_email() -> RefOr<Schema> {
    email_schema(true)
}

fn email_schema(nullable: bool) -> RefOr<Schema> {
    let ws = WHITE_SPACE;
    let visible = format!(r"[^{CONTROL}{ws}]");
    let not_dot = format!(r"[^.{CONTROL}{ws}]");
    string(nullable)
        .max_length(Some(254))
        .pattern(Some(format!(
            r"^[{ws}]*[^@{CONTROL}{ws}]+@{not_dot}{visible}*\.{visible}*{not_dot}[{ws}]*$"
        )))
        .description(Some(
            "An email address (`name@example.org`), at most 254 characters",
        ))
        .examples(["ann@example.org"])
        .into()
}

/// `members::valid_phone` after trimming; empty means none.
pub fn optional_phone() -> RefOr<Schema> {
    let ws = WHITE_SPACE;
    string(true)
        .max_length(Some(coalition_app::members::MAX_PHONE_CHARS))
        .pattern(Some(format!(
            r"^[{ws}]*([ +()-]*([0-9][ +()-]*){{6,15}})?[{ws}]*$"
        )))
        .description(Some(
            "6 to 15 digits, with spaces, `+`, `-`, `(` and `)` allowed, at most 32 characters; empty means none",
        ))
        .examples(["+49 30 1234567"])
        .into()
}

/// `Currency::parse`: an ISO 4217 code.
pub fn currency() -> RefOr<Schema> {
    string(false)
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some(
            "Three upper-case letters (ISO 4217); it must be the programme's currency",
        ))
        .examples(["EUR"])
        .into()
}

/// `Money::positive` within the purchase limit: a decimal string above zero and at most
/// 1,000,000,000, at most 28 characters.
pub fn positive_amount() -> RefOr<Schema> {
    string(false)
        .max_length(Some(28))
        .pattern(Some(
            r"^0*([1-9][0-9]{0,8}(\.[0-9]+)?|1000000000(\.0+)?|0\.[0-9]*[1-9][0-9]*)$",
        ))
        .description(Some(
            "A decimal string above zero and at most 1000000000 (`12.50`), at most 28 \
             characters, with no more decimals than the currency's minor unit. A JSON number \
             is refused.",
        ))
        .examples(["12.50"])
        .into()
}

/// `parse_rate`: a decimal string from zero to 1,000,000, at most 28 characters.
pub fn rate() -> RefOr<Schema> {
    rate_schema(false)
}

pub fn optional_rate() -> RefOr<Schema> {
    rate_schema(true)
}

fn rate_schema(nullable: bool) -> RefOr<Schema> {
    string(nullable)
        .max_length(Some(28))
        .pattern(Some(r"^0*([0-9]{1,6}(\.[0-9]+)?|1000000(\.0+)?)$"))
        .description(Some(
            "A decimal string from zero to 1000000 (`0.012`), at most 28 characters",
        ))
        .examples(["0.012"])
        .into()
}

/// `PartnerKind::parse`.
pub fn partner_kind() -> RefOr<Schema> {
    string(false).enum_values(Some(["merchant", "bank"])).into()
}

/// Money in a request (`MoneyDto` as sent): a positive amount in the programme's currency.
pub fn amount() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("amount", positive_amount())
        .property("currency", currency())
        .required("amount")
        .required("currency")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(r#"`{"amount": "12.50", "currency": "EUR"}`"#))
        .into()
}

/// Why an operator did something by hand.
pub fn reason() -> RefOr<Schema> {
    text(500, false)
}

/// An unsigned decimal with at most four decimals (trailing zeros aside), as
/// `tiers::check_term` takes it; `whole` is the pattern of the whole part within range,
/// `top` the top of the range.
fn term(whole: &str, top: &str, description: &str, example: &str, nullable: bool) -> RefOr<Schema> {
    string(nullable)
        .max_length(Some(28))
        .pattern(Some(format!(
            r"^0*({whole}(\.[0-9]{{1,4}}0*)?|{top}(\.0+)?)$"
        )))
        .description(Some(description))
        .examples([example])
        .into()
}

/// A tier's discount: 0 to 100 percent.
pub fn percent() -> RefOr<Schema> {
    term(
        "[0-9]{1,2}",
        "100",
        "Percent from 0 to 100, decimal string with at most 4 decimals",
        "15",
        false,
    )
}

pub fn optional_percent() -> RefOr<Schema> {
    term(
        "[0-9]{1,2}",
        "100",
        "Percent from 0 to 100, decimal string with at most 4 decimals",
        "15",
        true,
    )
}

/// A tier's earn multiplier: 1 to 100.
pub fn multiplier() -> RefOr<Schema> {
    term(
        "[1-9][0-9]?",
        "100",
        "From 1 to 100, decimal string with at most 4 decimals",
        "1.5",
        false,
    )
}

pub fn optional_multiplier() -> RefOr<Schema> {
    term(
        "[1-9][0-9]?",
        "100",
        "From 1 to 100, decimal string with at most 4 decimals",
        "1.5",
        true,
    )
}

/// A qualifying spend: money from zero to 10^12 in the programme's currency.
fn spend_schema(nullable: bool) -> RefOr<Schema> {
    let amount = string(false)
        .max_length(Some(28))
        .pattern(Some(r"^0*([0-9]{1,12}(\.[0-9]+)?|1000000000000(\.0+)?)$"))
        .description(Some(
            "A decimal string from 0 to 1000000000000 (`1000.00`), at most 28 characters, \
             with no more decimals than the currency's minor unit",
        ))
        .examples(["1000.00"]);
    let ty = if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::Type(Type::Object)
    };
    ObjectBuilder::new()
        .schema_type(ty)
        .property("amount", amount)
        .property("currency", currency())
        .required("amount")
        .required("currency")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            r#"Spend over 12 months, `{"amount": "1000.00", "currency": "EUR"}`"#,
        ))
        .into()
}

pub fn spend() -> RefOr<Schema> {
    spend_schema(false)
}

pub fn optional_spend() -> RefOr<Schema> {
    spend_schema(true)
}

/// `campaigns::SEGMENT_KINDS`.
pub fn segment_kind() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(coalition_app::campaigns::SEGMENT_KINDS))
        .into()
}

/// `classify::RfmSegment` names.
pub fn rfm_segment() -> RefOr<Schema> {
    let names: Vec<&str> = coalition_domain::classify::RfmSegment::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    string(false).enum_values(Some(names)).into()
}

/// `RewardKind::parse`.
pub fn reward_kind() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(["multiplier", "bonus"]))
        .into()
}

/// `?group=` of a campaign's members.
pub fn campaign_group() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(["treatment", "control"]))
        .into()
}

/// A campaign result's `verdict`.
pub fn campaign_verdict() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(["gain", "loss", "inconclusive"]))
        .into()
}

/// Where a campaign's results count revenue.
pub fn revenue_at() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(["reward_partners", "programme"]))
        .into()
}

/// A campaign's `status`.
pub fn campaign_status() -> RefOr<Schema> {
    string(false)
        .enum_values(Some(["scheduled", "running", "ended"]))
        .into()
}

/// An import's `format`.
pub fn import_format() -> RefOr<Schema> {
    string(false).enum_values(Some(["csv", "cdnow"])).into()
}

/// A webhook's `url` (`app::webhooks::check_url`): an https:// URL; plain http and
/// private addresses only where the operator allows them.
pub fn webhook_url() -> RefOr<Schema> {
    string(false)
        .min_length(Some(9))
        .max_length(Some(2048))
        .pattern(Some(r"^https?://[^\x00-\x20\x7F-\x9F]+$"))
        .examples([serde_json::json!("https://hooks.example.com/coalition")])
        .description(Some(
            "https:// URL of at most 2048 characters, without credentials or fragment, whose \
             host is not a private, loopback or link-local address (checked again when \
             delivering); plain http and private addresses only where the deployment allows \
             them (COALITION_WEBHOOKS_ALLOW_INSECURE)",
        ))
        .into()
}

/// A webhook's `events`: 1 to 8 event types (repeats count once).
pub fn webhook_events() -> RefOr<Schema> {
    let event = string(false).enum_values(Some(coalition_domain::webhooks::EVENT_TYPES));
    ArrayBuilder::new()
        .items(event)
        .min_items(Some(1))
        .max_items(Some(16))
        .examples([serde_json::json!(["purchase.recorded", "refund.recorded"])])
        .description(Some(
            "Event types. A partner's or bank's endpoint may ask only for purchase.recorded, \
             refund.recorded, bank_event.processed and settlement.completed (the others go to \
             the operator's endpoints only)",
        ))
        .into()
}

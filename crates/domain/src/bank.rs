//! The bank's side of the programme, as pure rules: card numbers that must never be
//! accepted (PANs), Standard Webhooks signatures on the bank's events, and what each
//! card event does to one bank transaction given what was seen of it before.

use crate::refund::share_of_points;
use crate::Points;
use base64::Engine;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use sha2::Sha256;

// ---------------------------------------------------------------------------------------
// PANs

/// Whether `digits` (ASCII digits only) passes the Luhn check.
fn luhn_valid(digits: &[u8]) -> bool {
    match digits.split_last() {
        Some((last, body)) => crate::card_number::luhn_check_digit(body) == u32::from(last - b'0'),
        None => false,
    }
}

/// Whether `text` holds something that looks like a payment card number: 13 to 19
/// digits passing the Luhn check, written as one or more digit groups with at most two
/// separator characters between groups (spaces of any kind, dashes, dots, slashes,
/// underscores, commas… anything but a letter, a digit, `:` or `+`). Any sequence of
/// consecutive groups counts (`12.4111 1111 1111 1111` holds a PAN), but a group of more
/// than 19 digits is not one. Before scanning, Unicode decimal digits (`４`, `٤`) are read
/// as ASCII digits and invisible format characters (zero-width spaces, joiners, soft
/// hyphens, BOM, direction marks) are dropped. Letters end a group but do not excuse it:
/// `tok4111111111111111` holds a PAN. Exempt: canonical UUID text
/// (`8-4-4-4-12` hex digits), which the API uses as ids everywhere; and `:`/`+`, which
/// times of day and UTC offsets (`09:00:00.123456789+00:00`) are written with.
pub fn contains_pan(text: &str) -> bool {
    pan_runs(text).next().is_some()
}

/// [`contains_pan`], except that runs which are the programme's own card numbers
/// ([`is_own_card_number`]) do not count: for the places our card numbers belong.
pub fn contains_foreign_pan(text: &str) -> bool {
    pan_runs(text).any(|run| !is_own_card_number(&run))
}

/// The first code points of the Unicode blocks of ten decimal digits (`Nd`).
const DIGIT_ZEROS: &[u32] = &[
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// A Unicode decimal digit's value (ASCII `0`–`9`, fullwidth `０`–`９`, Arabic-Indic…).
fn decimal_value(c: char) -> Option<u8> {
    let code = u32::from(c);
    if c.is_ascii_digit() {
        return Some(c as u8 - b'0');
    }
    if code < 0x660 {
        return None;
    }
    DIGIT_ZEROS
        .iter()
        .find(|&&zero| (zero..zero + 10).contains(&code))
        .map(|zero| (code - zero) as u8)
}

/// Characters that show as nothing: dropped before scanning (`4111\u{200B}1111…`).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// `text` with Unicode digits as ASCII, invisible characters dropped and canonical
/// UUIDs masked (as letters).
fn normalised(text: &str) -> Vec<char> {
    let mut out: Vec<char> = text
        .chars()
        .filter(|&c| !invisible(c))
        .map(|c| match decimal_value(c) {
            Some(d) => char::from(b'0' + d),
            None => c,
        })
        .collect();
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let is_uuid_at = |chars: &[char], at: usize| -> bool {
        if at + 36 > chars.len() {
            return false;
        }
        let mut i = at;
        for (n, len) in SHAPE.iter().enumerate() {
            if !chars[i..i + len].iter().all(char::is_ascii_hexdigit) {
                return false;
            }
            i += len;
            if n < 4 {
                if chars[i] != '-' {
                    return false;
                }
                i += 1;
            }
        }
        let apart = |c: Option<&char>| c.is_none_or(|c| !c.is_alphanumeric());
        apart(at.checked_sub(1).and_then(|p| chars.get(p))) && apart(chars.get(at + 36))
    };
    let mut at = 0;
    while at + 36 <= out.len() {
        if is_uuid_at(&out, at) {
            out[at..at + 36].fill('u');
            at += 36;
        } else {
            at += 1;
        }
    }
    out
}

/// The PAN-like runs of `text`, as their digits.
fn pan_runs(text: &str) -> impl Iterator<Item = String> {
    let mut runs = Vec::new();
    if text.len() >= 13 {
        let chars = normalised(text);
        // The digit groups of the current run, and the separators since its last digit.
        let mut groups: Vec<Vec<u8>> = Vec::new();
        let mut gap = 0usize;
        let flush = |groups: &mut Vec<Vec<u8>>, runs: &mut Vec<String>| {
            for i in 0..groups.len() {
                let mut digits: Vec<u8> = Vec::with_capacity(19);
                for group in &groups[i..] {
                    digits.extend_from_slice(group);
                    if digits.len() > 19 {
                        break;
                    }
                    if digits.len() >= 13 && luhn_valid(&digits) {
                        runs.push(String::from_utf8_lossy(&digits).into_owned());
                    }
                }
            }
            groups.clear();
        };
        for c in chars.into_iter().chain(std::iter::once('x')) {
            if c.is_ascii_digit() {
                match groups.last_mut() {
                    Some(group) if gap == 0 => group.push(c as u8),
                    _ => groups.push(vec![c as u8]),
                }
                gap = 0;
            } else if c.is_alphanumeric() || c == ':' || c == '+' {
                flush(&mut groups, &mut runs);
                gap = 0;
            } else if !groups.is_empty() {
                gap += 1;
                if gap > 2 {
                    flush(&mut groups, &mut runs);
                    gap = 0;
                }
            }
        }
    }
    runs.into_iter()
}

/// Whether a JSON number's digits form a PAN (a PAN sent as a number).
pub fn number_is_pan(number_text: &str) -> bool {
    number_text.bytes().all(|b| b.is_ascii_digit()) && contains_pan(number_text)
}

/// The programme's own card numbers (`card_number`) are 16 digits with a Luhn check
/// digit and would be taken for PANs; they always start with 7 (ISO/IEC 7812 major
/// industry identifier 7, petroleum — no payment network issues cards there that a
/// co-brand bank would send), so a well-formed number starting with 7 is ours.
pub fn is_own_card_number(text: &str) -> bool {
    text.starts_with('7') && crate::card_number::is_well_formed(text)
}

// ---------------------------------------------------------------------------------------
// Standard Webhooks signatures

/// How far a signed timestamp may be from now, either way.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 5 * 60;
pub const SECRET_PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes old")]
    TooOld,
    #[error("webhook-timestamp is more than 5 minutes in the future")]
    InTheFuture,
    #[error("no signature matches any active signing secret")]
    NoMatch,
}

/// The key bytes of a `whsec_…` secret (the base64 after the prefix).
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

/// `v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// Verifies a Standard Webhooks delivery against every active key: the timestamp within
/// the tolerance of `now` (Unix seconds), then any `v1` signature of the space-separated
/// list matching any key (rotation: several secrets, several signatures). Comparison is
/// HMAC's own constant-time `verify_slice`.
pub fn verify(
    keys: &[Vec<u8>],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let signatures = signatures.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.saturating_sub(ts) > SIGNATURE_TOLERANCE_SECONDS {
        return Err(SignatureError::TooOld);
    }
    if ts.saturating_sub(now) > SIGNATURE_TOLERANCE_SECONDS {
        return Err(SignatureError::InTheFuture);
    }
    let tags: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, tag)| base64::engine::general_purpose::STANDARD.decode(tag).ok())
        .collect();
    for key in keys {
        for tag in &tags {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(format!("{id}.{ts}.").as_bytes());
            mac.update(body);
            if mac.verify_slice(tag).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

// ---------------------------------------------------------------------------------------
// The event state machine of one bank transaction

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Authorization,
    Clearing,
    Reversal,
    Refund,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Authorization,
        EventType::Clearing,
        EventType::Reversal,
        EventType::Refund,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Authorization => "authorization",
            EventType::Clearing => "clearing",
            EventType::Reversal => "reversal",
            EventType::Refund => "refund",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// What has been seen of one bank transaction (all its events so far, in any order),
/// with the points its authorization and clearing were priced at when each arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The authorization's points, once one was seen.
    pub authorized: Option<Points>,
    /// The cleared amount and the points it earns, once a clearing was seen.
    pub cleared: Option<(Decimal, Points)>,
    /// The sum of every refund seen (before or after the clearing).
    pub refunded: Decimal,
    pub reversed: bool,
    /// The authorization lapsed: no clearing came in time (the lapse job).
    pub lapsed: bool,
}

/// What a transaction should have done to the member, given what was seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    /// Shown, not spendable.
    pub pending: Points,
    /// Earned for the cleared amount.
    pub posted: Points,
    /// Of `posted`, taken back by refunds (before any shortfall).
    pub clawed_back: Points,
}

/// One event, as the state machine sees it: the points it would earn are priced by the
/// caller (authorization: the authorized amount; clearing: the cleared amount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Authorization { points: Points },
    Clearing { amount: Decimal, points: Points },
    Reversal,
    Refund { amount: Decimal },
    Lapse,
}

/// What one event changes, as differences of [`Target`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    /// Change of the pending points (negative: pending removed).
    pub pending: Points,
    /// Points to post now.
    pub posted: Points,
    /// Points to claw back now (before the shortfall the balance may impose).
    pub clawed_back: Points,
}

impl Seen {
    /// The facts after `event`. The first authorization and the first clearing count;
    /// a second one of either changes nothing (a transaction clears once).
    pub fn with(&self, event: Event) -> Seen {
        let mut next = self.clone();
        match event {
            Event::Authorization { points } => {
                next.authorized.get_or_insert(points);
            }
            Event::Clearing { amount, points } => {
                next.cleared.get_or_insert((amount, points));
            }
            Event::Reversal => next.reversed = true,
            Event::Refund { amount } => next.refunded += amount.max(Decimal::ZERO),
            Event::Lapse => next.lapsed = true,
        }
        next
    }

    /// What the transaction should have done, whatever order its events came in:
    /// - cleared: the clearing's points are posted, nothing is pending; refunds claw
    ///   back ⌊posted × refunded / cleared⌋ (on the cumulative refunded amount, never
    ///   more than was posted);
    /// - authorized, not cleared, neither reversed nor lapsed: its points are pending;
    /// - otherwise nothing.
    pub fn target(&self) -> Target {
        match self.cleared {
            Some((amount, posted)) => {
                let refunded = self.refunded.min(amount);
                let clawed_back = if amount > Decimal::ZERO {
                    share_of_points(posted, refunded, amount)
                        .unwrap_or(posted)
                        .clamp(0, posted)
                } else {
                    0
                };
                Target {
                    pending: 0,
                    posted,
                    clawed_back,
                }
            }
            None => Target {
                pending: match self.authorized {
                    Some(points) if !self.reversed && !self.lapsed => points,
                    _ => 0,
                },
                posted: 0,
                clawed_back: 0,
            },
        }
    }
}

/// The state machine: what `event` does to a transaction of which `seen` was seen.
pub fn apply(seen: &Seen, event: Event) -> (Seen, Effect) {
    let next = seen.with(event);
    let (before, after) = (seen.target(), next.target());
    let effect = Effect {
        pending: after.pending - before.pending,
        posted: after.posted - before.posted,
        clawed_back: after.clawed_back - before.clawed_back,
    };
    (next, effect)
}

// ---------------------------------------------------------------------------------------
// Which events a card's state lets through

/// A co-branded card's state, as its events see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardState {
    Active,
    Blocked,
    Replaced,
    /// Its member was erased (her points account is closed): the card does nothing.
    Retired,
}

impl CardState {
    /// From the stored status; an unknown one is treated as blocked.
    pub fn parse(status: &str) -> Self {
        match status {
            "active" => CardState::Active,
            "replaced" => CardState::Replaced,
            "retired" => CardState::Retired,
            _ => CardState::Blocked,
        }
    }
}

impl Seen {
    /// The transaction began: its authorization or its clearing was seen. A reversal or
    /// refund seen first does not begin one.
    pub fn began(&self) -> bool {
        self.authorized.is_some() || self.cleared.is_some()
    }
}

/// Whether a card in `state` takes an event of `event_type` for a transaction of which
/// `seen` was seen (`Err`: the card's state, and nothing moves):
/// - active: every event;
/// - blocked or replaced: the follow-ups of a transaction that began (its clearing,
///   reversal, refund; a second authorization changes nothing anyway), and a reversal or
///   refund of one not seen yet (events come in any order; neither moves points before
///   its authorization or clearing); an authorization or clearing that would begin a
///   transaction is refused, so no new transaction starts on the card;
/// - retired: nothing (its member's points were forfeited and her account closed).
pub fn card_admits(state: CardState, seen: &Seen, event_type: EventType) -> Result<(), CardState> {
    let begins =
        matches!(event_type, EventType::Authorization | EventType::Clearing) && !seen.began();
    match state {
        CardState::Active => Ok(()),
        CardState::Retired => Err(state),
        CardState::Blocked | CardState::Replaced if begins => Err(state),
        CardState::Blocked | CardState::Replaced => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_blocked_or_replaced_card_only_follows_up_and_a_retired_one_does_nothing() {
        use EventType::*;
        let new = Seen::default();
        let refunded_first = Seen::default().with(Event::Refund {
            amount: Decimal::ONE,
        });
        let authorized = Seen::default().with(Event::Authorization { points: 5 });
        let cleared = Seen::default().with(Event::Clearing {
            amount: Decimal::ONE,
            points: 2,
        });
        for t in EventType::ALL {
            assert_eq!(card_admits(CardState::Active, &new, t), Ok(()));
            for seen in [&new, &authorized, &cleared] {
                assert_eq!(
                    card_admits(CardState::Retired, seen, t),
                    Err(CardState::Retired)
                );
            }
            for state in [CardState::Blocked, CardState::Replaced] {
                assert_eq!(card_admits(state, &authorized, t), Ok(()));
                assert_eq!(card_admits(state, &cleared, t), Ok(()));
                let starts = matches!(t, Authorization | Clearing);
                let expected = if starts { Err(state) } else { Ok(()) };
                assert_eq!(card_admits(state, &new, t), expected, "{t:?}");
                assert_eq!(card_admits(state, &refunded_first, t), expected, "{t:?}");
            }
        }
        assert_eq!(CardState::parse("active"), CardState::Active);
        assert_eq!(CardState::parse("retired"), CardState::Retired);
        assert_eq!(CardState::parse("replaced"), CardState::Replaced);
        assert_eq!(CardState::parse("blocked"), CardState::Blocked);
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn pans_are_found_and_our_own_numbers_and_uuids_are_not_pans() {
        for pan in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "my card is 4111111111111111, thanks",
            "tok_4111111111111111",
            "12.4111111111111111",
            "4222222222222",
            "tok4111111111111111",
            "4111111111111111x",
            "4111111111111111abc",
            "4111.1111.1111.1111",
            "4111/1111/1111/1111",
            "4111_1111_1111_1111",
            "4111,1111,1111,1111",
            "4111  1111  1111  1111",
            "4111\u{A0}1111\u{A0}1111\u{A0}1111",
            "4111\u{200B}1111\u{200B}1111\u{200B}1111",
            "4111\u{2060}1111\u{FEFF}11\u{AD}11 1111",
            "\u{FF14}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}",
            "\u{664}\u{661}\u{661}\u{661}-1111-1111-1111",
            "4111 1111 1111 1111 2026",
        ] {
            assert!(contains_pan(pan), "{pan}");
        }
        for not in [
            "4111111111111112",      // Luhn fails
            "411111111111",          // too short
            "41111111111111111111",  // 20 digits
            "4111   1111 1111 1111", // three separators end the run
            "12.50",
            "2026-12-03T10:00:00Z",
            "2026-12-03T10:00:00.123456789+00:00",
            "2026-12-03 10:00:00.123456789+00:00",
            "a1111111-1111-4111-8111-111111111111",
            "11111111-1111-4111-8111-111111111111",
            "receipt-1001",
        ] {
            assert!(!contains_pan(not), "{not}");
        }
        let own = crate::card_number::from_random_digits(123_456_789);
        assert!(contains_pan(&own), "our numbers do look like PANs");
        assert!(is_own_card_number(&own));
        assert!(!contains_foreign_pan(&own));
        assert!(!contains_foreign_pan(&format!("{own}\u{0}")));
        assert!(contains_foreign_pan(&format!("{own}, 4111111111111111")));
        assert!(!is_own_card_number("4111111111111111"));
        assert!(number_is_pan("4111111111111111"));
        assert!(!number_is_pan("4111111111111111.5"));
    }

    /// The test vector of the Standard Webhooks specification
    /// (standard-webhooks/standard-webhooks, spec and reference libraries).
    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(sign(&key, id, ts, body), expected);
        let ok = |sigs: &str, now: i64| {
            verify(
                &[key.clone()],
                Some(id),
                Some("1614265330"),
                Some(sigs),
                body,
                now,
            )
        };
        assert_eq!(ok(expected, ts), Ok(()));
        // Several signatures (rotation), one of them good.
        assert_eq!(ok(&format!("v1,Zm9v {expected}"), ts + 299), Ok(()));
        assert_eq!(ok(expected, ts + 301), Err(SignatureError::TooOld));
        assert_eq!(ok(expected, ts - 301), Err(SignatureError::InTheFuture));
        assert_eq!(ok("v1,Zm9v", ts), Err(SignatureError::NoMatch));
        assert_eq!(
            ok("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", ts),
            Err(SignatureError::NoMatch)
        );
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(
                &[key.clone()],
                Some(id),
                Some("1614265330"),
                Some(expected),
                tampered,
                ts
            ),
            Err(SignatureError::NoMatch)
        );
        let other = secret_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(
            verify(
                &[other.clone()],
                Some(id),
                Some("1614265330"),
                Some(expected),
                body,
                ts
            ),
            Err(SignatureError::NoMatch)
        );
        // Rotation: an old and a new key, the signature by either verifies.
        assert_eq!(
            verify(
                &[other, key.clone()],
                Some(id),
                Some("1614265330"),
                Some(expected),
                body,
                ts
            ),
            Ok(())
        );
        assert_eq!(
            verify(&[key], None, Some("1614265330"), Some(expected), body, ts),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn a_card_story_in_order() {
        let seen = Seen::default();
        let (seen, e) = apply(&seen, Event::Authorization { points: 100 });
        assert_eq!(
            e,
            Effect {
                pending: 100,
                posted: 0,
                clawed_back: 0
            }
        );
        let (seen, e) = apply(
            &seen,
            Event::Clearing {
                amount: d("80"),
                points: 80,
            },
        );
        assert_eq!(
            e,
            Effect {
                pending: -100,
                posted: 80,
                clawed_back: 0
            }
        );
        let (seen, e) = apply(&seen, Event::Refund { amount: d("30") });
        assert_eq!(e.clawed_back, 30);
        let (seen, e) = apply(&seen, Event::Refund { amount: d("20") });
        assert_eq!(e.clawed_back, 20);
        // More refunded than cleared: never more than was posted.
        let (seen, e) = apply(&seen, Event::Refund { amount: d("100") });
        assert_eq!(e.clawed_back, 30);
        assert_eq!(
            seen.target(),
            Target {
                pending: 0,
                posted: 80,
                clawed_back: 80
            }
        );
    }

    #[test]
    fn reversal_and_lapse_remove_pending_but_not_a_clearing() {
        let auth = Seen::default().with(Event::Authorization { points: 50 });
        assert_eq!(apply(&auth, Event::Reversal).1.pending, -50);
        assert_eq!(apply(&auth, Event::Lapse).1.pending, -50);
        let lapsed = auth.with(Event::Lapse);
        let (_, e) = apply(
            &lapsed,
            Event::Clearing {
                amount: d("50"),
                points: 50,
            },
        );
        assert_eq!(
            e,
            Effect {
                pending: 0,
                posted: 50,
                clawed_back: 0
            }
        );
        // A reversal before its authorization: the authorization never becomes pending.
        let reversed = Seen::default().with(Event::Reversal);
        assert_eq!(
            apply(&reversed, Event::Authorization { points: 50 }).1,
            Effect::default()
        );
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0i64..500).prop_map(|points| Event::Authorization { points }),
            (1i64..500).prop_map(|n| Event::Clearing {
                amount: Decimal::from(n),
                points: n * 3
            }),
            Just(Event::Reversal),
            (1i64..300).prop_map(|n| Event::Refund {
                amount: Decimal::new(n, 1)
            }),
            Just(Event::Lapse),
        ]
    }

    proptest! {
        /// Any order of the same events: the same end state, and the effects applied
        /// one by one add up to it (nothing moves twice, nothing is lost).
        #[test]
        fn any_order_reaches_the_same_end_state(
            events in proptest::collection::vec(event(), 0..8),
            seed in any::<u64>(),
        ) {
            // One authorization and one clearing per transaction, as a bank sends them.
            let mut events: Vec<Event> = {
                let (mut a, mut c) = (false, false);
                events.into_iter().filter(|e| match e {
                    Event::Authorization { .. } => !std::mem::replace(&mut a, true),
                    Event::Clearing { .. } => !std::mem::replace(&mut c, true),
                    _ => true,
                }).collect()
            };
            let in_order = events.iter().fold(Seen::default(), |s, e| s.with(*e)).target();
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..events.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                events.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut seen = Seen::default();
            let mut sum = Effect::default();
            for e in &events {
                let (next, effect) = apply(&seen, *e);
                prop_assert!(effect.posted >= 0 && effect.clawed_back >= 0);
                sum.pending += effect.pending;
                sum.posted += effect.posted;
                sum.clawed_back += effect.clawed_back;
                seen = next;
                let t = seen.target();
                prop_assert!(t.pending >= 0 && t.clawed_back <= t.posted);
            }
            prop_assert_eq!(seen.target(), in_order);
            prop_assert_eq!((sum.pending, sum.posted, sum.clawed_back),
                (in_order.pending, in_order.posted, in_order.clawed_back));
        }
    }
}

//! Outbound webhooks: which subscriber hears which event and sees what of it, when a
//! failed delivery is tried again, what an answer means, and which addresses a delivery
//! may reach. Pure: the app crate reads and writes, this decides.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use uuid::Uuid;

pub const PURCHASE_RECORDED: &str = "purchase.recorded";
pub const REFUND_RECORDED: &str = "refund.recorded";
pub const POINTS_EXPIRING: &str = "points.expiring";
pub const POINTS_EXPIRED: &str = "points.expired";
pub const TIER_CHANGED: &str = "tier.changed";
pub const BANK_EVENT_PROCESSED: &str = "bank_event.processed";
pub const SETTLEMENT_COMPLETED: &str = "settlement.completed";
pub const CAMPAIGN_REMINDER: &str = "campaign.reminder";

/// Every event type a subscriber may ask for.
pub const EVENT_TYPES: [&str; 8] = [
    PURCHASE_RECORDED,
    REFUND_RECORDED,
    POINTS_EXPIRING,
    POINTS_EXPIRED,
    TIER_CHANGED,
    BANK_EVENT_PROCESSED,
    SETTLEMENT_COMPLETED,
    CAMPAIGN_REMINDER,
];

/// Who owns an endpoint: the programme's operator, or one partner (a merchant's or a
/// bank's clients act for their partner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subscriber {
    Operator,
    Partner(Uuid),
}

impl Subscriber {
    pub fn of(partner_id: Option<Uuid>) -> Self {
        partner_id.map_or(Subscriber::Operator, Subscriber::Partner)
    }
}

/// Whether a partner's endpoints may subscribe to `event_type` at all. Events about a
/// member's whole coalition account (expiry, reminders, tiers, win-back) concern every
/// partner's sales at once and belong to the operator, who runs the programme's
/// communication with members: a partner hearing them would learn of members it may not
/// see and of their activity elsewhere.
pub fn partners_may_subscribe(event_type: &str) -> bool {
    matches!(
        event_type,
        PURCHASE_RECORDED | REFUND_RECORDED | BANK_EVENT_PROCESSED | SETTLEMENT_COMPLETED
    )
}

/// What `subscriber` receives of an event: `None` when it is not theirs to hear, else
/// the `data` they see. The operator hears every event of its programme, whole. A
/// partner hears only events about itself:
/// - `purchase.recorded`, `refund.recorded`: its own sales (`partner_id` is its id);
/// - `bank_event.processed`: events it sent as the bank (`bank_partner_id` is its id;
///   `partner_id` there is the merchant's, which does not hear its customers' card
///   events: they carry the member's coalition-wide balance);
/// - `settlement.completed`: the settlement's header with its own line only (`lines`
///   replaced by `line`), when it has one;
/// - nothing else (see [`partners_may_subscribe`]).
///
/// Deterministic: a retry sends the very body of the first attempt.
pub fn view(event_type: &str, data: &Value, subscriber: Subscriber) -> Option<Value> {
    let partner = match subscriber {
        Subscriber::Operator => return Some(data.clone()),
        Subscriber::Partner(partner) => partner,
    };
    if !partners_may_subscribe(event_type) {
        return None;
    }
    let is_own =
        |v: &Value| v.get("partner_id").and_then(Value::as_str) == Some(&partner.to_string());
    match event_type {
        SETTLEMENT_COMPLETED => {
            let line = data
                .get("lines")?
                .as_array()?
                .iter()
                .find(|line| is_own(line))?
                .clone();
            // The header, and its own line: not the others' lines nor the operator's figures.
            let header = ["settlement_id", "period_start", "period_end", "currency"];
            let mut seen: Map<String, Value> = header
                .iter()
                .filter_map(|k| Some((k.to_string(), data.get(*k)?.clone())))
                .collect();
            seen.insert("line".into(), line);
            Some(Value::Object(seen))
        }
        BANK_EVENT_PROCESSED => {
            let sender = data.get("bank_partner_id").and_then(Value::as_str);
            (sender == Some(&partner.to_string())).then(|| data.clone())
        }
        _ => is_own(data).then(|| data.clone()),
    }
}

/// How many attempts a message gets before it is given up: the first, then one after
/// each delay of [`RETRY_DELAYS`].
pub const MAX_ATTEMPTS: i32 = RETRY_DELAYS.len() as i32 + 1;

/// The waits between attempts, as Standard Webhooks' reference service does it: 5 s,
/// 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (the first attempt is immediate). A message is
/// given up about 27 h 35 min after its first attempt.
pub const RETRY_DELAYS: [i64; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

/// The longest `Retry-After` honoured: a receiver cannot park a message for longer.
pub const MAX_RETRY_AFTER_SECONDS: i64 = 24 * 3600;

/// What one attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: delivered.
    Delivered,
    /// 410 Gone: the receiver says the endpoint is no more; it is disabled at once.
    Gone,
    /// Anything else (another status, a timeout, a refused connection): try again.
    Failed,
}

pub fn classify(status: Option<u16>) -> Answer {
    match status {
        Some(s) if (200..300).contains(&s) => Answer::Delivered,
        Some(410) => Answer::Gone,
        _ => Answer::Failed,
    }
}

/// When to try a failed message again after `attempts` attempts (counting the one that
/// just failed): the schedule's wait, or the receiver's `Retry-After` when that is
/// longer (capped at [`MAX_RETRY_AFTER_SECONDS`]). `None`: the attempts are used up.
pub fn next_attempt(
    attempts: i32,
    failed_at: DateTime<Utc>,
    retry_after_seconds: Option<i64>,
) -> Option<DateTime<Utc>> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let scheduled = *RETRY_DELAYS.get(index)?;
    let asked = retry_after_seconds
        .unwrap_or(0)
        .clamp(0, MAX_RETRY_AFTER_SECONDS);
    Some(failed_at + Duration::seconds(scheduled.max(asked)))
}

/// A `Retry-After` value: delay-seconds, or an HTTP date, as seconds from `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<i64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(seconds.max(0));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&Utc) - now).num_seconds().max(0))
}

/// Whether a delivery may connect to `ip` when private addresses are not allowed:
/// only globally routable unicast addresses. Loopback, private (RFC 1918, unique
/// local), link-local (cloud metadata services live there), shared (CGNAT),
/// unspecified, broadcast, multicast, documentation and reserved ranges are refused, as
/// are IPv6 addresses that embed an IPv4 one that is (IPv4-mapped, NAT64, 6to4), and
/// IPv6 ranges that are reserved or tunnel to an IPv4 address the check cannot see
/// (IPv4-translated ::ffff:0:0/96, discard 100::/64, 2001::/23 with Teredo, local-use
/// NAT64 64:ff9b:1::/48).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32);
        return is_public_v4(v4);
    }
    // 6to4 (2002::/16) carries an IPv4 address in its bits 16–47.
    if segments[0] == 0x2002 {
        let v4 = Ipv4Addr::from(((segments[1] as u32) << 16) | segments[2] as u32);
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0] // IPv4-translated (::ffff:0:0/96)
        || segments[..4] == [0x100, 0, 0, 0] // discard-only (100::/64)
        || (segments[0] == 0x2001 && segments[1] < 0x200) // IETF protocols, Teredo (2001::/23)
        || segments[..3] == [0x64, 0xff9b, 1] // local-use NAT64 (64:ff9b:1::/48)
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..5] == [0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and the like
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schedule_is_immediately_then_5s_5min_30min_2h_5h_10h_10h() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let waits: Vec<i64> = (1..MAX_ATTEMPTS)
            .map(|n| (next_attempt(n, t0, None).unwrap() - t0).num_seconds())
            .collect();
        assert_eq!(waits, vec![5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(next_attempt(MAX_ATTEMPTS, t0, None), None, "given up");
        assert_eq!(next_attempt(0, t0, None), None);
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_capped() {
        let t0 = Utc::now();
        let wait = |n, ra| (next_attempt(n, t0, ra).unwrap() - t0).num_seconds();
        assert_eq!(wait(1, Some(120)), 120, "longer than 5 s: honoured");
        assert_eq!(
            wait(2, Some(10)),
            300,
            "shorter than the schedule: the schedule"
        );
        assert_eq!(wait(1, Some(10 * 86400)), MAX_RETRY_AFTER_SECONDS);
        assert_eq!(parse_retry_after(" 30 ", t0), Some(30));
        let later = (t0 + Duration::seconds(90)).to_rfc2822();
        let parsed = parse_retry_after(&later, t0).unwrap();
        assert!((89..=90).contains(&parsed), "{parsed}");
        assert_eq!(parse_retry_after("soon", t0), None);
    }

    #[test]
    fn answers_are_delivered_gone_or_failed() {
        assert_eq!(classify(Some(200)), Answer::Delivered);
        assert_eq!(classify(Some(204)), Answer::Delivered);
        assert_eq!(classify(Some(410)), Answer::Gone);
        for failed in [Some(301), Some(404), Some(429), Some(500), None] {
            assert_eq!(classify(failed), Answer::Failed);
        }
    }

    #[test]
    fn a_partner_hears_only_its_own_sales_and_its_own_settlement_line() {
        let (gym, shop) = (Uuid::new_v4(), Uuid::new_v4());
        let sale = json!({"purchase_id": "p", "partner_id": gym, "member_id": "m"});
        assert_eq!(
            view(PURCHASE_RECORDED, &sale, Subscriber::Partner(gym)),
            Some(sale.clone())
        );
        assert_eq!(
            view(PURCHASE_RECORDED, &sale, Subscriber::Partner(shop)),
            None
        );
        assert_eq!(
            view(REFUND_RECORDED, &sale, Subscriber::Partner(shop)),
            None
        );
        assert_eq!(
            view(PURCHASE_RECORDED, &sale, Subscriber::Operator),
            Some(sale.clone())
        );
        let settled = json!({"settlement_id": "s", "operator_net": "0.50", "lines": [
            {"partner_id": gym, "net": "-1.00"}, {"partner_id": shop, "net": "1.00"}]});
        let seen = view(SETTLEMENT_COMPLETED, &settled, Subscriber::Partner(shop)).unwrap();
        assert_eq!(seen["line"]["net"], "1.00");
        assert!(seen.get("lines").is_none() && !seen.to_string().contains(&gym.to_string()));
        assert!(seen.get("operator_net").is_none());
        assert_eq!(
            view(
                SETTLEMENT_COMPLETED,
                &settled,
                Subscriber::Partner(Uuid::new_v4())
            ),
            None,
            "no line: nothing"
        );
        assert_eq!(
            view(SETTLEMENT_COMPLETED, &settled, Subscriber::Operator),
            Some(settled)
        );
        for operator_only in [
            POINTS_EXPIRING,
            POINTS_EXPIRED,
            TIER_CHANGED,
            CAMPAIGN_REMINDER,
        ] {
            let data = json!({"member_id": "m", "partner_id": gym});
            assert_eq!(view(operator_only, &data, Subscriber::Partner(gym)), None);
            assert!(view(operator_only, &data, Subscriber::Operator).is_some());
            assert!(!partners_may_subscribe(operator_only));
        }
        let bank_id = Uuid::new_v4();
        let bank = json!({"event_id": "e", "partner_id": gym, "bank_partner_id": bank_id});
        assert!(view(BANK_EVENT_PROCESSED, &bank, Subscriber::Partner(bank_id)).is_some());
        // The merchant where the card was used hears nothing of it, nor does another.
        assert!(view(BANK_EVENT_PROCESSED, &bank, Subscriber::Partner(gym)).is_none());
        assert!(view(BANK_EVENT_PROCESSED, &bank, Subscriber::Partner(shop)).is_none());
        assert_eq!(view("something.new", &bank, Subscriber::Partner(gym)), None);
    }

    #[test]
    fn a_partners_settlement_message_holds_the_allow_listed_header_and_its_line_only() {
        let (gym, shop) = (Uuid::new_v4(), Uuid::new_v4());
        let own = json!({"partner_id": shop, "points_issued": 10, "net": "1.00"});
        let settled = json!({
            "settlement_id": "s",
            "period_start": "2026-11-01T00:00:00Z",
            "period_end": "2026-12-01T00:00:00Z",
            "currency": "EUR",
            "lines": [{"partner_id": gym, "net": "-1.00"}, own.clone()],
            "operator_net": "0.50",
            "operator": {"net": "0.50", "fees": "0.10"},
            "payments": [{"from": gym, "to": "operator", "amount": "1.00"}],
            "postings": 42,
            "anything_new": "secret"
        });
        let seen = view(SETTLEMENT_COMPLETED, &settled, Subscriber::Partner(shop)).unwrap();
        let keys: Vec<&str> = seen
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "currency",
                "line",
                "period_end",
                "period_start",
                "settlement_id"
            ]
        );
        assert_eq!(seen["line"], own);
        assert!(!seen.to_string().contains(&gym.to_string()));
    }

    #[test]
    fn ipv6_ranges_that_carry_ipv4_or_are_reserved_are_refused() {
        for refused in [
            "::ffff:0:7f00:1",                      // IPv4-translated 127.0.0.1
            "::ffff:0:808:808",                     // IPv4-translated, even of a public address
            "100::1",                               // discard-only
            "2001::1",                              // Teredo
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001:2::1",                            // benchmarking (2001::/23)
            "2001:1ff::1",                          // still 2001::/23
            "64:ff9b:1::1",                         // local-use NAT64
            "64:ff9b:1:ffff::8.8.8.8",
            "2002:7f00:1::1",   // 6to4 of 127.0.0.1
            "2002:a00:1::1",    // 6to4 of 10.0.0.1
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused} is refused");
        }
        for public in [
            "2002:808:808::1",
            "2001:200::1",
            "2a00:1450::1",
            "100:0:0:1::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }

    #[test]
    fn only_public_addresses_are_reachable() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(
                !is_public(private.parse().unwrap()),
                "{private} is not public"
            );
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} is public");
        }
    }
}

//! The reference an imported purchase is kept under.
//!
//! An import must recognise a row it wrote before (so a repeated or resumed import skips
//! it) without keeping anything a partner could turn back into the customer: the
//! reference is a keyed hash (HMAC-SHA256) of the row's fields under a secret the
//! server generated and keeps in its database, never shown to anyone. Without the key,
//! hashing candidate rows (an erased customer's number, a day, an amount) finds nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// `import:<128 bits of HMAC-SHA256(key, programme ‖ row)>:<n>`, the hex in four groups
/// of 8 (no run of 13 digits, which would read as a card number); `n` counts the
/// identical rows of one file (1 for the first).
pub fn purchase_ref(key: &[u8], programme_id: Uuid, row: &str, n: u32) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(programme_id.as_bytes());
    mac.update(b"|");
    mac.update(row.as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = String::from("import");
    for group in tag[..16].chunks(4) {
        out.push(':');
        for byte in group {
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out.push_str(&format!(":{n}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_is_the_published_hmac_and_depends_on_key_programme_and_row() {
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?")
        // = 5bdcc146bf60754e6a042426089575c7 5a003f089d2739839dec58b964ec3843. With the
        // nil programme the message is 16 zero bytes, '|', then the row, so check the
        // primitive through a row-only message instead.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag = mac.finalize().into_bytes();
        assert_eq!(
            tag[..4],
            [0x5b, 0xdc, 0xc1, 0x46],
            "the HMAC primitive is the published one"
        );
        let p = Uuid::from_u128(1);
        let r = purchase_ref(b"key", p, "cdnow|00001|1997-01-01|1|11.77", 1);
        assert!(r.starts_with("import:") && r.ends_with(":1"), "{r}");
        assert_eq!(r.len(), "import:".len() + 4 * 9 + 1);
        assert_eq!(
            r,
            purchase_ref(b"key", p, "cdnow|00001|1997-01-01|1|11.77", 1)
        );
        assert_ne!(
            r,
            purchase_ref(b"other", p, "cdnow|00001|1997-01-01|1|11.77", 1)
        );
        assert_ne!(
            r,
            purchase_ref(
                b"key",
                Uuid::from_u128(2),
                "cdnow|00001|1997-01-01|1|11.77",
                1
            )
        );
        assert_ne!(
            r,
            purchase_ref(b"key", p, "cdnow|00002|1997-01-01|1|11.77", 1)
        );
        assert!(r.ends_with(":1") && purchase_ref(b"key", p, "x", 2).ends_with(":2"));
    }
}

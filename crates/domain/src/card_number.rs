//! Loyalty card numbers: 16 digits with a Luhn check digit, so a mistyped number at the
//! till is caught before it reaches the ledger. These are programme cards, never PANs.

/// The Luhn check digit for a string of ASCII digits (also what `bank::contains_pan`
/// checks a digit run against).
pub(crate) fn luhn_check_digit(body: &[u8]) -> u32 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Builds a card number from 15 random digits (the caller supplies them: no I/O here).
pub fn from_random_digits(random: u64) -> String {
    let body = format!("7{:014}", random % 100_000_000_000_000);
    format!("{body}{}", luhn_check_digit(body.as_bytes()))
}

pub fn is_well_formed(number: &str) -> bool {
    number.len() == 16
        && number.bytes().all(|b| b.is_ascii_digit())
        && luhn_check_digit(&number.as_bytes()[..15]) == u32::from(number.as_bytes()[15] - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_numbers_pass_luhn_and_typos_fail() {
        for seed in [0u64, 1, 42, 99_999_999_999_999, u64::MAX] {
            let n = from_random_digits(seed);
            assert!(is_well_formed(&n), "{n}");
            let mut typo = n.clone().into_bytes();
            typo[3] = if typo[3] == b'9' { b'0' } else { typo[3] + 1 };
            assert!(!is_well_formed(std::str::from_utf8(&typo).unwrap()));
        }
        assert!(!is_well_formed("123"));
    }
}

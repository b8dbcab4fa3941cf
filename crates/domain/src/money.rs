use crate::limits::MAX_RATE;
use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(MoneyError::InvalidCurrency(code.to_owned()))
        }
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    /// An active ISO 4217 currency (`ISO_4217`), for a programme's currency: any other
    /// three letters would price points in a money nobody pays with.
    pub fn parse_iso_4217(code: &str) -> Result<Self, MoneyError> {
        let currency = Self::parse(code)?;
        if iso_4217_minor_units(code).is_some() {
            Ok(currency)
        } else {
            Err(MoneyError::UnknownCurrency(code.to_owned()))
        }
    }

    /// Decimal places of the currency's minor unit (ISO 4217); two for a code not listed
    /// (only a programme's currency is checked against the list).
    pub fn minor_units(&self) -> u32 {
        iso_4217_minor_units(&self.0).unwrap_or(2)
    }
}

/// The minor-unit digits of an active ISO 4217 currency, `None` for any other code.
pub fn iso_4217_minor_units(code: &str) -> Option<u32> {
    ISO_4217
        .binary_search_by(|(listed, _)| listed.cmp(&code))
        .ok()
        .map(|i| u32::from(ISO_4217[i].1))
}

/// Active ISO 4217 currency codes with their minor units, sorted by code (List One,
/// 2025; funds and precious metals without a minor unit, such as XAU or XDR, left out).
/// HUF keeps the 0 digits it had here before the list (forint prices have no fillér;
/// ISO says 2): tier spends are stored in minor units, so changing it would rescale them.
#[rustfmt::skip]
pub const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2),
    ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2), ("BHD", 3),
    ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2),
    ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHE", 2),
    ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2), ("COU", 2),
    ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2), ("DOP", 2),
    ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2), ("FKP", 2),
    ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2),
    ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 0), ("IDR", 2), ("ILS", 2),
    ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0),
    ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3),
    ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2),
    ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2), ("MNT", 2),
    ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2), ("MXV", 2),
    ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2), ("NPR", 2),
    ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2),
    ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0),
    ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2),
    ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2),
    ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2), ("TRY", 2),
    ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2), ("USN", 2),
    ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2), ("VND", 0),
    ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0), ("XPF", 0),
    ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not a decimal number written as digits with an optional '.' and fraction")]
    NotADecimal(String),
    #[error("'{0}' is not a three-letter upper-case ISO 4217 currency code")]
    InvalidCurrency(String),
    #[error("'{0}' is not an active ISO 4217 currency code (such as EUR, USD or JPY)")]
    UnknownCurrency(String),
    #[error("{currency} allows at most {allowed} decimal places")]
    TooManyDecimals { currency: String, allowed: u32 },
    #[error("must be greater than zero")]
    NotPositive,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {0}")]
    TooLarge(i64),
}

/// The longest decimal text accepted: 28 characters always fit `Decimal` exactly (at most
/// 28 digits), and a limit on characters is one a JSON Schema can state.
pub const MAX_DECIMAL_CHARS: usize = 28;

/// Parses a decimal written the plain way (`"12.50"`, `"-3"`), rejecting exponents,
/// underscores, signs in odd places and anything `Decimal` would silently round.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    if text.len() > MAX_DECIMAL_CHARS {
        return Err(MoneyError::NotADecimal(text.to_owned()));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = all_digits(whole) && fraction.is_none_or(all_digits);
    if !well_formed {
        return Err(MoneyError::NotADecimal(text.to_owned()));
    }
    let value = Decimal::from_str(text).map_err(|_| MoneyError::NotADecimal(text.to_owned()))?;
    // Decimal keeps at most 28 fractional digits and would round past that.
    if fraction.is_some_and(|f| f.len() as u32 != value.scale()) {
        return Err(MoneyError::NotADecimal(text.to_owned()));
    }
    Ok(value)
}

/// A non-negative rate or price (points per unit, money per point) of at most
/// `MAX_RATE`, written without a sign (so `-0` is refused too: one spelling of zero fewer
/// to explain).
pub fn parse_rate(text: &str) -> Result<Decimal, MoneyError> {
    let value = parse_decimal(text)?;
    if text.starts_with('-') {
        return Err(MoneyError::Negative);
    }
    if value > Decimal::from(MAX_RATE) {
        return Err(MoneyError::TooLarge(MAX_RATE));
    }
    Ok(value.normalize())
}

/// An amount of money in one currency, exact to the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    /// A strictly positive amount with no more decimals than the currency allows.
    pub fn positive(amount: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency = Currency::parse(currency)?;
        let amount = parse_decimal(amount)?;
        if amount <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        let allowed = currency.minor_units();
        if amount.normalize().scale() > allowed {
            return Err(MoneyError::TooManyDecimals {
                currency: currency.0,
                allowed,
            });
        }
        Ok(Self { amount, currency })
    }

    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// The amount written with exactly the currency's minor-unit digits (`"12.50"`).
    pub fn amount_string(&self) -> String {
        format_amount(self.amount, &self.currency)
    }
}

pub fn format_amount(amount: Decimal, currency: &Currency) -> String {
    let mut shown = amount.round_dp(currency.minor_units());
    shown.rescale(currency.minor_units());
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_decimals_parse_exactly() {
        assert_eq!(
            parse_decimal("12345678901234.5678").unwrap().to_string(),
            "12345678901234.5678"
        );
        assert_eq!(parse_decimal("0.1").unwrap().to_string(), "0.1");
        assert_eq!(parse_decimal("-3").unwrap().to_string(), "-3");
    }

    #[test]
    fn odd_spellings_are_refused() {
        for bad in [
            "",
            "1e5",
            "1_000",
            "+1",
            ".5",
            "5.",
            "1.2.3",
            " 1",
            "NaN",
            "0x10",
            "1.00000000000000000000000000001",
            "10000000000000000000000000000",
        ] {
            assert!(parse_decimal(bad).is_err(), "{bad} should be refused");
        }
        let longest = "9".repeat(MAX_DECIMAL_CHARS);
        assert_eq!(parse_decimal(&longest).unwrap().to_string(), longest);
        let finest = format!("0.{}", "1".repeat(MAX_DECIMAL_CHARS - 2));
        assert_eq!(parse_decimal(&finest).unwrap().to_string(), finest);
    }

    #[test]
    fn rates_are_unsigned() {
        assert_eq!(parse_rate("0.012").unwrap().to_string(), "0.012");
        assert_eq!(parse_rate("0").unwrap().to_string(), "0");
        assert_eq!(parse_rate("-0"), Err(MoneyError::Negative));
        assert_eq!(parse_rate("-1"), Err(MoneyError::Negative));
    }

    #[test]
    fn money_checks_sign_scale_and_currency() {
        assert!(Money::positive("12.50", "EUR").is_ok());
        assert!(
            Money::positive("12.500", "EUR").is_ok(),
            "trailing zeros are not extra precision"
        );
        assert_eq!(
            Money::positive("12.505", "EUR"),
            Err(MoneyError::TooManyDecimals {
                currency: "EUR".into(),
                allowed: 2
            })
        );
        assert_eq!(Money::positive("0", "EUR"), Err(MoneyError::NotPositive));
        assert_eq!(Money::positive("-1", "EUR"), Err(MoneyError::NotPositive));
        assert!(Money::positive("1", "eur").is_err());
        assert!(Money::positive("1.5", "JPY").is_err());
    }

    #[test]
    fn the_iso_4217_list_is_sorted_and_gives_minor_units() {
        assert!(ISO_4217.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ISO_4217
            .iter()
            .all(|(code, _)| Currency::parse(code).is_ok()));
        for (code, units) in [("EUR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("HUF", 0)] {
            assert_eq!(Currency::parse_iso_4217(code).unwrap().minor_units(), units);
        }
        for code in ["ABC", "XXX", "XAU", "eur", "EURO", ""] {
            assert!(Currency::parse_iso_4217(code).is_err(), "{code}");
        }
    }

    #[test]
    fn amounts_format_to_minor_units() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(format_amount(Decimal::new(125, 1), &eur), "12.50");
        assert_eq!(
            format_amount(Decimal::new(7, 0), &Currency::parse("JPY").unwrap()),
            "7"
        );
    }
}

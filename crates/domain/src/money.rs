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

    /// Decimal places of the currency's minor unit (ISO 4217); two unless listed.
    pub fn minor_units(&self) -> u32 {
        match self.0.as_str() {
            "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "XAF" | "XOF" | "HUF" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => 3,
            _ => 2,
        }
    }
}

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
    fn amounts_format_to_minor_units() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(format_amount(Decimal::new(125, 1), &eur), "12.50");
        assert_eq!(
            format_amount(Decimal::new(7, 0), &Currency::parse("JPY").unwrap()),
            "7"
        );
    }
}

//! ISIN (ISO 6166) validation: `CC` country letters, nine alphanumerics, one check digit.
//!
//! The check digit is the Luhn check over the digit string obtained by replacing each letter
//! with its value (A = 10 .. Z = 35). The schema enforces the same rule with the SQL function
//! `ccass_isin_is_valid`.

/// Why a string is not a valid ISIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIsin {
    #[error(
        "isin `{0}` is not two upper-case letters, nine upper-case letters or digits and a digit"
    )]
    Format(String),
    #[error("isin `{isin}` has check digit {found}, expected {expected}")]
    CheckDigit {
        isin: String,
        found: u8,
        expected: u8,
    },
}

pub const ISIN_LEN: usize = 12;

/// Accepts a well-formed ISIN with a correct check digit.
pub fn validate_isin(isin: &str) -> Result<(), InvalidIsin> {
    let bytes = isin.as_bytes();
    let well_formed = bytes.len() == ISIN_LEN
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..11]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && bytes[11].is_ascii_digit();
    if !well_formed {
        return Err(InvalidIsin::Format(isin.to_owned()));
    }
    let expected = isin_check_digit(&bytes[..11]);
    let found = bytes[11] - b'0';
    if found == expected {
        Ok(())
    } else {
        Err(InvalidIsin::CheckDigit {
            isin: isin.to_owned(),
            found,
            expected,
        })
    }
}

/// The check digit for the first eleven characters (upper-case letters and digits only).
fn isin_check_digit(payload: &[u8]) -> u8 {
    let mut digits: Vec<u8> = Vec::with_capacity(2 * payload.len());
    for &byte in payload {
        if byte.is_ascii_digit() {
            digits.push(byte - b'0');
        } else {
            let value = byte - b'A' + 10;
            digits.push(value / 10);
            digits.push(value % 10);
        }
    }
    // Luhn: from the right end of the payload, double every other digit starting with the
    // last one (the check digit would sit to its right).
    let mut sum: u32 = 0;
    for (position_from_right, &digit) in digits.iter().rev().enumerate() {
        let mut value = u32::from(digit);
        if position_from_right % 2 == 0 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    // `sum % 10` is below 10, so the result fits a u8.
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_isins_are_valid() {
        // Goal: published ISINs pass. Method: a few from different countries and letter mixes.
        for isin in [
            "GB0005405286", // HSBC Holdings (incorporated in England)
            "KYG875721634", // Tencent (incorporated in the Cayman Islands)
            "HK0000069689", // AIA Group
            "US0378331005", // Apple
            "GB0002634946", // BAE Systems
            "DE000BAY0017", // Bayer
            "AU0000XVGZA3", // letters in the national part
        ] {
            assert_eq!(validate_isin(isin), Ok(()), "{isin}");
        }
    }

    #[test]
    fn a_wrong_check_digit_names_the_expected_one() {
        assert_eq!(
            validate_isin("HK0005000011"),
            Err(InvalidIsin::CheckDigit {
                isin: "HK0005000011".to_owned(),
                found: 1,
                expected: 0
            })
        );
    }

    #[test]
    fn malformed_isins_are_refused() {
        for bad in [
            "",
            "HK000500001",
            "HK00050000100",
            "hk0005000010",
            "1K0005000010",
            "HK000500001X",
            "HK00050-0010",
        ] {
            assert_eq!(
                validate_isin(bad),
                Err(InvalidIsin::Format(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_single_digit_error_is_caught() {
        // Goal: Luhn catches any one changed digit. Method: change each digit of a valid ISIN.
        let valid = "HK0388045442";
        for position in 2..12 {
            for replacement in b'0'..=b'9' {
                let mut bytes = valid.as_bytes().to_vec();
                if bytes[position] == replacement {
                    continue;
                }
                bytes[position] = replacement;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(validate_isin(&changed).is_err(), "{changed} passed");
            }
        }
    }
}

//! Identifiers shared by every module, validated once at the edge.

use std::fmt;

/// A participant id such as `B01234`: an upper-case letter then five upper-case letters or
/// digits. The CCP is a participant too (`HKSCC0`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "participant id `{0}` is not an upper-case letter followed by five upper-case letters or digits"
)]
pub struct InvalidParticipantId(pub String);

impl ParticipantId {
    pub const LEN: usize = 6;

    pub fn parse(text: &str) -> Result<ParticipantId, InvalidParticipantId> {
        let bytes = text.as_bytes();
        let valid = bytes.len() == Self::LEN
            && bytes[0].is_ascii_uppercase()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if valid {
            Ok(ParticipantId(text.to_owned()))
        } else {
            Err(InvalidParticipantId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", self.0)
    }
}

/// An International Securities Identification Number, check digit verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Isin([u8; 12]);

/// Why a string is not an ISIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IsinError {
    /// Not 2 letters, 9 alphanumerics and a digit.
    #[error("isin must be 2 letters, 9 letters or digits and a check digit")]
    Format,
    /// The Luhn check digit does not match.
    #[error("isin check digit is {expected}, not {found}")]
    CheckDigit {
        /// Computed check digit.
        expected: u8,
        /// Digit in the input.
        found: u8,
    },
}

impl Isin {
    /// Parse and verify the check digit.
    pub fn parse(value: &str) -> Result<Isin, IsinError> {
        let bytes = value.as_bytes();
        let well_formed = bytes.len() == 12
            && bytes[..2].iter().all(u8::is_ascii_uppercase)
            && bytes[2..11]
                .iter()
                .all(|byte| byte.is_ascii_digit() || byte.is_ascii_uppercase())
            && bytes[11].is_ascii_digit();
        if !well_formed {
            return Err(IsinError::Format);
        }
        let expected = isin_check_digit(&bytes[..11]);
        let found = bytes[11] - b'0';
        if expected != found {
            return Err(IsinError::CheckDigit { expected, found });
        }
        let mut isin = [0u8; 12];
        isin.copy_from_slice(bytes);
        Ok(Isin(isin))
    }

    /// Parse the format only, without verifying the check digit (typed views use this so they
    /// can still answer for a message whose ISIN validation has rejected).
    pub fn parse_unchecked(value: &str) -> Result<Isin, IsinError> {
        match Isin::parse(value) {
            Ok(isin) => Ok(isin),
            Err(IsinError::CheckDigit { .. }) => {
                let mut isin = [0u8; 12];
                isin.copy_from_slice(value.as_bytes());
                Ok(Isin(isin))
            }
            Err(error) => Err(error),
        }
    }

    /// Whether the check digit is right.
    pub fn has_valid_check_digit(&self) -> bool {
        isin_check_digit(&self.0[..11]) == self.0[11] - b'0'
    }

    /// The 12 characters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Display for Isin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Luhn check digit over the ISIN's first 11 characters, letters expanded to 10..35.
pub fn isin_check_digit(body: &[u8]) -> u8 {
    // Expand to digits, then Luhn from the rightmost digit (which gets doubled).
    let mut expanded = [0u8; 22];
    let mut length = 0;
    for &byte in body {
        let value = if byte.is_ascii_digit() {
            byte - b'0'
        } else {
            byte.saturating_sub(b'A') + 10
        };
        if value >= 10 {
            expanded[length] = value / 10;
            expanded[length + 1] = value % 10;
            length += 2;
        } else {
            expanded[length] = value;
            length += 1;
        }
    }
    let mut sum = 0u32;
    for (position, &digit) in expanded[..length].iter().rev().enumerate() {
        let mut value = u32::from(digit);
        if position % 2 == 0 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids() {
        for good in ["B01234", "HKSCC0", "C00123"] {
            assert_eq!(ParticipantId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "", "b01234", "B0123", "B012345", "1B0123", "B01.34", "B01*34",
        ] {
            assert_eq!(
                ParticipantId::parse(bad),
                Err(InvalidParticipantId(bad.to_owned()))
            );
        }
    }

    #[test]
    fn known_isins_are_valid() {
        // Goal: published ISINs pass. Method: a few from different countries and letter mixes.
        for isin in [
            "GB0005405286", // HSBC Holdings (incorporated in England)
            "KYG875721634", // Tencent (incorporated in the Cayman Islands)
            "HK0000069689", // AIA Group
            "US0378331005", // Apple
            "DE000BAY0017", // Bayer
            "AU0000XVGZA3", // letters in the national part
        ] {
            assert_eq!(
                Isin::parse(isin).map(|i| i.to_string()),
                Ok(isin.to_owned())
            );
        }
    }

    #[test]
    fn a_wrong_check_digit_names_the_expected_one() {
        assert_eq!(
            Isin::parse("HK0005000011"),
            Err(IsinError::CheckDigit {
                expected: 0,
                found: 1
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
            assert_eq!(Isin::parse(bad), Err(IsinError::Format), "{bad}");
        }
    }
}

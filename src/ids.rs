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
}

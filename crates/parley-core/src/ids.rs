//! Typed IDs, validated once where they enter the system.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use crate::Error;
use crate::ErrorCode;

/// Longest uid or channel ID, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Length of an app ID.
pub const APP_ID_LEN: usize = 32;

/// Characters allowed in a uid or channel ID besides ASCII letters and digits (PRODUCT.md).
const ID_PUNCTUATION: &[u8] = b" !#$%&()+-:;<=.>?@[]^_{}|~,";

fn is_valid_rtm_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id != "null"
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(&byte))
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(raw: String) -> Result<Self, Error> {
                $name::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
    };
}

string_id!(
    /// An app (tenant): 32 ASCII letters or digits, compared case-sensitively.
    AppId
);
string_id!(
    /// A user ID within an app.
    UserId
);
string_id!(
    /// A channel ID within an app.
    ChannelId
);

impl AppId {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.len() == APP_ID_LEN && raw.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            Ok(AppId(raw.into()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidAppId,
                "app id must be 32 ascii letters or digits",
            ))
        }
    }
}

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if is_valid_rtm_id(raw) {
            Ok(UserId(raw.into()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidUserid,
                invalid_id_message("user id", raw),
            ))
        }
    }
}

impl ChannelId {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if is_valid_rtm_id(raw) {
            Ok(ChannelId(raw.into()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidChannelId,
                invalid_id_message("channel id", raw),
            ))
        }
    }
}

fn invalid_id_message(what: &str, raw: &str) -> String {
    if raw.is_empty() {
        format!("{what} is empty")
    } else if raw.len() > MAX_ID_BYTES {
        format!("{what} is longer than {MAX_ID_BYTES} bytes")
    } else if raw == "null" {
        format!("{what} must not be \"null\"")
    } else {
        format!("{what} holds a character outside the allowed set")
    }
}

/// A node of the cluster. In `parley dev` there is one, node 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// One login session: unique within the edge node that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// Where a session lives: the edge node and the session on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionRef {
    pub edge: NodeId,
    pub session: SessionId,
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A server-assigned message ID: milliseconds since 2024-01-01 (41 bits), generator (10 bits),
/// sequence within the millisecond (12 bits). IDs of one generator only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u64);

/// 2024-01-01T00:00:00Z in milliseconds since the Unix epoch.
const MESSAGE_ID_EPOCH_MS: u64 = 1_704_067_200_000;
const GENERATOR_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;

/// Hands out increasing message IDs. One per task that assigns IDs; `generator` tells them apart.
#[derive(Debug)]
pub struct MessageIdGenerator {
    generator: u64,
    last_ms: u64,
    sequence: u64,
}

impl MessageIdGenerator {
    pub fn new(generator: u16) -> Self {
        MessageIdGenerator {
            generator: u64::from(generator) & ((1 << GENERATOR_BITS) - 1),
            last_ms: 0,
            sequence: 0,
        }
    }

    pub fn next(&mut self, now_ms: u64) -> MessageId {
        let ms = now_ms.saturating_sub(MESSAGE_ID_EPOCH_MS);
        if ms > self.last_ms {
            self.last_ms = ms;
            self.sequence = 0;
        } else {
            self.sequence += 1;
            if self.sequence >= 1 << SEQUENCE_BITS {
                // More than 4096 IDs in one millisecond, or the clock went back: borrow from the
                // next millisecond rather than repeat an ID.
                self.last_ms += 1;
                self.sequence = 0;
            }
        }
        MessageId(
            (self.last_ms << (GENERATOR_BITS + SEQUENCE_BITS))
                | (self.generator << SEQUENCE_BITS)
                | self.sequence,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules_match_the_product() {
        for good in [
            "alice",
            "a",
            "user with space",
            "e@mail.com",
            "!#$%&()+-:;<=.>?@[]^_{}|~,",
        ] {
            assert!(UserId::parse(good).is_ok(), "{good}");
            assert!(ChannelId::parse(good).is_ok(), "{good}");
        }
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
        for bad in [
            "",
            "null",
            "a/b",
            "a\"b",
            "é",
            "tab\t",
            "a*b",
            "back\\slash",
            "quote'",
        ] {
            assert_eq!(
                UserId::parse(bad).unwrap_err().code,
                ErrorCode::InvalidUserid,
                "{bad}"
            );
            assert_eq!(
                ChannelId::parse(bad).unwrap_err().code,
                ErrorCode::InvalidChannelId,
                "{bad}"
            );
        }
        assert!(UserId::parse(&"x".repeat(65)).is_err());
        assert!(
            UserId::parse("Null").is_ok(),
            "only the exact string null is reserved"
        );
    }

    #[test]
    fn app_ids_are_32_alphanumerics() {
        assert!(AppId::parse("970CA35de60c44645bbae8a215061b33").is_ok());
        for bad in [
            "",
            "970CA35de60c44645bbae8a215061b3",
            "970CA35de60c44645bbae8a215061b33x",
        ] {
            assert_eq!(AppId::parse(bad).unwrap_err().code, ErrorCode::InvalidAppId);
        }
        assert!(AppId::parse("970CA35de60c44645bbae8a215061b3-").is_err());
    }

    #[test]
    fn message_ids_grow_even_within_one_millisecond() {
        let mut generator = MessageIdGenerator::new(3);
        let now = MESSAGE_ID_EPOCH_MS + 1_000;
        let mut last = generator.next(now);
        for _ in 0..10_000 {
            let next = generator.next(now);
            assert!(next > last);
            last = next;
        }
        // A clock that steps back does not make IDs repeat.
        assert!(generator.next(now - 500) > last);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Validation agrees with the rule as written in PRODUCT.md, byte for byte.
        #[test]
        fn ids_follow_the_rule(raw in "\\PC{0,70}") {
            let allowed = |c: char| c.is_ascii_alphanumeric() || " !#$%&()+-:;<=.>?@[]^_{}|~,".contains(c);
            let valid = !raw.is_empty() && raw.len() <= 64 && raw != "null" && raw.chars().all(allowed);
            prop_assert_eq!(UserId::parse(&raw).is_ok(), valid);
            prop_assert_eq!(ChannelId::parse(&raw).is_ok(), valid);
        }
    }
}

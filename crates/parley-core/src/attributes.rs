//! User and channel attribute operations and their limits (PRODUCT.md F8, F9).

use std::collections::BTreeMap;

use crate::Error;
use crate::ErrorCode;

pub const MAX_KEY_BYTES: usize = 32;
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
pub const MAX_PAIRS: usize = 32;
pub const MAX_USER_TOTAL_BYTES: usize = 16 * 1024;
pub const MAX_CHANNEL_TOTAL_BYTES: usize = 32 * 1024;

/// One write to a set of attributes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttributeOp {
    /// Replace everything with these.
    Set(BTreeMap<String, String>),
    AddOrUpdate(BTreeMap<String, String>),
    DeleteKeys(Vec<String>),
    Clear,
}

impl AttributeOp {
    /// Checks keys and values on their own, before any current state is known.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            AttributeOp::Set(pairs) | AttributeOp::AddOrUpdate(pairs) => {
                if pairs.is_empty() && matches!(self, AttributeOp::AddOrUpdate(_)) {
                    return Err(Error::invalid_argument("no attributes given"));
                }
                for (key, value) in pairs {
                    validate_key(key)?;
                    if value.len() > MAX_VALUE_BYTES {
                        return Err(Error::new(
                            ErrorCode::SizeOverflow,
                            format!("value of {key:?} is larger than {MAX_VALUE_BYTES} bytes"),
                        ));
                    }
                }
                Ok(())
            }
            AttributeOp::DeleteKeys(keys) => {
                if keys.is_empty() {
                    return Err(Error::invalid_argument("no keys given"));
                }
                keys.iter().try_for_each(|key| validate_key(key))
            }
            AttributeOp::Clear => Ok(()),
        }
    }

    /// Applies the operation to `current` and checks the limits of the result. `make` builds a
    /// stored value from a new string value.
    pub fn apply<V: Clone>(
        &self,
        current: &BTreeMap<String, V>,
        max_total_bytes: usize,
        value_of: impl Fn(&V) -> &str,
        make: impl Fn(&str) -> V,
    ) -> Result<BTreeMap<String, V>, Error> {
        self.validate()?;
        let mut next = match self {
            AttributeOp::Set(_) | AttributeOp::Clear => BTreeMap::new(),
            _ => current.clone(),
        };
        match self {
            AttributeOp::Set(pairs) | AttributeOp::AddOrUpdate(pairs) => {
                for (key, value) in pairs {
                    next.insert(key.clone(), make(value));
                }
            }
            AttributeOp::DeleteKeys(keys) => {
                for key in keys {
                    next.remove(key);
                }
            }
            AttributeOp::Clear => {}
        }
        if next.len() > MAX_PAIRS {
            return Err(Error::new(
                ErrorCode::ExceedLimit,
                format!("at most {MAX_PAIRS} attributes are allowed"),
            ));
        }
        let total: usize = next
            .iter()
            .map(|(key, value)| key.len() + value_of(value).len())
            .sum();
        if total > max_total_bytes {
            return Err(Error::new(
                ErrorCode::SizeOverflow,
                format!("attributes would take {total} bytes, more than {max_total_bytes}"),
            ));
        }
        Ok(next)
    }
}

fn validate_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(Error::invalid_argument(format!(
            "attribute key must be 1 to {MAX_KEY_BYTES} bytes"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn apply(
        current: &BTreeMap<String, String>,
        op: AttributeOp,
    ) -> Result<BTreeMap<String, String>, Error> {
        op.apply(current, MAX_USER_TOTAL_BYTES, String::as_str, str::to_owned)
    }

    #[test]
    fn every_operation() {
        let start = pairs(&[("a", "1"), ("b", "2")]);
        assert_eq!(
            apply(&start, AttributeOp::Set(pairs(&[("c", "3")]))),
            Ok(pairs(&[("c", "3")]))
        );
        assert_eq!(
            apply(
                &start,
                AttributeOp::AddOrUpdate(pairs(&[("b", "20"), ("c", "3")]))
            ),
            Ok(pairs(&[("a", "1"), ("b", "20"), ("c", "3")]))
        );
        assert_eq!(
            apply(
                &start,
                AttributeOp::DeleteKeys(vec!["a".into(), "zz".into()])
            ),
            Ok(pairs(&[("b", "2")]))
        );
        assert_eq!(apply(&start, AttributeOp::Clear), Ok(BTreeMap::new()));
    }

    #[test]
    fn limits_at_their_edges() {
        let empty = BTreeMap::new();
        let key32 = "k".repeat(32);
        assert!(apply(&empty, AttributeOp::Set(pairs(&[(&key32, "v")]))).is_ok());
        let error = apply(&empty, AttributeOp::Set(pairs(&[(&"k".repeat(33), "v")]))).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        let error = apply(&empty, AttributeOp::Set(pairs(&[("", "v")]))).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);

        let value8k = "v".repeat(MAX_VALUE_BYTES);
        assert!(apply(&empty, AttributeOp::Set(pairs(&[("k", &value8k)]))).is_ok());
        let error = apply(
            &empty,
            AttributeOp::Set(pairs(&[("k", &format!("{value8k}v"))])),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::SizeOverflow);

        let thirty_two: BTreeMap<String, String> =
            (0..32).map(|n| (format!("k{n}"), "v".into())).collect();
        assert!(apply(&empty, AttributeOp::Set(thirty_two.clone())).is_ok());
        let error = apply(
            &thirty_two,
            AttributeOp::AddOrUpdate(pairs(&[("one-more", "v")])),
        )
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::ExceedLimit);

        // 16 KB in all for a user: two values of 8 KB minus their keys fit, a byte more does not.
        let half = "v".repeat(MAX_USER_TOTAL_BYTES / 2 - 1);
        let full = pairs(&[("a", &half), ("b", &half)]);
        assert!(apply(&empty, AttributeOp::Set(full.clone())).is_ok());
        let error = apply(&full, AttributeOp::AddOrUpdate(pairs(&[("c", "")]))).unwrap_err();
        assert_eq!(error.code, ErrorCode::SizeOverflow);
        // A channel may hold 32 KB.
        let channel = AttributeOp::Set(pairs(&[("a", &value8k), ("b", &value8k), ("c", &value8k)]));
        assert!(
            channel
                .apply(
                    &empty,
                    MAX_CHANNEL_TOTAL_BYTES,
                    String::as_str,
                    str::to_owned
                )
                .is_ok()
        );
        assert!(apply(&empty, channel).is_err());

        assert_eq!(
            apply(&empty, AttributeOp::DeleteKeys(vec![]))
                .unwrap_err()
                .code,
            ErrorCode::InvalidArgument
        );
    }
}

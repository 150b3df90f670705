//! Order-preserving byte keys: NUL-terminated strings (IDs are printable ASCII, so they never
//! contain NUL), then big-endian integers appended by the caller.

pub(crate) struct Key(Vec<u8>);

impl Key {
    pub(crate) fn new(table_tag: u8) -> Key {
        Key(vec![table_tag])
    }

    pub(crate) fn str(mut self, part: &str) -> Key {
        self.0.extend_from_slice(part.as_bytes());
        self.0.push(0);
        self
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The first key after every key that starts with `prefix`, which ends with a string's NUL.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut()
        .expect("prefixes end with a string terminator") = 1;
    end
}

/// Reads the big-endian u64 at `from_end` bytes before the end of `key`.
pub(crate) fn u64_at_end(key: &[u8], from_end: usize) -> u64 {
    let start = key.len() - from_end;
    u64::from_be_bytes(key[start..start + 8].try_into().expect("8 bytes"))
}

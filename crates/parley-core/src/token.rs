//! Agora-format RTM tokens: "006" AccessToken and "007" AccessToken2.
//!
//! Verification is byte-compatible with tokens from Agora's official builders, so an app's existing
//! token server keeps working. Time is passed in (`now_secs`), never read here.

use std::io::Read;
use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::Hmac;
use hmac::Mac;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Privilege 1000 of a "006" token: RTM login.
const PRIVILEGE_RTM_LOGIN_006: u16 = 1000;
/// Service type 2 of a "007" token: RTM; its privilege 1 is login.
const SERVICE_RTM: u16 = 2;
const PRIVILEGE_RTM_LOGIN_007: u16 = 1;
/// Decompressed "007" tokens are small; anything larger is hostile.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed or its signature does not verify")]
    Invalid,
    #[error("token has expired")]
    Expired,
}

/// What a verified token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Unix seconds after which the login privilege ends; `None` when it never does.
    pub expires_at: Option<u64>,
}

/// Verifies an RTM login token for `uid` of `app_id` at `now_secs`.
pub fn verify(
    token: &str,
    app_id: &str,
    app_certificate: &str,
    uid: &str,
    now_secs: u64,
) -> Result<Grant, TokenError> {
    let grant = if let Some(rest) = token.strip_prefix("007") {
        verify_007(rest, app_id, app_certificate, uid)?
    } else if let Some(rest) = token.strip_prefix("006") {
        verify_006(rest, app_id, app_certificate, uid)?
    } else {
        return Err(TokenError::Invalid);
    };
    match grant.expires_at {
        Some(expires_at) if now_secs >= expires_at => Err(TokenError::Expired),
        _ => Ok(grant),
    }
}

fn verify_006(rest: &str, app_id: &str, certificate: &str, uid: &str) -> Result<Grant, TokenError> {
    let (token_app_id, encoded) = rest.split_at_checked(32).ok_or(TokenError::Invalid)?;
    if token_app_id != app_id {
        return Err(TokenError::Invalid);
    }
    let content = BASE64.decode(encoded).map_err(|_| TokenError::Invalid)?;
    let mut reader = Reader::new(&content);
    let signature = reader.bytes()?;
    let crc_channel = reader.u32()?;
    let _crc_uid = reader.u32()?;
    let message = reader.bytes()?;
    reader.finish()?;

    // Agora's RTM builder puts the account in the channel-name slot and leaves uid empty.
    if crc_channel != crc32fast::hash(uid.as_bytes()) {
        return Err(TokenError::Invalid);
    }
    let expected = hmac(
        certificate.as_bytes(),
        &[app_id.as_bytes(), uid.as_bytes(), message],
    );
    if !constant_time_eq(&expected, signature) {
        return Err(TokenError::Invalid);
    }

    let mut message = Reader::new(message);
    let _salt = message.u32()?;
    let token_expires_at = message.u32()?;
    let mut login_expires_at = None;
    for _ in 0..message.u16()? {
        let privilege = message.u16()?;
        let expires_at = message.u32()?;
        if privilege == PRIVILEGE_RTM_LOGIN_006 {
            login_expires_at = Some(expires_at);
        }
    }
    message.finish()?;
    let login_expires_at = login_expires_at.ok_or(TokenError::Invalid)?;
    // Zero means "no expiry" for a privilege in the 006 format.
    let expires_at = [token_expires_at, login_expires_at]
        .into_iter()
        .filter(|&at| at != 0)
        .min()
        .map(u64::from);
    Ok(Grant { expires_at })
}

fn verify_007(rest: &str, app_id: &str, certificate: &str, uid: &str) -> Result<Grant, TokenError> {
    let compressed = BASE64.decode(rest).map_err(|_| TokenError::Invalid)?;
    let mut content = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut content)
        .map_err(|_| TokenError::Invalid)?;
    if content.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Invalid);
    }
    let mut reader = Reader::new(&content);
    let signature = reader.bytes()?;
    let signing_info = reader.rest();

    let mut info = Reader::new(signing_info);
    let token_app_id = info.bytes()?;
    let issued_at = info.u32()?;
    let expire = info.u32()?;
    let salt = info.u32()?;
    if token_app_id != app_id.as_bytes() {
        return Err(TokenError::Invalid);
    }
    let signing_key = hmac(
        &salt.to_le_bytes(),
        &[&hmac(&issued_at.to_le_bytes(), &[certificate.as_bytes()])],
    );
    if !constant_time_eq(&hmac(&signing_key, &[signing_info]), signature) {
        return Err(TokenError::Invalid);
    }

    let mut login_expire = None;
    for _ in 0..info.u16()? {
        let service_type = info.u16()?;
        let mut privileges = Vec::new();
        for _ in 0..info.u16()? {
            privileges.push((info.u16()?, info.u32()?));
        }
        match service_type {
            // RTC: channel name and uid.
            1 => {
                info.bytes()?;
                info.bytes()?;
            }
            SERVICE_RTM => {
                if info.bytes()? != uid.as_bytes() {
                    return Err(TokenError::Invalid);
                }
                login_expire = privileges
                    .iter()
                    .find(|(privilege, _)| *privilege == PRIVILEGE_RTM_LOGIN_007)
                    .map(|(_, expire)| *expire);
            }
            // FPA: privileges only.
            4 => {}
            // Chat: user ID.
            5 => {
                info.bytes()?;
            }
            // aPaaS: room, user, role.
            7 => {
                info.bytes()?;
                info.bytes()?;
                info.u16()?;
            }
            _ => return Err(TokenError::Invalid),
        }
    }
    info.finish()?;
    let login_expire = login_expire.ok_or(TokenError::Invalid)?;
    // In 007 both the token's and the privilege's expiry are seconds after issue; 0 means none.
    let expires_at = [expire, login_expire]
        .into_iter()
        .filter(|&seconds| seconds != 0)
        .min()
        .map(|seconds| u64::from(issued_at) + u64::from(seconds));
    Ok(Grant { expires_at })
}

/// Builds a "007" RTM token the way Agora's `RtmTokenBuilder.buildToken` does.
pub fn build_007(
    app_id: &str,
    app_certificate: &str,
    uid: &str,
    expire_secs: u32,
    issued_at: u32,
    salt: u32,
) -> String {
    let mut info = Vec::new();
    put_bytes(&mut info, app_id.as_bytes());
    info.extend_from_slice(&issued_at.to_le_bytes());
    info.extend_from_slice(&expire_secs.to_le_bytes());
    info.extend_from_slice(&salt.to_le_bytes());
    info.extend_from_slice(&1u16.to_le_bytes());
    info.extend_from_slice(&SERVICE_RTM.to_le_bytes());
    info.extend_from_slice(&1u16.to_le_bytes());
    info.extend_from_slice(&PRIVILEGE_RTM_LOGIN_007.to_le_bytes());
    info.extend_from_slice(&expire_secs.to_le_bytes());
    put_bytes(&mut info, uid.as_bytes());

    let signing_key = hmac(
        &salt.to_le_bytes(),
        &[&hmac(
            &issued_at.to_le_bytes(),
            &[app_certificate.as_bytes()],
        )],
    );
    let mut content = Vec::new();
    put_bytes(&mut content, &hmac(&signing_key, &[&info]));
    content.extend_from_slice(&info);

    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&content)
        .expect("writing to a Vec cannot fail");
    let compressed = encoder.finish().expect("writing to a Vec cannot fail");
    format!("007{}", BASE64.encode(compressed))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(expected: &[u8], actual: &[u8]) -> bool {
    expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("token fields are short");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Little-endian reader over Agora's packing: u16-length-prefixed byte strings and fixed ints.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], TokenError> {
        let (head, tail) = self.rest.split_at_checked(len).ok_or(TokenError::Invalid)?;
        self.rest = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, TokenError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, TokenError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], TokenError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    fn finish(&self) -> Result<(), TokenError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(TokenError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";

    /// Every vector made by Agora's official builders comes out as its `expect` says, with the
    /// clock injected at `verify_at`.
    #[test]
    fn agora_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/agora-tokens.json");
        let vectors: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read token vectors"))
                .unwrap();
        let vectors = vectors["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 70);
        for vector in vectors {
            let field = |name: &str| vector[name].as_str().unwrap();
            let outcome = verify(
                field("token"),
                field("app_id"),
                field("app_certificate"),
                field("uid"),
                vector["verify_at"].as_u64().unwrap(),
            );
            let got = match outcome {
                Ok(_) => "valid",
                Err(TokenError::Expired) => "expired",
                Err(TokenError::Invalid) => "invalid",
            };
            assert_eq!(got, field("expect"), "vector {vector}");
        }
    }

    #[test]
    fn built_tokens_verify_until_they_expire() {
        let token = build_007(APP_ID, CERTIFICATE, "alice", 600, 1_800_000_000, 42);
        let grant = verify(&token, APP_ID, CERTIFICATE, "alice", 1_800_000_000).unwrap();
        assert_eq!(grant.expires_at, Some(1_800_000_600));
        assert_eq!(
            verify(&token, APP_ID, CERTIFICATE, "alice", 1_800_000_600),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&token, APP_ID, CERTIFICATE, "bob", 1_800_000_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify(
                &token,
                APP_ID,
                "0000000000000000000000000000000x",
                "alice",
                1_800_000_000
            ),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn hostile_tokens_are_rejected_without_panicking() {
        for token in [
            "",
            "0",
            "006",
            "007",
            "007====",
            "008abc",
            &format!("006{APP_ID}"),
            "006短",
        ] {
            assert_eq!(
                verify(token, APP_ID, CERTIFICATE, "alice", 0),
                Err(TokenError::Invalid),
                "{token:?}"
            );
        }
        // A zlib bomb: a tiny token that inflates far beyond any real token.
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = format!("007{}", BASE64.encode(encoder.finish().unwrap()));
        assert_eq!(
            verify(&bomb, APP_ID, CERTIFICATE, "alice", 0),
            Err(TokenError::Invalid)
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";

    proptest! {
        /// Arbitrary input never panics the verifier and never passes as a token.
        #[test]
        fn arbitrary_strings_are_rejected(token in ".{0,300}") {
            let outcome = verify(&token, APP_ID, CERTIFICATE, "alice", 1_800_000_000);
            prop_assert!(outcome.is_err());
        }

        /// Arbitrary bytes behind a valid prefix never panic either.
        #[test]
        fn arbitrary_007_payloads_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&bytes).unwrap();
            let token = format!("007{}", BASE64.encode(encoder.finish().unwrap()));
            prop_assert!(verify(&token, APP_ID, CERTIFICATE, "alice", 0).is_err());
            let token = format!("006{APP_ID}{}", BASE64.encode(&bytes));
            prop_assert!(verify(&token, APP_ID, CERTIFICATE, "alice", 0).is_err());
        }

        /// Built tokens verify for their uid until they expire, and for no other uid.
        #[test]
        fn built_tokens_round_trip(
            uid in "[a-zA-Z0-9 @._-]{1,64}",
            expire in 1u32..100_000,
            issued_at in 1_600_000_000u32..2_000_000_000,
            salt in any::<u32>(),
        ) {
            let token = build_007(APP_ID, CERTIFICATE, &uid, expire, issued_at, salt);
            let grant = verify(&token, APP_ID, CERTIFICATE, &uid, u64::from(issued_at)).unwrap();
            prop_assert_eq!(grant.expires_at, Some(u64::from(issued_at) + u64::from(expire)));
            prop_assert_eq!(
                verify(&token, APP_ID, CERTIFICATE, &uid, u64::from(issued_at) + u64::from(expire)),
                Err(TokenError::Expired)
            );
            let other = format!("{uid}x");
            prop_assert!(verify(&token, APP_ID, CERTIFICATE, &other, u64::from(issued_at)).is_err());
        }
    }
}

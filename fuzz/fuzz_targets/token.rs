//! The RTM token verifier, against arbitrary tokens and uids: it answers without panicking,
//! accepts nothing it did not sign, and a token built for one uid verifies for that uid only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_core::token;

const APP_ID: &str = "970ca35de60c44645bbae8a215061b33";
const CERTIFICATE: &str = "5cfd2fd1755d40ecb72977518be15d3b";
const NOW: u32 = 1_700_000_000;

fuzz_target!(|input: (&str, &str, u32, u32)| {
    let (forged, uid, expire_secs, salt) = input;
    // The fuzzer does not know the certificate: nothing it writes may pass.
    let verdict = token::verify(forged, APP_ID, CERTIFICATE, uid, u64::from(NOW));
    assert!(verdict.is_err(), "accepted a forged token: {verdict:?}");
    // Issued now, so never expired yet (0 = no expiry).
    let built = token::build_007(APP_ID, CERTIFICATE, uid, expire_secs, NOW, salt);
    let verdict = token::verify(&built, APP_ID, CERTIFICATE, uid, u64::from(NOW));
    assert!(verdict.is_ok(), "refused its own token: {verdict:?}");
    let other = format!("{uid}x");
    assert!(token::verify(&built, APP_ID, CERTIFICATE, &other, u64::from(NOW)).is_err());
    assert!(
        token::verify(
            &built,
            APP_ID,
            "5cfd2fd1755d40ecb72977518be15d3c",
            uid,
            u64::from(NOW)
        )
        .is_err()
    );
});

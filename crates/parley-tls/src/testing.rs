//! A throwaway certificate authority for tests: it writes PEM files into a directory and signs
//! certificates for `localhost` and `127.0.0.1`.

use std::path::Path;
use std::path::PathBuf;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;

use crate::CertFiles;

pub struct TestPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The authority's certificate (PEM), what clients trust.
    pub ca: PathBuf,
}

impl TestPki {
    /// A new authority, its certificate written to `dir/ca.pem` (`dir` is made if need be).
    pub fn new(dir: &Path) -> TestPki {
        std::fs::create_dir_all(dir).expect("create the directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "parley test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write CA");
        TestPki {
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// Signs a certificate for `localhost` and `127.0.0.1` with common name `name`, written to
    /// `dir/<file>.pem` and `dir/<file>.key` (overwriting them: a renewal).
    pub fn issue(&self, file: &str, name: &str) -> CertFiles {
        self.issue_for(file, name, &["localhost", "127.0.0.1"])
    }

    /// [`TestPki::issue`], for these DNS names and IP addresses.
    pub fn issue_for(&self, file: &str, name: &str, names: &[&str]) -> CertFiles {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

/// The common name of a DER certificate's subject, for tests that ask which certificate a
/// server presented (a plain search: enough for certificates [`TestPki`] made).
pub fn common_name(der: &[u8]) -> Option<String> {
    // id-at-commonName (2.5.4.3) then a UTF8String or PrintableString.
    const CN: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut found = None;
    for start in 0..der.len().saturating_sub(CN.len() + 2) {
        if der[start..start + CN.len()] == CN {
            let length = usize::from(der[start + CN.len() + 1]);
            let value = der.get(start + CN.len() + 2..start + CN.len() + 2 + length)?;
            // The subject comes after the issuer: keep the last.
            found = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    found
}

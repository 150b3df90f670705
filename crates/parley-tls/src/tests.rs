use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;
use crate::testing::TestPki;
use crate::testing::common_name;

/// Serves TLS on 127.0.0.1:0: each connection gets one byte back for each it sends.
async fn echo_server(config: Arc<ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut stream = ServerStream::new(tcp, Some(&acceptor));
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                while stream.read_exact(&mut byte).await.is_ok() {
                    if stream.write_all(&byte).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// Connects, echoes one byte, and names the certificate the server presented.
async fn presented(config: Arc<ClientConfig>, port: u16) -> std::io::Result<String> {
    let mut stream = connect(config, "127.0.0.1", port).await?;
    stream.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    let (_, session) = stream.get_ref();
    let der = session.peer_certificates().expect("a certificate")[0].to_vec();
    Ok(common_name(&der).expect("a common name"))
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempdir();
    let pki = TestPki::new(&dir);
    let files = pki.issue("server", "first");
    let cert = ReloadingCert::load(files.clone()).unwrap();
    let port = echo_server(server_config(cert, None).unwrap()).await;
    // A new client each time: a resumed session would not show the certificate again.
    let client = || client_config(roots_from_file(&pki.ca).unwrap(), None, &[]).unwrap();
    assert_eq!(presented(client(), port).await.unwrap(), "first");

    pki.issue("server", "second");
    tokio::time::sleep(RECHECK_EVERY + Duration::from_millis(100)).await;
    assert_eq!(presented(client(), port).await.unwrap(), "second");

    // A broken file (a renewal half written) keeps the pair that works.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(RECHECK_EVERY + Duration::from_millis(100)).await;
    assert_eq!(presented(client(), port).await.unwrap(), "second");
}

#[tokio::test]
async fn with_client_roots_only_clients_the_authority_signed_get_in() {
    let dir = tempdir();
    let pki = TestPki::new(&dir);
    let server = ReloadingCert::load(pki.issue("server", "node-1")).unwrap();
    let roots = || roots_from_file(&pki.ca).unwrap();
    let port = echo_server(server_config(server, Some(roots())).unwrap()).await;

    let member = ReloadingCert::load(pki.issue("client", "node-2")).unwrap();
    let with_cert = client_config(roots(), Some(member), &[b"h2"]).unwrap();
    assert_eq!(presented(with_cert, port).await.unwrap(), "node-1");

    let without_cert = client_config(roots(), None, &[b"h2"]).unwrap();
    assert!(presented(without_cert, port).await.is_err());

    let other_dir = tempdir();
    let stranger = TestPki::new(&other_dir);
    let foreign = ReloadingCert::load(stranger.issue("client", "intruder")).unwrap();
    let with_foreign_cert = client_config(roots(), Some(foreign), &[b"h2"]).unwrap();
    assert!(presented(with_foreign_cert, port).await.is_err());
}

#[tokio::test]
async fn a_client_refuses_a_server_its_roots_did_not_sign() {
    let dir = tempdir();
    let pki = TestPki::new(&dir);
    let cert = ReloadingCert::load(pki.issue("server", "node")).unwrap();
    let port = echo_server(server_config(cert, None).unwrap()).await;
    let other_dir = tempdir();
    let other = TestPki::new(&other_dir);
    let client = client_config(roots_from_file(&other.ca).unwrap(), None, &[]).unwrap();
    assert!(presented(client, port).await.is_err());
}

#[tokio::test]
async fn plain_text_to_a_tls_port_gets_nothing_back() {
    let dir = tempdir();
    let pki = TestPki::new(&dir);
    let cert = ReloadingCert::load(pki.issue("server", "node")).unwrap();
    let port = echo_server(server_config(cert, None).unwrap()).await;
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    // Closed (or reset) without an HTTP answer: at most a TLS alert.
    if let Ok(Ok(_)) = read {
        assert!(!answer.starts_with(b"HTTP"), "{answer:?}");
    }
}

#[test]
fn bad_files_are_named() {
    let dir = tempdir();
    let pki = TestPki::new(&dir);
    let files = pki.issue("server", "node");
    let other = pki.issue("other", "node");
    let missing = CertFiles {
        cert: dir.join("missing.pem"),
        key: files.key.clone(),
    };
    assert!(matches!(
        ReloadingCert::load(missing),
        Err(TlsError::Read { .. })
    ));
    let mismatched = CertFiles {
        cert: files.cert.clone(),
        key: other.key,
    };
    let error = ReloadingCert::load(mismatched).unwrap_err().to_string();
    assert!(error.contains("server.pem"), "{error}");
    let swapped = CertFiles {
        cert: files.key.clone(),
        key: files.cert.clone(),
    };
    assert!(matches!(
        ReloadingCert::load(swapped),
        Err(TlsError::NoCertificate { .. })
    ));
    assert!(matches!(
        roots_from_file(&files.key),
        Err(TlsError::NoCertificate { .. })
    ));
}

/// A fresh directory under the system's temp dir (left there: a few small files).
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "parley-tls-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

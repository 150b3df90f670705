//! An edge's client port before any request is read: how many connections one address may
//! hold, and how long a connection has to get its first request through (slow or silent
//! clients must not hold sockets forever), how many and how large headers may be; and how many
//! sessions one app may hold on an edge.

use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use parley_client::Client;
use parley_client::ClientConfig;
use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::request::Op;
use parley_testkit::OTHER_APP_ID;
use parley_testkit::PROMPTLY;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;

/// Whether the server closes `stream` within `within` (end of stream or a reset).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 512];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            // An HTTP error answer before the close is a close all the same.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

async fn pong(client: &mut RawClient) {
    let reply = client.call(Op::Ping(v1::PingRequest {})).await;
    assert!(reply.error.is_none(), "{reply:?}");
}

async fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(local.parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let server = TestServer::builder()
        .edge(|edge| edge.max_connections_per_address = 3)
        .start()
        .await;
    let (url, address) = (server.edge_urls()[0].clone(), server.http_addresses()[0]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(RawClient::connect(&url, Codec::Json).await);
    }
    // A fourth from 127.0.0.1 is closed as soon as it is accepted, before any request.
    let mut fourth = connect_from("127.0.0.1:0", address).await;
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    assert!(closed_by_server(&mut fourth, PROMPTLY).await);
    for client in &mut clients {
        pong(client).await;
    }
    // Another address is counted apart.
    let mut other = connect_from("127.0.0.2:0", address).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    other.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    // A connection that ends gives its place back.
    drop(clients.pop());
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let mut probe = connect_from("127.0.0.1:0", address).await;
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok();
        let mut answer = [0u8; 12];
        if probe.read_exact(&mut answer).await.is_ok() && &answer == b"HTTP/1.1 200" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_without_a_request_in_time_is_closed() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::builder()
        .edge(|edge| edge.handshake_timeout = timeout)
        .start()
        .await;
    let (url, address) = (server.edge_urls()[0].clone(), server.http_addresses()[0]);

    // Headers that never end (a slowloris), and a client that says nothing at all.
    let started = Instant::now();
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /v1/ws HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(address).await.unwrap();
    assert!(closed_by_server(&mut slow, PROMPTLY).await);
    assert!(closed_by_server(&mut silent, PROMPTLY).await);
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(50),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );

    // A client whose upgrade came through in time stays connected past it.
    let mut client = RawClient::connect(&url, Codec::Proto).await;
    tokio::time::sleep(timeout * 2).await;
    pong(&mut client).await;
}

#[tokio::test]
async fn one_app_holds_at_most_its_share_of_an_edges_sessions() {
    let server = TestServer::builder()
        .second_app()
        .edge(|edge| edge.max_sessions_per_app = 2)
        .start()
        .await;
    let url = server.edge_urls()[0].clone();
    let login = |app: &'static str, uid: &str| {
        let config = ClientConfig::new(&url, app, uid).reconnect(false);
        let config = if app == server.app_id() {
            config.token(server.token(uid))
        } else {
            config
        };
        Client::login(config)
    };
    let app = server.app_id();
    let (first, _first_events) = login(app, "u1").await.unwrap();
    let (_second, _second_events) = login(app, "u2").await.unwrap();
    let refused = login(app, "u3")
        .await
        .err()
        .expect("a third session refused");
    assert_eq!(refused.code, v1::ErrorCode::ExceedLimit, "{refused:?}");

    // Another app on the same edge is not held back by it.
    let (_other, _other_events) = login(OTHER_APP_ID, "u1").await.unwrap();

    // A session that ends gives its place back.
    first.logout().await.unwrap();
    let (_third, _third_events) = login(app, "u3").await.unwrap();
}

/// What the server answers `request` with before it closes (at most 4 KB of it).
async fn answer_to(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = vec![0u8; 4096];
    let mut read = 0;
    while read < answer.len() {
        match tokio::time::timeout(PROMPTLY, stream.read(&mut answer[read..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n,
            Err(_) => panic!("no answer and no close in time"),
        }
    }
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused() {
    let server = TestServer::start().await;
    let address = server.http_addresses()[0];
    let mut many = b"GET /v1/ws HTTP/1.1\r\nhost: x\r\n".to_vec();
    for n in 0..120 {
        many.extend_from_slice(format!("x-header-{n}: {n}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let answer = answer_to(address, &many).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    let mut large = b"GET /v1/ws HTTP/1.1\r\nhost: x\r\nx-large: ".to_vec();
    large.extend(std::iter::repeat_n(b'a', 600 * 1024));
    large.extend_from_slice(b"\r\n\r\n");
    let answer = answer_to(address, &large).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // The port still serves.
    let mut client = RawClient::connect(&server.edge_urls()[0], Codec::Proto).await;
    pong(&mut client).await;
}

//! Lean WebSocket clients for Parley and for the systems it is compared with (NATS, MQTT 5,
//! Socket.IO 4): connect from a chosen source address, log in, subscribe to a channel, publish,
//! and keep the connection alive, each speaking its own protocol.
//!
//! They decode only what a measurement needs: a delivery is found by the marker every payload
//! starts with (`~lt~` and the intended send time in microseconds, 16 digits), so one frame costs
//! the generator a scan, not a full decode. Frames that hold several messages (NATS and MQTT may
//! coalesce) count each marker.

use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use futures_util::SinkExt;
use futures_util::StreamExt;
use parley_proto::v1;
use prost::Message as _;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What every payload starts with, before the intended send time.
pub const MARKER: &[u8] = b"~lt~";
/// Digits of the send time after the marker.
const TIME_DIGITS: usize = 16;
/// Connections per source address: below the ~28k ephemeral ports one address has, and no more
/// than an edge takes from one address by default (`--max-connections-per-address`).
pub const PER_SOURCE_ADDRESS: usize = 10_000;
/// How long a login or subscription may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The system under test.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Parley's protobuf WebSocket protocol (`/v1/ws`).
    Parley,
    /// nats-server's WebSocket listener (NATS text protocol).
    Nats,
    /// MQTT 5 over WebSocket, QoS 0, no-local subscriptions.
    Mqtt,
    /// MQTT 5 over plain TCP (`tcp://host:port`), for brokers without WebSocket (Debian's
    /// Mosquitto 2.0.11 is built without it).
    MqttTcp,
    /// Socket.IO 4 over its WebSocket transport (loadtest/peers/socketio).
    Socketio,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Parley => "parley",
            Protocol::Nats => "nats",
            Protocol::Mqtt => "mqtt",
            Protocol::MqttTcp => "mqtt-tcp",
            Protocol::Socketio => "socketio",
        }
    }

    /// How often an idle connection must show it is alive (the protocol's own keep-alive).
    pub fn keepalive(self) -> Option<Duration> {
        match self {
            // The SDKs ping every heartbeat interval (5 s); the server gives up after three.
            Protocol::Parley => Some(Duration::from_secs(5)),
            // The servers ping and the client answers (NATS, Socket.IO); MQTT's keep-alive is off.
            Protocol::Nats | Protocol::Mqtt | Protocol::MqttTcp | Protocol::Socketio => None,
        }
    }
}

/// A payload of `size` bytes (at least the marker and the time) carrying its intended send time.
pub fn payload(intended_micros: u64, size: usize) -> String {
    let mut text = format!("~lt~{intended_micros:016}");
    if text.len() < size {
        text.push_str(&"x".repeat(size - text.len()));
    }
    text
}

/// The intended send times of the deliveries in one received frame.
pub fn deliveries(frame: &[u8], mut each: impl FnMut(u64)) {
    let mut rest = frame;
    while let Some(at) = find(rest, MARKER) {
        let digits = &rest[at + MARKER.len()..];
        let micros = digits
            .get(..TIME_DIGITS)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse().ok());
        if let Some(micros) = micros {
            each(micros);
        }
        rest = &rest[at + MARKER.len()..];
    }
}

/// The error a Parley reply carries (a refused send), if `frame` is one.
pub fn refusal(protocol: Protocol, frame: &[u8]) -> Option<String> {
    if protocol != Protocol::Parley {
        return None;
    }
    let error = reply(frame)?.err()?;
    Some(format!("{} {}", error.code, error.message))
}

/// How a Parley reply (to a request of ours) ended, if `frame` is one.
pub fn reply(frame: &[u8]) -> Option<Result<(), v1::Error>> {
    match v1::ServerFrame::decode(frame).ok()?.kind? {
        v1::server_frame::Kind::Reply(v1::Reply {
            error: Some(error), ..
        }) => Some(Err(error)),
        v1::server_frame::Kind::Reply(_) => Some(Ok(())),
        _ => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The local address connection `index` comes from: 127.0.0.2 for the first
/// [`PER_SOURCE_ADDRESS`], then 127.0.0.3, … (each address has its own ephemeral ports).
pub fn source_address(index: usize) -> Ipv4Addr {
    let n = 2 + (index / PER_SOURCE_ADDRESS) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)
}

/// One logged-in connection to the system under test.
pub struct Lean {
    pub protocol: Protocol,
    socket: Transport,
    next_id: u64,
}

/// A WebSocket, or for MQTT over TCP the stream and what was read of a packet not yet whole.
enum Transport {
    WebSocket(Box<WebSocketStream<TcpStream>>),
    Tcp { stream: TcpStream, read: Vec<u8> },
}

impl Lean {
    /// Connects from [`source_address`]`(index)` and logs in as `uid` (Parley) or opens the
    /// protocol's session.
    pub async fn connect(
        protocol: Protocol,
        url: &str,
        app_id: &str,
        index: usize,
        uid: &str,
    ) -> anyhow::Result<Lean> {
        tokio::time::timeout(SETUP_TIMEOUT, Self::open(protocol, url, app_id, index, uid))
            .await
            .context("connect timed out")?
    }

    async fn open(
        protocol: Protocol,
        url: &str,
        app_id: &str,
        index: usize,
        uid: &str,
    ) -> anyhow::Result<Lean> {
        if protocol == Protocol::MqttTcp {
            let address = url
                .strip_prefix("tcp://")
                .context("mqtt-tcp needs a tcp:// url")?;
            let server: SocketAddr = address.parse().context("url host is an IP and a port")?;
            let mut lean = Lean {
                protocol,
                socket: Transport::Tcp {
                    stream: connect_tcp(server, index).await?,
                    read: Vec::new(),
                },
                next_id: 1,
            };
            lean.handshake(app_id, uid).await?;
            return Ok(lean);
        }
        let mut request = url.into_client_request()?;
        let subprotocol = match protocol {
            Protocol::Parley => Some(parley_proto::SUBPROTOCOL_PROTO),
            Protocol::Mqtt => Some("mqtt"),
            Protocol::Nats | Protocol::Socketio | Protocol::MqttTcp => None,
        };
        if let Some(subprotocol) = subprotocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(subprotocol),
            );
        }
        let host = request.uri().host().context("url host")?;
        let port = request.uri().port_u16().unwrap_or(80);
        let server: SocketAddr = format!("{host}:{port}")
            .parse()
            .context("url host is an IP")?;
        let stream = connect_tcp(server, index).await?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
        let mut lean = Lean {
            protocol,
            socket: Transport::WebSocket(Box::new(socket)),
            next_id: 1,
        };
        lean.handshake(app_id, uid).await?;
        Ok(lean)
    }

    async fn handshake(&mut self, app_id: &str, uid: &str) -> anyhow::Result<()> {
        match self.protocol {
            Protocol::Parley => {
                let id = self.request(v1::request::Op::Login(v1::LoginRequest {
                    app_id: app_id.into(),
                    uid: uid.into(),
                    token: String::new(),
                }));
                self.send_binary(id.1).await?;
                self.parley_reply(id.0).await
            }
            Protocol::Nats => {
                self.expect_text(|text| text.starts_with("INFO")).await?;
                self.send_text(
                    "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"protocol\":1}\r\nPING\r\n",
                )
                .await?;
                self.expect_text(|text| text.contains("PONG")).await
            }
            Protocol::Mqtt | Protocol::MqttTcp => {
                let mut body = Vec::new();
                put_string(&mut body, "MQTT");
                body.push(5); // protocol level: MQTT 5
                body.push(0x02); // clean start
                body.extend_from_slice(&0u16.to_be_bytes()); // keep-alive off
                body.push(0); // no properties
                put_string(&mut body, uid);
                self.send_binary(mqtt_packet(0x10, &body)).await?;
                let connack = self.next_binary().await?;
                if connack.first() != Some(&0x20) || connack.get(3) != Some(&0) {
                    bail!("MQTT connection refused: {connack:?}");
                }
                Ok(())
            }
            Protocol::Socketio => {
                self.expect_text(|text| text.starts_with('0')).await?;
                self.send_text("40").await?;
                self.expect_text(|text| text.starts_with("40")).await
            }
        }
    }

    /// Joins `channel` (Parley), subscribes to it (NATS, MQTT) or joins its room (Socket.IO), and
    /// waits until the server confirms.
    pub async fn subscribe(&mut self, channel: &str) -> anyhow::Result<()> {
        let setup = async {
            match self.protocol {
                Protocol::Parley => {
                    let (id, frame) = self.request(v1::request::Op::Join(v1::JoinRequest {
                        channel_id: channel.into(),
                        resume_after_seq: None,
                    }));
                    self.send_binary(frame).await?;
                    self.parley_reply(id).await
                }
                Protocol::Nats => {
                    self.send_text(&format!("SUB {channel} 1\r\nPING\r\n"))
                        .await?;
                    self.expect_text(|text| text.contains("PONG")).await
                }
                Protocol::Mqtt | Protocol::MqttTcp => {
                    let mut body = Vec::new();
                    body.extend_from_slice(&1u16.to_be_bytes()); // packet id
                    body.push(0); // no properties
                    put_string(&mut body, channel);
                    body.push(0x04); // QoS 0, no local: not one's own messages
                    self.send_binary(mqtt_packet(0x82, &body)).await?;
                    let suback = self.next_binary().await?;
                    if suback.first() != Some(&0x90) || suback.last().is_none_or(|code| *code > 2) {
                        bail!("MQTT subscription refused: {suback:?}");
                    }
                    Ok(())
                }
                Protocol::Socketio => {
                    self.send_text(&format!("421[\"join\",\"{channel}\"]"))
                        .await?;
                    self.expect_text(|text| text.starts_with("431")).await
                }
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .context("subscribe timed out")?
    }

    /// The frame that publishes `payload` to `channel` (Parley: a channel message request whose
    /// reply the reader skips).
    pub fn publish_frame(&mut self, channel: &str, payload: String) -> Message {
        match self.protocol {
            Protocol::Parley => {
                let (_, frame) =
                    self.request(v1::request::Op::SendMessage(v1::SendMessageRequest {
                        channel_id: channel.into(),
                        message: Some(v1::MessageBody {
                            content: Some(v1::message_body::Content::Text(payload)),
                            description: String::new(),
                        }),
                        ..Default::default()
                    }));
                Message::Binary(frame.into())
            }
            Protocol::Nats => {
                Message::Text(format!("PUB {channel} {}\r\n{payload}\r\n", payload.len()).into())
            }
            Protocol::Mqtt | Protocol::MqttTcp => {
                let mut body = Vec::with_capacity(payload.len() + channel.len() + 8);
                put_string(&mut body, channel);
                body.push(0); // no properties
                body.extend_from_slice(payload.as_bytes());
                Message::Binary(mqtt_packet(0x30, &body).into())
            }
            Protocol::Socketio => {
                Message::Text(format!("42[\"pub\",\"{channel}\",\"{payload}\"]").into())
            }
        }
    }

    /// The frame an idle connection sends every [`Protocol::keepalive`].
    pub fn keepalive_frame(&mut self) -> Option<Message> {
        match self.protocol {
            Protocol::Parley => {
                let (_, frame) = self.request(v1::request::Op::Ping(v1::PingRequest {}));
                Some(Message::Binary(frame.into()))
            }
            Protocol::Nats | Protocol::Mqtt | Protocol::MqttTcp | Protocol::Socketio => None,
        }
    }

    /// The answer a received frame needs, if any: NATS and Socket.IO servers ping their
    /// clients.
    pub fn answer(&self, frame: &Message) -> Option<Message> {
        match (self.protocol, frame) {
            (Protocol::Nats, Message::Text(text)) if text.as_str().starts_with("PING") => {
                Some(Message::Text("PONG\r\n".into()))
            }
            (Protocol::Nats, Message::Binary(bytes)) if bytes.starts_with(b"PING") => {
                Some(Message::Text("PONG\r\n".into()))
            }
            (Protocol::Socketio, Message::Text(text)) if text.as_str() == "2" => {
                Some(Message::Text("3".into()))
            }
            _ => None,
        }
    }

    pub async fn send(&mut self, message: Message) -> anyhow::Result<()> {
        match &mut self.socket {
            Transport::WebSocket(socket) => socket.send(message).await?,
            Transport::Tcp { stream, .. } => stream.write_all(&message.into_data()).await?,
        }
        Ok(())
    }

    /// The next frame (over TCP: the whole MQTT packets read), or None when the connection
    /// closed.
    pub async fn next(&mut self) -> Option<anyhow::Result<Message>> {
        match &mut self.socket {
            Transport::WebSocket(socket) => {
                socket.next().await.map(|frame| frame.map_err(Into::into))
            }
            Transport::Tcp { stream, read } => loop {
                let whole = whole_mqtt_packets(read);
                if whole > 0 {
                    let packets: Vec<u8> = read.drain(..whole).collect();
                    return Some(Ok(Message::Binary(packets.into())));
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) => return None,
                    Ok(n) => read.extend_from_slice(&chunk[..n]),
                    Err(error) => return Some(Err(error.into())),
                }
            },
        }
    }

    pub async fn close(self) {
        match self.socket {
            Transport::WebSocket(mut socket) => {
                let _ = socket.close().await;
            }
            Transport::Tcp { mut stream, .. } => {
                // MQTT DISCONNECT, normal.
                let _ = stream.write_all(&[0xE0, 0]).await;
            }
        }
    }

    fn request(&mut self, op: v1::request::Op) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let frame = v1::ClientFrame {
            kind: Some(v1::client_frame::Kind::Request(v1::Request {
                id,
                op: Some(op),
            })),
        };
        (id, frame.encode_to_vec())
    }

    async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.send(Message::Binary(bytes.into())).await
    }

    async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(Message::Text(text.into())).await
    }

    async fn next_data(&mut self) -> anyhow::Result<Message> {
        loop {
            match self.next().await.context("connection closed")?? {
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(close) => bail!("connection closed: {close:?}"),
                data => return Ok(data),
            }
        }
    }

    async fn next_binary(&mut self) -> anyhow::Result<Vec<u8>> {
        match self.next_data().await? {
            Message::Binary(bytes) => Ok(bytes.to_vec()),
            other => bail!("expected a binary frame, got {other:?}"),
        }
    }

    /// Reads until a text frame that `wanted` accepts, answering pings on the way.
    async fn expect_text(&mut self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        loop {
            let frame = self.next_data().await?;
            if let Some(answer) = self.answer(&frame) {
                self.send(answer).await?;
            }
            let text = match &frame {
                Message::Text(text) => text.as_str().to_owned(),
                Message::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => continue,
            };
            if text.starts_with("-ERR") || text.starts_with("44") {
                bail!("refused: {text}");
            }
            if wanted(&text) {
                return Ok(());
            }
        }
    }

    /// Waits for the reply to request `id`, which must not be an error.
    async fn parley_reply(&mut self, id: u64) -> anyhow::Result<()> {
        loop {
            let Message::Binary(bytes) = self.next_data().await? else {
                continue;
            };
            let frame = v1::ServerFrame::decode(bytes.as_ref())?;
            if let Some(v1::server_frame::Kind::Reply(reply)) = frame.kind
                && reply.id == id
            {
                return match reply.error {
                    Some(error) => bail!("{} {}", error.code, error.message),
                    None => Ok(()),
                };
            }
        }
    }
}

async fn connect_tcp(server: SocketAddr, index: usize) -> anyhow::Result<TcpStream> {
    let tcp = TcpSocket::new_v4()?;
    if server.ip().is_loopback() {
        tcp.bind(SocketAddr::new(source_address(index).into(), 0))
            .context("bind source address")?;
    }
    let stream = tcp.connect(server).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How many leading bytes of `buffer` are whole MQTT packets.
fn whole_mqtt_packets(buffer: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let mut length = 0usize;
        let mut header = 1;
        loop {
            let Some(byte) = buffer.get(at + header) else {
                return at;
            };
            length |= usize::from(byte & 0x7F) << (7 * (header - 1));
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if buffer.len() < at + header + length {
            return at;
        }
        at += header + length;
    }
}

/// An MQTT control packet: the first byte, the remaining length (variable byte integer), `body`.
fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(body.len() + 5);
    packet.push(first);
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(body);
    packet
}

/// An MQTT UTF-8 string: two bytes of length, then the bytes.
fn put_string(buffer: &mut Vec<u8>, text: &str) {
    buffer.extend_from_slice(&(text.len() as u16).to_be_bytes());
    buffer.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_delivery_in_a_frame() {
        let frame = format!(
            "MSG a 1 20\r\n{}\r\nMSG a 1 20\r\n{}\r\n",
            payload(12, 20),
            payload(345, 20)
        );
        let mut found = Vec::new();
        deliveries(frame.as_bytes(), |micros| found.push(micros));
        assert_eq!(found, [12, 345]);
    }

    #[test]
    fn payload_has_the_asked_size_when_it_fits() {
        assert_eq!(payload(1, 100).len(), 100);
        assert_eq!(payload(1, 4).len(), MARKER.len() + TIME_DIGITS);
    }

    #[test]
    fn source_addresses_move_on_after_each_block() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            source_address(PER_SOURCE_ADDRESS - 1),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        assert_eq!(
            source_address(PER_SOURCE_ADDRESS),
            Ipv4Addr::new(127, 0, 0, 3)
        );
    }

    #[test]
    fn only_whole_mqtt_packets_are_taken() {
        let mut buffer = mqtt_packet(0x30, &[1; 200]);
        buffer.extend(mqtt_packet(0x30, &[2; 3]));
        assert_eq!(whole_mqtt_packets(&buffer), buffer.len());
        assert_eq!(whole_mqtt_packets(&buffer[..buffer.len() - 1]), 203);
        assert_eq!(whole_mqtt_packets(&buffer[..2]), 0);
    }

    #[test]
    fn mqtt_remaining_length_is_a_variable_byte_integer() {
        assert_eq!(mqtt_packet(0x30, &[0; 3])[..2], [0x30, 3]);
        assert_eq!(mqtt_packet(0x30, &[0; 200])[..3], [0x30, 0xC8, 0x01]);
    }
}

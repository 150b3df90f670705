//! Test support: real Parley nodes on 127.0.0.1:0 ([`TestServer`]), a raw protocol client that
//! speaks either framing ([`RawClient`]), a TCP proxy that can cut connections ([`Proxy`]), and
//! real Redis servers and clusters ([`RedisServer`], [`RedisCluster`]), a real Kafka-protocol
//! broker ([`KafkaBroker`]), a webhook receiver ([`webhook`]), and clusters of `parley run`
//! processes to kill, pause and restart ([`ProcessCluster`]).
//!
//! `PARLEY_TEST_STORE=redis` makes every [`TestServer`] keep its state in a Redis server of its
//! own instead of the embedded store; `scripts/test` runs the end-to-end suites both ways.
//!
//! Architecture invariant: nothing here ships in the `parley` binary.

pub mod chaos;
pub mod http;
mod kafka;
pub mod ops;
pub mod otlp;
pub mod processes;
mod proxy;
mod raw;
mod redis;
mod server;
pub mod webhook;

pub use kafka::KafkaBroker;
pub use processes::ProcessCluster;
pub use proxy::Proxy;
pub use raw::RawClient;
pub use redis::RedisCluster;
pub use redis::RedisServer;
pub use server::CUSTOMER_KEY;
pub use server::CUSTOMER_SECRET;
pub use server::OTHER_APP_ID;
pub use server::OTHER_CUSTOMER_KEY;
pub use server::OTHER_CUSTOMER_SECRET;
pub use server::TestServer;
pub use server::TestServerBuilder;
pub use server::fresh_temp_dir;

/// The app every test server serves.
pub fn server_app_id() -> &'static str {
    server::APP_ID
}

/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: std::time::Duration = std::time::Duration::from_secs(5);

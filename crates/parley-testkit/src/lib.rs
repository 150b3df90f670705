//! Test support: real Parley nodes on 127.0.0.1:0 ([`TestServer`]), a raw protocol client that
//! speaks either framing ([`RawClient`]), and a TCP proxy that can cut connections ([`Proxy`]).
//!
//! Architecture invariant: nothing here ships in the `parley` binary.

pub mod ops;
mod proxy;
mod raw;
mod server;

pub use proxy::Proxy;
pub use raw::RawClient;
pub use server::TestServer;
pub use server::TestServerBuilder;
pub use server::fresh_temp_dir;

/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: std::time::Duration = std::time::Duration::from_secs(5);

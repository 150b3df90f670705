//! A real Kafka-protocol broker for tests: `tansu` with SQLite storage on a free loopback port,
//! one temporary directory each. `scripts/test` installs tansu; this only starts and stops it.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use crate::redis::free_port;
use crate::server::fresh_temp_dir;

/// One tansu broker. Stopped when dropped.
pub struct KafkaBroker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        let port = free_port();
        let dir = fresh_temp_dir();
        std::fs::create_dir_all(&dir).expect("create the broker's dir");
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            // tansu reads the path of a sqlite:// URL as relative to its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "start tansu (scripts/test installs it: cargo install tansu --features libsql)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        KafkaBroker {
            port,
            dir,
            child: Some(child),
        }
    }

    /// `HOST:PORT` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

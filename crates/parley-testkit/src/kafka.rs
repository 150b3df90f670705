//! A real Kafka-protocol broker for tests: `tansu` with SQLite storage on a free loopback port,
//! one temporary directory each. `scripts/test` installs tansu; this only starts and stops it.
//! `scripts/test` runs the tests that start one after tansu's install and the others meanwhile:
//! a new test binary that starts a broker must be named in its `needs_kafka` filter.

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
        let dir = fresh_temp_dir();
        std::fs::create_dir_all(&dir).expect("create the broker's dir");
        let mut broker = KafkaBroker {
            port: free_port(),
            dir,
            child: None,
        };
        broker.start_again();
        broker
    }

    /// Stops the broker (SIGTERM); what it stored stays for [`KafkaBroker::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the broker on its port and storage, and waits until it listens (a port just
    /// given up may take a moment to be free again: a broker that could not bind is restarted).
    pub fn start_again(&mut self) {
        self.stop();
        let port = self.port;
        let listener = format!("tcp://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut child = Command::new("tansu")
                .args(["broker", "--listener-url", &listener])
                .args(["--advertised-listener-url", &listener])
                // tansu reads the path of a sqlite:// URL as relative to its working directory.
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "start tansu (scripts/test installs it: cargo install tansu --features libsql)",
                );
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "tansu did not listen in time");
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `HOST:PORT` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

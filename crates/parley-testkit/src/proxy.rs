//! A TCP proxy on 127.0.0.1:0 whose connections a test can cut, to make a client lose its
//! connection the way a network does, or block altogether, to cut a node off (a partition).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    cut_tx: watch::Sender<u64>,
    // A std lock: read once per accepted connection, never held across an await.
    target: Arc<Mutex<SocketAddr>>,
    /// While set, connections are closed as soon as they are accepted.
    blocked: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let target = Arc::new(Mutex::new(target));
        let current_target = target.clone();
        let blocked = Arc::new(AtomicBool::new(false));
        let blocking = blocked.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if blocking.load(Ordering::Relaxed) {
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                cut_rx.mark_unchanged();
                let target = *current_target.lock().expect("proxy target lock");
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            cut_tx,
            target,
            blocked,
        }
    }

    /// Sends new connections to `target` (existing ones keep theirs).
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().expect("proxy target lock") = target;
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Drops every connection open now, without a WebSocket close.
    pub fn cut_all(&self) {
        self.cut_tx.send_modify(|generation| *generation += 1);
    }

    /// Blocked: every connection is cut and new ones are closed at once, until unblocked.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
        if blocked {
            self.cut_all();
        }
    }
}

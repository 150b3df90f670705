//! A TCP proxy on 127.0.0.1:0 whose connections a test can cut, to make a client lose its
//! connection the way a network does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    cut_tx: watch::Sender<u64>,
    // A std lock: read once per accepted connection, never held across an await.
    target: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let target = Arc::new(Mutex::new(target));
        let current_target = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
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
}

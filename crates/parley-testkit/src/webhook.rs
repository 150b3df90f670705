//! A webhook receiver: an HTTP/1.1 server on 127.0.0.1:0 that records every request and answers
//! the first few with 500, so tests can check signatures, retries and order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::PROMPTLY;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Header names in lowercase.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Whether it was answered 200 (else 500).
    pub accepted: bool,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

pub struct WebhookReceiver {
    addr: SocketAddr,
    delivery_rx: mpsc::UnboundedReceiver<Delivery>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    /// Starts a receiver that answers its first `refuse_first` requests with 500.
    pub async fn start(refuse_first: usize) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (delivery_tx, delivery_rx) = mpsc::unbounded_channel();
        let refusals = Arc::new(AtomicUsize::new(refuse_first));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, delivery_tx.clone(), refusals.clone()));
            }
        });
        WebhookReceiver {
            addr,
            delivery_rx,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/parley", self.addr)
    }

    /// The next request, waiting at most [`PROMPTLY`].
    pub async fn next(&mut self) -> Delivery {
        tokio::time::timeout(PROMPTLY, self.delivery_rx.recv())
            .await
            .expect("no webhook request in time")
            .expect("the receiver stopped")
    }

    /// The next accepted request of `type`, skipping the rest.
    pub async fn next_of(&mut self, kind: &str) -> Delivery {
        loop {
            let delivery = self.next().await;
            if delivery.accepted && delivery.json()["type"] == kind {
                return delivery;
            }
        }
    }
}

/// Serves one keep-alive connection, request after request.
async fn serve(
    stream: TcpStream,
    delivery_tx: mpsc::UnboundedSender<Delivery>,
    refusals: Arc<AtomicUsize>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        // The request line, then headers up to the blank line.
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length = headers
            .get("content-length")
            .and_then(|length| length.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let accepted = refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_err();
        let status = if accepted {
            "200 OK"
        } else {
            "500 Internal Server Error"
        };
        let _ = delivery_tx.send(Delivery {
            headers,
            body,
            accepted,
        });
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

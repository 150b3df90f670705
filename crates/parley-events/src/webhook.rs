//! Webhook delivery: one task per lane POSTs its events one at a time, each retried with
//! backoff until it is taken or given up, so one user's events arrive in the order they
//! happened.
//!
//! The body is the event as JSON. `x-parley-signature` is `sha256=` and the hex HMAC-SHA256 of
//! the body under the app's webhook secret; `x-parley-timestamp` is the attempt's time (ms since
//! the Unix epoch), which the body repeats as `timestamp`, so a receiver can refuse stale
//! replays. Receivers drop repeats by `id` (a delivery whose answer was lost is sent again).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use backon::ExponentialBuilder;
use backon::Retryable;
use bytes::Bytes;
use hmac::Hmac;
use hmac::Mac;
use http_body_util::Full;
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parley_core::app::AppDirectory;
use parley_core::app::Webhook;
use parley_core::time::unix_ms;
use parley_owner::AppEvent;
use parley_owner::AppEventKind;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::pipeline::PipelineConfig;

pub const SIGNATURE_HEADER: &str = "x-parley-signature";
pub const TIMESTAMP_HEADER: &str = "x-parley-timestamp";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON an event is POSTed as, for an attempt made at `timestamp_ms`.
pub fn to_json(event: &AppEvent, timestamp_ms: i64) -> serde_json::Value {
    let mut body = json!({
        "id": event.id.0.to_string(),
        "appId": event.app.as_str(),
        "ts": event.ts_ms,
        "timestamp": timestamp_ms,
        "uid": event.kind.uid().as_str(),
    });
    let fields = match &event.kind {
        AppEventKind::Login { .. } => json!({ "type": "user.login" }),
        AppEventKind::Logout { reason, .. } => json!({ "type": "user.logout", "reason": reason }),
        AppEventKind::Join { channel, .. } => {
            json!({ "type": "channel.join", "channelId": channel.as_str() })
        }
        AppEventKind::Leave {
            channel, reason, ..
        } => json!({ "type": "channel.leave", "channelId": channel.as_str(), "reason": reason }),
        AppEventKind::PeerMessageCached {
            from,
            message_id,
            message,
            ..
        } => json!({
            "type": "peer.message_cached",
            "from": from.as_str(),
            "messageId": message_id.0.to_string(),
            "message": serde_json::to_value(message).unwrap_or_default(),
        }),
        AppEventKind::InvitationToOffline {
            caller,
            invitation_id,
            content,
            channel_id,
            ..
        } => json!({
            "type": "invitation.offline",
            "caller": caller.as_str(),
            "invitationId": invitation_id.to_string(),
            "content": content,
            "channelId": channel_id,
        }),
    };
    if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body
}

/// One webhook lane.
pub(crate) struct Lane {
    config: PipelineConfig,
    apps: Arc<AppDirectory>,
    client: HttpClient,
    dropped: Arc<AtomicU64>,
}

impl Lane {
    /// Starts the lane's task; it ends when the returned sender is dropped.
    pub(crate) fn start(
        config: &PipelineConfig,
        apps: Arc<AppDirectory>,
        dropped: Arc<AtomicU64>,
    ) -> mpsc::Sender<AppEvent> {
        let (event_tx, mut event_rx) = mpsc::channel(config.lane_queue.max(1));
        let lane = Lane {
            config: config.clone(),
            apps,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            dropped,
        };
        tokio::spawn(async move {
            while let Some(event) = event_rx.recv().await {
                if !lane.deliver(&event).await {
                    lane.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(app = %event.app, id = event.id.0, "webhook delivery given up");
                }
            }
        });
        event_tx
    }

    /// POSTs `event` until it is taken (2xx) or the attempts run out, waiting longer after each
    /// failure. Returns whether it was taken (or the app no longer has a webhook).
    async fn deliver(&self, event: &AppEvent) -> bool {
        let attempt = || async {
            // Read each time: the app may have changed or dropped its webhook meanwhile.
            let Some(webhook) = self
                .apps
                .get(event.app.as_str())
                .ok()
                .and_then(|app| app.webhook.clone())
            else {
                return Ok(());
            };
            match self.post(&webhook, event).await {
                Ok(status) if status.is_success() => Ok(()),
                Ok(status) => Err(format!("refused with {status}")),
                Err(error) => Err(error),
            }
        };
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.config.first_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.attempts.saturating_sub(1) as usize);
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|error, wait| tracing::debug!(%error, ?wait, "webhook delivery failed"))
            .await
            .is_ok()
    }

    async fn post(&self, webhook: &Webhook, event: &AppEvent) -> Result<StatusCode, String> {
        let timestamp_ms = unix_ms();
        let body = to_json(event, timestamp_ms).to_string();
        let request = hyper::Request::post(webhook.url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&webhook.secret, body.as_bytes()))
            .header(TIMESTAMP_HEADER, timestamp_ms.to_string())
            .header("x-parley-event-id", event.id.0.to_string())
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| error.to_string())?;
        let response =
            tokio::time::timeout(self.config.request_timeout, self.client.request(request))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|error| error.to_string())?;
        Ok(response.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_json_names_the_event_and_its_user() {
        let event = AppEvent {
            app: parley_core::ids::AppId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            id: parley_core::ids::MessageId(42),
            ts_ms: 1000,
            kind: AppEventKind::Leave {
                channel: parley_core::ids::ChannelId::parse("room").unwrap(),
                uid: parley_core::ids::UserId::parse("alice").unwrap(),
                reason: "kicked",
            },
        };
        let body = to_json(&event, 2000);
        assert_eq!(body["type"], "channel.leave");
        assert_eq!(body["id"], "42");
        assert_eq!(body["uid"], "alice");
        assert_eq!(body["channelId"], "room");
        assert_eq!(body["reason"], "kicked");
        assert_eq!(body["ts"], 1000);
        assert_eq!(body["timestamp"], 2000);
    }
}

//! `parley admin …`: the server API's common operations for operators, through its gRPC
//! service on an edge. Each command prints one JSON object on standard output; a refused
//! command prints `{"code", "message"}` (the codes of the REST API) and exits with 1.

use std::process::ExitCode;

use anyhow::Context;
use parley_proto::server::v1 as api;
use parley_proto::server::v1::server_api_client::ServerApiClient;
use parley_proto::v1;
use serde_json::Value;
use serde_json::json;
use tonic::Request;
use tonic::transport::Channel;

use crate::cli::AdminCommand;
use crate::cli::AdminOptions;

/// A channel to the edge at `server`: https:// is checked against the system's certificate
/// authorities (`SSL_CERT_FILE` names others).
async fn connect(server: &str) -> anyhow::Result<Channel> {
    let context = || format!("connect to {server}");
    let endpoint =
        tonic::transport::Endpoint::from_shared(server.to_owned()).with_context(context)?;
    let channel = if server.starts_with("https://") {
        let roots = parley_tls::system_roots().with_context(context)?;
        let config = parley_tls::client_config(roots, None, &[b"h2"])?;
        endpoint
            .connect_with_connector(parley_tls::Connector::new(config))
            .await
    } else {
        endpoint.connect().await
    };
    channel.with_context(context)
}

pub async fn run(options: AdminOptions) -> anyhow::Result<ExitCode> {
    let authorization = basic(&options.customer_key)?;
    let client = ServerApiClient::new(connect(&options.server).await?);
    let admin = Admin {
        client,
        app_id: options.app_id,
        authorization,
    };
    match admin.execute(options.command).await {
        Ok(answer) => {
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(status) => {
            let code = parley_proto::grpc_error::error_code(&status)
                .unwrap_or(parley_core::ErrorCode::Unavailable)
                .as_str_name();
            println!("{}", json!({ "code": code, "message": status.message() }));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The `authorization` value for a `KEY:SECRET` customer key.
fn basic(customer_key: &str) -> anyhow::Result<String> {
    use base64::Engine;
    parley_core::app::CustomerKey::parse(customer_key)
        .map_err(|error| anyhow::anyhow!("--customer-key: {error}"))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(customer_key);
    Ok(format!("Basic {encoded}"))
}

struct Admin {
    client: ServerApiClient<Channel>,
    app_id: String,
    authorization: String,
}

fn text(text: String) -> Option<v1::MessageBody> {
    Some(v1::MessageBody {
        content: Some(v1::message_body::Content::Text(text)),
        ..Default::default()
    })
}

fn restrictions(restrictions: Vec<api::Restriction>) -> Value {
    restrictions
        .into_iter()
        .map(|restriction| {
            json!({
                "uid": restriction.uid,
                "sinceTs": restriction.since_ts,
                "untilTs": restriction.until_ts,
                "reason": restriction.reason,
            })
        })
        .collect()
}

impl Admin {
    /// `message` with the customer key's credentials.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.authorization.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    async fn execute(mut self, command: AdminCommand) -> Result<Value, tonic::Status> {
        let app_id = self.app_id.clone();
        Ok(match command {
            AdminCommand::SendPeer {
                from,
                to,
                text: message,
                offline,
                history,
                wait,
            } => {
                let request = self.request(api::SendPeerMessageRequest {
                    app_id,
                    from,
                    to,
                    message: text(message),
                    enable_offline_messaging: offline,
                    enable_historical_messaging: history,
                    wait_for_ack: wait,
                });
                let sent = self.client.send_peer_message(request).await?.into_inner();
                json!({
                    "messageId": sent.message_id.to_string(),
                    "serverReceivedTs": sent.server_received_ts,
                    "result": sent.result,
                })
            }
            AdminCommand::SendChannel {
                from,
                channel,
                text: message,
                history,
            } => {
                let request = self.request(api::SendChannelMessageRequest {
                    app_id,
                    from,
                    channel_id: channel,
                    message: text(message),
                    enable_historical_messaging: history,
                });
                let sent = self
                    .client
                    .send_channel_message(request)
                    .await?
                    .into_inner();
                json!({
                    "messageId": sent.message_id.to_string(),
                    "serverReceivedTs": sent.server_received_ts,
                    "seq": sent.seq,
                })
            }
            AdminCommand::Status { uid } => {
                let request = self.request(api::UserRequest { app_id, uid });
                let status = self.client.user_status(request).await?.into_inner();
                json!({ "uid": status.uid, "state": status.state().as_str_name() })
            }
            AdminCommand::Members { channel } => {
                let channel = api::ChannelRequest {
                    app_id,
                    channel_id: channel,
                };
                let request = self.request(channel.clone());
                let count = self.client.channel_member_count(request).await?;
                let request = self.request(channel.clone());
                let members = self.client.channel_members(request).await?;
                json!({
                    "channelId": channel.channel_id,
                    "count": count.into_inner().count,
                    "members": members.into_inner().members,
                })
            }
            AdminCommand::Kick {
                channel,
                uid,
                reason,
            } => {
                let request = self.request(api::KickRequest {
                    app_id,
                    channel_id: channel.clone(),
                    uid: uid.clone(),
                    reason,
                });
                let kicked = self.client.kick(request).await?.into_inner().kicked;
                json!({ "channelId": channel, "uid": uid, "kicked": kicked })
            }
            AdminCommand::Ban {
                uid,
                duration,
                reason,
            } => {
                let request = self.request(api::RestrictRequest {
                    app_id,
                    uid: uid.clone(),
                    channel_id: String::new(),
                    duration_seconds: duration.as_secs(),
                    reason,
                });
                let until = self.client.ban(request).await?.into_inner().until_ts;
                json!({ "uid": uid, "untilTs": until })
            }
            AdminCommand::Unban { uid } => {
                let request = self.request(api::LiftRequest {
                    app_id,
                    uid: uid.clone(),
                    channel_id: String::new(),
                });
                let lifted = self.client.unban(request).await?.into_inner().lifted;
                json!({ "uid": uid, "lifted": lifted })
            }
            AdminCommand::Bans => {
                let request = self.request(api::ListRestrictionsRequest {
                    app_id,
                    channel_id: String::new(),
                });
                let bans = self.client.list_bans(request).await?.into_inner();
                json!({ "bans": restrictions(bans.restrictions) })
            }
            AdminCommand::Mute {
                channel,
                uid,
                duration,
                reason,
            } => {
                let request = self.request(api::RestrictRequest {
                    app_id,
                    uid: uid.clone(),
                    channel_id: channel.clone(),
                    duration_seconds: duration.as_secs(),
                    reason,
                });
                let until = self.client.mute(request).await?.into_inner().until_ts;
                json!({ "channelId": channel, "uid": uid, "untilTs": until })
            }
            AdminCommand::Unmute { channel, uid } => {
                let request = self.request(api::LiftRequest {
                    app_id,
                    uid: uid.clone(),
                    channel_id: channel.clone(),
                });
                let lifted = self.client.unmute(request).await?.into_inner().lifted;
                json!({ "channelId": channel, "uid": uid, "lifted": lifted })
            }
            AdminCommand::Mutes { channel } => {
                let request = self.request(api::ListRestrictionsRequest {
                    app_id,
                    channel_id: channel.clone(),
                });
                let mutes = self.client.list_mutes(request).await?.into_inner();
                json!({ "channelId": channel, "mutes": restrictions(mutes.restrictions) })
            }
            AdminCommand::History {
                channel,
                peers,
                start,
                end,
                limit,
                desc,
                cursor,
                count,
            } => {
                let conversation = match (channel, peers) {
                    (Some(channel), _) => api::history_request::Conversation::ChannelId(channel),
                    (None, peers) => {
                        let peers = peers.unwrap_or_default();
                        let (uid, peer_id) = peers.split_once(':').ok_or_else(|| {
                            tonic::Status::invalid_argument("--peers is UID:PEER_ID")
                        })?;
                        api::history_request::Conversation::Peer(api::PeerPair {
                            uid: uid.to_owned(),
                            peer_id: peer_id.to_owned(),
                        })
                    }
                };
                let history = api::HistoryRequest {
                    app_id,
                    conversation: Some(conversation),
                    start,
                    end,
                    limit,
                    descending: desc,
                    cursor,
                };
                if count {
                    let request = self.request(history);
                    let count = self.client.count_history(request).await?.into_inner();
                    json!({ "count": count.count })
                } else {
                    let request = self.request(history);
                    let page = self.client.query_history(request).await?.into_inner();
                    json!({ "messages": page.messages, "next": page.next })
                }
            }
            AdminCommand::Events {
                stream,
                after,
                limit,
            } => {
                let request = self.request(api::EventsRequest {
                    app_id,
                    stream,
                    after,
                    limit,
                });
                let page = self.client.events(request).await?.into_inner();
                let events: Vec<Value> = page
                    .events
                    .into_iter()
                    .map(|event| {
                        json!({
                            "id": event.id.to_string(),
                            "type": event.r#type,
                            "ts": event.ts,
                            "uid": event.uid,
                            "channelId": event.channel_id,
                            "reason": event.reason,
                        })
                    })
                    .collect();
                json!({ "events": events, "next": page.next.to_string() })
            }
        })
    }
}

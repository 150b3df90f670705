//! `parley client`: JSON lines in, JSON lines out, over the Rust SDK. The contract is
//! docs/cli.md (kept identical to the product's CLI.md).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::ClientError;
use parley_client::ConnectionChangeReason;
use parley_client::ConnectionState;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_client::Incoming;
use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use serde_json::Map;
use serde_json::Value;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::cli::ClientOptions;

/// Writes whole lines to standard output, one writer at a time.
#[derive(Clone)]
struct Printer {
    // A blocking lock: held only to write and flush one line, never across an await.
    stdout: Arc<Mutex<std::io::Stdout>>,
}

impl Printer {
    fn print(&self, value: &Value) {
        let mut stdout = self.stdout.lock();
        let _ = writeln!(stdout, "{value}");
        let _ = stdout.flush();
    }
}

pub async fn run(options: ClientOptions) -> anyhow::Result<ExitCode> {
    let printer = Printer {
        stdout: Arc::new(Mutex::new(std::io::stdout())),
    };
    let codec = match options.codec.as_str() {
        "json" => Codec::Json,
        "proto" => Codec::Proto,
        other => anyhow::bail!("--codec must be json or proto, not {other:?}"),
    };
    let config = ClientConfig::new(&options.url, &options.app_id, &options.uid)
        .token(&options.token)
        .codec(codec);
    // Replies and events come on one stream, so they print in the order they arrived.
    let (client, mut incoming) = match Client::login_ordered(config).await {
        Ok(logged_in) => logged_in,
        Err(error) => {
            // A refused login leaves nothing to retry (ABORTED); anything else may work later.
            let state = match error.code {
                ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::TooOften => "DISCONNECTED",
                _ => "ABORTED",
            };
            printer.print(&json!({
                "event": "ConnectionStateChanged",
                "state": state,
                "reason": "LOGIN_FAILURE",
                "error": error_json(&error),
            }));
            return Ok(ExitCode::FAILURE);
        }
    };

    let requests = Requests::default();
    let (aborted_tx, mut aborted_rx) = tokio::sync::watch::channel(false);
    {
        let printer = printer.clone();
        let requests = requests.clone();
        tokio::spawn(async move {
            while let Some(item) = incoming.recv().await {
                match item {
                    Incoming::Event(event) => {
                        printer.print(&event_json(&event));
                        if let Event::ConnectionStateChanged(changed) = &event
                            && changed.state() == ConnectionState::Aborted
                        {
                            // CLI.md names a ban by the app's backend as an event of its own.
                            if changed.reason() == ConnectionChangeReason::BannedByServer {
                                printer.print(&json!({ "event": "BannedByServer" }));
                            }
                            let _ = aborted_tx.send(true);
                        }
                    }
                    Incoming::Reply { tag, result } => {
                        let Some((id, op)) = requests.finish(tag) else {
                            continue;
                        };
                        let line = match result {
                            Ok(result) => success(&id, &op, result_fields(result)),
                            Err(error) => failure(&id, Some(&op), error.code, &error.message),
                        };
                        printer.print(&line);
                        requests.printed();
                    }
                }
            }
        });
    }

    // SIGTERM and SIGINT log out cleanly whenever they come.
    let termination = termination();
    tokio::pin!(termination);
    let mut terminated = false;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = aborted_rx.wait_for(|aborted| *aborted) => return Ok(ExitCode::FAILURE),
            () = &mut termination => {
                terminated = true;
                None
            }
        };
        let Some(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match handle_line(&client, &printer, &requests, &line).await {
            LineOutcome::Continue => {}
            LineOutcome::LoggedOut => return Ok(ExitCode::SUCCESS),
        }
    }
    requests.all_printed().await;

    if options.stay && !terminated {
        tokio::select! {
            () = &mut termination => {}
            _ = aborted_rx.wait_for(|aborted| *aborted) => return Ok(ExitCode::FAILURE),
        }
    }
    if let Err(error) = client.logout().await {
        eprintln!("parley client: logout failed: {error}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Requests sent and not yet answered, by tag, with the `id` and `op` their reply must echo.
#[derive(Clone, Default)]
struct Requests {
    // A blocking lock: held for an insert or a remove, never across an await.
    waiting: Arc<Mutex<Waiting>>,
    printed: Arc<tokio::sync::Notify>,
}

/// The last tag given out, and the requests still waiting for their reply.
type Waiting = (u64, HashMap<u64, (Value, String)>);

impl Requests {
    fn start(&self, id: Value, op: String) -> u64 {
        let mut waiting = self.waiting.lock();
        waiting.0 += 1;
        let tag = waiting.0;
        waiting.1.insert(tag, (id, op));
        tag
    }

    fn finish(&self, tag: u64) -> Option<(Value, String)> {
        self.waiting.lock().1.remove(&tag)
    }

    fn printed(&self) {
        self.printed.notify_waiters();
    }

    /// Waits until every request sent so far has had its reply printed.
    async fn all_printed(&self) {
        loop {
            let notified = self.printed.notified();
            if self.waiting.lock().1.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

enum LineOutcome {
    Continue,
    LoggedOut,
}

async fn handle_line(
    client: &Client,
    printer: &Printer,
    requests: &Requests,
    line: &str,
) -> LineOutcome {
    let request: Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(request)) => request,
        _ => {
            printer.print(&failure(
                &Value::Null,
                None,
                ErrorCode::InvalidArgument,
                "each line must be a json object",
            ));
            return LineOutcome::Continue;
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(op_name) = request.get("op").and_then(Value::as_str).map(str::to_owned) else {
        printer.print(&failure(
            &id,
            None,
            ErrorCode::InvalidArgument,
            "missing \"op\"",
        ));
        return LineOutcome::Continue;
    };

    match op_name.as_str() {
        "sleep" => {
            let ms = request.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            printer.print(&success(&id, &op_name, Map::new()));
            return LineOutcome::Continue;
        }
        "logout" => {
            // Replies to earlier requests come first.
            requests.all_printed().await;
            match client.logout().await {
                Ok(()) => printer.print(&success(&id, &op_name, Map::new())),
                Err(error) => {
                    printer.print(&failure(&id, Some(&op_name), error.code, &error.message))
                }
            }
            return LineOutcome::LoggedOut;
        }
        _ => {}
    }

    let op = match to_op(&op_name, &request) {
        Ok(op) => op,
        Err(message) => {
            printer.print(&failure(
                &id,
                Some(&op_name),
                ErrorCode::InvalidArgument,
                &message,
            ));
            return LineOutcome::Continue;
        }
    };
    // Queued here, in input order; the reply is printed when it arrives.
    let tag = requests.start(id.clone(), op_name.clone());
    if let Err(error) = client.send_tagged(op, tag).await {
        requests.finish(tag);
        printer.print(&failure(&id, Some(&op_name), error.code, &error.message));
    }
    LineOutcome::Continue
}

/// Builds the protocol operation for one CLI request.
fn to_op(op: &str, request: &Map<String, Value>) -> Result<Op, String> {
    let string = |field: &str| -> Result<String, String> {
        request
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("\"{field}\" must be a string"))
    };
    let flag = |field: &str| request.get(field).and_then(Value::as_bool).unwrap_or(false);
    let optional_string = |field: &str| -> Result<String, String> {
        match request.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(value)) => Ok(value.clone()),
            Some(_) => Err(format!("\"{field}\" must be a string")),
        }
    };
    Ok(match op {
        "sendMessageToPeer" => Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: string("peerId")?,
            message: Some(message_body(request)?),
            enable_offline_messaging: flag("enableOfflineMessaging"),
            enable_historical_messaging: flag("enableHistoricalMessaging"),
        }),
        "join" => Op::Join(v1::JoinRequest {
            channel_id: string("channelId")?,
            resume_after_seq: None,
        }),
        "leave" => Op::Leave(v1::LeaveRequest {
            channel_id: string("channelId")?,
        }),
        "sendMessage" => Op::SendMessage(v1::SendMessageRequest {
            channel_id: string("channelId")?,
            message: Some(message_body(request)?),
            enable_historical_messaging: flag("enableHistoricalMessaging"),
        }),
        "getMembers" => Op::GetMembers(v1::GetMembersRequest {
            channel_id: string("channelId")?,
        }),
        "getChannelMemberCount" => {
            let channel_ids = request
                .get("channelIds")
                .and_then(Value::as_array)
                .ok_or("\"channelIds\" must be an array of strings")?
                .iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("\"channelIds\" must be an array of strings")?;
            Op::GetChannelMemberCount(v1::GetChannelMemberCountRequest { channel_ids })
        }
        "renewToken" => Op::RenewToken(v1::RenewTokenRequest {
            token: string("token")?,
        }),
        "sendLocalInvitation" => Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
            callee_id: string("calleeId")?,
            content: optional_string("content")?,
            channel_id: optional_string("channelId")?,
        }),
        "cancelLocalInvitation" => Op::CancelLocalInvitation(v1::CancelLocalInvitationRequest {
            invitation_id: invitation_id(request)?,
        }),
        "acceptRemoteInvitation" => Op::AcceptRemoteInvitation(v1::AcceptRemoteInvitationRequest {
            invitation_id: invitation_id(request)?,
            response: optional_string("response")?,
        }),
        "refuseRemoteInvitation" => Op::RefuseRemoteInvitation(v1::RefuseRemoteInvitationRequest {
            invitation_id: invitation_id(request)?,
            response: optional_string("response")?,
        }),
        "setLocalUserAttributes" => Op::SetLocalUserAttributes(v1::SetLocalUserAttributesRequest {
            attributes: attributes(request)?,
        }),
        "addOrUpdateLocalUserAttributes" => {
            Op::AddOrUpdateLocalUserAttributes(v1::AddOrUpdateLocalUserAttributesRequest {
                attributes: attributes(request)?,
            })
        }
        "deleteLocalUserAttributesByKeys" => {
            Op::DeleteLocalUserAttributesByKeys(v1::DeleteLocalUserAttributesByKeysRequest {
                keys: strings(request, "keys")?,
            })
        }
        "clearLocalUserAttributes" => {
            Op::ClearLocalUserAttributes(v1::ClearLocalUserAttributesRequest {})
        }
        "getUserAttributes" => Op::GetUserAttributes(v1::GetUserAttributesRequest {
            user_id: string("userId")?,
            keys: Vec::new(),
        }),
        "getUserAttributesByKeys" => Op::GetUserAttributes(v1::GetUserAttributesRequest {
            user_id: string("userId")?,
            keys: strings(request, "keys")?,
        }),
        "setChannelAttributes" => Op::SetChannelAttributes(v1::SetChannelAttributesRequest {
            channel_id: string("channelId")?,
            attributes: attributes(request)?,
            enable_notification_to_channel_members: flag("enableNotificationToChannelMembers"),
        }),
        "addOrUpdateChannelAttributes" => {
            Op::AddOrUpdateChannelAttributes(v1::AddOrUpdateChannelAttributesRequest {
                channel_id: string("channelId")?,
                attributes: attributes(request)?,
                enable_notification_to_channel_members: flag("enableNotificationToChannelMembers"),
            })
        }
        "deleteChannelAttributesByKeys" => {
            Op::DeleteChannelAttributesByKeys(v1::DeleteChannelAttributesByKeysRequest {
                channel_id: string("channelId")?,
                keys: strings(request, "keys")?,
                enable_notification_to_channel_members: flag("enableNotificationToChannelMembers"),
            })
        }
        "clearChannelAttributes" => Op::ClearChannelAttributes(v1::ClearChannelAttributesRequest {
            channel_id: string("channelId")?,
            enable_notification_to_channel_members: flag("enableNotificationToChannelMembers"),
        }),
        "getChannelAttributes" => Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: string("channelId")?,
            keys: Vec::new(),
        }),
        "getChannelAttributesByKeys" => Op::GetChannelAttributes(v1::GetChannelAttributesRequest {
            channel_id: string("channelId")?,
            keys: strings(request, "keys")?,
        }),
        "queryPeersOnlineStatus" => Op::QueryPeersOnlineStatus(v1::QueryPeersOnlineStatusRequest {
            peer_ids: strings(request, "peerIds")?,
        }),
        "subscribePeersOnlineStatus" => {
            Op::SubscribePeersOnlineStatus(v1::SubscribePeersOnlineStatusRequest {
                peer_ids: strings(request, "peerIds")?,
            })
        }
        "unsubscribePeersOnlineStatus" => {
            Op::UnsubscribePeersOnlineStatus(v1::UnsubscribePeersOnlineStatusRequest {
                peer_ids: strings(request, "peerIds")?,
            })
        }
        "queryHistory" => {
            let order = match request.get("order").and_then(Value::as_str) {
                None | Some("asc") => v1::HistoryOrder::Asc,
                Some("desc") => v1::HistoryOrder::Desc,
                Some(other) => return Err(format!("\"order\" must be asc or desc, not {other:?}")),
            };
            Op::QueryHistory(v1::QueryHistoryRequest {
                conversation: Some(history_conversation(request)?),
                start_time: integer(request, "startTime")?,
                end_time: integer(request, "endTime")?,
                limit: u32::try_from(integer(request, "limit")?)
                    .map_err(|_| "\"limit\" is out of range".to_owned())?,
                order: order as i32,
                cursor: optional_string("cursor")?,
            })
        }
        "countHistory" => {
            let conversation = match history_conversation(request)? {
                v1::query_history_request::Conversation::PeerId(peer) => {
                    v1::count_history_request::Conversation::PeerId(peer)
                }
                v1::query_history_request::Conversation::ChannelId(channel) => {
                    v1::count_history_request::Conversation::ChannelId(channel)
                }
            };
            Op::CountHistory(v1::CountHistoryRequest {
                conversation: Some(conversation),
                start_time: integer(request, "startTime")?,
                end_time: integer(request, "endTime")?,
            })
        }
        other => return Err(format!("unknown op {other:?}")),
    })
}

/// An invitation ID: a decimal string as printed, or a number.
fn invitation_id(request: &Map<String, Value>) -> Result<u64, String> {
    match request.get("invitationId") {
        Some(Value::String(id)) => id.parse().ok(),
        Some(Value::Number(id)) => id.as_u64(),
        _ => None,
    }
    .ok_or_else(|| "\"invitationId\" must be an invitation id".to_owned())
}

fn attributes(
    request: &Map<String, Value>,
) -> Result<std::collections::HashMap<String, String>, String> {
    let invalid = || "\"attributes\" must be an object of strings".to_owned();
    request
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or_else(invalid)?
        .iter()
        .map(|(key, value)| Ok((key.clone(), value.as_str().ok_or_else(invalid)?.to_owned())))
        .collect()
}

fn strings(request: &Map<String, Value>, field: &str) -> Result<Vec<String>, String> {
    request
        .get(field)
        .and_then(Value::as_array)
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .ok_or_else(|| format!("\"{field}\" must be an array of strings"))
}

/// An optional integer field; 0 when absent.
fn integer(request: &Map<String, Value>, field: &str) -> Result<i64, String> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value
            .as_i64()
            .ok_or_else(|| format!("\"{field}\" must be an integer")),
    }
}

fn history_conversation(
    request: &Map<String, Value>,
) -> Result<v1::query_history_request::Conversation, String> {
    match (
        request.get("peerId").and_then(Value::as_str),
        request.get("channelId").and_then(Value::as_str),
    ) {
        (Some(peer), None) => Ok(v1::query_history_request::Conversation::PeerId(peer.into())),
        (None, Some(channel)) => Ok(v1::query_history_request::Conversation::ChannelId(
            channel.into(),
        )),
        _ => Err("name either \"peerId\" or \"channelId\"".into()),
    }
}

fn message_body(request: &Map<String, Value>) -> Result<v1::MessageBody, String> {
    let description = request
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let content = match (request.get("text"), request.get("rawBase64")) {
        (Some(Value::String(text)), None) => v1::message_body::Content::Text(text.clone()),
        (None, Some(Value::String(raw))) => v1::message_body::Content::Raw(
            BASE64
                .decode(raw)
                .map_err(|_| "\"rawBase64\" is not valid base64".to_owned())?
                .into(),
        ),
        _ => return Err("a message needs either \"text\" or \"rawBase64\" (a string)".into()),
    };
    Ok(v1::MessageBody {
        content: Some(content),
        description,
    })
}

/// The fields of a successful reply, named as in docs/cli.md.
fn result_fields(result: ReplyResult) -> Map<String, Value> {
    let value = match result {
        ReplyResult::SendMessageToPeer(sent) => {
            let result = sent.result();
            json!({
                "hasPeerReceived": result == v1::PeerMessageResult::ReceivedByPeer,
                "result": result.as_str_name(),
                "messageId": sent.message_id.to_string(),
            })
        }
        ReplyResult::SendMessage(sent) => json!({
            "messageId": sent.message_id.to_string(),
            "seq": sent.seq,
        }),
        ReplyResult::GetMembers(members) => json!({ "members": members.members }),
        ReplyResult::GetChannelMemberCount(counts) => json!({
            "counts": counts
                .counts
                .into_iter()
                .map(|count| (count.channel_id, Value::from(count.member_count)))
                .collect::<Map<_, _>>(),
        }),
        ReplyResult::SendLocalInvitation(sent) => json!({
            "invitationId": sent.invitation_id.to_string(),
        }),
        ReplyResult::UserAttributes(attributes) => json!({
            "attributes": attributes.attributes.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        ReplyResult::ChannelAttributes(attributes) => json!({
            "attributes": channel_attributes_json(&attributes.attributes),
        }),
        ReplyResult::QueryPeersOnlineStatus(status) => json!({
            "status": status.status.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        }),
        ReplyResult::QueryHistory(history) => json!({
            "messages": history.messages.iter().map(history_json).collect::<Vec<_>>(),
            "next": (!history.next.is_empty()).then_some(history.next),
        }),
        ReplyResult::CountHistory(count) => json!({ "count": count.count }),
        ReplyResult::Empty(_)
        | ReplyResult::Join(_)
        | ReplyResult::Login(_)
        | ReplyResult::Pong(_) => json!({}),
    };
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::ConnectionStateChanged(changed) => json!({
            "event": "ConnectionStateChanged",
            "state": changed.state().as_str_name(),
            "reason": changed.reason().as_str_name(),
        }),
        Event::TokenPrivilegeWillExpire(_) => json!({ "event": "TokenPrivilegeWillExpire" }),
        Event::MessageFromPeer(message) => {
            let mut fields = body_fields(message.message.as_ref());
            fields.insert("peerId".into(), message.peer_id.clone().into());
            fields.insert("messageId".into(), message.message_id.to_string().into());
            fields.insert("serverReceivedTs".into(), message.server_received_ts.into());
            fields.insert("isOfflineMessage".into(), message.is_offline_message.into());
            named_event("MessageFromPeer", fields)
        }
        Event::ChannelMessage(message) => {
            let mut fields = body_fields(message.message.as_ref());
            fields.insert("channelId".into(), message.channel_id.clone().into());
            fields.insert("memberId".into(), message.member_id.clone().into());
            fields.insert("messageId".into(), message.message_id.to_string().into());
            fields.insert("serverReceivedTs".into(), message.server_received_ts.into());
            fields.insert("seq".into(), message.seq.into());
            named_event("ChannelMessage", fields)
        }
        Event::MemberJoined(joined) => json!({
            "event": "MemberJoined",
            "channelId": joined.channel_id,
            "memberId": joined.member_id,
        }),
        Event::MemberLeft(left) => json!({
            "event": "MemberLeft",
            "channelId": left.channel_id,
            "memberId": left.member_id,
        }),
        // CLI.md's names: Muted / Unmuted (of any member: memberId says who) and Kicked.
        Event::MemberMuted(muted) => {
            let mut fields = Map::new();
            fields.insert("channelId".into(), muted.channel_id.clone().into());
            fields.insert("memberId".into(), muted.member_id.clone().into());
            if muted.muted {
                fields.insert("untilTs".into(), muted.until_ts.into());
            }
            if !muted.reason.is_empty() {
                fields.insert("reason".into(), muted.reason.clone().into());
            }
            named_event(if muted.muted { "Muted" } else { "Unmuted" }, fields)
        }
        Event::KickedFromChannel(kicked) => {
            let mut fields = Map::new();
            fields.insert("channelId".into(), kicked.channel_id.clone().into());
            if !kicked.reason.is_empty() {
                fields.insert("reason".into(), kicked.reason.clone().into());
            }
            named_event("Kicked", fields)
        }
        Event::MemberCountUpdated(count) => json!({
            "event": "MemberCountUpdated",
            "channelId": count.channel_id,
            "memberCount": count.member_count,
        }),
        Event::ChannelRecovered(recovered) => json!({
            "event": "ChannelRecovered",
            "channelId": recovered.channel_id,
            "fromSeq": recovered.from_seq,
            "toSeq": recovered.to_seq,
            "complete": recovered.complete,
        }),
        Event::AttributesUpdated(updated) => json!({
            "event": "AttributesUpdated",
            "channelId": updated.channel_id,
            "attributes": channel_attributes_json(&updated.attributes),
        }),
        Event::PeersOnlineStatusChanged(changed) => json!({
            "event": "PeersOnlineStatusChanged",
            "status": changed
                .status
                .iter()
                .map(|(uid, state)| {
                    let state = v1::PeerOnlineState::try_from(*state)
                        .unwrap_or(v1::PeerOnlineState::Offline);
                    (uid.clone(), Value::from(state.as_str_name()))
                })
                .collect::<std::collections::BTreeMap<_, _>>(),
        }),
        Event::LocalInvitationReceivedByPeer(local) => json!({
            "event": "LocalInvitationReceivedByPeer",
            "invitationId": local.invitation_id.to_string(),
            "calleeId": local.callee_id,
        }),
        Event::LocalInvitationAccepted(local) => json!({
            "event": "LocalInvitationAccepted",
            "invitationId": local.invitation_id.to_string(),
            "calleeId": local.callee_id,
            "response": local.response,
        }),
        Event::LocalInvitationRefused(local) => json!({
            "event": "LocalInvitationRefused",
            "invitationId": local.invitation_id.to_string(),
            "calleeId": local.callee_id,
            "response": local.response,
        }),
        Event::LocalInvitationCanceled(local) => json!({
            "event": "LocalInvitationCanceled",
            "invitationId": local.invitation_id.to_string(),
            "calleeId": local.callee_id,
        }),
        Event::LocalInvitationFailure(local) => json!({
            "event": "LocalInvitationFailure",
            "invitationId": local.invitation_id.to_string(),
            "calleeId": local.callee_id,
            "reason": local.reason().as_str_name(),
        }),
        Event::RemoteInvitationReceived(remote) => json!({
            "event": "RemoteInvitationReceived",
            "invitationId": remote.invitation_id.to_string(),
            "callerId": remote.caller_id,
            "content": remote.content,
            "channelId": remote.channel_id,
        }),
        Event::RemoteInvitationAccepted(remote) => json!({
            "event": "RemoteInvitationAccepted",
            "invitationId": remote.invitation_id.to_string(),
            "callerId": remote.caller_id,
        }),
        Event::RemoteInvitationRefused(remote) => json!({
            "event": "RemoteInvitationRefused",
            "invitationId": remote.invitation_id.to_string(),
            "callerId": remote.caller_id,
        }),
        Event::RemoteInvitationCanceled(remote) => json!({
            "event": "RemoteInvitationCanceled",
            "invitationId": remote.invitation_id.to_string(),
            "callerId": remote.caller_id,
        }),
        Event::RemoteInvitationFailure(remote) => json!({
            "event": "RemoteInvitationFailure",
            "invitationId": remote.invitation_id.to_string(),
            "callerId": remote.caller_id,
            "reason": remote.reason().as_str_name(),
        }),
    }
}

/// Channel attributes as the CLI shows them: key → {value, lastUpdateUserId, lastUpdateTs}.
fn channel_attributes_json(attributes: &[v1::ChannelAttribute]) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|attribute| {
                (
                    attribute.key.clone(),
                    json!({
                        "value": attribute.value,
                        "lastUpdateUserId": attribute.last_update_user_id,
                        "lastUpdateTs": attribute.last_update_ts,
                    }),
                )
            })
            .collect(),
    )
}

fn history_json(message: &v1::HistoryMessage) -> Value {
    let mut fields = body_fields(message.message.as_ref());
    fields.insert("messageId".into(), message.message_id.to_string().into());
    fields.insert("from".into(), message.from.clone().into());
    fields.insert("serverReceivedTs".into(), message.server_received_ts.into());
    if message.seq > 0 {
        fields.insert("seq".into(), message.seq.into());
    }
    Value::Object(fields)
}

fn named_event(name: &str, mut fields: Map<String, Value>) -> Value {
    let mut event = Map::new();
    event.insert("event".into(), name.into());
    event.append(&mut fields);
    Value::Object(event)
}

fn body_fields(body: Option<&v1::MessageBody>) -> Map<String, Value> {
    let mut fields = Map::new();
    let Some(body) = body else { return fields };
    match &body.content {
        Some(v1::message_body::Content::Text(text)) => {
            fields.insert("text".into(), text.clone().into());
        }
        Some(v1::message_body::Content::Raw(raw)) => {
            fields.insert("rawBase64".into(), BASE64.encode(raw).into());
        }
        None => {}
    }
    if !body.description.is_empty() {
        fields.insert("description".into(), body.description.clone().into());
    }
    fields
}

fn success(id: &Value, op: &str, fields: Map<String, Value>) -> Value {
    let mut reply = Map::new();
    reply.insert("id".into(), id.clone());
    reply.insert("op".into(), op.into());
    reply.insert("ok".into(), true.into());
    reply.extend(fields);
    Value::Object(reply)
}

fn failure(id: &Value, op: Option<&str>, code: ErrorCode, message: &str) -> Value {
    json!({
        "id": id,
        "op": op,
        "ok": false,
        "error": { "code": code.as_str_name(), "message": message },
    })
}

fn error_json(error: &ClientError) -> Value {
    json!({ "code": error.code.as_str_name(), "message": error.message })
}

async fn termination() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

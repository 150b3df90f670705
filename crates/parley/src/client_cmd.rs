//! `parley client`: JSON lines in, JSON lines out, over the Rust SDK. The contract is
//! docs/cli.md (kept identical to the product's CLI.md).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parley_client::Client;
use parley_client::ClientConfig;
use parley_client::ClientError;
use parley_client::ConnectionState;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::reply::Result as ReplyResult;
use parley_proto::v1::request::Op;
use serde_json::Map;
use serde_json::Value;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinSet;

use crate::cli::ClientOptions;

/// Writes whole lines to standard output, one writer at a time.
#[derive(Clone)]
struct Printer {
    // A std lock: held only to write and flush one line, never across an await.
    stdout: Arc<Mutex<std::io::Stdout>>,
}

impl Printer {
    fn print(&self, value: &Value) {
        let mut stdout = self.stdout.lock().expect("stdout lock poisoned");
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
    let (client, mut events) = match Client::login(config).await {
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
    // The first line is the login outcome, before any reply.
    if let Some(first) = events.recv().await {
        printer.print(&event_json(&first));
    }

    let (aborted_tx, mut aborted_rx) = tokio::sync::watch::channel(false);
    let event_printer = printer.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            event_printer.print(&event_json(&event));
            if let Event::ConnectionStateChanged(changed) = &event
                && changed.state() == ConnectionState::Aborted
            {
                let _ = aborted_tx.send(true);
            }
        }
    });

    // SIGTERM and SIGINT log out cleanly whenever they come.
    let termination = termination();
    tokio::pin!(termination);
    let mut terminated = false;
    let mut in_flight = JoinSet::new();
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
        match handle_line(&client, &printer, &line, &mut in_flight).await {
            LineOutcome::Continue => {}
            LineOutcome::LoggedOut => {
                while in_flight.join_next().await.is_some() {}
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    while in_flight.join_next().await.is_some() {}

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

enum LineOutcome {
    Continue,
    LoggedOut,
}

async fn handle_line(
    client: &Client,
    printer: &Printer,
    line: &str,
    in_flight: &mut JoinSet<()>,
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
            while in_flight.join_next().await.is_some() {}
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
    // Queued here, in input order; the reply is awaited on the side.
    let pending = client.request(op).await;
    let printer = printer.clone();
    in_flight.spawn(async move {
        let result = match pending {
            Ok(pending) => pending.wait().await,
            Err(error) => Err(error),
        };
        let line = match result {
            Ok(result) => success(&id, &op_name, result_fields(result)),
            Err(error) => failure(&id, Some(&op_name), error.code, &error.message),
        };
        printer.print(&line);
    });
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
    Ok(match op {
        "sendMessageToPeer" => Op::SendMessageToPeer(v1::SendMessageToPeerRequest {
            peer_id: string("peerId")?,
            message: Some(message_body(request)?),
            enable_offline_messaging: flag("enableOfflineMessaging"),
            enable_historical_messaging: flag("enableHistoricalMessaging"),
        }),
        "join" => Op::Join(v1::JoinRequest {
            channel_id: string("channelId")?,
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
        other => return Err(format!("unknown op {other:?}")),
    })
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
        ReplyResult::Empty(_) | ReplyResult::Login(_) | ReplyResult::Pong(_) => json!({}),
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
        Event::MemberCountUpdated(count) => json!({
            "event": "MemberCountUpdated",
            "channelId": count.channel_id,
            "memberCount": count.member_count,
        }),
    }
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

//! The server API for app backends: JSON over HTTP under `/v1/apps/{appId}/…`, described by
//! `openapi.json` (served at `/v1/openapi.json`).
//!
//! Auth: HTTP Basic with one of the app's customer keys (the backend may act as any uid), or a
//! user's RTM token in `x-parley-token` with `x-parley-uid` (Agora's `x-agora-token` and
//! `x-agora-uid` work too; it may then act only as that uid). Errors are `{"code", "message"}`
//! with the code from the protocol's `ErrorCode`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::ids::UserId;
use parley_proto::v1;
use parley_store::Conversation;
use parley_store::Restriction;
use parley_store::Scope;
use serde::Deserialize;
use serde_json::json;

use crate::edge::Edge;
use crate::server_api;
use crate::server_api::Call;
use crate::server_api::Failure;

/// The OpenAPI document of this API, kept in the repository beside this file.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn routes() -> Router<Arc<Edge>> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/apps/{app_id}/peer-messages", post(send_peer_message))
        .route(
            "/v1/apps/{app_id}/channel-messages",
            post(send_channel_message),
        )
        .route("/v1/apps/{app_id}/users/{uid}/status", get(user_status))
        .route(
            "/v1/apps/{app_id}/channels/{channel_id}/member-count",
            get(member_count),
        )
        .route(
            "/v1/apps/{app_id}/channels/{channel_id}/members",
            get(members),
        )
        .route(
            "/v1/apps/{app_id}/channels/{channel_id}/history",
            get(channel_history),
        )
        .route(
            "/v1/apps/{app_id}/users/{uid}/peers/{peer_id}/history",
            get(peer_history),
        )
        .route(
            "/v1/apps/{app_id}/channels/{channel_id}/members/{uid}",
            delete(kick),
        )
        .route("/v1/apps/{app_id}/bans", get(list_bans).post(ban))
        .route("/v1/apps/{app_id}/bans/{uid}", delete(unban))
        .route(
            "/v1/apps/{app_id}/channels/{channel_id}/mutes",
            get(list_mutes).post(mute),
        )
        .route(
            "/v1/apps/{app_id}/channels/{channel_id}/mutes/{uid}",
            delete(unmute),
        )
        .route("/v1/apps/{app_id}/events/{stream}", get(events))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An error as the API answers it.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match server_api::failure(code) {
        Failure::Unauthenticated => StatusCode::UNAUTHORIZED,
        Failure::Forbidden => StatusCode::FORBIDDEN,
        Failure::NotFound => StatusCode::NOT_FOUND,
        Failure::BadRequest => StatusCode::BAD_REQUEST,
        Failure::Conflict => StatusCode::CONFLICT,
        Failure::TooOften => StatusCode::TOO_MANY_REQUESTS,
        Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.code);
        let body = Json(json!({
            "code": self.0.code.as_str_name(),
            "message": self.0.message,
        }));
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (status, [(header::RETRY_AFTER, "1")], body).into_response();
        }
        (status, body).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Checks the caller's credentials against the app in the path, and the app's request rate.
fn authorize(edge: &Edge, app_id: &str, headers: &HeaderMap) -> Result<Call, Error> {
    server_api::authorize(edge, app_id, |name| {
        headers.get(name).and_then(|value| value.to_str().ok())
    })
}

/// Reads a JSON body, answering a malformed one with INVALID_ARGUMENT.
fn body<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|error| Error::invalid_argument(format!("body: {error}")))
}

/// Reads the query string, answering a malformed one with INVALID_ARGUMENT.
fn query<T: for<'de> Deserialize<'de>>(uri: &axum::http::Uri) -> Result<T, Error> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|query| query.0)
        .map_err(|error| Error::invalid_argument(format!("query: {error}")))
}

fn ok(value: serde_json::Value) -> ApiResult {
    Ok(Json(value).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PeerMessageBody {
    from: String,
    to: String,
    message: v1::MessageBody,
    #[serde(default)]
    enable_offline_messaging: bool,
    #[serde(default)]
    enable_historical_messaging: bool,
    /// Answer only once the receiver acknowledged (or the message was cached, or failed).
    #[serde(default)]
    wait_for_ack: bool,
}

async fn send_peer_message(
    State(edge): State<Arc<Edge>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let send: PeerMessageBody = body(&raw)?;
    let sent = server_api::send_peer(
        &edge,
        &call,
        server_api::PeerMessage {
            from: send.from,
            to: send.to,
            message: Some(send.message),
            enable_offline: send.enable_offline_messaging,
            enable_history: send.enable_historical_messaging,
            wait_for_ack: send.wait_for_ack,
        },
    )
    .await?;
    ok(json!({
        "messageId": sent.message_id.0.to_string(),
        "serverReceivedTs": sent.server_received_ts,
        "result": sent.result,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChannelMessageBody {
    from: String,
    channel_id: String,
    message: v1::MessageBody,
    #[serde(default)]
    enable_historical_messaging: bool,
}

async fn send_channel_message(
    State(edge): State<Arc<Edge>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let send: ChannelMessageBody = body(&raw)?;
    let sent = server_api::send_channel(
        &edge,
        &call,
        &send.from,
        &send.channel_id,
        Some(send.message),
        send.enable_historical_messaging,
    )
    .await?;
    ok(json!({
        "messageId": sent.message_id.0.to_string(),
        "serverReceivedTs": sent.server_received_ts,
        "seq": sent.seq,
    }))
}

async fn user_status(
    State(edge): State<Arc<Edge>>,
    Path((app_id, uid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let (uid, state) = server_api::user_status(&edge, &call, &uid).await?;
    let state = match state {
        v1::PeerOnlineState::Online => "ONLINE",
        v1::PeerOnlineState::Unreachable => "UNREACHABLE",
        _ => "OFFLINE",
    };
    ok(json!({ "uid": uid.as_str(), "state": state }))
}

async fn member_count(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let count = server_api::member_count(&edge, &call, &channel_id).await?;
    ok(json!({ "channelId": channel_id, "count": count }))
}

async fn members(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let members = server_api::members(&edge, &call, &channel_id).await?;
    let members: Vec<&str> = members.iter().map(UserId::as_str).collect();
    ok(json!({ "channelId": channel_id, "members": members }))
}

/// A history page request: time range (ms, start inclusive, end exclusive, 0 = open), page
/// size, order, and the cursor of the previous page.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HistoryParams {
    #[serde(default)]
    start: i64,
    #[serde(default)]
    end: i64,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    /// Answer only how many messages the range holds.
    #[serde(default)]
    count: bool,
}

async fn history(
    edge: &Edge,
    call: &Call,
    conversation: Conversation,
    params: HistoryParams,
) -> ApiResult {
    let descending = match params.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(Error::invalid_argument("order is asc or desc").into()),
    };
    let range = server_api::HistoryRange {
        start: params.start,
        end: params.end,
        limit: params.limit,
        descending,
        cursor: params.cursor,
    };
    if params.count {
        let count = server_api::history_count(edge, call, conversation, range).await?;
        return ok(json!({ "count": count }));
    }
    let (messages, next) = server_api::history_page(edge, call, conversation, range).await?;
    let messages = serde_json::to_value(&messages)
        .map_err(|error| Error::internal(format!("encode history: {error}")))?;
    ok(json!({ "messages": messages, "next": next }))
}

async fn channel_history(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let conversation = server_api::channel_conversation(&call, &channel_id)?;
    history(&edge, &call, conversation, query(&uri)?).await
}

async fn peer_history(
    State(edge): State<Arc<Edge>>,
    Path((app_id, uid, peer_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let conversation = server_api::peer_conversation(&call, &uid, &peer_id)?;
    history(&edge, &call, conversation, query(&uri)?).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestrictBody {
    uid: String,
    duration_seconds: u64,
    #[serde(default)]
    reason: String,
}

fn restrictions_json(restrictions: &[Restriction]) -> serde_json::Value {
    restrictions
        .iter()
        .map(|restriction| {
            json!({
                "uid": restriction.uid,
                "sinceTs": restriction.since_ms,
                "untilTs": restriction.until_ms,
                "reason": restriction.reason,
            })
        })
        .collect()
}

async fn ban(
    State(edge): State<Arc<Edge>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let ban: RestrictBody = body(&raw)?;
    let until = server_api::restrict(
        &edge,
        &call,
        Scope::Login,
        &ban.uid,
        ban.duration_seconds,
        ban.reason,
    )
    .await?;
    ok(json!({ "uid": ban.uid, "untilTs": until }))
}

async fn list_bans(
    State(edge): State<Arc<Edge>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let bans = server_api::restrictions(&edge, &call, Scope::Login).await?;
    ok(json!({ "bans": restrictions_json(&bans) }))
}

async fn unban(
    State(edge): State<Arc<Edge>>,
    Path((app_id, uid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let lifted = server_api::lift(&edge, &call, Scope::Login, &uid).await?;
    ok(json!({ "uid": uid, "lifted": lifted }))
}

async fn mute(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let scope = server_api::channel_scope(&channel_id)?;
    let mute: RestrictBody = body(&raw)?;
    let until = server_api::restrict(
        &edge,
        &call,
        scope,
        &mute.uid,
        mute.duration_seconds,
        mute.reason,
    )
    .await?;
    ok(json!({ "channelId": channel_id, "uid": mute.uid, "untilTs": until }))
}

async fn list_mutes(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let scope = server_api::channel_scope(&channel_id)?;
    let mutes = server_api::restrictions(&edge, &call, scope).await?;
    ok(json!({ "channelId": channel_id, "mutes": restrictions_json(&mutes) }))
}

async fn unmute(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id, uid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let scope = server_api::channel_scope(&channel_id)?;
    let lifted = server_api::lift(&edge, &call, scope, &uid).await?;
    ok(json!({ "channelId": channel_id, "uid": uid, "lifted": lifted }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickParams {
    /// Told to the kicked user.
    #[serde(default)]
    reason: String,
}

async fn kick(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id, uid)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let params: KickParams = query(&uri)?;
    let kicked = server_api::kick(&edge, &call, &channel_id, &uid, params.reason).await?;
    ok(json!({ "channelId": channel_id, "uid": uid, "kicked": kicked }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EventParams {
    /// The `next` of the previous page; empty or absent: from the oldest event kept.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: usize,
}

async fn events(
    State(edge): State<Arc<Edge>>,
    Path((app_id, stream)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    let call = authorize(&edge, &app_id, &headers)?;
    let params: EventParams = query(&uri)?;
    let after = match params.after.as_deref() {
        None | Some("") => 0,
        Some(after) => after
            .parse()
            .map_err(|_| Error::invalid_argument("after is the next of a previous page"))?,
    };
    let (page, next) = server_api::events(&edge, &call, &stream, after, params.limit).await?;
    let events: Vec<serde_json::Value> = page
        .iter()
        .map(|event| {
            let mut json = json!({
                "id": event.id.to_string(),
                "type": event.kind,
                "ts": event.ts_ms,
                "uid": event.uid,
            });
            if !event.channel_id.is_empty() {
                json["channelId"] = event.channel_id.clone().into();
            }
            if !event.reason.is_empty() {
                json["reason"] = event.reason.clone().into();
            }
            json
        })
        .collect();
    ok(json!({ "events": events, "next": next.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_names_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = document["paths"].as_object().unwrap();
        for path in [
            "/v1/openapi.json",
            "/v1/apps/{appId}/peer-messages",
            "/v1/apps/{appId}/channel-messages",
            "/v1/apps/{appId}/users/{uid}/status",
            "/v1/apps/{appId}/channels/{channelId}/member-count",
            "/v1/apps/{appId}/channels/{channelId}/members",
            "/v1/apps/{appId}/channels/{channelId}/history",
            "/v1/apps/{appId}/users/{uid}/peers/{peerId}/history",
            "/v1/apps/{appId}/channels/{channelId}/members/{uid}",
            "/v1/apps/{appId}/bans",
            "/v1/apps/{appId}/bans/{uid}",
            "/v1/apps/{appId}/channels/{channelId}/mutes",
            "/v1/apps/{appId}/channels/{channelId}/mutes/{uid}",
            "/v1/apps/{appId}/events/{stream}",
        ] {
            assert!(paths.contains_key(path), "{path} is not in openapi.json");
        }
        assert_eq!(
            paths.len(),
            14,
            "openapi.json has a path the router does not"
        );
        // Each path names its methods (a path item, not an operation).
        for (path, item) in paths {
            assert!(
                item.as_object().is_some_and(|item| item
                    .keys()
                    .all(|method| ["get", "post", "delete"].contains(&method.as_str()))),
                "{path} is not a path item of get/post/delete operations"
            );
        }
    }

    #[test]
    fn every_error_code_has_an_http_status() {
        for code in 0..=25 {
            let code = ErrorCode::try_from(code).unwrap();
            assert!(status_of(code).as_u16() >= 400);
        }
    }
}

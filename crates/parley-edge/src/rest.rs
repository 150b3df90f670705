//! The server API for app backends: JSON over HTTP under `/v1/apps/{appId}/…`, described by
//! `openapi.json` (served at `/v1/openapi.json`).
//!
//! Auth: HTTP Basic with one of the app's customer keys (the backend may act as any uid), or a
//! user's RTM token in `x-parley-token` with `x-parley-uid` (Agora's `x-agora-token` and
//! `x-agora-uid` work too; it may then act only as that uid). Errors are `{"code", "message"}`
//! with the code from the protocol's `ErrorCode`.

use std::sync::Arc;
use std::time::Instant;

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
use base64::Engine;
use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::app::AppConfig;
use parley_core::ids::ChannelId;
use parley_core::ids::UserId;
use parley_core::limits::MAX_HISTORY_PAGE;
use parley_owner::ChannelKey;
use parley_owner::ChannelSend;
use parley_owner::Moderation;
use parley_owner::PeerOutcome;
use parley_owner::PeerSend;
use parley_owner::UserKey;
use parley_proto::v1;
use parley_store::Conversation;
use parley_store::EventStream;
use parley_store::HistoryQuery;
use parley_store::Order;
use parley_store::Restriction;
use parley_store::Scope;
use serde::Deserialize;
use serde_json::json;

use crate::edge::Edge;

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
    match code {
        ErrorCode::Unauthorized | ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden | ErrorCode::Banned => StatusCode::FORBIDDEN,
        ErrorCode::InvalidAppId => StatusCode::NOT_FOUND,
        ErrorCode::TooOften => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::Unspecified => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NotJoined
        | ErrorCode::AlreadyJoined
        | ErrorCode::Muted
        | ErrorCode::AlreadyLoggedIn
        | ErrorCode::NotLoggedIn
        | ErrorCode::InvitationNotStarted
        | ErrorCode::InvitationAlreadyEnded
        | ErrorCode::InvitationAlreadyAccepted
        | ErrorCode::InvitationAlreadySent => StatusCode::CONFLICT,
        ErrorCode::InvalidArgument
        | ErrorCode::InvalidUserid
        | ErrorCode::InvalidChannelId
        | ErrorCode::InvalidMessage
        | ErrorCode::ExceedLimit
        | ErrorCode::SizeOverflow => StatusCode::BAD_REQUEST,
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

/// Who is calling.
enum Caller {
    /// A backend with a customer key: may act as any uid.
    Backend,
    /// A user with its token: may act only as itself.
    User(UserId),
}

impl Caller {
    /// Moderation and the event logs are for the app's backend only.
    fn must_be_backend(&self, what: &str) -> Result<(), Error> {
        match self {
            Caller::Backend => Ok(()),
            Caller::User(_) => Err(Error::new(
                ErrorCode::Forbidden,
                format!("{what} needs a customer key"),
            )),
        }
    }

    fn may_act_as(&self, uid: &UserId) -> Result<(), Error> {
        match self {
            Caller::User(me) if me != uid => Err(Error::new(
                ErrorCode::Forbidden,
                "a user token may act only as its own uid",
            )),
            _ => Ok(()),
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| headers.get(*name))
        .and_then(|value| value.to_str().ok())
}

/// Checks the caller's credentials against the app in the path, and the app's request rate.
fn authorize(
    edge: &Edge,
    app_id: &str,
    headers: &HeaderMap,
) -> Result<(Arc<AppConfig>, Caller), Error> {
    let unauthorized = |why: &str| Error::new(ErrorCode::Unauthorized, why);
    let app = edge.apps().get(app_id)?;
    let caller = if let Some(token) = header(headers, &["x-parley-token", "x-agora-token"]) {
        let uid = header(headers, &["x-parley-uid", "x-agora-uid"])
            .ok_or_else(|| unauthorized("a user token needs its uid in x-parley-uid"))?;
        let uid = UserId::parse(uid)?;
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        app.authenticate(uid.as_str(), token, now_secs)?;
        Caller::User(uid)
    } else {
        let basic = header(headers, &["authorization"])
            .and_then(|value| value.strip_prefix("Basic "))
            .ok_or_else(|| unauthorized("send HTTP Basic credentials or a user token"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthorized("malformed HTTP Basic credentials"))?;
        let (key, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthorized("malformed HTTP Basic credentials"))?;
        if !app.accepts_customer(key, secret) {
            let elsewhere = edge
                .apps()
                .all()
                .iter()
                .any(|other| other.accepts_customer(key, secret));
            return Err(if elsewhere {
                Error::new(
                    ErrorCode::Forbidden,
                    "this customer key is not for this app",
                )
            } else {
                unauthorized("unknown customer key or wrong secret")
            });
        }
        Caller::Backend
    };
    if !edge.allow_api_call(&app.app_id, app.limits.server_api_rate, Instant::now()) {
        return Err(Error::too_often("server API request"));
    }
    Ok((app, caller))
}

/// Reads a JSON body, answering a malformed one with INVALID_ARGUMENT.
fn body<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|error| Error::invalid_argument(format!("body: {error}")))
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
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    let send: PeerMessageBody = body(&raw)?;
    let from = UserId::parse(&send.from)?;
    caller.may_act_as(&from)?;
    let to = UserId::parse(&send.to)?;
    let message = crate::requests::validate_message(Some(send.message))?;
    let dispatch = edge
        .owner()
        .send_peer(PeerSend {
            from: UserKey {
                app: app.app_id.clone(),
                uid: from,
            },
            to,
            message,
            enable_offline: send.enable_offline_messaging,
            enable_history: send.enable_historical_messaging,
        })
        .await?;
    let result = if send.wait_for_ack {
        match dispatch.outcome.await {
            PeerOutcome::Received => "RECEIVED_BY_PEER",
            PeerOutcome::Cached => "CACHED_BY_SERVER",
            PeerOutcome::Unreachable => "PEER_UNREACHABLE",
            PeerOutcome::TimedOut => {
                return Err(
                    Error::new(ErrorCode::Timeout, "the peer did not acknowledge in time").into(),
                );
            }
        }
    } else {
        // The delivery goes on without the caller.
        tokio::spawn(dispatch.outcome);
        "SENT"
    };
    Ok(Json(json!({
        "messageId": dispatch.message_id.0.to_string(),
        "serverReceivedTs": dispatch.server_received_ts,
        "result": result,
    }))
    .into_response())
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
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    let send: ChannelMessageBody = body(&raw)?;
    let from = UserId::parse(&send.from)?;
    caller.may_act_as(&from)?;
    let channel = ChannelId::parse(&send.channel_id)?;
    let message = crate::requests::validate_message(Some(send.message))?;
    let sent = edge
        .owner()
        .send_channel(ChannelSend {
            channel: ChannelKey {
                app: app.app_id.clone(),
                channel,
            },
            from,
            session: None,
            message,
            enable_history: send.enable_historical_messaging,
        })
        .await?;
    Ok(Json(json!({
        "messageId": sent.message_id.0.to_string(),
        "serverReceivedTs": sent.server_received_ts,
        "seq": sent.seq,
    }))
    .into_response())
}

async fn user_status(
    State(edge): State<Arc<Edge>>,
    Path((app_id, uid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, _caller) = authorize(&edge, &app_id, &headers)?;
    let uid = UserId::parse(&uid)?;
    let state = edge
        .owner()
        .presence(UserKey {
            app: app.app_id.clone(),
            uid: uid.clone(),
        })
        .await?;
    let state = match state {
        v1::PeerOnlineState::Online => "ONLINE",
        v1::PeerOnlineState::Unreachable => "UNREACHABLE",
        _ => "OFFLINE",
    };
    Ok(Json(json!({ "uid": uid.as_str(), "state": state })).into_response())
}

async fn member_count(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, _caller) = authorize(&edge, &app_id, &headers)?;
    let channel = ChannelId::parse(&channel_id)?;
    let count = edge
        .owner()
        .member_count(ChannelKey {
            app: app.app_id.clone(),
            channel: channel.clone(),
        })
        .await?;
    Ok(Json(json!({ "channelId": channel.as_str(), "count": count })).into_response())
}

async fn members(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, _caller) = authorize(&edge, &app_id, &headers)?;
    let channel = ChannelId::parse(&channel_id)?;
    let members = edge
        .owner()
        .members(
            ChannelKey {
                app: app.app_id.clone(),
                channel: channel.clone(),
            },
            None,
        )
        .await?;
    let members: Vec<&str> = members.iter().map(UserId::as_str).collect();
    Ok(Json(json!({ "channelId": channel.as_str(), "members": members })).into_response())
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

fn query_params(uri: &axum::http::Uri) -> Result<HistoryParams, Error> {
    axum::extract::Query::<HistoryParams>::try_from_uri(uri)
        .map(|query| query.0)
        .map_err(|error| Error::invalid_argument(format!("query: {error}")))
}

async fn history(
    edge: &Edge,
    app: &AppConfig,
    conversation: Conversation,
    params: HistoryParams,
) -> ApiResult {
    if params.start < 0 || params.end < 0 {
        return Err(Error::invalid_argument("times are ms since the epoch, not negative").into());
    }
    // A range that ends where (or before) it starts holds nothing.
    if params.end > 0 && params.end <= params.start {
        return Ok(Json(if params.count {
            json!({ "count": 0 })
        } else {
            json!({ "messages": [], "next": "" })
        })
        .into_response());
    }
    if params.count {
        let count = edge
            .owner()
            .count_history(app.app_id.clone(), conversation, params.start, params.end)
            .await?;
        return Ok(Json(json!({ "count": count })).into_response());
    }
    let limit = match params.limit {
        0 => crate::requests::DEFAULT_HISTORY_PAGE,
        limit if limit <= MAX_HISTORY_PAGE => limit,
        _ => {
            return Err(Error::invalid_argument(format!(
                "limit must be at most {MAX_HISTORY_PAGE}"
            ))
            .into());
        }
    };
    let order = match params.order.as_deref() {
        None | Some("asc") => Order::Ascending,
        Some("desc") => Order::Descending,
        Some(_) => return Err(Error::invalid_argument("order is asc or desc").into()),
    };
    let after = params
        .cursor
        .filter(|cursor| !cursor.is_empty())
        .map(|cursor| crate::requests::parse_cursor(&cursor))
        .transpose()?;
    let messages = edge
        .owner()
        .query_history(
            app.app_id.clone(),
            conversation,
            HistoryQuery {
                start_ms: params.start,
                end_ms: params.end,
                limit,
                order,
                after,
            },
        )
        .await?;
    let next = match messages.last() {
        Some(last) if messages.len() == limit => {
            format!("{}:{}", last.server_received_ts, last.message_id)
        }
        _ => String::new(),
    };
    let messages = serde_json::to_value(&messages)
        .map_err(|error| Error::internal(format!("encode history: {error}")))?;
    Ok(Json(json!({ "messages": messages, "next": next })).into_response())
}

async fn channel_history(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    if let Caller::User(_) = caller {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "channel history needs a customer key (a user reads it through a session)",
        )
        .into());
    }
    let channel = ChannelId::parse(&channel_id)?;
    let params = query_params(&uri)?;
    history(&edge, &app, Conversation::Channel(channel), params).await
}

async fn peer_history(
    State(edge): State<Arc<Edge>>,
    Path((app_id, uid, peer_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    let uid = UserId::parse(&uid)?;
    caller.may_act_as(&uid)?;
    let peer = UserId::parse(&peer_id)?;
    let params = query_params(&uri)?;
    history(&edge, &app, Conversation::peers(uid, peer), params).await
}

/// The longest ban or mute: a year.
const MAX_RESTRICTION_SECONDS: u64 = 365 * 24 * 3600;
/// The longest reason kept with a ban or mute, in bytes.
const MAX_REASON_BYTES: usize = 256;
/// Event log page sizes: the default and the most.
const DEFAULT_EVENT_PAGE: usize = 100;
const MAX_EVENT_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestrictBody {
    uid: String,
    duration_seconds: u64,
    #[serde(default)]
    reason: String,
}

impl RestrictBody {
    /// The uid, the end time (ms since the epoch) and the reason, checked.
    fn parse(self) -> Result<(UserId, i64, String), Error> {
        let uid = UserId::parse(&self.uid)?;
        if !(1..=MAX_RESTRICTION_SECONDS).contains(&self.duration_seconds) {
            return Err(Error::invalid_argument(format!(
                "durationSeconds must be 1 to {MAX_RESTRICTION_SECONDS}"
            )));
        }
        if self.reason.len() > MAX_REASON_BYTES {
            return Err(Error::new(
                ErrorCode::SizeOverflow,
                format!("a reason is at most {MAX_REASON_BYTES} bytes"),
            ));
        }
        let until_ms = unix_ms() + self.duration_seconds as i64 * 1000;
        Ok((uid, until_ms, self.reason))
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
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
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("banning")?;
    let (uid, until_ms, reason) = body::<RestrictBody>(&raw)?.parse()?;
    let user = UserKey {
        app: app.app_id.clone(),
        uid: uid.clone(),
    };
    edge.owner()
        .moderate(Moderation::Ban {
            user,
            until_ms,
            reason,
        })
        .await?;
    Ok(Json(json!({ "uid": uid.as_str(), "untilTs": until_ms })).into_response())
}

async fn list_bans(
    State(edge): State<Arc<Edge>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("listing bans")?;
    let bans = edge
        .owner()
        .restrictions(app.app_id.clone(), Scope::Login)
        .await?;
    Ok(Json(json!({ "bans": restrictions_json(&bans) })).into_response())
}

async fn unban(
    State(edge): State<Arc<Edge>>,
    Path((app_id, uid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("lifting a ban")?;
    let uid = UserId::parse(&uid)?;
    let user = UserKey {
        app: app.app_id.clone(),
        uid: uid.clone(),
    };
    let lifted = edge.owner().moderate(Moderation::Unban { user }).await?;
    Ok(Json(json!({ "uid": uid.as_str(), "lifted": lifted })).into_response())
}

async fn mute(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: axum::body::Bytes,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("muting")?;
    let channel = ChannelId::parse(&channel_id)?;
    let (uid, until_ms, reason) = body::<RestrictBody>(&raw)?.parse()?;
    edge.owner()
        .moderate(Moderation::Mute {
            channel: ChannelKey {
                app: app.app_id.clone(),
                channel: channel.clone(),
            },
            uid: uid.clone(),
            until_ms,
            reason,
        })
        .await?;
    Ok(Json(json!({
        "channelId": channel.as_str(),
        "uid": uid.as_str(),
        "untilTs": until_ms,
    }))
    .into_response())
}

async fn list_mutes(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("listing mutes")?;
    let channel = ChannelId::parse(&channel_id)?;
    let mutes = edge
        .owner()
        .restrictions(app.app_id.clone(), Scope::Channel(channel.clone()))
        .await?;
    Ok(Json(json!({
        "channelId": channel.as_str(),
        "mutes": restrictions_json(&mutes),
    }))
    .into_response())
}

async fn unmute(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id, uid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("lifting a mute")?;
    let channel = ChannelId::parse(&channel_id)?;
    let uid = UserId::parse(&uid)?;
    let lifted = edge
        .owner()
        .moderate(Moderation::Unmute {
            channel: ChannelKey {
                app: app.app_id.clone(),
                channel: channel.clone(),
            },
            uid: uid.clone(),
        })
        .await?;
    Ok(Json(json!({
        "channelId": channel.as_str(),
        "uid": uid.as_str(),
        "lifted": lifted,
    }))
    .into_response())
}

async fn kick(
    State(edge): State<Arc<Edge>>,
    Path((app_id, channel_id, uid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("kicking")?;
    let channel = ChannelId::parse(&channel_id)?;
    let uid = UserId::parse(&uid)?;
    let kicked = edge
        .owner()
        .moderate(Moderation::Kick {
            channel: ChannelKey {
                app: app.app_id.clone(),
                channel: channel.clone(),
            },
            uid: uid.clone(),
        })
        .await?;
    Ok(Json(json!({
        "channelId": channel.as_str(),
        "uid": uid.as_str(),
        "kicked": kicked,
    }))
    .into_response())
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
    let (app, caller) = authorize(&edge, &app_id, &headers)?;
    caller.must_be_backend("reading events")?;
    let stream = match stream.as_str() {
        "users" => EventStream::Users,
        "channels" => EventStream::Channels,
        _ => {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                "the event logs are users and channels",
            )
            .into());
        }
    };
    let params = axum::extract::Query::<EventParams>::try_from_uri(&uri)
        .map(|query| query.0)
        .map_err(|error| Error::invalid_argument(format!("query: {error}")))?;
    let after = match params.after.as_deref() {
        None | Some("") => 0,
        Some(after) => after
            .parse()
            .map_err(|_| Error::invalid_argument("after is the next of a previous page"))?,
    };
    let limit = match params.limit {
        0 => DEFAULT_EVENT_PAGE,
        limit if limit <= MAX_EVENT_PAGE => limit,
        _ => {
            return Err(
                Error::invalid_argument(format!("limit must be at most {MAX_EVENT_PAGE}")).into(),
            );
        }
    };
    let page = edge
        .owner()
        .events(app.app_id.clone(), stream, after, limit)
        .await?;
    let next = page.last().map_or(after, |event| event.id);
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
    Ok(Json(json!({ "events": events, "next": next.to_string() })).into_response())
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

//! The server API over gRPC, on the edge's HTTP port: every operation, its errors as gRPC
//! statuses with the error code in metadata, and the same auth rules as REST.

use parley_client::Client;
use parley_client::ErrorCode;
use parley_client::Event;
use parley_client::Message;
use parley_proto::server::v1 as api;
use parley_proto::server::v1::server_api_client::ServerApiClient;
use parley_proto::v1;
use parley_testkit::CUSTOMER_KEY;
use parley_testkit::CUSTOMER_SECRET;
use parley_testkit::PROMPTLY;
use parley_testkit::TestServer;
use parley_testkit::http::basic;
use tonic::Request;
use tonic::transport::Channel;

async fn client(server: &TestServer) -> ServerApiClient<Channel> {
    ServerApiClient::connect(format!("http://{}", server.http_addresses()[0]))
        .await
        .expect("connect over HTTP/2 to the edge's HTTP port")
}

/// `message` with a customer key's credentials.
fn backend<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let (name, value) = basic(CUSTOMER_KEY, CUSTOMER_SECRET);
    request.metadata_mut().insert(name, value.parse().unwrap());
    request
}

fn text(text: &str) -> Option<v1::MessageBody> {
    Some(v1::MessageBody {
        content: Some(v1::message_body::Content::Text(text.into())),
        ..Default::default()
    })
}

/// `message` with `uid`'s RTM token.
fn as_user<T>(server: &TestServer, uid: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-parley-token", server.token(uid).parse().unwrap());
    metadata.insert("x-parley-uid", uid.parse().unwrap());
    request
}

/// The status code and the error code a failed call carries.
fn failure<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> (tonic::Code, String) {
    let status = result.expect_err("the call should fail");
    let code = status
        .metadata()
        .get("parley-error-code")
        .and_then(|code| code.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status.code(), code)
}

#[tokio::test]
async fn every_operation_works_over_grpc() {
    let server = TestServer::start().await;
    let mut grpc = client(&server).await;
    let app_id = server.app_id().to_owned();
    let (bob, mut bob_events) = Client::login(server.client_config("bob")).await.unwrap();
    bob.join("room").await.unwrap();

    let sent = grpc
        .send_peer_message(backend(api::SendPeerMessageRequest {
            app_id: app_id.clone(),
            from: "system".into(),
            to: "bob".into(),
            message: text("hello bob"),
            enable_historical_messaging: true,
            wait_for_ack: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.result, "RECEIVED_BY_PEER");
    let sent = grpc
        .send_channel_message(backend(api::SendChannelMessageRequest {
            app_id: app_id.clone(),
            from: "system".into(),
            channel_id: "room".into(),
            message: text("hello room"),
            enable_historical_messaging: true,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(sent.seq > 0);
    let got = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Event::ChannelMessage(message)) = bob_events.recv().await {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!((got.seq, got.message_id), (sent.seq, sent.message_id));

    let status = grpc
        .user_status(backend(api::UserRequest {
            app_id: app_id.clone(),
            uid: "bob".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state(), v1::PeerOnlineState::Online);
    let room = api::ChannelRequest {
        app_id: app_id.clone(),
        channel_id: "room".into(),
    };
    let count = grpc
        .channel_member_count(backend(room.clone()))
        .await
        .unwrap();
    assert_eq!(count.into_inner().count, 1);
    let members = grpc.channel_members(backend(room.clone())).await.unwrap();
    assert_eq!(members.into_inner().members, ["bob"]);

    let history = api::HistoryRequest {
        app_id: app_id.clone(),
        conversation: Some(api::history_request::Conversation::Peer(api::PeerPair {
            uid: "bob".into(),
            peer_id: "system".into(),
        })),
        ..Default::default()
    };
    let page = grpc
        .query_history(backend(history.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].from, "system");
    let count = grpc
        .count_history(backend(history))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 1);
    let channel_history = api::HistoryRequest {
        app_id: app_id.clone(),
        conversation: Some(api::history_request::Conversation::ChannelId("room".into())),
        ..Default::default()
    };
    let page = grpc.count_history(backend(channel_history)).await.unwrap();
    assert_eq!(page.into_inner().count, 1);

    // Moderation.
    let mute = api::RestrictRequest {
        app_id: app_id.clone(),
        uid: "bob".into(),
        channel_id: "room".into(),
        duration_seconds: 60,
        reason: "calm down".into(),
    };
    let muted = grpc.mute(backend(mute)).await.unwrap().into_inner();
    let refused = bob.send_message("room", Message::text("!")).await;
    assert_eq!(
        refused.err().map(|error| error.code),
        Some(ErrorCode::Muted)
    );
    let list = api::ListRestrictionsRequest {
        app_id: app_id.clone(),
        channel_id: "room".into(),
    };
    let mutes = grpc.list_mutes(backend(list)).await.unwrap().into_inner();
    assert_eq!(mutes.restrictions.len(), 1);
    assert_eq!(mutes.restrictions[0].until_ts, muted.until_ts);
    assert_eq!(mutes.restrictions[0].reason, "calm down");
    let lift = api::LiftRequest {
        app_id: app_id.clone(),
        uid: "bob".into(),
        channel_id: "room".into(),
    };
    assert!(
        grpc.unmute(backend(lift))
            .await
            .unwrap()
            .into_inner()
            .lifted
    );
    let kick = api::KickRequest {
        app_id: app_id.clone(),
        channel_id: "room".into(),
        uid: "bob".into(),
        reason: "spam".into(),
    };
    assert!(grpc.kick(backend(kick)).await.unwrap().into_inner().kicked);
    let ban = api::RestrictRequest {
        app_id: app_id.clone(),
        uid: "bob".into(),
        duration_seconds: 60,
        ..Default::default()
    };
    grpc.ban(backend(ban)).await.unwrap();
    let list = api::ListRestrictionsRequest {
        app_id: app_id.clone(),
        channel_id: String::new(),
    };
    let bans = grpc.list_bans(backend(list)).await.unwrap().into_inner();
    assert_eq!(bans.restrictions[0].uid, "bob");
    let lift = api::LiftRequest {
        app_id: app_id.clone(),
        uid: "bob".into(),
        channel_id: String::new(),
    };
    assert!(grpc.unban(backend(lift)).await.unwrap().into_inner().lifted);

    // The event logs saw bob join and get kicked.
    let events = tokio::time::timeout(PROMPTLY, async {
        loop {
            let page = grpc
                .events(backend(api::EventsRequest {
                    app_id: app_id.clone(),
                    stream: "channels".into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            if page.events.len() >= 2 {
                return page;
            }
        }
    })
    .await
    .unwrap();
    let kinds: Vec<(&str, &str)> = events
        .events
        .iter()
        .map(|event| (event.r#type.as_str(), event.reason.as_str()))
        .collect();
    assert_eq!(kinds, [("join", ""), ("leave", "kicked")]);
    assert_eq!(events.next, events.events[1].id);
}

#[tokio::test]
async fn grpc_failures_carry_the_same_codes_as_rest() {
    let server = TestServer::start().await;
    let mut grpc = client(&server).await;
    let app_id = server.app_id().to_owned();
    let status = |app_id: &str, uid: &str| api::UserRequest {
        app_id: app_id.into(),
        uid: uid.into(),
    };

    let anonymous = grpc.user_status(Request::new(status(&app_id, "bob"))).await;
    assert_eq!(
        failure(anonymous),
        (tonic::Code::Unauthenticated, "UNAUTHORIZED".into())
    );
    let elsewhere = grpc
        .user_status(backend(status("ffffffffffffffffffffffffffffffff", "bob")))
        .await;
    assert_eq!(
        failure(elsewhere),
        (tonic::Code::NotFound, "INVALID_APP_ID".into())
    );
    let bad_uid = grpc
        .user_status(backend(status(&app_id, &"u".repeat(65))))
        .await;
    assert_eq!(
        failure(bad_uid),
        (tonic::Code::InvalidArgument, "INVALID_USERID".into())
    );

    // A user's token acts only as that user, and never moderates.
    let send = |from: &str| api::SendPeerMessageRequest {
        app_id: app_id.clone(),
        from: from.into(),
        to: "bob".into(),
        message: text("hi"),
        ..Default::default()
    };
    let mine = grpc
        .send_peer_message(as_user(&server, "alice", send("alice")))
        .await;
    assert_eq!(mine.unwrap().into_inner().result, "SENT");
    let forged = grpc
        .send_peer_message(as_user(&server, "alice", send("carol")))
        .await;
    assert_eq!(
        failure(forged),
        (tonic::Code::PermissionDenied, "FORBIDDEN".into())
    );
    let ban = api::RestrictRequest {
        app_id: app_id.clone(),
        uid: "bob".into(),
        duration_seconds: 60,
        ..Default::default()
    };
    let banned = grpc.ban(as_user(&server, "alice", ban)).await;
    assert_eq!(
        failure(banned),
        (tonic::Code::PermissionDenied, "FORBIDDEN".into())
    );

    let empty = grpc.send_peer_message(backend(api::SendPeerMessageRequest {
        message: None,
        ..send("system")
    }));
    assert_eq!(
        failure(empty.await),
        (tonic::Code::InvalidArgument, "INVALID_MESSAGE".into())
    );
    let no_conversation = grpc
        .query_history(backend(api::HistoryRequest {
            app_id: app_id.clone(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        failure(no_conversation),
        (tonic::Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    let too_long = api::RestrictRequest {
        app_id: app_id.clone(),
        uid: "bob".into(),
        channel_id: "room".into(),
        duration_seconds: 365 * 24 * 3600 + 1,
        ..Default::default()
    };
    assert_eq!(
        failure(grpc.mute(backend(too_long)).await),
        (tonic::Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    let (bob, _events) = Client::login(server.client_config("bob")).await.unwrap();
    bob.join("room").await.unwrap();
    let mute = api::RestrictRequest {
        app_id: app_id.clone(),
        uid: "system".into(),
        channel_id: "room".into(),
        duration_seconds: 60,
        ..Default::default()
    };
    grpc.mute(backend(mute)).await.unwrap();
    let muted = grpc
        .send_channel_message(backend(api::SendChannelMessageRequest {
            app_id: app_id.clone(),
            from: "system".into(),
            channel_id: "room".into(),
            message: text("hm"),
            enable_historical_messaging: false,
        }))
        .await;
    assert_eq!(
        failure(muted),
        (tonic::Code::FailedPrecondition, "MUTED".into())
    );
}

//! Call invitations end to end over real WebSockets: every outcome, its events on both sides, and
//! the API errors. (Every transition with its exact timing is unit-tested on the state machine in
//! parley-core; here the timers are shortened to keep the suite quick.)

use std::time::Duration;

use parley_core::invitation::InvitationTimers;
use parley_proto::Codec;
use parley_proto::v1;
use parley_proto::v1::ErrorCode;
use parley_proto::v1::InvitationFailureReason;
use parley_proto::v1::event::Kind as EventKind;
use parley_proto::v1::request::Op;
use parley_testkit::RawClient;
use parley_testkit::TestServer;
use parley_testkit::ops::error_code;

async fn server() -> TestServer {
    TestServer::builder()
        .owner(|owner| {
            owner.invitation_timers = InvitationTimers {
                callee_offline: Duration::from_millis(600),
                receipt: Duration::from_millis(600),
                answer: Duration::from_millis(1200),
            }
        })
        .start()
        .await
}

fn invite(callee: &str) -> Op {
    Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
        callee_id: callee.into(),
        content: "call me".into(),
        channel_id: "call-room".into(),
    })
}

async fn send_invitation(caller: &mut RawClient, callee: &str) -> u64 {
    let reply = caller.call(invite(callee)).await;
    match reply.result {
        Some(v1::reply::Result::SendLocalInvitation(sent)) => sent.invitation_id,
        _ => panic!("sendLocalInvitation failed: {:?}", reply.error),
    }
}

async fn received(callee: &mut RawClient) -> v1::RemoteInvitationReceived {
    match callee
        .event(|event| matches!(event, EventKind::RemoteInvitationReceived(_)))
        .await
    {
        EventKind::RemoteInvitationReceived(received) => received,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn accepted_invitation() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Proto).await;
    let id = send_invitation(&mut alice, "bob").await;
    let invitation = received(&mut bob).await;
    assert_eq!(
        invitation,
        v1::RemoteInvitationReceived {
            invitation_id: id,
            caller_id: "alice".into(),
            content: "call me".into(),
            channel_id: "call-room".into(),
        }
    );
    bob.receipt(id).await;
    assert_eq!(
        alice
            .event(|event| matches!(event, EventKind::LocalInvitationReceivedByPeer(_)))
            .await,
        EventKind::LocalInvitationReceivedByPeer(v1::LocalInvitationReceivedByPeer {
            invitation_id: id,
            callee_id: "bob".into(),
        })
    );
    let accept = |response: &str| {
        Op::AcceptRemoteInvitation(v1::AcceptRemoteInvitationRequest {
            invitation_id: id,
            response: response.into(),
        })
    };
    assert!(bob.call(accept("on my way")).await.error.is_none());
    assert_eq!(
        alice
            .event(|event| matches!(event, EventKind::LocalInvitationAccepted(_)))
            .await,
        EventKind::LocalInvitationAccepted(v1::LocalInvitationAccepted {
            invitation_id: id,
            callee_id: "bob".into(),
            response: "on my way".into(),
        })
    );
    bob.event(|event| matches!(event, EventKind::RemoteInvitationAccepted(_)))
        .await;
    let again = bob.call(accept("twice")).await;
    assert_eq!(
        error_code(&again),
        Some(ErrorCode::InvitationAlreadyAccepted)
    );
    let cancel = alice
        .call(Op::CancelLocalInvitation(
            v1::CancelLocalInvitationRequest { invitation_id: id },
        ))
        .await;
    assert_eq!(
        error_code(&cancel),
        Some(ErrorCode::InvitationAlreadyAccepted)
    );
}

#[tokio::test]
async fn refused_invitation() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    let id = send_invitation(&mut alice, "bob").await;
    received(&mut bob).await;
    bob.receipt(id).await;
    let reply = bob
        .call(Op::RefuseRemoteInvitation(
            v1::RefuseRemoteInvitationRequest {
                invitation_id: id,
                response: "busy".into(),
            },
        ))
        .await;
    assert!(reply.error.is_none());
    assert_eq!(
        alice
            .event(|event| matches!(event, EventKind::LocalInvitationRefused(_)))
            .await,
        EventKind::LocalInvitationRefused(v1::LocalInvitationRefused {
            invitation_id: id,
            callee_id: "bob".into(),
            response: "busy".into(),
        })
    );
    bob.event(|event| matches!(event, EventKind::RemoteInvitationRefused(_)))
        .await;
}

#[tokio::test]
async fn canceled_invitation() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    let id = send_invitation(&mut alice, "bob").await;
    received(&mut bob).await;
    let cancel = Op::CancelLocalInvitation(v1::CancelLocalInvitationRequest { invitation_id: id });
    assert!(alice.call(cancel).await.error.is_none());
    alice
        .event(|event| matches!(event, EventKind::LocalInvitationCanceled(_)))
        .await;
    assert_eq!(
        bob.event(|event| matches!(event, EventKind::RemoteInvitationCanceled(_)))
            .await,
        EventKind::RemoteInvitationCanceled(v1::RemoteInvitationCanceled {
            invitation_id: id,
            caller_id: "alice".into(),
        })
    );
}

async fn failure_reason(alice: &mut RawClient) -> InvitationFailureReason {
    match alice
        .event(|event| matches!(event, EventKind::LocalInvitationFailure(_)))
        .await
    {
        EventKind::LocalInvitationFailure(failure) => failure.reason(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_callee_that_stays_offline_fails_peer_offline() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    send_invitation(&mut alice, "nobody").await;
    assert_eq!(
        failure_reason(&mut alice).await,
        InvitationFailureReason::PeerOffline
    );
}

#[tokio::test]
async fn a_callee_that_logs_in_within_the_window_gets_it() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let id = send_invitation(&mut alice, "late").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = RawClient::login(&server, "late", Codec::Json).await;
    assert_eq!(received(&mut late).await.invitation_id, id);
    late.receipt(id).await;
    alice
        .event(|event| matches!(event, EventKind::LocalInvitationReceivedByPeer(_)))
        .await;
}

#[tokio::test]
async fn a_client_that_never_acknowledges_fails_peer_no_response() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut mute = RawClient::login(&server, "mute", Codec::Json).await;
    send_invitation(&mut alice, "mute").await;
    received(&mut mute).await;
    assert_eq!(
        failure_reason(&mut alice).await,
        InvitationFailureReason::PeerNoResponse
    );
    match mute
        .event(|event| matches!(event, EventKind::RemoteInvitationFailure(_)))
        .await
    {
        EventKind::RemoteInvitationFailure(failure) => {
            assert_eq!(failure.reason(), InvitationFailureReason::PeerNoResponse)
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn an_unanswered_invitation_expires_on_both_sides() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let mut bob = RawClient::login(&server, "bob", Codec::Json).await;
    let id = send_invitation(&mut alice, "bob").await;
    received(&mut bob).await;
    bob.receipt(id).await;
    assert_eq!(
        failure_reason(&mut alice).await,
        InvitationFailureReason::InvitationExpire
    );
    bob.event(|event| matches!(event, EventKind::RemoteInvitationFailure(_)))
        .await;
    let late = bob
        .call(Op::AcceptRemoteInvitation(
            v1::AcceptRemoteInvitationRequest {
                invitation_id: id,
                response: String::new(),
            },
        ))
        .await;
    assert_eq!(error_code(&late), Some(ErrorCode::InvitationAlreadyEnded));
}

#[tokio::test]
async fn invitation_api_errors() {
    let server = server().await;
    let mut alice = RawClient::login(&server, "alice", Codec::Json).await;
    let _bob = RawClient::login(&server, "bob", Codec::Json).await;
    send_invitation(&mut alice, "bob").await;
    assert_eq!(
        error_code(&alice.call(invite("bob")).await),
        Some(ErrorCode::InvitationAlreadySent)
    );
    assert_eq!(
        error_code(&alice.call(invite("null")).await),
        Some(ErrorCode::InvalidUserid)
    );
    assert_eq!(
        error_code(&alice.call(invite("alice")).await),
        Some(ErrorCode::InvalidArgument)
    );
    let at_limit = Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
        callee_id: "carol".into(),
        content: "x".repeat(8 * 1024),
        channel_id: String::new(),
    });
    assert!(
        alice.call(at_limit).await.error.is_none(),
        "8 KB of content is allowed"
    );
    let too_big = Op::SendLocalInvitation(v1::SendLocalInvitationRequest {
        callee_id: "dave".into(),
        content: "x".repeat(8 * 1024 + 1),
        channel_id: String::new(),
    });
    assert_eq!(
        error_code(&alice.call(too_big).await),
        Some(ErrorCode::SizeOverflow)
    );
    let unknown = Op::CancelLocalInvitation(v1::CancelLocalInvitationRequest { invitation_id: 7 });
    assert_eq!(
        error_code(&alice.call(unknown).await),
        Some(ErrorCode::InvitationNotStarted)
    );
    let not_mine = Op::AcceptRemoteInvitation(v1::AcceptRemoteInvitationRequest {
        invitation_id: 7,
        response: String::new(),
    });
    assert_eq!(
        error_code(&alice.call(not_mine).await),
        Some(ErrorCode::InvitationNotStarted)
    );
}

//! Every operation an edge (or the region bridge) asks of the owners, defined once: its request,
//! what it answers, and which key routes it. Callers ask with `parley_owner::Owners::ask`. The
//! owner in this process and the cluster's gRPC path both carry a [`Request`] and its
//! [`Response`] as they are, so redirects, epochs and errors are handled in one place
//! (`parley_owner::cluster`), and an operation exists nowhere else but in the shard's handler
//! for it.
//!
//! Adding one: a line in `operations!` below, an arm in the shard's `call`, and the caller.

use std::collections::BTreeMap;

use parley_core::Error;
use parley_core::app::MultiLogin;
use parley_core::attributes::AttributeOp;
use parley_core::ids::AppId;
use parley_core::ids::ChannelId;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::storage::Conversation;
use parley_core::storage::EventStream;
use parley_core::storage::HistoryQuery;
use parley_core::storage::Restriction;
use parley_core::storage::Scope;
use parley_core::storage::StoredEvent;
use parley_proto::v1;
use serde::Deserialize;
use serde::Serialize;

use crate::api::ChannelKey;
use crate::api::ChannelSent;
use crate::api::Interest;
use crate::api::InvitationRestore;
use crate::api::LeaveReason;
use crate::api::Moderation;
use crate::api::PeerOutcome;
use crate::api::RegionOrigin;
use crate::api::Resume;
use crate::api::UserKey;

/// The key whose owner answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    User(&'a AppId, &'a UserId),
    Channel(&'a AppId, &'a ChannelId),
    /// Any owner: it reads what every owner shares (the store), by app.
    Any(&'a AppId),
}

impl<'a> Route<'a> {
    fn user(user: &'a UserKey) -> Self {
        Route::User(&user.app, &user.uid)
    }

    fn channel(channel: &'a ChannelKey) -> Self {
        Route::Channel(&channel.app, &channel.channel)
    }
}

/// One owner operation: a request that answers `Output`.
pub trait Operation: Send + 'static {
    type Output: Send + 'static;

    fn into_request(self) -> Request;
    /// The answer to this operation, out of the owner's response.
    fn output(response: Response) -> Result<Self::Output, Error>;
    fn response(output: Self::Output) -> Response;
}

macro_rules! operations {
    ($(
        $(#[$meta:meta])*
        $op:ident { $($(#[$field_meta:meta])* $field:ident : $type:ty),* $(,)? }
            -> $output:ty, by |$it:ident| $route:expr;
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            pub struct $op {
                $($(#[$field_meta])* pub $field: $type,)*
            }

            impl Operation for $op {
                type Output = $output;

                fn into_request(self) -> Request {
                    Request::$op(self)
                }

                fn output(response: Response) -> Result<$output, Error> {
                    match response {
                        Response::$op(output) => Ok(output),
                        _ => Err(Error::internal("the owner answered another operation")),
                    }
                }

                fn response(output: $output) -> Response {
                    Response::$op(output)
                }
            }
        )*

        /// Any owner operation.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Request {
            $($op($op),)*
        }

        /// The answer to a [`Request`], of the same operation.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Response {
            $($op($output),)*
        }

        impl Request {
            /// Every operation's name.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($op)),*];

            /// The key whose owner answers it.
            pub fn route(&self) -> Route<'_> {
                match self {
                    $(Request::$op($it) => $route,)*
                }
            }

            /// The operation's name, for logs and metrics.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Request::$op(_) => stringify!($op),)*
                }
            }
        }
    };
}

operations! {
    /// Records a new session of a user; with [`MultiLogin::Replace`] ends the user's other
    /// sessions.
    OpenSession { user: UserKey, session: SessionRef, multi_login: MultiLogin }
        -> (), by |op| Route::user(&op.user);
    /// Called once the login reply is on its way: delivers the offline inbox and pending
    /// invitations to the new session.
    SessionReady { user: UserKey, session: SessionRef }
        -> (), by |op| Route::user(&op.user);
    /// Forgets a session. Idempotent.
    CloseSession { user: UserKey, session: SessionRef, reason: LeaveReason }
        -> (), by |op| Route::user(&op.user);
    /// A session's connection went silent (`false`) or spoke again (`true`).
    SetReachable { user: UserKey, session: SessionRef, reachable: bool }
        -> (), by |op| Route::user(&op.user);
    /// Joins, replaying what the session missed as `resume` says. Answers the channel's latest
    /// sequence number.
    Join { channel: ChannelKey, uid: UserId, session: SessionRef, resume: Resume }
        -> u64, by |op| Route::channel(&op.channel);
    Leave { channel: ChannelKey, uid: UserId, session: SessionRef, reason: LeaveReason }
        -> (), by |op| Route::channel(&op.channel);
    /// A channel message, numbered and handed to the members by the channel's owner.
    ChannelSend {
        channel: ChannelKey,
        from: UserId,
        /// The sending member's session; `None` for a message from the app's backend (the
        /// server API), which need not be a member.
        session: Option<SessionRef>,
        message: v1::MessageBody,
        enable_history: bool,
        /// Set when the message was accepted in another region and crossed over Kafka: it is
        /// delivered to this region's members only, once (repeats of its ID are dropped), and
        /// keeps its ID and timestamp.
        origin: Option<RegionOrigin>,
        /// The W3C `traceparent` of the sender's span when the message is traced.
        trace: Option<String>,
    } -> ChannelSent, by |op| Route::channel(&op.channel);
    /// Members of a channel: one the asking member's session has joined, or (`None`, the app's
    /// backend) any channel.
    Members { channel: ChannelKey, asker: Option<(UserId, SessionRef)> }
        -> Vec<UserId>, by |op| Route::channel(&op.channel);
    /// Members of any channel; 0 for one nobody is in.
    MemberCount { channel: ChannelKey } -> u32, by |op| Route::channel(&op.channel);
    UpdateUserAttributes { user: UserKey, op: AttributeOp }
        -> (), by |op| Route::user(&op.user);
    /// All attributes of a user, or those named in `keys`.
    UserAttributes { user: UserKey, keys: Vec<String> }
        -> BTreeMap<String, String>, by |op| Route::user(&op.user);
    UpdateChannelAttributes {
        channel: ChannelKey,
        by: UserId,
        op: AttributeOp,
        notify_members: bool,
    } -> (), by |op| Route::channel(&op.channel);
    /// All attributes of a channel, or those named in `keys`.
    ChannelAttributes { channel: ChannelKey, keys: Vec<String> }
        -> Vec<v1::ChannelAttribute>, by |op| Route::channel(&op.channel);
    Presence { user: UserKey } -> v1::PeerOnlineState, by |op| Route::user(&op.user);
    /// Subscribes `subscriber` to changes of `user`; answers the current state.
    SubscribePresence { user: UserKey, subscriber: SessionRef }
        -> v1::PeerOnlineState, by |op| Route::user(&op.user);
    UnsubscribePresence { user: UserKey, subscriber: SessionRef }
        -> (), by |op| Route::user(&op.user);
    /// A call invitation, kept by the callee's owner. Answers the invitation's id.
    InvitationSend {
        caller: UserKey,
        caller_session: SessionRef,
        callee: UserId,
        content: String,
        channel_id: String,
        /// Set when the caller's edge re-sends an invitation after the callee's owner changed.
        restore: Option<InvitationRestore>,
    } -> u64, by |op| Route::User(&op.caller.app, &op.callee);
    CancelInvitation { callee: UserKey, caller: UserId, invitation_id: u64 }
        -> (), by |op| Route::user(&op.callee);
    AnswerInvitation { callee: UserKey, invitation_id: u64, accept: bool, response: String }
        -> (), by |op| Route::user(&op.callee);
    QueryHistory { app: AppId, conversation: Conversation, query: HistoryQuery }
        -> Vec<v1::HistoryMessage>, by |op| Route::Any(&op.app);
    CountHistory { app: AppId, conversation: Conversation, start_ms: i64, end_ms: i64 }
        -> u64, by |op| Route::Any(&op.app);
    /// Carries out a moderation action of the app's backend. Answers whether it changed
    /// anything (lifting a ban that was not in force, kicking a non-member: false).
    Moderate { action: Moderation } -> bool, by |op| match &op.action {
        Moderation::Ban { user, .. } | Moderation::Unban { user } => Route::user(user),
        Moderation::Mute { channel, .. }
        | Moderation::Unmute { channel, .. }
        | Moderation::Kick { channel, .. } => Route::channel(channel),
    };
    /// The bans (`Scope::Login`) or one channel's mutes in force.
    Restrictions { app: AppId, scope: Scope }
        -> Vec<Restriction>, by |op| Route::Any(&op.app);
    /// A page of the app's user or channel event log: at most `limit` events after id `after`.
    Events { app: AppId, stream: EventStream, after: u64, limit: usize }
        -> Vec<StoredEvent>, by |op| Route::Any(&op.app);
    /// From this region's bridge: what `region` says of its members in the channel; see
    /// [`crate::RegionRecord::Interest`].
    RegionInterest { channel: ChannelKey, region: String, interest: Interest }
        -> (), by |op| Route::channel(&op.channel);
    /// From this region's bridge: another region changed the channel's attributes to
    /// `attributes`; they replace this region's.
    RegionAttributes {
        channel: ChannelKey,
        attributes: Vec<v1::ChannelAttribute>,
        notify_members: bool,
    } -> (), by |op| Route::channel(&op.channel);
    /// From this region's bridge: an event of an invitation living in `region`, for `callee`'s
    /// sessions here (see [`crate::RegionRecord::CalleeEvent`]).
    RegionCalleeEvent { callee: UserKey, region: String, event: v1::Event, receipt: Option<u64> }
        -> (), by |op| Route::user(&op.callee);
    /// From this region's bridge: the callee of an invitation made here acknowledged it.
    RegionInvitationReceipt { callee: UserKey, invitation_id: u64 }
        -> (), by |op| Route::user(&op.callee);
    /// From this region's bridge: a peer message to `user`, sent here and routed to the region
    /// the user is in, ended there with `outcome`.
    RegionPeerOutcome { user: UserKey, message_id: MessageId, outcome: PeerOutcome }
        -> (), by |op| Route::user(&op.user);
}

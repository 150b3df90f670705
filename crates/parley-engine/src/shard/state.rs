//! What a shard keeps of each channel and user.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use parley_core::channel::Membership;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::invitation::Invitation;
use parley_proto::SharedFrame;
use parley_proto::v1::PeerOnlineState;

#[derive(Default)]
pub(super) struct ChannelEntry {
    pub(super) membership: Membership,
    pub(super) last_seq: u64,
    /// Highest sequence number reserved in the store.
    pub(super) reserved_seq: u64,
    pub(super) count_sent_at: Option<Instant>,
    /// The last messages, for recovery after a reconnect.
    pub(super) recent: VecDeque<(u64, Arc<SharedFrame>)>,
    /// Muted members and when their mutes end (ms since the epoch), as stored.
    pub(super) mutes: HashMap<UserId, i64>,
    /// Other regions with members in the channel, and how many: its messages are published for
    /// them, and its member count is theirs and this region's.
    pub(super) remote_regions: BTreeMap<String, u32>,
    /// The member count last told to the other regions.
    pub(super) members_told: Option<u32>,
    /// Messages that crossed from other regions lately, to drop repeats.
    pub(super) crossed: Crossed,
}

impl ChannelEntry {
    pub(super) fn local_members(&self) -> u32 {
        u32::try_from(self.membership.member_count()).unwrap_or(u32::MAX)
    }

    /// Members here and in every other region.
    pub(super) fn all_members(&self) -> u32 {
        self.remote_regions
            .values()
            .fold(self.local_members(), |sum, members| {
                sum.saturating_add(*members)
            })
    }
}

/// How long a callee's region remembers an invitation from another region, for the callee's
/// answers (an invitation expires after 60 s unanswered).
pub(super) const REMOTE_INVITATION_KEPT: Duration = Duration::from_secs(120);

/// How long after its keys moved an owner holds back crossing messages for channels it has no
/// members of yet (edges re-register their sessions within about a second).
pub(super) const HANDOFF_GRACE: Duration = Duration::from_secs(5);

/// How many crossing message IDs a channel remembers to drop repeats (a bridge that restarts
/// re-reads at most about a second of records).
pub(super) const CROSSED_KEPT: usize = 4096;

/// The IDs of the last messages that crossed into a channel from other regions.
#[derive(Default)]
pub(super) struct Crossed {
    pub(super) order: VecDeque<u64>,
    pub(super) ids: HashSet<u64>,
}

impl Crossed {
    /// Whether `id` is new; remembers it.
    pub(super) fn first_time(&mut self, id: MessageId) -> bool {
        if !self.ids.insert(id.0) {
            return false;
        }
        self.order.push_back(id.0);
        if self.order.len() > CROSSED_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

pub(super) struct UserSession {
    pub(super) session: SessionRef,
    pub(super) reachable: bool,
}

pub(super) struct PendingInvitation {
    pub(super) machine: Invitation,
    pub(super) caller: UserId,
    pub(super) caller_session: SessionRef,
    pub(super) content: String,
    pub(super) channel_id: String,
    pub(super) response: String,
    /// When it ended; ended invitations are kept a while so late calls get ALREADY_ACCEPTED or
    /// ALREADY_ENDED rather than NOT_STARTED.
    pub(super) ended_at: Option<Instant>,
    /// The callee's region when it is not this one: what the callee is told crosses there.
    pub(super) callee_region: Option<String>,
}

pub(super) struct UserEntry {
    pub(super) sessions: Vec<UserSession>,
    /// Set when the last session was lost (not logged out): UNREACHABLE until then.
    pub(super) lost_until: Option<Instant>,
    /// The state last told to subscribers.
    pub(super) announced: PeerOnlineState,
    pub(super) subscribers: BTreeSet<SessionRef>,
    /// Invitations to this user, by id.
    pub(super) invitations: BTreeMap<u64, PendingInvitation>,
    /// Why the user's last session ended, for the logout event.
    pub(super) logout_reason: Option<&'static str>,
}

impl Default for UserEntry {
    fn default() -> Self {
        UserEntry {
            sessions: Vec::new(),
            lost_until: None,
            announced: PeerOnlineState::Offline,
            subscribers: BTreeSet::new(),
            invitations: BTreeMap::new(),
            logout_reason: None,
        }
    }
}

impl UserEntry {
    pub(super) fn presence(&self) -> PeerOnlineState {
        if self.sessions.iter().any(|session| session.reachable) {
            PeerOnlineState::Online
        } else if !self.sessions.is_empty() || self.lost_until.is_some() {
            PeerOnlineState::Unreachable
        } else {
            PeerOnlineState::Offline
        }
    }

    pub(super) fn is_forgettable(&self) -> bool {
        self.sessions.is_empty()
            && self.lost_until.is_none()
            && self.subscribers.is_empty()
            && self.invitations.is_empty()
    }
}

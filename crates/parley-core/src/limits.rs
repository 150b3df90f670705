//! Every product limit in one place, with the defaults of PRODUCT.md and Agora's documentation.

use std::time::Duration;

use crate::rate::Rate;

/// Largest message body (text or raw bytes plus description), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Most channels whose member counts one `getChannelMemberCount` may ask for.
pub const MAX_MEMBER_COUNT_CHANNELS: usize = 32;
/// Most members `getMembers` returns (the first ones by uid order).
pub const MAX_MEMBERS_LISTED: usize = 512;
/// Most uids one `queryPeersOnlineStatus` may ask about.
pub const MAX_STATUS_QUERY: usize = 256;
/// Most uids one session may watch with `subscribePeersOnlineStatus`.
pub const MAX_STATUS_SUBSCRIPTIONS: usize = 512;
/// Largest invitation content or response, in bytes.
pub const MAX_INVITATION_TEXT_BYTES: usize = 8 * 1024;
/// Most messages one history page returns.
pub const MAX_HISTORY_PAGE: usize = 100;

/// Limits that an app may tune. Defaults follow PRODUCT.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_channels_per_user: usize,
    /// Above this many members a channel stops sending MemberJoined/MemberLeft (counts continue).
    pub member_events_threshold: usize,
    /// Peer and channel messages together, per session.
    pub message_rate: Rate,
    pub join_rate: Rate,
    pub login_rate: Rate,
    pub query_rate: Rate,
    pub renew_token_rate: Rate,
    /// User and channel attribute writes together.
    pub attribute_rate: Rate,
    /// Online-status queries, subscriptions and unsubscriptions together.
    pub status_rate: Rate,
    /// Invitations sent, canceled, accepted or refused.
    pub invitation_rate: Rate,
    /// History queries and counts.
    pub history_rate: Rate,
    /// Server API requests per app (each edge counts its own).
    pub server_api_rate: Rate,
    /// Offline messages kept per receiver (oldest dropped first).
    pub offline_max_count: usize,
    pub offline_max_age: Duration,
    /// How long history is kept.
    pub history_retention: Duration,
    /// A connection silent this long makes its user UNREACHABLE.
    pub unreachable_after: Duration,
    /// A user whose connection was lost is UNREACHABLE this long, then OFFLINE.
    pub offline_after: Duration,
    /// How long channel attributes outlive the channel's last member.
    pub channel_attributes_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels_per_user: 20,
            member_events_threshold: 512,
            message_rate: Rate::new(60, 60.0),
            join_rate: Rate::per_window(50, Duration::from_secs(3)),
            login_rate: Rate::new(2, 2.0),
            query_rate: Rate::per_window(10, Duration::from_secs(5)),
            renew_token_rate: Rate::per_window(10, Duration::from_secs(5)),
            attribute_rate: Rate::per_window(10, Duration::from_secs(5)),
            status_rate: Rate::per_window(10, Duration::from_secs(5)),
            invitation_rate: Rate::new(20, 10.0),
            history_rate: Rate::per_window(10, Duration::from_secs(5)),
            server_api_rate: Rate::new(200, 100.0),
            offline_max_count: 200,
            offline_max_age: Duration::from_secs(7 * 24 * 3600),
            history_retention: Duration::from_secs(7 * 24 * 3600),
            unreachable_after: Duration::from_secs(8),
            offline_after: Duration::from_secs(20),
            channel_attributes_ttl: Duration::from_secs(300),
        }
    }
}

//! Every product limit in one place, with the defaults of PRODUCT.md and Agora's documentation.

use std::time::Duration;

use crate::rate::Rate;

/// Largest message body (text or raw bytes plus description), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Most channels whose member counts one `getChannelMemberCount` may ask for.
pub const MAX_MEMBER_COUNT_CHANNELS: usize = 32;
/// Most members `getMembers` returns (the first ones by uid order).
pub const MAX_MEMBERS_LISTED: usize = 512;

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
        }
    }
}

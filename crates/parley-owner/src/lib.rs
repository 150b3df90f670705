//! The owner side: the authoritative state of channels (members, sequence numbers) and users
//! (where their sessions are), and the fan-out of messages and events to edges.
//!
//! Edges talk to owners only through [`Owners`] (the operations of [`ops`]); owners talk back only through [`EdgeSink`]. In
//! `parley dev` both are in-process calls; in a cluster they become gRPC clients.
//!
//! Architecture invariant: this crate never parses client frames and never touches a socket.

mod api;
pub mod cluster;
pub mod ops;
mod owner;
mod runtime;
mod wire;

pub use api::AppEvent;
pub use api::AppEventKind;
pub use api::ChannelKey;
pub use api::ChannelSent;
pub use api::EdgeSink;
pub use api::EventSink;
pub use api::Interest;
pub use api::InvitationRestore;
pub use api::LeaveReason;
pub use api::Moderation;
pub use api::NoEvents;
pub use api::NoRegions;
pub use api::PeerDispatch;
pub use api::PeerOutcome;
pub use api::PeerSend;
pub use api::RegionLink;
pub use api::RegionOrigin;
pub use api::RegionRecord;
pub use api::Resume;
pub use api::UserKey;
pub use ops::ChannelSend;
pub use ops::InvitationSend;
pub use ops::OpenSession;
pub use ops::Owners;
pub use owner::Owner;
pub use parley_engine::OwnerConfig;
pub use wire::from_peer_outcome;
pub use wire::from_region_interest;
pub use wire::peer_outcome;
pub use wire::region_interest;
pub use wire::trace_of;

//! Channel membership decisions: who is in a channel, through which sessions, and which joins and
//! leaves are worth announcing.
//!
//! Membership is per uid; a uid can be in a channel through several sessions (several devices, or
//! a reconnect that overlaps the old connection). A session whose connection was lost *lingers* for
//! a grace period: the uid stays a member, so a quick reconnect and re-join causes no
//! MemberLeft/MemberJoined churn for everyone else.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::Error;
use crate::ErrorCode;
use crate::ids::SessionRef;
use crate::ids::UserId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    Active,
    /// Connection lost; the session is dropped at this instant unless the uid comes back.
    Lingering {
        until: Instant,
    },
}

#[derive(Debug, Default)]
struct Member {
    sessions: BTreeMap<SessionRef, Presence>,
}

/// How a session leaves a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// `leave` or `logout`: gone now.
    Now,
    /// The connection was lost: keep the membership until `until`.
    Linger { until: Instant },
}

/// The membership of one channel.
#[derive(Debug, Default)]
pub struct Membership {
    members: BTreeMap<UserId, Member>,
}

impl Membership {
    /// Adds `session` of `uid`. Returns whether the uid is new to the channel (worth a MemberJoined).
    pub fn join(&mut self, uid: &UserId, session: SessionRef) -> Result<bool, Error> {
        let is_new = !self.members.contains_key(uid);
        let member = self.members.entry(uid.clone()).or_default();
        if member.sessions.get(&session) == Some(&Presence::Active) {
            return Err(Error::new(
                ErrorCode::AlreadyJoined,
                "already joined this channel",
            ));
        }
        // The uid is back: sessions it left lingering are superseded by this one.
        member
            .sessions
            .retain(|_, presence| *presence == Presence::Active);
        member.sessions.insert(session, Presence::Active);
        Ok(is_new)
    }

    /// Removes (or lets linger) `session` of `uid`. Returns whether the uid left the channel (worth
    /// a MemberLeft).
    pub fn leave(
        &mut self,
        uid: &UserId,
        session: SessionRef,
        departure: Departure,
    ) -> Result<bool, Error> {
        let not_joined = || Error::new(ErrorCode::NotJoined, "not joined to this channel");
        let member = self.members.get_mut(uid).ok_or_else(not_joined)?;
        let presence = member.sessions.get_mut(&session).ok_or_else(not_joined)?;
        match departure {
            Departure::Now => {
                member.sessions.remove(&session);
            }
            Departure::Linger { until } => *presence = Presence::Lingering { until },
        }
        Ok(self.remove_if_gone(uid))
    }

    /// Takes `uid` out of the channel with all its sessions (a kick). Returns the sessions that
    /// were live; empty when the uid was not a member.
    pub fn remove(&mut self, uid: &UserId) -> Option<Vec<SessionRef>> {
        let member = self.members.remove(uid)?;
        Some(
            member
                .sessions
                .into_iter()
                .filter(|(_, presence)| *presence == Presence::Active)
                .map(|(session, _)| session)
                .collect(),
        )
    }

    /// Drops sessions whose grace period is over. Returns the uids that left the channel.
    pub fn expire(&mut self, now: Instant) -> Vec<UserId> {
        let mut left = Vec::new();
        for (uid, member) in &mut self.members {
            member.sessions.retain(|_, presence| match presence {
                Presence::Active => true,
                Presence::Lingering { until } => *until > now,
            });
            if member.sessions.is_empty() {
                left.push(uid.clone());
            }
        }
        for uid in &left {
            self.members.remove(uid);
        }
        left
    }

    /// The earliest instant at which `expire` has work to do.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|member| member.sessions.values())
            .filter_map(|presence| match presence {
                Presence::Active => None,
                Presence::Lingering { until } => Some(*until),
            })
            .min()
    }

    /// Whether `session` of `uid` is in the channel with a live connection.
    pub fn is_active(&self, uid: &UserId, session: SessionRef) -> bool {
        self.members
            .get(uid)
            .and_then(|member| member.sessions.get(&session))
            == Some(&Presence::Active)
    }

    /// Sessions with a live connection, except `except`.
    pub fn active_sessions(
        &self,
        except: Option<SessionRef>,
    ) -> impl Iterator<Item = SessionRef> + '_ {
        self.members
            .values()
            .flat_map(|member| member.sessions.iter())
            .filter(move |(session, presence)| {
                **presence == Presence::Active && Some(**session) != except
            })
            .map(|(session, _)| *session)
    }

    /// The live sessions held by edge `edge`, with their uids.
    pub fn sessions_on(&self, edge: crate::ids::NodeId) -> Vec<(UserId, SessionRef)> {
        self.members
            .iter()
            .flat_map(|(uid, member)| {
                member
                    .sessions
                    .iter()
                    .filter(move |(session, presence)| {
                        session.edge == edge && **presence == Presence::Active
                    })
                    .map(move |(session, _)| (uid.clone(), *session))
            })
            .collect()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Member uids in order.
    pub fn uids(&self) -> impl Iterator<Item = &UserId> {
        self.members.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn remove_if_gone(&mut self, uid: &UserId) -> bool {
        let gone = self
            .members
            .get(uid)
            .is_some_and(|member| member.sessions.is_empty());
        if gone {
            self.members.remove(uid);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_removed_member_is_gone_with_all_its_sessions() {
        let mut channel = Membership::default();
        let (alice, bob) = (uid("alice"), uid("bob"));
        channel.join(&alice, session(1)).unwrap();
        channel.join(&alice, session(2)).unwrap();
        channel.join(&bob, session(3)).unwrap();
        channel
            .leave(
                &alice,
                session(2),
                Departure::Linger {
                    until: Instant::now(),
                },
            )
            .unwrap();
        // Only live sessions need telling; the lingering one just goes.
        assert_eq!(channel.remove(&alice), Some(vec![session(1)]));
        assert_eq!(channel.remove(&alice), None);
        assert!(!channel.is_active(&alice, session(1)));
        assert_eq!(channel.uids().collect::<Vec<_>>(), [&bob]);
    }
    use crate::ids::NodeId;
    use crate::ids::SessionId;

    fn session(n: u64) -> SessionRef {
        SessionRef {
            edge: NodeId(0),
            session: SessionId(n),
        }
    }

    fn uid(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn join_and_leave_announce_only_first_and_last_session() {
        let mut channel = Membership::default();
        assert_eq!(channel.join(&uid("alice"), session(1)), Ok(true));
        assert_eq!(
            channel.join(&uid("alice"), session(2)),
            Ok(false),
            "second device"
        );
        assert_eq!(
            channel.join(&uid("alice"), session(1)).unwrap_err().code,
            ErrorCode::AlreadyJoined
        );
        assert_eq!(channel.member_count(), 1);
        assert_eq!(
            channel.leave(&uid("alice"), session(1), Departure::Now),
            Ok(false)
        );
        assert_eq!(
            channel.leave(&uid("alice"), session(2), Departure::Now),
            Ok(true)
        );
        assert!(channel.is_empty());
        assert_eq!(
            channel
                .leave(&uid("alice"), session(2), Departure::Now)
                .unwrap_err()
                .code,
            ErrorCode::NotJoined
        );
    }

    #[test]
    fn a_lost_session_lingers_then_leaves() {
        let now = Instant::now();
        let until = now + Duration::from_secs(5);
        let mut channel = Membership::default();
        channel.join(&uid("bob"), session(1)).unwrap();
        channel.join(&uid("carol"), session(2)).unwrap();
        assert_eq!(
            channel.leave(&uid("bob"), session(1), Departure::Linger { until }),
            Ok(false)
        );
        assert_eq!(
            channel.member_count(),
            2,
            "bob is still a member while lingering"
        );
        assert_eq!(
            channel.active_sessions(None).collect::<Vec<_>>(),
            [session(2)]
        );
        assert_eq!(channel.next_expiry(), Some(until));
        assert!(channel.expire(now).is_empty());
        assert_eq!(channel.expire(until), [uid("bob")]);
        assert_eq!(channel.member_count(), 1);
        assert_eq!(channel.next_expiry(), None);
    }

    #[test]
    fn rejoining_within_the_grace_period_is_silent() {
        let now = Instant::now();
        let mut channel = Membership::default();
        channel.join(&uid("bob"), session(1)).unwrap();
        let until = now + Duration::from_secs(5);
        channel
            .leave(&uid("bob"), session(1), Departure::Linger { until })
            .unwrap();
        assert_eq!(
            channel.join(&uid("bob"), session(7)),
            Ok(false),
            "no MemberJoined"
        );
        assert!(
            channel.expire(until).is_empty(),
            "no MemberLeft for the old session"
        );
        assert!(channel.is_active(&uid("bob"), session(7)));
        assert!(!channel.is_active(&uid("bob"), session(1)));
    }

    #[test]
    fn sends_skip_the_sender_session_only() {
        let mut channel = Membership::default();
        channel.join(&uid("alice"), session(1)).unwrap();
        channel.join(&uid("alice"), session(2)).unwrap();
        channel.join(&uid("bob"), session(3)).unwrap();
        let mut recipients: Vec<_> = channel.active_sessions(Some(session(1))).collect();
        recipients.sort();
        assert_eq!(recipients, [session(2), session(3)]);
    }
}

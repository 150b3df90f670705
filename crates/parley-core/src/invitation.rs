//! The call invitation state machine, as the server runs it. The caller's and callee's SDK states
//! (SENT_TO_REMOTE, RECEIVED_BY_REMOTE, …) follow from the [`Notice`]s it emits.
//!
//! Every timer lives here, driven by the `now` the caller passes in, so the invitation fails on
//! time even when both clients have vanished.

use std::time::Duration;
use std::time::Instant;

/// The three timers of an invitation (PRODUCT.md F7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvitationTimers {
    /// How long an offline callee may take to log in.
    pub callee_offline: Duration,
    /// How long the callee's client may take to acknowledge the invitation.
    pub receipt: Duration,
    /// How long the callee may take to answer, from sending.
    pub answer: Duration,
}

impl Default for InvitationTimers {
    fn default() -> Self {
        InvitationTimers {
            callee_offline: Duration::from_secs(30),
            receipt: Duration::from_secs(30),
            answer: Duration::from_secs(60),
        }
    }
}

/// Why an invitation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    PeerOffline,
    PeerNoResponse,
    InvitationExpire,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The callee is offline; the invitation waits for its login.
    AwaitingCallee {
        until: Instant,
    },
    /// Sent to the callee's clients; no receipt yet.
    AwaitingReceipt {
        until: Instant,
    },
    /// The callee's client has it; no answer yet.
    Received,
    Accepted,
    Refused,
    Canceled,
    Failed(Failure),
}

/// What the owner must tell the clients after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Send RemoteInvitationReceived to the callee (and expect a receipt).
    DeliverToCallee,
    /// Caller: LocalInvitationReceivedByPeer.
    ReceivedByPeer,
    /// Caller: LocalInvitationAccepted; callee: RemoteInvitationAccepted.
    Accepted,
    /// Caller: LocalInvitationRefused; callee: RemoteInvitationRefused.
    Refused,
    /// Caller: LocalInvitationCanceled; callee (if it saw the invitation): RemoteInvitationCanceled.
    Canceled,
    /// Caller: LocalInvitationFailure; callee (if it saw the invitation): RemoteInvitationFailure.
    Failed(Failure),
}

/// Why an API call on an invitation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationError {
    AlreadyAccepted,
    AlreadyEnded,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    phase: Phase,
    expires_at: Instant,
    timers: InvitationTimers,
    /// Whether the callee was ever sent the invitation (so it must hear how it ended).
    delivered: bool,
}

impl Invitation {
    pub fn send(
        now: Instant,
        callee_online: bool,
        timers: InvitationTimers,
    ) -> (Self, Vec<Notice>) {
        let mut invitation = Invitation {
            phase: Phase::AwaitingCallee {
                until: now + timers.callee_offline,
            },
            expires_at: now + timers.answer,
            timers,
            delivered: false,
        };
        let notices = if callee_online {
            invitation.deliver(now)
        } else {
            Vec::new()
        };
        (invitation, notices)
    }

    /// Rebuilds an invitation a new owner knows only from the caller's edge (its owner was lost):
    /// sent at `sent_at`, and `received` if the caller was told the callee has it. The answer
    /// deadline keeps counting from `sent_at`; a callee that had not received it gets it anew.
    pub fn restore(
        now: Instant,
        sent_at: Instant,
        received: bool,
        callee_online: bool,
        timers: InvitationTimers,
    ) -> (Self, Vec<Notice>) {
        let (mut invitation, notices) = Invitation::send(now, callee_online && !received, timers);
        invitation.expires_at = sent_at + timers.answer;
        if received {
            invitation.phase = Phase::Received;
            invitation.delivered = true;
        }
        (invitation, notices)
    }

    fn deliver(&mut self, now: Instant) -> Vec<Notice> {
        self.phase = Phase::AwaitingReceipt {
            until: now + self.timers.receipt,
        };
        self.delivered = true;
        vec![Notice::DeliverToCallee]
    }

    /// The callee logged in.
    pub fn callee_online(&mut self, now: Instant) -> Vec<Notice> {
        match self.phase {
            Phase::AwaitingCallee { .. } => self.deliver(now),
            _ => Vec::new(),
        }
    }

    /// The callee's client acknowledged the invitation.
    pub fn receipt(&mut self) -> Vec<Notice> {
        match self.phase {
            Phase::AwaitingReceipt { .. } => {
                self.phase = Phase::Received;
                vec![Notice::ReceivedByPeer]
            }
            _ => Vec::new(),
        }
    }

    pub fn accept(&mut self) -> Result<Vec<Notice>, InvitationError> {
        self.answer(Phase::Accepted, Notice::Accepted)
    }

    pub fn refuse(&mut self) -> Result<Vec<Notice>, InvitationError> {
        self.answer(Phase::Refused, Notice::Refused)
    }

    fn answer(&mut self, phase: Phase, notice: Notice) -> Result<Vec<Notice>, InvitationError> {
        match self.phase {
            // An answer implies the callee has the invitation, even if its receipt is late.
            Phase::AwaitingReceipt { .. } => {
                self.phase = phase;
                Ok(vec![Notice::ReceivedByPeer, notice])
            }
            Phase::Received => {
                self.phase = phase;
                Ok(vec![notice])
            }
            // The callee never saw it: nothing to answer.
            Phase::AwaitingCallee { .. } => Err(InvitationError::AlreadyEnded),
            Phase::Accepted => Err(InvitationError::AlreadyAccepted),
            Phase::Refused | Phase::Canceled | Phase::Failed(_) => {
                Err(InvitationError::AlreadyEnded)
            }
        }
    }

    pub fn cancel(&mut self) -> Result<Vec<Notice>, InvitationError> {
        match self.phase {
            Phase::AwaitingCallee { .. } | Phase::AwaitingReceipt { .. } | Phase::Received => {
                self.phase = Phase::Canceled;
                Ok(vec![Notice::Canceled])
            }
            Phase::Accepted => Err(InvitationError::AlreadyAccepted),
            Phase::Refused | Phase::Canceled | Phase::Failed(_) => {
                Err(InvitationError::AlreadyEnded)
            }
        }
    }

    /// Fires whichever timer has run out by `now`.
    pub fn on_time(&mut self, now: Instant) -> Vec<Notice> {
        let failure = match self.phase {
            Phase::AwaitingCallee { until } if now >= until => Failure::PeerOffline,
            Phase::AwaitingReceipt { until } if now >= until => Failure::PeerNoResponse,
            Phase::AwaitingCallee { .. } | Phase::AwaitingReceipt { .. } | Phase::Received
                if now >= self.expires_at =>
            {
                Failure::InvitationExpire
            }
            _ => return Vec::new(),
        };
        self.phase = Phase::Failed(failure);
        vec![Notice::Failed(failure)]
    }

    /// When `on_time` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingCallee { until } | Phase::AwaitingReceipt { until } => {
                Some(until.min(self.expires_at))
            }
            Phase::Received => Some(self.expires_at),
            _ => None,
        }
    }

    pub fn is_over(&self) -> bool {
        self.next_deadline().is_none()
    }

    /// Whether the callee was sent the invitation at some point.
    pub fn was_delivered(&self) -> bool {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn online_callee_receives_then_accepts() {
        let t0 = Instant::now();
        let (mut invitation, notices) = Invitation::send(t0, true, InvitationTimers::default());
        assert_eq!(notices, [Notice::DeliverToCallee]);
        assert_eq!(invitation.next_deadline(), Some(t0 + secs(30)));
        assert_eq!(invitation.receipt(), [Notice::ReceivedByPeer]);
        assert_eq!(invitation.receipt(), [], "a second receipt changes nothing");
        assert_eq!(invitation.next_deadline(), Some(t0 + secs(60)));
        assert_eq!(invitation.accept(), Ok(vec![Notice::Accepted]));
        assert!(invitation.is_over());
        assert_eq!(invitation.accept(), Err(InvitationError::AlreadyAccepted));
        assert_eq!(invitation.refuse(), Err(InvitationError::AlreadyAccepted));
        assert_eq!(invitation.cancel(), Err(InvitationError::AlreadyAccepted));
        assert_eq!(invitation.on_time(t0 + secs(100)), []);
    }

    #[test]
    fn refusal_ends_it() {
        let t0 = Instant::now();
        let (mut invitation, _) = Invitation::send(t0, true, InvitationTimers::default());
        invitation.receipt();
        assert_eq!(invitation.refuse(), Ok(vec![Notice::Refused]));
        assert_eq!(invitation.accept(), Err(InvitationError::AlreadyEnded));
        assert_eq!(invitation.cancel(), Err(InvitationError::AlreadyEnded));
    }

    #[test]
    fn answering_before_the_receipt_counts_as_received() {
        let (mut invitation, _) =
            Invitation::send(Instant::now(), true, InvitationTimers::default());
        assert_eq!(
            invitation.accept(),
            Ok(vec![Notice::ReceivedByPeer, Notice::Accepted])
        );
    }

    #[test]
    fn offline_callee_gets_it_on_login_within_30_s() {
        let t0 = Instant::now();
        let (mut invitation, notices) = Invitation::send(t0, false, InvitationTimers::default());
        assert!(notices.is_empty());
        assert!(!invitation.was_delivered());
        assert_eq!(
            invitation.accept(),
            Err(InvitationError::AlreadyEnded),
            "nothing to answer yet"
        );
        assert_eq!(invitation.on_time(t0 + secs(29)), []);
        assert_eq!(
            invitation.callee_online(t0 + secs(29)),
            [Notice::DeliverToCallee]
        );
        assert!(invitation.was_delivered());
        // The receipt clock starts at delivery, but the answer clock still ends at 60 s.
        assert_eq!(invitation.next_deadline(), Some(t0 + secs(59)));
        invitation.receipt();
        assert_eq!(
            invitation.on_time(t0 + secs(60)),
            [Notice::Failed(Failure::InvitationExpire)]
        );
    }

    #[test]
    fn offline_callee_that_never_comes_fails_peer_offline() {
        let t0 = Instant::now();
        let (mut invitation, _) = Invitation::send(t0, false, InvitationTimers::default());
        assert_eq!(
            invitation.on_time(t0 + secs(30)),
            [Notice::Failed(Failure::PeerOffline)]
        );
        assert!(invitation.is_over());
        assert_eq!(invitation.callee_online(t0 + secs(31)), []);
        assert_eq!(invitation.cancel(), Err(InvitationError::AlreadyEnded));
    }

    #[test]
    fn no_receipt_within_30_s_fails_peer_no_response() {
        let t0 = Instant::now();
        let (mut invitation, _) = Invitation::send(t0, true, InvitationTimers::default());
        assert_eq!(invitation.on_time(t0 + secs(29)), []);
        assert_eq!(
            invitation.on_time(t0 + secs(30)),
            [Notice::Failed(Failure::PeerNoResponse)]
        );
        assert_eq!(invitation.receipt(), []);
    }

    #[test]
    fn no_answer_within_60_s_expires() {
        let t0 = Instant::now();
        let (mut invitation, _) = Invitation::send(t0, true, InvitationTimers::default());
        invitation.receipt();
        assert_eq!(invitation.on_time(t0 + secs(59)), []);
        assert_eq!(
            invitation.on_time(t0 + secs(60)),
            [Notice::Failed(Failure::InvitationExpire)]
        );
        assert_eq!(invitation.accept(), Err(InvitationError::AlreadyEnded));
    }

    #[test]
    fn the_caller_may_cancel_until_it_ends() {
        let t0 = Instant::now();
        for callee_online in [false, true] {
            let (mut invitation, _) =
                Invitation::send(t0, callee_online, InvitationTimers::default());
            assert_eq!(invitation.cancel(), Ok(vec![Notice::Canceled]));
            assert_eq!(invitation.cancel(), Err(InvitationError::AlreadyEnded));
            assert_eq!(invitation.on_time(t0 + secs(61)), []);
        }
        let (mut received, _) = Invitation::send(t0, true, InvitationTimers::default());
        received.receipt();
        assert_eq!(received.cancel(), Ok(vec![Notice::Canceled]));
    }

    #[test]
    fn a_restored_invitation_keeps_its_deadline_and_what_the_caller_knew() {
        let timers = InvitationTimers::default();
        let sent_at = Instant::now();
        let now = sent_at + timers.answer / 2;
        // Received before the owner was lost: no second delivery, and it expires on time.
        let (mut received, notices) = Invitation::restore(now, sent_at, true, true, timers);
        assert!(notices.is_empty());
        assert!(received.was_delivered());
        assert_eq!(received.next_deadline(), Some(sent_at + timers.answer));
        assert_eq!(received.accept(), Ok(vec![Notice::Accepted]));
        // Not yet received: delivered again, still bound by the original deadline.
        let (waiting, notices) = Invitation::restore(now, sent_at, false, true, timers);
        assert_eq!(notices, vec![Notice::DeliverToCallee]);
        assert!(waiting.next_deadline().unwrap() <= sent_at + timers.answer);
        let (mut late, _) = Invitation::restore(now, sent_at, true, true, timers);
        assert_eq!(
            late.on_time(sent_at + timers.answer),
            vec![Notice::Failed(Failure::InvitationExpire)]
        );
    }
}

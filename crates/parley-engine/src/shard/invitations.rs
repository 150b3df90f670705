//! Call invitations: their state machines (in parley-core) and what the clients are told.

use std::sync::Arc;

use parley_core::Error;
use parley_core::ErrorCode;
use parley_core::ids::MessageId;
use parley_core::ids::SessionRef;
use parley_core::ids::UserId;
use parley_core::invitation::Invitation;
use parley_core::invitation::Notice;
use parley_proto::SharedFrame;
use parley_proto::v1;
use parley_proto::v1::event::Kind as EventKind;

use super::Key;
use super::Respond;
use super::Shard;
use super::effects::Effect;
use super::effects::OnReceipt;
use super::effects::StoreWork;
use super::failure_reason;
use super::invitation_error;
use super::not_started;
use super::send_shared;
use super::state::PendingInvitation;
use super::state::REMOTE_INVITATION_KEPT;
use crate::api::AppEventKind;
use crate::api::RegionRecord;
use crate::api::UserKey;
use crate::ops;
use crate::ops::InvitationSend;

impl Shard {
    /// An invitation to a callee with sessions here starts at once; otherwise the region
    /// directory is asked whether the callee is in another region (the callee's commands wait).
    pub(super) fn invite(&mut self, send: InvitationSend, reply: Respond<ops::InvitationSend>) {
        let callee = UserKey {
            app: send.caller.app.clone(),
            uid: send.callee.clone(),
        };
        let here = self
            .users
            .get(&callee)
            .is_some_and(|entry| !entry.sessions.is_empty());
        if here || !self.spans_regions {
            reply.send(self.send_invitation(send, None));
            return;
        }
        self.wait(
            Some(Key::User(callee.clone())),
            StoreWork::LocateCallee {
                send,
                callee,
                reply,
            },
        );
    }

    pub(super) fn cancel_invitation(
        &mut self,
        callee: &UserKey,
        caller: &UserId,
        invitation_id: u64,
    ) -> Result<(), Error> {
        self.invitation_call(callee, invitation_id, |pending| {
            if pending.caller != *caller {
                return Err(not_started());
            }
            pending.machine.cancel().map_err(invitation_error)
        })
    }

    pub(super) fn answer_invitation(
        &mut self,
        callee: UserKey,
        invitation_id: u64,
        accept: bool,
        response: String,
    ) -> Result<(), Error> {
        let here = self
            .users
            .get(&callee)
            .is_some_and(|entry| entry.invitations.contains_key(&invitation_id));
        if !here
            && self
                .remote_invitations
                .contains_key(&(callee.clone(), invitation_id))
        {
            // The invitation lives in the caller's region: the answer goes there, and how it
            // went comes back as events.
            self.publish(RegionRecord::InvitationAnswer {
                callee,
                invitation_id,
                accept,
                response,
            });
            return Ok(());
        }
        self.invitation_call(&callee, invitation_id, |pending| {
            let notices = if accept {
                pending.machine.accept()
            } else {
                pending.machine.refuse()
            }
            .map_err(invitation_error)?;
            pending.response = response;
            Ok(notices)
        })
    }

    /// Starts an invitation to a callee with sessions here or, `elsewhere`, in another region
    /// (its state and timers stay here; the callee's events cross).
    pub(super) fn send_invitation(
        &mut self,
        send: InvitationSend,
        elsewhere: Option<String>,
    ) -> Result<u64, Error> {
        let callee = UserKey {
            app: send.caller.app.clone(),
            uid: send.callee.clone(),
        };
        let entry = self.users.entry(callee.clone()).or_default();
        if let Some(restore) = send.restore {
            // Known already (this owner did not change): nothing to rebuild.
            if entry.invitations.contains_key(&restore.invitation_id) {
                return Ok(restore.invitation_id);
            }
            let now = self.now.instant;
            let sent_at = now.checked_sub(restore.age).unwrap_or(now);
            let callee_online = !entry.sessions.is_empty() || elsewhere.is_some();
            let (machine, notices) = Invitation::restore(
                now,
                sent_at,
                restore.received,
                callee_online,
                self.config.invitation_timers,
            );
            let id = restore.invitation_id;
            self.start_invitation(callee, id, machine, &notices, send, elsewhere);
            return Ok(id);
        }
        if entry
            .invitations
            .values()
            .any(|pending| pending.caller == send.caller.uid && !pending.machine.is_over())
        {
            return Err(Error::new(
                ErrorCode::InvitationAlreadySent,
                "an invitation to this user is already in progress",
            ));
        }
        let callee_online = !entry.sessions.is_empty() || elsewhere.is_some();
        let invitation_id = self.message_ids.next(self.now.unix_ms as u64).0;
        if !callee_online {
            self.emit(
                &callee.app,
                AppEventKind::InvitationToOffline {
                    caller: send.caller.uid.clone(),
                    callee: callee.uid.clone(),
                    invitation_id,
                    content: send.content.clone(),
                    channel_id: send.channel_id.clone(),
                },
            );
        }
        let (machine, notices) = Invitation::send(
            self.now.instant,
            callee_online,
            self.config.invitation_timers,
        );
        self.start_invitation(callee, invitation_id, machine, &notices, send, elsewhere);
        Ok(invitation_id)
    }

    /// Keeps a new (or rebuilt) invitation to `callee`, starts its timers and tells the clients.
    pub(super) fn start_invitation(
        &mut self,
        callee: UserKey,
        invitation_id: u64,
        machine: Invitation,
        notices: &[Notice],
        send: InvitationSend,
        callee_region: Option<String>,
    ) {
        self.users
            .entry(callee.clone())
            .or_default()
            .invitations
            .insert(
                invitation_id,
                PendingInvitation {
                    machine,
                    caller: send.caller.uid,
                    caller_session: send.caller_session,
                    content: send.content,
                    channel_id: send.channel_id,
                    response: String::new(),
                    ended_at: None,
                    callee_region,
                },
            );
        self.timed_users.insert(callee.clone());
        self.notify_invitation(&callee, invitation_id, notices);
    }

    /// Runs `call` on one invitation to `callee`, tells the clients what follows, and forgets the
    /// invitation once it has ended.
    pub(super) fn invitation_call(
        &mut self,
        callee: &UserKey,
        invitation_id: u64,
        call: impl FnOnce(&mut PendingInvitation) -> Result<Vec<Notice>, Error>,
    ) -> Result<(), Error> {
        let pending = self
            .users
            .get_mut(callee)
            .and_then(|entry| entry.invitations.get_mut(&invitation_id))
            .ok_or_else(not_started)?;
        let notices = call(pending)?;
        self.notify_invitation(callee, invitation_id, &notices);
        Ok(())
    }

    pub(super) fn notify_invitation(
        &mut self,
        callee: &UserKey,
        invitation_id: u64,
        notices: &[Notice],
    ) {
        let Some(entry) = self.users.get(callee) else {
            return;
        };
        let Some(pending) = entry.invitations.get(&invitation_id) else {
            return;
        };
        let callee_sessions: Vec<SessionRef> =
            entry.sessions.iter().map(|known| known.session).collect();
        let caller_id = pending.caller.to_string();
        let callee_id = callee.uid.to_string();
        // Kept apart while the invitation is borrowed from the shard's state.
        let mut out = Vec::new();
        for notice in notices {
            let (to_caller, to_callee) = match *notice {
                Notice::DeliverToCallee => {
                    let received =
                        EventKind::RemoteInvitationReceived(v1::RemoteInvitationReceived {
                            invitation_id,
                            caller_id: caller_id.clone(),
                            content: pending.content.clone(),
                            channel_id: pending.channel_id.clone(),
                        });
                    if pending.callee_region.is_some() {
                        out.push(Effect::Region(RegionRecord::CalleeEvent {
                            callee: callee.clone(),
                            event: v1::Event {
                                kind: Some(received),
                            },
                            receipt: Some(invitation_id),
                        }));
                        continue;
                    }
                    let frame = Arc::new(SharedFrame::event(received));
                    for session in &callee_sessions {
                        out.push(Effect::DeliverPeer {
                            session: *session,
                            receipt_id: MessageId(invitation_id),
                            frame: frame.clone(),
                            then: OnReceipt::Invitation {
                                callee: callee.clone(),
                                invitation_id,
                            },
                        });
                    }
                    continue;
                }
                Notice::ReceivedByPeer => (
                    Some(EventKind::LocalInvitationReceivedByPeer(
                        v1::LocalInvitationReceivedByPeer {
                            invitation_id,
                            callee_id: callee_id.clone(),
                        },
                    )),
                    None,
                ),
                Notice::Accepted => (
                    Some(EventKind::LocalInvitationAccepted(
                        v1::LocalInvitationAccepted {
                            invitation_id,
                            callee_id: callee_id.clone(),
                            response: pending.response.clone(),
                        },
                    )),
                    Some(EventKind::RemoteInvitationAccepted(
                        v1::RemoteInvitationAccepted {
                            invitation_id,
                            caller_id: caller_id.clone(),
                        },
                    )),
                ),
                Notice::Refused => (
                    Some(EventKind::LocalInvitationRefused(
                        v1::LocalInvitationRefused {
                            invitation_id,
                            callee_id: callee_id.clone(),
                            response: pending.response.clone(),
                        },
                    )),
                    Some(EventKind::RemoteInvitationRefused(
                        v1::RemoteInvitationRefused {
                            invitation_id,
                            caller_id: caller_id.clone(),
                        },
                    )),
                ),
                Notice::Canceled => (
                    Some(EventKind::LocalInvitationCanceled(
                        v1::LocalInvitationCanceled {
                            invitation_id,
                            callee_id: callee_id.clone(),
                        },
                    )),
                    pending.machine.was_delivered().then(|| {
                        EventKind::RemoteInvitationCanceled(v1::RemoteInvitationCanceled {
                            invitation_id,
                            caller_id: caller_id.clone(),
                        })
                    }),
                ),
                Notice::Failed(failure) => {
                    let reason = failure_reason(failure) as i32;
                    (
                        Some(EventKind::LocalInvitationFailure(
                            v1::LocalInvitationFailure {
                                invitation_id,
                                callee_id: callee_id.clone(),
                                reason,
                            },
                        )),
                        pending.machine.was_delivered().then(|| {
                            EventKind::RemoteInvitationFailure(v1::RemoteInvitationFailure {
                                invitation_id,
                                caller_id: caller_id.clone(),
                                reason,
                            })
                        }),
                    )
                }
            };
            if let Some(event) = to_caller {
                let frame = Arc::new(SharedFrame::event(event));
                send_shared(&mut out, [pending.caller_session], frame);
            }
            match (to_callee, &pending.callee_region) {
                (Some(event), Some(_)) => out.push(Effect::Region(RegionRecord::CalleeEvent {
                    callee: callee.clone(),
                    event: v1::Event { kind: Some(event) },
                    receipt: None,
                })),
                (Some(event), None) => {
                    let frame = Arc::new(SharedFrame::event(event));
                    send_shared(&mut out, callee_sessions.iter().copied(), frame);
                }
                (None, _) => {}
            }
        }
        if pending.machine.is_over()
            && let Some(pending) = self
                .users
                .get_mut(callee)
                .and_then(|entry| entry.invitations.get_mut(&invitation_id))
        {
            pending.ended_at.get_or_insert(self.now.instant);
        }
        self.effects.extend(out);
    }

    /// An event of an invitation that lives in `region`, for the callee's sessions here. The
    /// invitation itself (`receipt`) is acknowledged back to that region, and the invitation
    /// remembered so the callee's answers go there.
    pub(super) fn region_callee_event(
        &mut self,
        callee: UserKey,
        region: String,
        event: v1::Event,
        receipt: Option<u64>,
    ) {
        let Some(kind) = event.kind else {
            return;
        };
        let sessions: Vec<SessionRef> = self
            .users
            .get(&callee)
            .map(|entry| entry.sessions.iter().map(|known| known.session).collect())
            .unwrap_or_default();
        let Some(invitation_id) = receipt else {
            self.send_to(sessions, SharedFrame::event(kind));
            return;
        };
        let kept_until = self.now.instant + REMOTE_INVITATION_KEPT;
        self.remote_invitations
            .insert((callee.clone(), invitation_id), (region, kept_until));
        let frame = Arc::new(SharedFrame::event(kind));
        for session in sessions {
            let then = OnReceipt::RegionInvitation {
                callee: callee.clone(),
                invitation_id,
            };
            self.send_with_receipt(session, MessageId(invitation_id), frame.clone(), then);
        }
    }
}

//! What the cluster protocol needs beyond the owner operations themselves (`ops.rs`): errors
//! as gRPC statuses and back, and the region records' small types (Kafka carries those).

use parley_core::Error;
use parley_core::ErrorCode;
use parley_proto::cluster::v1 as wire;
use parley_proto::grpc_error;
use tonic::Status;

use crate::api::Interest;
use crate::api::PeerOutcome;

/// Metadata naming the node that owns a key, on a FAILED_PRECONDITION answer.
pub(crate) const OWNER_KEY: &str = "parley-owner";

pub(crate) fn status_of(error: Error) -> Status {
    let code = match error.code {
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::InvalidArgument,
    };
    grpc_error::status(code, error.code, error.message)
}

pub(crate) fn error_of(status: &Status) -> Error {
    match grpc_error::error_code(status) {
        Some(code) => Error::new(code, status.message()),
        None => {
            tracing::warn!(status = %status, "cluster call failed");
            Error::new(
                ErrorCode::Unavailable,
                "a cluster node did not answer, retry",
            )
        }
    }
}

/// A `traceparent` field: empty when the message is not traced.
pub fn trace_of(traceparent: String) -> Option<String> {
    (!traceparent.is_empty()).then_some(traceparent)
}

pub fn region_interest(interest: Interest) -> wire::RegionInterest {
    wire::RegionInterest {
        members: interest.members,
        fresh: interest.fresh,
    }
}

pub fn from_region_interest(interest: wire::RegionInterest) -> Interest {
    Interest {
        members: interest.members,
        fresh: interest.fresh,
    }
}

pub fn peer_outcome(outcome: PeerOutcome) -> wire::PeerOutcome {
    match outcome {
        PeerOutcome::Received => wire::PeerOutcome::Received,
        PeerOutcome::Cached => wire::PeerOutcome::Cached,
        PeerOutcome::Unreachable => wire::PeerOutcome::Unreachable,
        PeerOutcome::TimedOut => wire::PeerOutcome::TimedOut,
    }
}

pub fn from_peer_outcome(outcome: wire::PeerOutcome) -> PeerOutcome {
    match outcome {
        wire::PeerOutcome::Received => PeerOutcome::Received,
        wire::PeerOutcome::Cached => PeerOutcome::Cached,
        wire::PeerOutcome::TimedOut => PeerOutcome::TimedOut,
        wire::PeerOutcome::Unreachable | wire::PeerOutcome::Unspecified => PeerOutcome::Unreachable,
    }
}

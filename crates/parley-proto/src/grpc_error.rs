//! How a gRPC status carries Parley's error code, the same on every gRPC surface (the cluster's
//! API between nodes, the server API for app backends): the code's name (`NOT_JOINED`, …) in the
//! `parley-error-code` metadata. The gRPC status code beside it is each surface's own choice.

use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::v1::ErrorCode;

/// The metadata key of the error code.
pub const ERROR_CODE_KEY: &str = "parley-error-code";

/// A status with `code` and `message`, naming `error` in its metadata.
pub fn status(code: tonic::Code, error: ErrorCode, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        MetadataValue::from_static(error.as_str_name()),
    );
    status
}

/// The error code a status names, if it names one this build knows.
pub fn error_code(status: &Status) -> Option<ErrorCode> {
    let name = status.metadata().get(ERROR_CODE_KEY)?.to_str().ok()?;
    ErrorCode::from_str_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_crosses_by_name() {
        for value in 0..200 {
            let Ok(error) = ErrorCode::try_from(value) else {
                continue;
            };
            let status = status(tonic::Code::InvalidArgument, error, "why");
            assert_eq!(error_code(&status), Some(error));
            assert_eq!(
                status.metadata().get(ERROR_CODE_KEY).unwrap(),
                error.as_str_name()
            );
        }
        assert_eq!(error_code(&Status::unavailable("no metadata")), None);
    }
}

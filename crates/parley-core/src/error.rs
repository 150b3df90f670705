//! The error every client-visible failure is expressed in: one code from the closed set of
//! `proto/parley/v1/client.proto` plus a lowercase message.

pub use parley_proto::v1::ErrorCode;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    pub fn too_often(what: &str) -> Self {
        Error::new(ErrorCode::TooOften, format!("{what} rate limit exceeded"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }
}

impl From<Error> for parley_proto::v1::Error {
    fn from(error: Error) -> Self {
        parley_proto::v1::Error {
            code: error.code as i32,
            message: error.message,
        }
    }
}

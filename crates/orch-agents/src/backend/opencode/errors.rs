//! How OpenCode 1's client and turn errors look to the mission ([`BackendError`]).

use orch_opencode::TurnError;

use crate::backend::BackendError;

/// How a client error looks to the mission.
pub(super) fn client_error(e: orch_opencode::Error) -> BackendError {
    match &e {
        orch_opencode::Error::Connect { .. } => BackendError::ServerLost {
            message: e.to_string(),
        },
        orch_opencode::Error::Status { status, .. }
            if (400..500).contains(status) && *status != 429 =>
        {
            BackendError::Session {
                message: e.to_string(),
            }
        }
        orch_opencode::Error::Unauthorized { .. } => BackendError::Session {
            message: e.to_string(),
        },
        _ => BackendError::Unavailable {
            status: None,
            message: e.to_string(),
        },
    }
}

pub(super) fn turn_error(e: TurnError, stopped: bool) -> BackendError {
    let status = e.upstream_status();
    let retry_after = e.retry_after();
    match e {
        TurnError::Failed { error, .. } => match status {
            Some(429) => BackendError::RateLimited {
                retry_after,
                message: error.message().to_owned(),
            },
            Some(s) if s >= 500 => BackendError::Unavailable {
                status: Some(s),
                message: error.message().to_owned(),
            },
            _ if error.data.is_retryable == Some(true) => BackendError::Unavailable {
                status,
                message: error.message().to_owned(),
            },
            _ => BackendError::Session {
                message: format!("{}: {}", error.name, error.message()),
            },
        },
        TurnError::Aborted { .. } if stopped => BackendError::Stopped,
        TurnError::Client(e) => client_error(e),
        other @ TurnError::ServerLost { .. } => BackendError::ServerLost {
            message: other.to_string(),
        },
        other => BackendError::Session {
            message: other.to_string(),
        },
    }
}

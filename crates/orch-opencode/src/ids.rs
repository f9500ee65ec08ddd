//! Newtype identifiers for OpenCode objects.
//!
//! OpenCode ids look like `<prefix>_<12 hex><14 base62>` (`ses_dfee09ff4ffeloyh8PIvDOLFUp`).
//! The 12 hex digits are the low 48 bits of `unix_ms * 4096 + counter`; session ids invert
//! them so that newer sessions sort first. Clients may choose their own message ids, which is
//! how a caller correlates the events of a turn it started with `prompt_async`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix OpenCode uses for this kind of id (without the underscore).
            pub const PREFIX: &'static str = $prefix;

            /// Wraps an id received from OpenCode or typed by a user. No validation is done:
            /// OpenCode answers unknown or malformed ids with typed HTTP errors.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as OpenCode spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the id carries the prefix OpenCode expects (the server answers a
            /// session id without `ses` with a generic 500, see `API.md` §1).
            pub fn has_valid_prefix(&self) -> bool {
                self.0.starts_with(Self::PREFIX)
            }

            /// Takes the inner string back.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A session id (`ses_…`). Newer sessions sort first.
    SessionId,
    "ses"
);
id_type!(
    /// A message id (`msg_…`), user or assistant. Ascending in creation order.
    MessageId,
    "msg"
);
id_type!(
    /// A message part id (`prt_…`).
    PartId,
    "prt"
);
id_type!(
    /// A pending permission request (`per_…`).
    PermissionId,
    "per"
);
id_type!(
    /// A pending question of the `question` tool (`que_…`).
    QuestionId,
    "que"
);
id_type!(
    /// An event id (`evt_…`).
    EventId,
    "evt"
);

impl MessageId {
    /// Generates a fresh ascending message id with OpenCode's own scheme, so a message created
    /// by us sorts after every message already in the session (OpenCode orders by id).
    pub fn generate() -> Self {
        Self(ascending_id(Self::PREFIX))
    }
}

static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `<prefix>_<12 hex of (ms*4096+counter) low 48 bits><14 base62>`.
fn ascending_id(prefix: &str) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let value = {
        // A poisoned lock only means another thread panicked mid-update of two integers.
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        // Never go backwards, even if the wall clock does.
        let ms = now_ms.max(last.0);
        if ms == last.0 {
            last.1 += 1;
        } else {
            *last = (ms, 1);
        }
        if last.1 >= 4096 {
            // Counter overflow within one millisecond: borrow the next millisecond.
            *last = (ms + 1, 1);
        }
        last.0.wrapping_mul(4096).wrapping_add(last.1) & 0xFFFF_FFFF_FFFF
    };
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    out.push_str(&format!("{value:012x}"));
    for _ in 0..14 {
        out.push(BASE62[fastrand::usize(..BASE62.len())] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_message_ids_have_opencode_shape_and_ascend() {
        let ids: Vec<MessageId> = (0..5000).map(|_| MessageId::generate()).collect();
        for id in &ids {
            assert!(id.has_valid_prefix());
            assert_eq!(id.as_str().len(), 4 + 12 + 14);
            assert!(id.as_str()[4..16].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{:?} !< {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn ids_compare_with_str_and_serialize_transparently() {
        let id = SessionId::new("ses_abc");
        assert_eq!(id, "ses_abc");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"ses_abc\"");
        let back: SessionId = serde_json::from_str("\"ses_abc\"").unwrap();
        assert_eq!(back, id);
        assert!(!SessionId::new("abc").has_valid_prefix());
    }
}

//! Newtype identifiers for OpenCode objects.
//!
//! OpenCode ids look like `<prefix>_<12 hex><14 base62>` (`ses_dfee09ff4ffeloyh8PIvDOLFUp`).
//! The 12 hex digits are the low 48 bits of `unix_ms * 4096 + counter`; session ids invert
//! them so that newer sessions sort first. Clients may choose their own message ids, which is
//! how a caller correlates the events of a turn it started with `prompt_async`.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Slots of each thread's id cache ([`intern`]): a power of two.
const INTERN_SLOTS: usize = 4096;
/// Longer strings are never cached (OpenCode's ids are 30 bytes; directories, titles and
/// model names are usually shorter than this).
const INTERN_MAX_LEN: usize = 128;

thread_local! {
    /// Direct-mapped: a slot holds the last id that hashed to it.
    static INTERNED: RefCell<Vec<Option<Arc<str>>>> = const { RefCell::new(Vec::new()) };
}

/// The shared copy of `s`: an id decoded from an event is usually one seen moments before
/// (the same session, message and part recur in every event of a turn), so each thread keeps
/// a small direct-mapped cache of the ids it decoded and hands out a reference-counted copy
/// instead of a fresh allocation. Bounded: at most [`INTERN_SLOTS`] strings of at most
/// [`INTERN_MAX_LEN`] bytes per thread stay alive (64 KiB of slots, ≈ 0.6 MiB at worst with
/// their strings); a miss replaces the slot's string.
pub(crate) fn intern(s: &str) -> Arc<str> {
    if s.len() > INTERN_MAX_LEN {
        return Arc::from(s);
    }
    let slot = (slot_hash(s.as_bytes()) >> (64 - INTERN_SLOTS.trailing_zeros())) as usize;
    INTERNED
        .try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.is_empty() {
                cache.resize(INTERN_SLOTS, None);
            }
            match &mut cache[slot] {
                Some(id) if **id == *s => Arc::clone(id),
                other => {
                    let id: Arc<str> = Arc::from(s);
                    *other = Some(Arc::clone(&id));
                    id
                }
            }
        })
        // The thread is being torn down: no cache.
        .unwrap_or_else(|_| Arc::from(s))
}

/// Serde's `deserialize_with` for a string field that recurs from event to event (a
/// session's directory, title and version, a message's agent and model): [`intern`]ed.
pub(crate) fn shared<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
    deserializer.deserialize_str(SharedVisitor)
}

/// [`shared`] for an optional field (`null` is `None`).
pub(crate) fn shared_opt<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Arc<str>>, D::Error> {
    struct Opt;
    impl<'de> serde::de::Visitor<'de> for Opt {
        type Value = Option<Arc<str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            shared(d).map(Some)
        }
    }
    deserializer.deserialize_option(Opt)
}

struct SharedVisitor;

impl serde::de::Visitor<'_> for SharedVisitor {
    type Value = Arc<str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        Ok(intern(v))
    }
}

/// A cheap hash of a short string: every byte counts (ids made by other programs may share a
/// long prefix or suffix), eight at a time (the last word overlapping the one before), each
/// word folded in with a multiply (FxHash's scheme). Only the top bits are used.
fn slot_hash(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let word = |w: &[u8]| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(w);
        u64::from_le_bytes(bytes)
    };
    let mut h = b.len() as u64;
    if b.len() < 8 {
        let short = b
            .iter()
            .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
        return (h.rotate_left(5) ^ short).wrapping_mul(K);
    }
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        h = (h.rotate_left(5) ^ word(w)).wrapping_mul(K);
    }
    if !words.remainder().is_empty() {
        h = (h.rotate_left(5) ^ word(&b[b.len() - 8..])).wrapping_mul(K);
    }
    h
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        ///
        /// Cloning is cheap (a shared, reference-counted string), and ids decoded from
        /// OpenCode's answers and events share one copy per thread while they recur.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The prefix OpenCode uses for this kind of id (without the underscore).
            pub const PREFIX: &'static str = $prefix;

            /// Wraps an id received from OpenCode or typed by a user. No validation is done:
            /// OpenCode answers unknown or malformed ids with typed HTTP errors.
            pub fn new(id: impl Into<String>) -> Self {
                Self(Arc::from(id.into()))
            }

            /// An id read from OpenCode: shares the copy this thread holds of it, if any.
            pub(crate) fn interned(id: &str) -> Self {
                Self(intern(id))
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

            /// The id as an owned string.
            pub fn into_inner(self) -> String {
                String::from(&*self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visit;
                impl serde::de::Visitor<'_> for Visit {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " string"))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::interned(v))
                    }
                }
                deserializer.deserialize_str(Visit)
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
                Self(Arc::from(s))
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                *self.0 == *other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                *self.0 == **other
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
        Self(Arc::from(ascending_id(Self::PREFIX)))
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
    fn recurring_ids_share_one_copy_and_every_id_keeps_its_own_text() {
        let a = intern("ses_dfee09ff4ffeloyh8PIvDOLFUp");
        let b = intern(&String::from("ses_dfee09ff4ffeloyh8PIvDOLFUp"));
        assert!(Arc::ptr_eq(&a, &b), "a recurring id is shared");
        // Far more ids than slots, many sharing long prefixes and suffixes: whatever the
        // cache keeps or evicts, each id comes back as itself.
        let ids: Vec<String> = (0..3 * INTERN_SLOTS)
            .map(|i| format!("ses_r{i:05}xxxxxxxxxxxxxxxxxxxxx"))
            .chain((0..200).map(|i| format!("s{i}")))
            .chain(std::iter::once(String::new()))
            .collect();
        for round in 0..2 {
            for id in &ids {
                assert_eq!(&*intern(id), id.as_str(), "round {round}");
            }
        }
        // The benchmark's ids differ only in five digits: they must not all share a slot.
        let slots: std::collections::HashSet<u64> = (0..50)
            .map(|i| slot_hash(format!("ses_r{i:04}xxxxxxxxxxxxxxxxxxxxx").as_bytes()) >> 52)
            .collect();
        assert!(slots.len() > 40, "{} slots for 50 ids", slots.len());
        let long = "x".repeat(INTERN_MAX_LEN + 1);
        assert!(
            !Arc::ptr_eq(&intern(&long), &intern(&long)),
            "long strings are not kept"
        );
        // Ids decoded by serde are shared too, and equal to ids made any other way.
        let one: SessionId = serde_json::from_str("\"ses_shared\"").unwrap();
        let two: SessionId = serde_json::from_value(serde_json::json!("ses_shared")).unwrap();
        assert!(Arc::ptr_eq(&one.0, &two.0));
        assert_eq!(one, SessionId::new("ses_shared"));
        assert_eq!(one.clone().into_inner(), "ses_shared");
    }

    #[test]
    fn recurring_fields_are_shared_through_serde_and_null_is_none() {
        #[derive(Deserialize)]
        struct Info {
            #[serde(deserialize_with = "shared")]
            directory: Arc<str>,
            #[serde(default, deserialize_with = "shared_opt")]
            agent: Option<Arc<str>>,
        }
        let one: Info = serde_json::from_str(r#"{"directory":"/p","agent":"build"}"#).unwrap();
        let two: Info = serde_json::from_str(r#"{"directory":"/p","agent":"build"}"#).unwrap();
        assert!(Arc::ptr_eq(&one.directory, &two.directory));
        assert!(Arc::ptr_eq(
            one.agent.as_ref().unwrap(),
            two.agent.as_ref().unwrap()
        ));
        let null: Info = serde_json::from_str(r#"{"directory":"/p","agent":null}"#).unwrap();
        assert_eq!(null.agent, None);
        let absent: Info = serde_json::from_str(r#"{"directory":"/p"}"#).unwrap();
        assert_eq!(absent.agent, None);
        assert!(serde_json::from_str::<Info>(r#"{"directory":1}"#).is_err());
        assert!(serde_json::from_str::<Info>(r#"{"directory":"/p","agent":2}"#).is_err());
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

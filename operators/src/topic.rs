//! `TopicName`: the Kafka topic a raw record came from, interned for the process. Every record of
//! a topic names it; a shared `Arc<str>` would have its count raised by the reading worker and
//! lowered by the decoding one for each record, bouncing that count between their cores.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names interned so far. Topics are few (those a run reads), so each is kept for good.
static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

thread_local! {
    /// The name this thread interned last: records arriving from other processes (which are
    /// deserialized one by one) mostly repeat it, and then need no lock.
    static LAST: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// A Kafka topic's name: copied without any shared count; compares and hashes as its text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(&'static str);

impl TopicName {
    /// The interned name `name` (interned on first use).
    pub fn new(name: &str) -> Self {
        if let Some(last) = LAST.get().filter(|last| *last == name) {
            return TopicName(last);
        }
        let interned = Self::intern(name);
        LAST.set(Some(interned.0));
        interned
    }

    fn intern(name: &str) -> Self {
        let mut interned = INTERNED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(&known) = interned.get(name) {
            return TopicName(known);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        interned.insert(leaked);
        TopicName(leaked)
    }

    /// Whether `other` is this name: interned names are equal only where they are one.
    pub fn is(&self, other: TopicName) -> bool {
        std::ptr::eq(self.0, other.0)
    }

    /// The name.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        self.0
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for TopicName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for TopicName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(TopicName::new(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_is_interned_once_and_round_trips_through_serde() {
        let a = TopicName::new("dbserver1.public.orders");
        let b = TopicName::new(&String::from("dbserver1.public.orders"));
        assert!(a.is(b));
        assert_eq!(&*a, "dbserver1.public.orders");
        let other = TopicName::new("dbserver1.public.customers");
        assert_ne!(a, other);
        assert!(!a.is(other));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#""dbserver1.public.orders""#);
        let back: TopicName = serde_json::from_str(&json).unwrap();
        assert!(back.is(a));
    }
}

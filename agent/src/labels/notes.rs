//! The notes every stage of the label pipeline writes: one line per decision worth
//! explaining (a port skipped, a network chosen) or per key the operator should fix. A note
//! about one key names it ([`Note::key`]), so the status page and `berth explain` can point at
//! the label to fix.

use serde::Serialize;

use super::keys::{Raw, Source};

/// How serious a note is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Explains a decision (why a port was skipped, which network was used).
    Info,
    /// Bad input the operator should fix; logged at WARN.
    Warn,
}

/// The key a note is about: a container label, or an environment variable (registrator's
/// `SERVICE_*` in the container's env).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Key {
    /// `label` or `env`.
    pub source: &'static str,
    pub name: String,
}

/// One line explaining a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Note {
    pub level: Level,
    pub message: String,
    /// The key that caused it, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
}

impl Note {
    pub fn warn(message: impl Into<String>) -> Note {
        Note {
            level: Level::Warn,
            message: message.into(),
            key: None,
        }
    }
}

/// Notes in the order they were made, without exact repeats (a note about a container-wide
/// key would otherwise repeat once per port).
#[derive(Debug, Default)]
pub(super) struct Notes(pub Vec<Note>);

impl Notes {
    pub fn info(&mut self, message: impl Into<String>) {
        self.push(Level::Info, message.into(), None);
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Level::Warn, message.into(), None);
    }

    /// A note about `raw`: the message starts with it (`label SERVICE_80_NAME="x": …`) and the
    /// note names its key.
    pub fn info_at(&mut self, raw: &Raw, rest: impl AsRef<str>) {
        self.push(
            Level::Info,
            format!("{raw}: {}", rest.as_ref()),
            Some(key(raw)),
        );
    }

    /// A warning about `raw`, as [`Notes::info_at`].
    pub fn warn_at(&mut self, raw: &Raw, rest: impl AsRef<str>) {
        self.push(
            Level::Warn,
            format!("{raw}: {}", rest.as_ref()),
            Some(key(raw)),
        );
    }

    /// A warning about the label `key`, which the container lacks.
    pub fn warn_missing(&mut self, key: &str, rest: impl AsRef<str>) {
        self.push(
            Level::Warn,
            format!("label {key} {}", rest.as_ref()),
            Some(Key {
                source: "label",
                name: key.to_owned(),
            }),
        );
    }

    fn push(&mut self, level: Level, message: String, key: Option<Key>) {
        if !self
            .0
            .iter()
            .any(|n| n.level == level && n.message == message)
        {
            self.0.push(Note {
                level,
                message,
                key,
            });
        }
    }

    pub fn extend(&mut self, other: Notes) {
        for n in other.0 {
            self.push(n.level, n.message, n.key);
        }
    }
}

fn key(raw: &Raw) -> Key {
    Key {
        source: match raw.source {
            Source::Label => "label",
            Source::Env => "env",
        },
        name: raw.key.clone(),
    }
}

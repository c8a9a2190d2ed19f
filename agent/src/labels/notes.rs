//! The notes every stage of the label pipeline writes: one line per decision worth
//! explaining (a port skipped, a network chosen) or per key the operator should fix.

/// How serious a note is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Explains a decision (why a port was skipped, which network was used).
    Info,
    /// Bad input the operator should fix; logged at WARN.
    Warn,
}

/// One line explaining a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub message: String,
}

/// Notes in the order they were made, without exact repeats (a note about a container-wide
/// key would otherwise repeat once per port).
#[derive(Debug, Default)]
pub(super) struct Notes(pub Vec<Note>);

impl Notes {
    pub fn info(&mut self, message: impl Into<String>) {
        self.push(Level::Info, message.into());
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.push(Level::Warn, message.into());
    }

    fn push(&mut self, level: Level, message: String) {
        if !self
            .0
            .iter()
            .any(|n| n.level == level && n.message == message)
        {
            self.0.push(Note { level, message });
        }
    }

    pub fn extend(&mut self, other: Notes) {
        for n in other.0 {
            self.push(n.level, n.message);
        }
    }
}

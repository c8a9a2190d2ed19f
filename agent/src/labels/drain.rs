//! Draining on stop: which signal means "this container is being stopped", and for how long
//! its instances stay critical before berth gives up waiting for it to exit.
//!
//! Docker stops a container by sending its stop signal (`Config.StopSignal`, SIGTERM unless
//! the image or `--stop-signal` says otherwise), waiting its stop timeout
//! (`Config.StopTimeout`, 10 s unless `--stop-timeout` says otherwise), then SIGKILL. Its
//! `kill` event names the signal, so berth can mark the instances critical the moment the
//! stop begins, and clients stop routing to them while the process still finishes its
//! requests. `--drain-on-stop` (on by default) and the `berth.drain` label turn it on or off.

use std::time::Duration;

use super::keys::{Keys, boolean};
use super::notes::Notes;
use super::sanitize::quote;
use crate::docker::view::ContainerView;

/// How a container is drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Drain {
    /// The container's stop signal, as a number (15 for SIGTERM).
    pub signal: i32,
    /// The container's stop timeout: after it, Docker kills the container, so a drain that
    /// has not ended by the container exiting by then (a `kill -s TERM` the process
    /// survived) is undone.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// Docker's stop signal and stop timeout when the container sets none.
pub const DEFAULT_SIGNAL: i32 = 15;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A negative stop timeout makes Docker wait for ever; a drain waits this long at most.
pub const LONGEST: Duration = Duration::from_secs(3600);

/// How `view` is drained, or `None` when draining is off for it (`berth.drain=false`, or
/// `--drain-on-stop=false` without `berth.drain=true`).
pub(super) fn resolve(
    view: &ContainerView,
    on_by_default: bool,
    keys: &Keys,
    notes: &mut Notes,
) -> Option<Drain> {
    let on = keys
        .native
        .drain
        .as_ref()
        .and_then(|raw| boolean(raw, notes))
        .unwrap_or(on_by_default);
    if !on {
        return None;
    }
    let signal = match view.stop_signal.as_deref() {
        None => DEFAULT_SIGNAL,
        Some(s) => match signal_number(s) {
            Some(n) => n,
            None => {
                notes.info(format!(
                    "stop signal {} is not one berth knows; draining on SIGTERM",
                    quote(s)
                ));
                DEFAULT_SIGNAL
            }
        },
    };
    let timeout = match view.stop_timeout {
        None => DEFAULT_TIMEOUT,
        Some(s) if s < 0 => LONGEST,
        Some(s) => Duration::from_secs(s.unsigned_abs()).min(LONGEST),
    };
    Some(Drain { signal, timeout })
}

/// Linux signal numbers by name, as Docker's `--stop-signal` accepts them.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];
const RTMIN: i32 = 34;
const RTMAX: i32 = 64;

/// `SIGTERM`, `TERM`, `sigterm` or `15` → 15; `SIGRTMIN+3` → 37. `None` for anything else.
pub fn signal_number(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Some(n);
    }
    let offset = |rest: &str| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        rest.parse::<i32>().ok()
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        RTMIN + offset(rest)?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        RTMAX + offset(rest)?
    } else {
        return None;
    };
    (RTMIN..=RTMAX).contains(&n).then_some(n)
}

/// `SIGTERM` for 15, the number for signals without a name.
pub fn signal_name(n: i32) -> String {
    match SIGNALS.iter().find(|(_, v)| *v == n) {
        Some((name, _)) => format!("SIG{name}"),
        None => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        for s in ["SIGTERM", "TERM", "sigterm", "15", " 15 "] {
            assert_eq!(signal_number(s), Some(15), "{s}");
        }
        assert_eq!(signal_number("SIGQUIT"), Some(3));
        assert_eq!(signal_number("SIGRTMIN"), Some(34));
        assert_eq!(signal_number("RTMIN+3"), Some(37));
        assert_eq!(signal_number("SIGRTMAX-2"), Some(62));
        for bad in ["", "SIGNOPE", "0", "65", "-1", "RTMIN+40", "RTMINx"] {
            assert_eq!(signal_number(bad), None, "{bad:?}");
        }
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "signal 40");
    }
}

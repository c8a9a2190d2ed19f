//! The results: one row per figure, printed as a markdown table and written as JSON with the
//! raw data of every scenario and a description of the machine.

use std::path::Path;
use std::process::Command;

use serde::Serialize;
use serde_json::{Map, Value};

/// One figure, with the target it is held to.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub backend: String,
    pub measure: String,
    pub value: String,
    pub target: String,
    /// `None` when the row has no target (a floor, a count for context).
    pub met: Option<bool>,
}

/// Rows of one scenario run on one backend (or on none).
#[derive(Debug)]
pub struct Rows {
    scenario: &'static str,
    backend: String,
    pub rows: Vec<Row>,
}

impl Rows {
    pub fn new(scenario: &'static str, backend: impl Into<String>) -> Rows {
        Rows {
            scenario,
            backend: backend.into(),
            rows: Vec::new(),
        }
    }

    /// A figure with no target.
    pub fn info(&mut self, measure: impl Into<String>, value: impl Into<String>) {
        self.push(measure, value, "", None);
    }

    /// A figure held to `target`; `met` says whether it is.
    pub fn check(
        &mut self,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        self.push(measure, value, target, Some(met));
    }

    fn push(
        &mut self,
        measure: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        self.rows.push(Row {
            scenario: self.scenario.to_owned(),
            backend: self.backend.clone(),
            measure: measure.into(),
            value: value.into(),
            target: target.into(),
            met,
        });
    }
}

/// Everything one bench run found.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Raw data, by `<scenario>/<backend>`.
    pub data: Map<String, Value>,
}

impl Report {
    pub fn add(&mut self, rows: Rows, data: Value) {
        let key = format!("{}/{}", rows.scenario, rows.backend);
        self.rows.extend(rows.rows);
        self.data.insert(key, data);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | backend | measure | value | target | met |\n|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.scenario, r.backend, r.measure, r.value, r.target, met
            ));
        }
        out
    }

    pub fn json(&self, machine: Value, args: Value) -> Value {
        serde_json::json!({
            "machine": machine,
            "args": args,
            "rows": self.rows,
            "data": self.data,
        })
    }
}

/// What the figures were measured on.
pub fn machine(berth: &Path) -> Value {
    let first_line = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "kernel": first_line("uname", &["-r"]),
        "docker": first_line("docker", &["version", "--format", "{{.Server.Version}}"]),
        "consul": first_line("consul", &["version"]),
        "etcd": first_line("etcd", &["--version"]),
        "berth": berth.display().to_string(),
        "berth_bytes": std::fs::metadata(berth).map(|m| m.len()).unwrap_or(0),
        "berth_version": first_line(&berth.display().to_string(), &["--version"]),
        "commit": first_line("git", &["rev-parse", "--short", "HEAD"]),
    })
}

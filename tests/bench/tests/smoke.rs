//! The benchmark harness end to end, small: `berth-bench all --quick` runs every scenario
//! against the real engine, a real Consul and a real etcd with the debug berth, and writes
//! its JSON. Timings are not asserted (they are what the harness measures, on release
//! builds); the figures that are behaviour are: a burst loses and duplicates nothing, a
//! drained instance leaves `?passing` before its process exits, a warm restart and a no-op
//! resync write nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// The value of the row of `scenario` on `backend` whose measure starts with `measure`.
fn value<'a>(rows: &'a [Value], scenario: &str, backend: &str, measure: &str) -> &'a str {
    rows.iter()
        .find(|r| {
            r["scenario"] == scenario
                && r["backend"] == backend
                && r["measure"].as_str().unwrap().starts_with(measure)
        })
        .and_then(|r| r["value"].as_str())
        .unwrap_or_else(|| panic!("no row {scenario}/{backend}/{measure}: {rows:#?}"))
}

#[test]
fn every_scenario_runs_and_keeps_its_invariants() {
    let berth = berth_e2e::agent::berth_bin();
    let dir = berth_e2e::docker::TempDir::new("berth-bench-smoke");
    let json = dir.0.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-bench"))
        .args(["all", "--quick", "--berth"])
        .arg(berth)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run berth-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "berth-bench failed:\n{stdout}\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();

    let scenarios = [
        "latency",
        "burst",
        "cold",
        "drain",
        "writes",
        "probes",
        "footprint",
    ];
    for s in scenarios {
        assert!(
            rows.iter().any(|r| r["scenario"] == s),
            "no rows for {s}:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("| {s} |")),
            "{s} not in the table:\n{stdout}"
        );
    }
    for backend in ["consul", "etcd"] {
        assert_eq!(value(rows, "burst", backend, "lost"), "0", "{stdout}");
        assert_eq!(value(rows, "burst", backend, "duplicated"), "0", "{stdout}");
        assert_eq!(value(rows, "burst", backend, "left over"), "0", "{stdout}");
        let drained = value(rows, "drain", backend, "out of ?passing before");
        let (before, of) = drained.split_once('/').unwrap();
        assert_eq!(before, of, "every drain before the exit: {stdout}");
        assert_eq!(
            value(rows, "cold", backend, "warm restart: registry writes"),
            "0"
        );
        assert_eq!(
            value(rows, "writes", backend, "writes (register"),
            "0",
            "{stdout}"
        );
    }
    // The latency samples and the floor are there, as numbers.
    let data = &report["data"]["latency/consul"];
    assert!(data["start_to_registered_ms"]["n"].as_u64().unwrap() > 0);
    assert!(data["floor"]["inspect"]["p50"].as_f64().unwrap() > 0.0);
    assert!(report["machine"]["cpus"].as_u64().unwrap() > 0);
}

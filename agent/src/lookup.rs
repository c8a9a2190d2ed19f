//! `berth lookup <service>`: every instance of a service that berth registered, from every
//! node, read back from the configured registry, as a table or as JSON.

use std::collections::BTreeMap;

use berth_registry::{Instance, Registry, RegistryError, Status};
use serde::Serialize;

use crate::config::Config;

/// One row of the output; also the JSON shape (`--json` prints an array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub node: String,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    pub status: Status,
    pub output: String,
}

impl From<Instance> for Row {
    fn from(i: Instance) -> Row {
        Row {
            id: i.id,
            name: i.name,
            address: i.address,
            port: i.port,
            tags: i.tags,
            meta: i.meta,
            node: i.origin.node,
            container_id: i.origin.container_id,
            container_name: i.origin.container_name,
            image: i.origin.image,
            status: i.health.status,
            output: i.health.output,
        }
    }
}

/// A failed lookup, naming the registry it asked.
#[derive(Debug, thiserror::Error)]
#[error("lookup in {registry} failed")]
pub struct LookupError {
    registry: String,
    #[source]
    source: RegistryError,
}

/// The instances of `service` in the registry `config` selects, sorted by node then id.
pub async fn lookup(
    config: &Config,
    service: &str,
    passing_only: bool,
) -> Result<Vec<Row>, LookupError> {
    // A lookup writes nothing: the node only names the client.
    let node = config.agent.node_name.as_deref().unwrap_or("lookup");
    let registry = config.registry(node).map_err(|source| LookupError {
        registry: "the configured registry".to_owned(),
        source,
    })?;
    rows(&registry, service, passing_only)
        .await
        .map_err(|source| LookupError {
            registry: registry.describe(),
            source,
        })
}

/// What `berth lookup` prints: a JSON array with `json`, else the table (nothing when there
/// are no instances).
pub fn render(rows: &[Row], json: bool) -> String {
    if json {
        // Rows are strings, numbers and string maps: they always serialise.
        return serde_json::to_string_pretty(rows).unwrap_or_default() + "\n";
    }
    if rows.is_empty() {
        return String::new();
    }
    table(rows)
}

/// The instances of `service`, sorted by node then id.
pub async fn rows(
    registry: &Registry,
    service: &str,
    passing_only: bool,
) -> Result<Vec<Row>, RegistryError> {
    let mut rows: Vec<Row> = registry
        .lookup(service, passing_only)
        .await?
        .into_iter()
        .map(Row::from)
        .collect();
    rows.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
    Ok(rows)
}

/// A plain table: one header line, one line per instance, columns padded to fit.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "ID",
        "ADDRESS",
        "PORT",
        "NODE",
        "CONTAINER",
        "HEALTH",
        "OUTPUT",
    ];
    let lines: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.address.clone(),
                r.port.to_string(),
                r.node.clone(),
                r.container_name.clone(),
                r.status.to_string(),
                // One line per instance, however long the probe output.
                r.output
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = render(&header.map(str::to_owned));
    for line in &lines {
        out.push_str(&render(line));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_registry::memory::MemoryRegistry;
    use berth_registry::{Health, Origin};

    fn inst(node: &str, id: &str, status: Status) -> Instance {
        Instance {
            id: id.into(),
            name: "web".into(),
            address: "10.0.0.1".into(),
            port: 8080,
            tags: vec![],
            meta: Default::default(),
            origin: Origin {
                node: node.into(),
                container_id: "c".repeat(64),
                container_name: format!("ctr-{id}"),
                image: "img".into(),
            },
            health: Health {
                status,
                output: "HTTP GET /health: 200 OK\nsecond line".into(),
            },
        }
    }

    #[tokio::test]
    async fn rows_are_sorted_and_filtered() {
        let m = MemoryRegistry::new("n1");
        m.insert_instance(inst("n2", "b", Status::Passing));
        m.insert_instance(inst("n1", "z", Status::Critical));
        m.insert_instance(inst("n1", "a", Status::Passing));
        let r = Registry::Memory(m);
        let all = rows(&r, "web", false).await.unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "z", "b"]);
        let passing = rows(&r, "web", true).await.unwrap();
        assert!(passing.iter().all(|r| r.status == Status::Passing));
        assert_eq!(passing.len(), 2);
        assert!(rows(&r, "other", false).await.unwrap().is_empty());
    }

    #[test]
    fn table_aligns_columns_and_keeps_one_line_per_instance() {
        let rows = vec![
            Row::from(inst("node-one", "a", Status::Passing)),
            Row::from(inst("n2", "longer-id", Status::Critical)),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0].starts_with("ID         ADDRESS   PORT  NODE"),
            "{t}"
        );
        assert!(lines[1].contains("node-one") && lines[1].contains("passing"));
        assert!(lines[2].contains("critical") && lines[2].ends_with("200 OK"));
        let col = lines[0].find("NODE").unwrap();
        assert_eq!(&lines[1][col..col + 8], "node-one");
        assert_eq!(&lines[2][col..col + 2], "n2");
    }

    #[test]
    fn render_prints_json_or_a_table_and_nothing_for_no_rows() {
        let rows = vec![Row::from(inst("n1", "a", Status::Passing))];
        let json: serde_json::Value = serde_json::from_str(&render(&rows, true)).unwrap();
        assert_eq!(json[0]["id"], "a");
        assert_eq!(render(&[], true), "[]\n");
        assert!(render(&rows, false).starts_with("ID "));
        assert_eq!(render(&[], false), "");
    }

    #[test]
    fn json_rows_carry_every_field() {
        let v = serde_json::to_value(Row::from(inst("n1", "a", Status::Warning))).unwrap();
        assert_eq!(v["status"], "warning");
        assert_eq!(v["node"], "n1");
        assert_eq!(v["port"], 8080);
        assert_eq!(v["container_name"], "ctr-a");
    }
}

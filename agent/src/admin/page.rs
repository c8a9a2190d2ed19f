//! The status page (`GET /`): one server-rendered HTML document, no script, no external
//! assets, readable on a phone. It refreshes itself every few seconds (a meta refresh).
//!
//! Everything that comes from a container (names, label values, probe output) is user input
//! and goes through [`escape`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use berth_registry::Status as HealthStatus;

use super::status::{InstanceStatus, Status};
use crate::labels::Level;

/// Seconds between the page's own refreshes.
pub const REFRESH_SECONDS: u32 = 5;

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:12px;background:#f6f7f9;color:#1d2330}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px}\
.top{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px #0002}\
.svc{background:#fff;border-radius:8px;margin:8px 0;padding:8px 12px;box-shadow:0 1px 2px #0002}\
.svc h3{font-size:15px;margin:0 0 6px}\
.inst{border-left:5px solid #999;padding:4px 8px;margin:6px 0;overflow-wrap:anywhere}\
.passing{border-color:#2e9e4f}.warning{border-color:#d99a00}.critical{border-color:#d0342c}\
.badge{display:inline-block;font-size:12px;font-weight:600;padding:1px 6px;border-radius:9px;color:#fff}\
.b-passing{background:#2e9e4f}.b-warning{background:#d99a00}.b-critical{background:#d0342c}\
.b-ready{background:#2e9e4f}.b-unready{background:#d0342c}.b-parked{background:#6b4fd0}\
pre{white-space:pre-wrap;margin:4px 0 0;font-size:12px;color:#444}\
.muted{color:#667;font-size:13px}.warn{color:#a0281f}\
ul{margin:4px 0;padding-left:18px}";

/// The page for `status`.
pub fn render(status: &Status) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>berth on {}</title><style>{STYLE}</style></head><body>",
        escape(status.node.as_deref().unwrap_or("(starting)"))
    );
    top(&mut h, status);
    services(&mut h, status);
    skipped(&mut h, status);
    let _ = write!(
        h,
        "<p class=\"muted\">berth {} · refreshes every {REFRESH_SECONDS}s · \
         <a href=\"/v1/status\">JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>",
        escape(status.version)
    );
    h
}

fn top(h: &mut String, s: &Status) {
    let (class, word) = if s.ready {
        ("b-ready", "ready")
    } else {
        ("b-unready", "not ready")
    };
    let _ = write!(
        h,
        "<div class=\"top\"><h1>berth · {}</h1>\
         <div>registry <b>{}</b> · docker <b>{}</b> · <span class=\"badge {class}\">{word}</span></div>",
        escape(s.node.as_deref().unwrap_or("(starting)")),
        escape(s.registry.as_deref().unwrap_or("-")),
        escape(s.docker.as_deref().unwrap_or("-")),
    );
    if let Some(reason) = &s.reason {
        let _ = write!(h, "<div class=\"warn\">{}</div>", escape(reason));
    }
    h.push_str("</div>");
}

fn health_class(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Passing => "passing",
        HealthStatus::Warning => "warning",
        HealthStatus::Critical => "critical",
    }
}

fn services(h: &mut String, s: &Status) {
    // Service name → (container name, instance).
    let mut by_name: BTreeMap<&str, Vec<(&str, &InstanceStatus)>> = BTreeMap::new();
    for c in &s.containers {
        for i in &c.instances {
            by_name.entry(&i.name).or_default().push((&c.name, i));
        }
    }
    let _ = write!(h, "<h2>Services ({})</h2>", by_name.len());
    if by_name.is_empty() {
        h.push_str("<p class=\"muted\">No container registers anything.</p>");
    }
    for (name, instances) in by_name {
        let _ = write!(
            h,
            "<div class=\"svc\"><h3>{} <span class=\"muted\">{} instance{}</span></h3>",
            escape(name),
            instances.len(),
            if instances.len() == 1 { "" } else { "s" }
        );
        for (container, i) in instances {
            let class = health_class(i.health.status);
            let _ = write!(
                h,
                "<div class=\"inst {class}\"><span class=\"badge b-{class}\">{class}</span> \
                 <b>{}:{}</b> <span class=\"muted\">{} · container {}</span>",
                escape(&i.address),
                i.port,
                escape(&i.id),
                escape(container),
            );
            if !i.tags.is_empty() {
                let _ = write!(
                    h,
                    "<div class=\"muted\">tags {}</div>",
                    escape(&i.tags.join(", "))
                );
            }
            if let Some(p) = &i.parked {
                let _ = write!(
                    h,
                    "<div><span class=\"badge b-parked\">refused</span> {} \
                     <span class=\"muted\">(retry in {}s)</span></div>",
                    escape(&p.reason),
                    p.retry_in_s
                );
            } else if !i.registered {
                h.push_str("<div class=\"muted\">not written yet</div>");
            }
            if !i.health.output.is_empty() {
                let _ = write!(h, "<pre>{}</pre>", escape(&i.health.output));
            }
            h.push_str("</div>");
        }
        h.push_str("</div>");
    }
}

fn skipped(h: &mut String, s: &Status) {
    let with_problems: Vec<_> = s
        .containers
        .iter()
        .filter(|c| c.skipped.is_some() || c.notes.iter().any(|n| n.level == Level::Warn))
        .collect();
    let _ = write!(
        h,
        "<h2>Skipped containers and label problems ({})</h2>",
        with_problems.len()
    );
    for c in with_problems {
        let _ = write!(h, "<div class=\"svc\"><h3>{}", escape(&c.name));
        if let Some(skip) = c.skipped {
            let _ = write!(h, " <span class=\"muted\">skipped: {}</span>", skip.code());
        }
        let _ = write!(
            h,
            "</h3><div class=\"muted\">{} · {}</div><ul>",
            escape(crate::docker::short_id(&c.id)),
            escape(&c.image)
        );
        for n in &c.notes {
            let class = if n.level == Level::Warn {
                "warn"
            } else {
                "muted"
            };
            let _ = write!(h, "<li class=\"{class}\">{}</li>", escape(&n.message));
        }
        h.push_str("</ul></div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::ContainerStatus;
    use crate::labels::{Note, Skip};
    use berth_registry::Health;

    fn status() -> Status {
        Status {
            version: "0",
            node: Some("n<1>".into()),
            registry: Some("consul".into()),
            docker: Some("unix:///var/run/docker.sock".into()),
            ready: false,
            reason: Some("docker unavailable: <gone>".into()),
            containers: vec![
                ContainerStatus {
                    id: "c1".into(),
                    name: "shop".into(),
                    image: "img".into(),
                    skipped: None,
                    instances: vec![InstanceStatus {
                        id: "n:shop:80".into(),
                        name: "shop".into(),
                        address: "10.0.0.1".into(),
                        port: 8080,
                        tags: vec!["<script>alert(1)</script>".into()],
                        meta: Default::default(),
                        health: Health::critical("HTTP GET /health: 500 & \"down\""),
                        registered: true,
                        parked: None,
                    }],
                    draining: None,
                    notes: vec![],
                },
                ContainerStatus {
                    id: "c2".into(),
                    name: "bad".into(),
                    image: "img".into(),
                    skipped: Some(Skip::InvalidLabels),
                    instances: vec![],
                    draining: None,
                    notes: vec![Note::warn("label SERVICE_NAME=\"<b>x</b>\": not usable")],
                },
            ],
        }
    }

    #[test]
    fn escapes_everything_from_containers() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = render(&status());
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<b>x</b>"));
        assert!(page.contains("n&lt;1&gt;"));
        assert!(page.contains("500 &amp; &quot;down&quot;"));
    }

    #[test]
    fn shows_services_health_and_skipped_containers() {
        let page = render(&status());
        assert!(page.contains("<meta http-equiv=\"refresh\""));
        assert!(page.contains("<h3>shop "), "service grouped by name");
        assert!(page.contains("badge b-critical\">critical"));
        assert!(page.contains("skipped: invalid_labels"));
        assert!(page.contains("not ready"));
        assert!(page.contains("docker unavailable: &lt;gone&gt;"));
    }
}

//! Logging setup: `tracing` with `BERTH_LOG` as the filter (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Logs go to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// An error and its sources on one line (`a: b: c`), for log fields and for the one line a
/// user reads. Each of berth's errors says only what its own layer knows and leaves the
/// rest to its source, so nothing repeats.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    // Some sources (hyper, bollard) put a newline in a message; a log field stays one line.
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_sources() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(super::chain(&e), "outer: connection refused");
    }

    /// Each level of `e`'s chain says something its source does not.
    fn says_each_thing_once(e: &(dyn std::error::Error + 'static)) {
        let mut level = e;
        while let Some(source) = level.source() {
            let (outer, inner) = (level.to_string(), source.to_string());
            assert!(
                !outer.contains(&inner),
                "{outer:?} repeats its source {inner:?} (chain: {})",
                super::chain(e)
            );
            level = source;
        }
    }

    #[tokio::test]
    async fn docker_errors_leave_their_cause_to_the_source() {
        // A socket that is not there (yet) fails the call, not the start: berth waits for it.
        let docker = crate::docker::Docker::connect(
            Some("unix:///nonexistent/berth-test.sock"),
            std::time::Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Err(e) = docker.list_ids().await else {
            panic!("listing through a missing socket succeeded")
        };
        says_each_thing_once(&e);
        let chain = super::chain(&e);
        assert!(chain.starts_with("docker list containers "), "{chain}");
        assert!(chain.contains("No such file or directory"), "{chain}");
        // An engine that does not answer fails the call too.
        let docker = crate::docker::Docker::connect(
            Some("tcp://127.0.0.1:9"),
            std::time::Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Err(e) = docker.list_ids().await else {
            panic!("listing from a closed port succeeded")
        };
        says_each_thing_once(&e);
        let chain = super::chain(&e);
        assert!(chain.starts_with("docker list containers "), "{chain}");
    }

    #[test]
    fn config_errors_leave_their_cause_to_the_source() {
        let env = std::collections::HashMap::from([("BERTH_TTL".to_owned(), "banana".to_owned())]);
        let Err(crate::config::ParseError::Config(e)) =
            crate::config::parse(["berth", "run"], &env)
        else {
            panic!("a TTL of banana was accepted")
        };
        says_each_thing_once(&e);
        let chain = super::chain(&e);
        assert!(chain.starts_with("invalid configuration: "), "{chain}");
        assert!(chain.contains("banana"), "{chain}");
    }
}

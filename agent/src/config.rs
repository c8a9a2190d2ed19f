//! Command line and configuration.
//!
//! Sources, highest first: flags, `BERTH_*` environment variables, the `CONSUL_*` variables
//! Consul's own tools use, a TOML or YAML file (`--config`), then defaults. Every source is
//! merged by the `config` crate and deserialised into one [`Config`]; any problem becomes one
//! [`ConfigError`] line and `main` exits 64.
//!
//! The environment is read through the [`Env`] trait so tests pass a map instead of mutating
//! the process environment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// `berth`: the command line.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Registers Docker containers in Consul or etcd, kept exact."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch Docker and keep the registry exact.
    Run(Box<RunArgs>),
    /// Print the instances of a service that berth registered, from every node.
    Lookup(Box<LookupArgs>),
}

/// Which registry to talk to, and how. Shared by `berth run` and `berth lookup`.
#[derive(Clone, Debug, Default, Args)]
pub struct RegistryArgs {
    /// TOML or YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Registry backend [default: consul].
    #[arg(long = "registry", value_name = "consul|etcd")]
    pub kind: Option<String>,
    /// Consul agent address [env: CONSUL_HTTP_ADDR] [default: http://127.0.0.1:8500].
    #[arg(long, value_name = "URL")]
    pub consul_addr: Option<String>,
    /// etcd endpoints, repeated or comma-separated [env: ETCDCTL_ENDPOINTS] [default: http://127.0.0.1:2379].
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix for everything berth writes to etcd [default: /berth].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// etcd user; the password comes from BERTH_ETCD_PASSWORD or the config file.
    #[arg(long, value_name = "USER")]
    pub etcd_user: Option<String>,
    /// PEM CA bundle for https etcd endpoints [env: ETCDCTL_CACERT].
    #[arg(long, value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// PEM client certificate for etcd [env: ETCDCTL_CERT].
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM key of --etcd-cert [env: ETCDCTL_KEY].
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
}

/// `berth lookup <service>`.
#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Service name.
    pub service: String,
    /// Only instances whose health is passing.
    #[arg(long)]
    pub passing: bool,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Flags of `berth run`. Every flag also has a `BERTH_<NAME>` variable and a config-file key
/// (`node_name` for `--node-name`); see docs/configuration.md.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Node identity used in instance ids and ownership [default: Docker's node name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address registered for published ports [default: detected at startup].
    #[arg(long, value_name = "IP")]
    pub host_ip: Option<String>,
    /// Register container IP and container port instead of host IP and published port.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub internal: Option<bool>,
    /// Network to take container IPs from in --internal mode.
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
    /// Register only containers or ports that carry a service-name label.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub explicit: Option<bool>,
    /// TTL of each instance's heartbeat check (Consul) or of the agent's lease (etcd);
    /// refreshed every ttl/3 [default: 15s].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Full resync period [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub resync: Option<String>,
    /// Consul removes an instance critical for this long [default: 1m].
    #[arg(long, value_name = "DURATION")]
    pub deregister_critical_after: Option<String>,
    /// Remove this node's registrations on SIGTERM/SIGINT instead of letting them expire.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub deregister_on_exit: Option<bool>,
    /// Log format [default: plain].
    #[arg(long, value_name = "plain|json")]
    pub log_format: Option<String>,
    /// Docker endpoint, unix:// or tcp:// [env: DOCKER_HOST] [default: unix:///var/run/docker.sock].
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
    /// Health probes in flight at once, across all checks [default: 64].
    #[arg(long, value_name = "N")]
    pub probe_concurrency: Option<usize>,
    /// Consecutive failed probes of one check before an autoheal container is restarted
    /// [default: 3].
    #[arg(long, value_name = "N")]
    pub autoheal_failures: Option<u32>,
    /// Minimum time between two self-healing restarts of one container [default: 1m].
    #[arg(long, value_name = "DURATION")]
    pub autoheal_cooldown: Option<String>,
    /// Most self-healing restarts of one container per --autoheal-window [default: 3].
    #[arg(long, value_name = "N")]
    pub autoheal_max_restarts: Option<usize>,
    /// Window over which --autoheal-max-restarts counts [default: 1h].
    #[arg(long, value_name = "DURATION")]
    pub autoheal_window: Option<String>,
}

/// Reads environment variables. The process environment in production, a map in tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned().filter(|v| !v.is_empty())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    #[default]
    Consul,
    Etcd,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// The resolved configuration of `berth run`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub registry: RegistryKind,
    #[serde(default = "default_consul_addr")]
    pub consul_addr: String,
    #[serde(default)]
    pub consul_token: Option<String>,
    #[serde(default)]
    pub consul_cacert: Option<PathBuf>,
    #[serde(default)]
    pub consul_client_cert: Option<PathBuf>,
    #[serde(default)]
    pub consul_client_key: Option<PathBuf>,
    #[serde(default)]
    pub consul_tls_skip_verify: bool,
    /// etcd endpoints: a list, or one comma-separated string (as flags and env give it).
    #[serde(
        default = "default_etcd_endpoints",
        deserialize_with = "string_or_list"
    )]
    pub etcd_endpoints: Vec<String>,
    #[serde(default = "default_etcd_prefix")]
    pub etcd_prefix: String,
    #[serde(default)]
    pub etcd_user: Option<String>,
    #[serde(default)]
    pub etcd_password: Option<String>,
    #[serde(default)]
    pub etcd_cacert: Option<PathBuf>,
    #[serde(default)]
    pub etcd_cert: Option<PathBuf>,
    #[serde(default)]
    pub etcd_key: Option<PathBuf>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub explicit: bool,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(default = "default_resync", with = "humantime_serde")]
    pub resync: Duration,
    #[serde(default = "default_deregister_after", with = "humantime_serde")]
    pub deregister_critical_after: Duration,
    #[serde(default)]
    pub deregister_on_exit: bool,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub docker_host: Option<String>,
    /// Timeout of every Docker API call.
    #[serde(default = "default_docker_timeout", with = "humantime_serde")]
    pub docker_timeout: Duration,
    /// Containers reconciled at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_probe_concurrency")]
    pub probe_concurrency: usize,
    #[serde(default = "default_autoheal_failures")]
    pub autoheal_failures: u32,
    #[serde(default = "default_autoheal_cooldown", with = "humantime_serde")]
    pub autoheal_cooldown: Duration,
    #[serde(default = "default_autoheal_max_restarts")]
    pub autoheal_max_restarts: usize,
    #[serde(default = "default_autoheal_window", with = "humantime_serde")]
    pub autoheal_window: Duration,
}

fn default_consul_addr() -> String {
    "http://127.0.0.1:8500".to_owned()
}
fn default_etcd_endpoints() -> Vec<String> {
    vec!["http://127.0.0.1:2379".to_owned()]
}
fn default_etcd_prefix() -> String {
    "/berth".to_owned()
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    Ok(items
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

fn default_ttl() -> Duration {
    Duration::from_secs(15)
}
fn default_resync() -> Duration {
    Duration::from_secs(30)
}
fn default_deregister_after() -> Duration {
    Duration::from_secs(60)
}
fn default_docker_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    16
}
fn default_probe_concurrency() -> usize {
    64
}
fn default_autoheal_failures() -> u32 {
    3
}
fn default_autoheal_cooldown() -> Duration {
    Duration::from_secs(60)
}
fn default_autoheal_max_restarts() -> usize {
    3
}
fn default_autoheal_window() -> Duration {
    Duration::from_secs(3600)
}

/// A configuration problem, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: {0}")]
    Source(#[from] config::ConfigError),
}

/// Keys every source may set. Environment variables are `BERTH_` + the key upper-cased.
const KEYS: &[&str] = &[
    "registry",
    "consul_addr",
    "consul_token",
    "consul_cacert",
    "consul_client_cert",
    "consul_client_key",
    "consul_tls_skip_verify",
    "etcd_endpoints",
    "etcd_prefix",
    "etcd_user",
    "etcd_password",
    "etcd_cacert",
    "etcd_cert",
    "etcd_key",
    "node_name",
    "host_ip",
    "internal",
    "network",
    "explicit",
    "ttl",
    "resync",
    "deregister_critical_after",
    "deregister_on_exit",
    "log_format",
    "docker_host",
    "docker_timeout",
    "concurrency",
    "probe_concurrency",
    "autoheal_failures",
    "autoheal_cooldown",
    "autoheal_max_restarts",
    "autoheal_window",
];

/// Consul's own variables and the keys they feed.
const CONSUL_ENV: &[(&str, &str)] = &[
    ("CONSUL_HTTP_ADDR", "consul_addr"),
    ("CONSUL_HTTP_TOKEN", "consul_token"),
    ("CONSUL_CACERT", "consul_cacert"),
    ("CONSUL_CLIENT_CERT", "consul_client_cert"),
    ("CONSUL_CLIENT_KEY", "consul_client_key"),
    ("ETCDCTL_ENDPOINTS", "etcd_endpoints"),
    ("ETCDCTL_CACERT", "etcd_cacert"),
    ("ETCDCTL_CERT", "etcd_cert"),
    ("ETCDCTL_KEY", "etcd_key"),
    ("DOCKER_HOST", "docker_host"),
];

impl Config {
    /// Merges flags, environment, file and defaults, then validates.
    pub fn load(args: &RunArgs, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();

        if let Some(path) = &args.registry.config {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path.as_path()).required(true));
        }

        // Consul's and Docker's conventional variables rank below BERTH_* ones.
        let mut foreign = config::Map::new();
        for (var, key) in CONSUL_ENV {
            if let Some(v) = env.var(var) {
                foreign.insert((*key).to_owned(), v);
            }
        }
        // etcdctl's `user:password` form.
        if let Some(user) = env.var("ETCDCTL_USER") {
            let (user, password) = user.split_once(':').unwrap_or((user.as_str(), ""));
            foreign.insert("etcd_user".to_owned(), user.to_owned());
            if !password.is_empty() {
                foreign.insert("etcd_password".to_owned(), password.to_owned());
            }
        }
        if let Some(password) = env.var("ETCDCTL_PASSWORD") {
            foreign.insert("etcd_password".to_owned(), password);
        }
        if env.var("CONSUL_HTTP_SSL_VERIFY").as_deref() == Some("false") {
            foreign.insert("consul_tls_skip_verify".to_owned(), "true".to_owned());
        }
        if env.var("CONSUL_HTTP_SSL").as_deref() == Some("true")
            && let Some(addr) = foreign.get_mut("consul_addr")
            && !addr.contains("://")
        {
            *addr = format!("https://{addr}");
        }
        builder = builder.add_source(
            // No `try_parsing`: it would turn BERTH_NODE_NAME=007 into "7".
            config::Environment::default().source(Some(foreign)),
        );

        let mut berth = config::Map::new();
        for key in KEYS {
            if let Some(v) = env.var(&format!("BERTH_{}", key.to_ascii_uppercase())) {
                berth.insert((*key).to_owned(), v);
            }
        }
        builder = builder.add_source(config::Environment::default().source(Some(berth)));

        let r = &args.registry;
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let flags: [(&str, Option<String>); 24] = [
            ("registry", r.kind.clone()),
            ("consul_addr", r.consul_addr.clone()),
            (
                "etcd_endpoints",
                (!r.etcd_endpoints.is_empty()).then(|| r.etcd_endpoints.join(",")),
            ),
            ("etcd_prefix", r.etcd_prefix.clone()),
            ("etcd_user", r.etcd_user.clone()),
            ("etcd_cacert", path(&r.etcd_cacert)),
            ("etcd_cert", path(&r.etcd_cert)),
            ("etcd_key", path(&r.etcd_key)),
            ("node_name", args.node_name.clone()),
            ("host_ip", args.host_ip.clone()),
            ("internal", args.internal.map(|b| b.to_string())),
            ("network", args.network.clone()),
            ("explicit", args.explicit.map(|b| b.to_string())),
            ("ttl", args.ttl.clone()),
            ("resync", args.resync.clone()),
            (
                "deregister_critical_after",
                args.deregister_critical_after.clone(),
            ),
            (
                "deregister_on_exit",
                args.deregister_on_exit.map(|b| b.to_string()),
            ),
            ("log_format", args.log_format.clone()),
            ("docker_host", args.docker_host.clone()),
            (
                "probe_concurrency",
                args.probe_concurrency.map(|n| n.to_string()),
            ),
            (
                "autoheal_failures",
                args.autoheal_failures.map(|n| n.to_string()),
            ),
            ("autoheal_cooldown", args.autoheal_cooldown.clone()),
            (
                "autoheal_max_restarts",
                args.autoheal_max_restarts.map(|n| n.to_string()),
            ),
            ("autoheal_window", args.autoheal_window.clone()),
        ];
        for (key, value) in flags {
            builder = builder.set_override_option(key, value)?;
        }

        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.ttl < Duration::from_secs(1) {
            return bad(format!("--ttl {:?} is below the 1s minimum", self.ttl));
        }
        if self.registry == RegistryKind::Etcd && self.ttl < Duration::from_secs(2) {
            return bad(format!(
                "--ttl {:?} is below etcd's 2s minimum lease",
                self.ttl
            ));
        }
        if self.etcd_endpoints.is_empty() {
            return bad("--etcd-endpoints is empty".into());
        }
        if !self.etcd_prefix.starts_with('/') {
            return bad(format!(
                "--etcd-prefix {:?} must start with '/'",
                self.etcd_prefix
            ));
        }
        if self.etcd_user.is_some() != self.etcd_password.is_some() {
            return bad(
                "--etcd-user needs a password (BERTH_ETCD_PASSWORD or etcd_password in the config file), and a password needs a user".into(),
            );
        }
        if self.resync < Duration::from_secs(1) {
            return bad(format!(
                "--resync {:?} is below the 1s minimum",
                self.resync
            ));
        }
        if self.deregister_critical_after < self.ttl {
            return bad(format!(
                "--deregister-critical-after {:?} is shorter than --ttl {:?}",
                self.deregister_critical_after, self.ttl
            ));
        }
        if self.docker_timeout.is_zero() {
            return bad("docker_timeout must be positive".into());
        }
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1".into());
        }
        if self.probe_concurrency == 0 {
            return bad("--probe-concurrency must be at least 1".into());
        }
        if self.autoheal_failures == 0 {
            return bad("--autoheal-failures must be at least 1".into());
        }
        if self.autoheal_max_restarts == 0 {
            return bad("--autoheal-max-restarts must be at least 1 (leave the autoheal label off to disable self-healing)".into());
        }
        if self.autoheal_window < self.autoheal_cooldown {
            return bad(format!(
                "--autoheal-window {:?} is shorter than --autoheal-cooldown {:?}",
                self.autoheal_window, self.autoheal_cooldown
            ));
        }
        if let Some(n) = &self.node_name
            && (n.trim().is_empty() || n.contains('/'))
        {
            return bad(format!(
                "--node-name {n:?} must be non-empty and contain no '/'"
            ));
        }
        if self.network.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return bad("--network must not be empty".into());
        }
        Ok(self)
    }

    /// The configuration `berth lookup` uses: the registry settings of `args` merged with
    /// the environment and config file exactly as `berth run` merges them.
    pub fn load_registry(args: &RegistryArgs, env: &dyn Env) -> Result<Config, ConfigError> {
        let run = RunArgs {
            registry: args.clone(),
            ..RunArgs::default()
        };
        Config::load(&run, env)
    }

    /// How often each instance is heartbeated: a third of the TTL.
    pub fn heartbeat_interval(&self) -> Duration {
        self.ttl / 3
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["berth", "run"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Run(a) => *a,
            Command::Lookup(_) => unreachable!("parsed `run`"),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load(&args(&[]), &env(&[])).unwrap();
        assert_eq!(c.consul_addr, "http://127.0.0.1:8500");
        assert_eq!(c.ttl, Duration::from_secs(15));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(5));
        assert_eq!(c.resync, Duration::from_secs(30));
        assert_eq!(c.deregister_critical_after, Duration::from_secs(60));
        assert!(!c.internal && !c.explicit && !c.deregister_on_exit);
        assert_eq!(c.log_format, LogFormat::Plain);
    }

    #[test]
    fn flags_beat_env_beat_consul_env_beat_file() {
        let dir = std::env::temp_dir().join(format!("berth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berth.toml");
        std::fs::write(
            &file,
            "ttl = \"9s\"\nnode_name = \"from-file\"\nconsul_addr = \"http://file:8500\"\nexplicit = true\n",
        )
        .unwrap();
        let e = env(&[
            ("BERTH_NODE_NAME", "from-env"),
            ("CONSUL_HTTP_ADDR", "consul-env:8500"),
            ("CONSUL_HTTP_TOKEN", "secret"),
            ("BERTH_TTL", "12s"),
        ]);
        let a = args(&["--config", file.to_str().unwrap(), "--ttl", "20s"]);
        let c = Config::load(&a, &e).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(20), "flag wins");
        assert_eq!(
            c.node_name.as_deref(),
            Some("from-env"),
            "BERTH_ env beats file"
        );
        assert_eq!(
            c.consul_addr, "consul-env:8500",
            "CONSUL_HTTP_ADDR beats file"
        );
        assert_eq!(c.consul_token.as_deref(), Some("secret"));
        assert!(c.explicit, "file value used when nothing else sets it");

        let c = Config::load(&a, &env(&[("BERTH_CONSUL_ADDR", "http://berth:1")])).unwrap();
        assert_eq!(c.consul_addr, "http://berth:1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn yaml_file_and_bool_flags() {
        let dir = std::env::temp_dir().join(format!("berth-cfg-y-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berth.yaml");
        std::fs::write(&file, "internal: true\nnetwork: backend\nresync: 1m\n").unwrap();
        let c = Config::load(
            &args(&[
                "--config",
                file.to_str().unwrap(),
                "--explicit",
                "--internal=false",
            ]),
            &env(&[]),
        )
        .unwrap();
        assert!(!c.internal, "--internal=false overrides the file");
        assert!(c.explicit);
        assert_eq!(c.network.as_deref(), Some("backend"));
        assert_eq!(c.resync, Duration::from_secs(60));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_values_keep_their_text_and_bools_parse() {
        let c = Config::load(
            &args(&[]),
            &env(&[
                ("BERTH_NODE_NAME", "007"),
                ("BERTH_INTERNAL", "true"),
                ("BERTH_CONCURRENCY", "4"),
            ]),
        )
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("007"));
        assert!(c.internal);
        assert_eq!(c.concurrency, 4);
    }

    #[test]
    fn consul_ssl_env_adds_scheme() {
        let c = Config::load(
            &args(&[]),
            &env(&[
                ("CONSUL_HTTP_ADDR", "consul:8501"),
                ("CONSUL_HTTP_SSL", "true"),
                ("CONSUL_HTTP_SSL_VERIFY", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.consul_addr, "https://consul:8501");
        assert!(c.consul_tls_skip_verify);
    }

    #[test]
    fn bad_values_are_one_clear_line() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (&["--ttl", "banana"], &[], "ttl"),
            (&["--ttl", "500ms"], &[], "below the 1s minimum"),
            (&["--host-ip", "not-an-ip"], &[], "host_ip"),
            (&["--registry", "zookeeper"], &[], "registry"),
            (&["--registry", "etcd", "--ttl", "1s"], &[], "2s minimum"),
            (&["--etcd-prefix", "berth"], &[], "must start with '/'"),
            (&["--etcd-user", "root"], &[], "needs a password"),
            (&["--log-format", "xml"], &[], "log_format"),
            (&[], &[("BERTH_RESYNC", "0s")], "resync"),
            (
                &["--ttl", "30s", "--deregister-critical-after", "10s"],
                &[],
                "shorter than --ttl",
            ),
            (
                &["--config", "/nonexistent/berth.toml"],
                &[],
                "does not exist",
            ),
            (&["--node-name", "a/b"], &[], "node-name"),
        ];
        for (argv, e, want) in cases {
            let err = Config::load(&args(argv), &env(e))
                .expect_err(want)
                .to_string();
            assert!(
                err.contains(want),
                "{argv:?}: {err:?} should mention {want:?}"
            );
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn etcd_settings_from_flags_env_and_file() {
        let c = Config::load(&args(&["--registry", "etcd"]), &env(&[])).unwrap();
        assert_eq!(c.registry, RegistryKind::Etcd);
        assert_eq!(c.etcd_endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.etcd_prefix, "/berth");

        let a = args(&[
            "--registry",
            "etcd",
            "--etcd-endpoints",
            "http://a:2379,http://b:2379",
            "--etcd-endpoints",
            "http://c:2379",
            "--etcd-prefix",
            "/svc",
        ]);
        let c = Config::load(&a, &env(&[("ETCDCTL_ENDPOINTS", "http://ignored:1")])).unwrap();
        assert_eq!(
            c.etcd_endpoints,
            ["http://a:2379", "http://b:2379", "http://c:2379"]
        );
        assert_eq!(c.etcd_prefix, "/svc");

        let c = Config::load(
            &args(&[]),
            &env(&[
                ("ETCDCTL_ENDPOINTS", "http://x:2379,http://y:2379"),
                ("ETCDCTL_USER", "root:pw"),
                ("BERTH_ETCD_PREFIX", "/p"),
            ]),
        )
        .unwrap();
        assert_eq!(c.etcd_endpoints, ["http://x:2379", "http://y:2379"]);
        assert_eq!(c.etcd_user.as_deref(), Some("root"));
        assert_eq!(c.etcd_password.as_deref(), Some("pw"));
        assert_eq!(c.etcd_prefix, "/p");

        let dir = std::env::temp_dir().join(format!("berth-cfg-e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berth.yaml");
        std::fs::write(
            &file,
            "registry: etcd\netcd_endpoints:\n  - http://f1:2379\n  - http://f2:2379\netcd_user: u\netcd_password: p\n",
        )
        .unwrap();
        let c = Config::load(&args(&["--config", file.to_str().unwrap()]), &env(&[])).unwrap();
        assert_eq!(c.etcd_endpoints, ["http://f1:2379", "http://f2:2379"]);
        assert_eq!(c.etcd_password.as_deref(), Some("p"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lookup_parses_and_shares_the_registry_settings() {
        let cli = Cli::try_parse_from([
            "berth",
            "lookup",
            "web",
            "--passing",
            "--json",
            "--registry",
            "etcd",
            "--etcd-prefix",
            "/x",
        ])
        .unwrap();
        let Command::Lookup(l) = cli.command else {
            panic!("not lookup")
        };
        assert!(l.passing && l.json);
        assert_eq!(l.service, "web");
        let c = Config::load_registry(&l.registry, &env(&[])).unwrap();
        assert_eq!(c.registry, RegistryKind::Etcd);
        assert_eq!(c.etcd_prefix, "/x");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("berth-cfg-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berth.toml");
        std::fs::write(&file, "tll = \"9s\"\n").unwrap();
        let err = Config::load(&args(&["--config", file.to_str().unwrap()]), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tll"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

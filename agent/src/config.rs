//! Command line and configuration, each setting declared once.
//!
//! A setting is one field of [`RegistryConfig`] (how to reach the registry, shared by
//! `berth run` and `berth lookup`) or of [`AgentConfig`] (the rest of `berth run`). From that
//! one field come:
//!
//! - its config-file key: the field name (`node_name`);
//! - its environment variable: `BERTH_` and the key upper-cased (`BERTH_NODE_NAME`);
//! - its flag, from its clap attributes (`--node-name`), or none with `#[arg(skip = …)]`;
//! - its default: the clap default (`default_value`, or the `skip` value);
//! - its type and parsing: serde, for every source alike.
//!
//! So a new setting is a new field. Sources, highest first: flags, `BERTH_*` variables, the
//! conventional `CONSUL_*`, `ETCDCTL_*` and `DOCKER_HOST` variables ([`CONVENTIONAL_ENV`]), a
//! TOML or YAML file (`--config`), then defaults. Every source is merged by the `config` crate
//! and deserialised; any problem becomes one [`ConfigError`] line and `main` exits 64.
//!
//! The environment is read through the [`Env`] trait, so tests pass a map instead of mutating
//! the process environment. This module also builds the [`Registry`] a configuration selects.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_registry::consul::{ConsulConfig, ConsulRegistry};
use berth_registry::etcd::{EtcdConfig, EtcdRegistry};
use berth_registry::{Registry, RegistryError};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use config::Source as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `berth`: the command line.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "Registers Docker containers in Consul or etcd, kept exact."
)]
pub struct Cli {
    /// TOML or YAML configuration file (keys as in docs/configuration.md).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch Docker and keep the registry exact.
    Run(Box<RunArgs>),
    /// Print the instances of a service that berth registered, from every node.
    Lookup(Box<LookupArgs>),
    /// Print what `berth run` would register for one container, and why (reads Docker only).
    Explain(Box<ExplainArgs>),
    /// Ask a running agent's admin server whether it is live (`/healthz`) or ready
    /// (`--ready`, `/readyz`): exit 0 when it answers 200, else 1 with the reason. For
    /// container health checks: the image has no shell or curl.
    Health(Box<HealthArgs>),
}

/// `berth health`: the admin address comes from the same flag, variable or file as `run`'s.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Ask `/readyz` instead of `/healthz`.
    #[arg(long)]
    pub ready: bool,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub agent: AgentConfig,
}

/// `berth explain <container>`: the settings of `berth run`, so they change the answer alike.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Container id, short id or name.
    pub container: String,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub agent: AgentConfig,
}

/// The flags of `berth run`: every setting that has one.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub agent: AgentConfig,
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
    pub registry: RegistryConfig,
}

/// Which registry to talk to, and how.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct RegistryConfig {
    /// Registry backend.
    #[arg(long, value_enum, default_value_t = RegistryKind::Consul, value_name = "consul|etcd")]
    pub registry: RegistryKind,
    /// Consul agent address [env: CONSUL_HTTP_ADDR].
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8500")]
    pub consul_addr: String,
    /// ACL token sent to Consul [env: CONSUL_HTTP_TOKEN]; no flag, so it stays out of `ps`.
    #[arg(skip)]
    pub consul_token: Option<String>,
    /// PEM CA bundle for https Consul [env: CONSUL_CACERT].
    #[arg(skip)]
    pub consul_cacert: Option<PathBuf>,
    /// PEM client certificate for Consul [env: CONSUL_CLIENT_CERT].
    #[arg(skip)]
    pub consul_client_cert: Option<PathBuf>,
    /// PEM key of the client certificate [env: CONSUL_CLIENT_KEY].
    #[arg(skip)]
    pub consul_client_key: Option<PathBuf>,
    /// Accept any certificate from Consul [env: CONSUL_HTTP_SSL_VERIFY=false].
    #[arg(skip)]
    pub consul_tls_skip_verify: bool,
    /// etcd endpoints, repeated or comma-separated [env: ETCDCTL_ENDPOINTS].
    #[arg(
        long,
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    #[serde(deserialize_with = "string_or_list")]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix for everything berth writes to etcd.
    #[arg(long, value_name = "PREFIX", default_value = "/berth")]
    pub etcd_prefix: String,
    /// etcd user; the password comes from BERTH_ETCD_PASSWORD or the config file.
    #[arg(long, value_name = "USER")]
    pub etcd_user: Option<String>,
    /// Password of the etcd user; no flag, so it stays out of `ps`.
    #[arg(skip)]
    pub etcd_password: Option<String>,
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

/// Everything else `berth run` needs.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Node identity used in instance ids and ownership [default: Docker's node name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address registered for published ports [default: detected at startup].
    #[arg(long, value_name = "IP")]
    pub host_ip: Option<IpAddr>,
    /// Register container IP and container port instead of host IP and published port.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub internal: bool,
    /// Network to take container IPs from in --internal mode.
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
    /// Register only containers or ports that carry a service-name label.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub explicit: bool,
    /// Tags added to every instance, repeated or comma-separated (registrator's -tags).
    #[arg(long, value_name = "TAG", value_delimiter = ',')]
    #[serde(default, deserialize_with = "string_or_list")]
    pub tags: Vec<String>,
    /// A container label whose value is the address to register (registrator's
    /// -useIpFromLabel); berth.address wins over it.
    #[arg(long, value_name = "LABEL")]
    pub ip_from_label: Option<String>,
    /// TTL of each instance's heartbeat check (Consul) or of the agent's lease (etcd);
    /// refreshed every ttl/3.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "15s")]
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Full resync period.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(with = "humantime_serde")]
    pub resync: Duration,
    /// Consul removes an instance critical for this long.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1m")]
    #[serde(with = "humantime_serde")]
    pub deregister_critical_after: Duration,
    /// Remove this node's registrations on SIGTERM/SIGINT instead of letting them expire.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false, value_name = "BOOL")]
    pub deregister_on_exit: bool,
    /// Mark a container's instances critical as soon as Docker sends it its stop signal, so
    /// clients stop using them before it exits (label berth.drain overrides it).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true, value_name = "BOOL")]
    pub drain_on_stop: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, value_name = "plain|json")]
    pub log_format: LogFormat,
    /// Docker endpoint, unix:// or tcp:// [env: DOCKER_HOST] [default: unix:///var/run/docker.sock].
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,
    /// Timeout of every Docker API call.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    #[serde(with = "humantime_serde")]
    pub docker_timeout: Duration,
    /// Containers reconciled at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub concurrency: usize,
    /// Health probes in flight at once, across all checks.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub probe_concurrency: usize,
    /// Consecutive failed probes of one check before an autoheal container is restarted.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub autoheal_failures: u32,
    /// Minimum time between two self-healing restarts of one container.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1m")]
    #[serde(with = "humantime_serde")]
    pub autoheal_cooldown: Duration,
    /// Most self-healing restarts of one container per --autoheal-window.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub autoheal_max_restarts: usize,
    /// Window over which --autoheal-max-restarts counts.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h")]
    #[serde(with = "humantime_serde")]
    pub autoheal_window: Duration,
    /// Address of the admin server (/healthz, /readyz, /metrics, /v1/status, the status
    /// page); empty disables it.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9797")]
    pub admin_addr: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    #[default]
    Consul,
    Etcd,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// The conventional variables of Consul's, etcdctl's and Docker's own tools, and the keys
/// they feed. They rank below `BERTH_*`.
pub const CONVENTIONAL_ENV: &[(&str, &str)] = &[
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

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub registry: RegistryConfig,
    pub agent: AgentConfig,
}

/// What the command line asks for, with its configuration resolved.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    Lookup {
        service: String,
        passing: bool,
        json: bool,
        config: Box<Config>,
    },
    Explain {
        container: String,
        json: bool,
        config: Box<Config>,
    },
    Health {
        ready: bool,
        config: Box<Config>,
    },
}

/// Reads environment variables. The process environment in production, a map in tests.
pub trait Env {
    /// The variable's value, or `None` when it is unset or empty.
    fn var(&self, key: &str) -> Option<String> {
        self.raw(key).filter(|v| !v.is_empty())
    }
    /// The variable's value, empty included.
    fn raw(&self, key: &str) -> Option<String>;
}

/// Settings for which an empty value means "off" rather than "unset" (`BERTH_ADMIN_ADDR=`
/// disables the admin server).
const EMPTY_MEANS_OFF: &[&str] = &["admin_addr"];

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn raw(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn raw(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Why the command line could not be turned into an [`Invocation`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Bad or missing arguments, or `--help`/`--version` (clap prints those itself).
    #[error(transparent)]
    Args(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A configuration problem, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration")]
    Source(#[source] config::ConfigError),
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Source(e)
    }
}

/// Parses `argv` (program name first) and resolves the configuration it selects.
pub fn parse<I, T>(argv: I, env: &dyn Env) -> Result<Invocation, ParseError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let file = cli.config.as_ref();
    Ok(match (cli.command, matches.subcommand()) {
        (Command::Run(args), Some((_, sub))) => {
            let mut given = given(&args.registry, sub)?;
            given.extend(self::given(&args.agent, sub)?);
            Invocation::Run(Box::new(Config::load(file, &given, env)?))
        }
        (Command::Explain(args), Some((_, sub))) => {
            let mut given = given(&args.registry, sub)?;
            given.extend(self::given(&args.agent, sub)?);
            Invocation::Explain {
                container: args.container,
                json: args.json,
                config: Box::new(Config::load(file, &given, env)?),
            }
        }
        (Command::Health(args), Some((_, sub))) => {
            let mut given = given(&args.registry, sub)?;
            given.extend(self::given(&args.agent, sub)?);
            Invocation::Health {
                ready: args.ready,
                config: Box::new(Config::load(file, &given, env)?),
            }
        }
        (Command::Lookup(args), Some((_, sub))) => {
            let given = given(&args.registry, sub)?;
            Invocation::Lookup {
                service: args.service,
                passing: args.passing,
                json: args.json,
                config: Box::new(Config::load(file, &given, env)?),
            }
        }
        // clap makes the subcommand required, so both arms above always match.
        (_, None) => {
            return Err(clap::Error::new(clap::error::ErrorKind::MissingSubcommand).into());
        }
    })
}

/// Every key of a settings part, with its value as a string (`None` when unset), from its
/// serialised form: lists joined with commas, durations as `15s`. Fails for a value that
/// has no text form (a path that is not UTF-8).
fn values<T: Serialize>(part: &T) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let map = match serde_json::to_value(part) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return Err(ConfigError::Invalid("settings are not a map".into())),
        Err(e) => {
            return Err(ConfigError::Invalid(format!(
                "a value cannot be read as text ({e}); paths must be UTF-8"
            )));
        }
    };
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Array(items) => Some(
                    items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                other => Some(other.to_string()),
            };
            (key, text)
        })
        .collect())
}

/// The values of `part` that were given on the command line.
fn given<T: Serialize>(
    part: &T,
    matches: &ArgMatches,
) -> Result<Vec<(String, String)>, ConfigError> {
    Ok(values(part)?
        .into_iter()
        .filter(|(key, _)| {
            matches
                .try_get_raw(key)
                .is_ok_and(|_| matches.value_source(key) == Some(ValueSource::CommandLine))
        })
        .filter_map(|(key, value)| Some((key, value?)))
        .collect())
}

/// A part as it is when nothing sets it: its clap defaults and `skip` values.
fn defaults<T: Args + FromArgMatches>() -> Result<T, clap::Error> {
    let cmd = T::augment_args(clap::Command::new("defaults"));
    T::from_arg_matches(&cmd.try_get_matches_from(["defaults"])?)
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

/// Both parts' defaults as `(key, value)`; `None` for settings unset by default.
fn all_defaults() -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let bad = |e: clap::Error| ConfigError::Invalid(format!("defaults: {e}"));
    let mut all = values(&defaults::<RegistryConfig>().map_err(bad)?)?;
    all.extend(values(&defaults::<AgentConfig>().map_err(bad)?)?);
    Ok(all)
}

/// The conventional variables, as the keys they feed.
fn conventional(env: &dyn Env) -> config::Map<String, String> {
    let mut out = config::Map::new();
    for (var, key) in CONVENTIONAL_ENV {
        if let Some(v) = env.var(var) {
            out.insert((*key).to_owned(), v);
        }
    }
    // etcdctl's `user:password` form.
    if let Some(user) = env.var("ETCDCTL_USER") {
        let (user, password) = user.split_once(':').unwrap_or((user.as_str(), ""));
        out.insert("etcd_user".to_owned(), user.to_owned());
        if !password.is_empty() {
            out.insert("etcd_password".to_owned(), password.to_owned());
        }
    }
    if let Some(password) = env.var("ETCDCTL_PASSWORD") {
        out.insert("etcd_password".to_owned(), password);
    }
    if env.var("CONSUL_HTTP_SSL_VERIFY").as_deref() == Some("false") {
        out.insert("consul_tls_skip_verify".to_owned(), "true".to_owned());
    }
    if env.var("CONSUL_HTTP_SSL").as_deref() == Some("true")
        && let Some(addr) = out.get_mut("consul_addr")
        && !addr.contains("://")
    {
        *addr = format!("https://{addr}");
    }
    out
}

impl Config {
    /// Every setting's key, as the config file spells it.
    pub fn keys() -> Result<BTreeSet<String>, ConfigError> {
        Ok(all_defaults()?.into_iter().map(|(k, _)| k).collect())
    }

    /// Merges `given` (the flags on the command line), the environment, `file` and the
    /// defaults, then validates.
    pub fn load(
        file: Option<&PathBuf>,
        given: &[(String, String)],
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let defaults = all_defaults()?;
        let keys: BTreeSet<&str> = defaults.iter().map(|(k, _)| k.as_str()).collect();
        let mut builder = config::Config::builder();
        for (key, value) in &defaults {
            if let Some(value) = value {
                builder = builder.set_default(key.as_str(), value.as_str())?;
            }
        }
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            let from_file = config::Config::builder()
                .add_source(config::File::from(path.as_path()).required(true))
                .build()?;
            if let Some(unknown) = from_file
                .collect()?
                .keys()
                .find(|k| !keys.contains(k.as_str()))
            {
                return Err(ConfigError::Invalid(format!(
                    "unknown key {unknown:?} in {} (see docs/configuration.md)",
                    path.display()
                )));
            }
            builder = builder.add_source(from_file);
        }
        // No `try_parsing`: it would turn BERTH_NODE_NAME=007 into "7".
        builder =
            builder.add_source(config::Environment::default().source(Some(conventional(env))));
        let mut berth = config::Map::new();
        for key in &keys {
            let var = format!("BERTH_{}", key.to_ascii_uppercase());
            let value = if EMPTY_MEANS_OFF.contains(key) {
                env.raw(&var)
            } else {
                env.var(&var)
            };
            if let Some(v) = value {
                berth.insert((*key).to_owned(), v);
            }
        }
        builder = builder.add_source(config::Environment::default().source(Some(berth)));
        for (key, value) in given {
            builder = builder.set_override(key.as_str(), value.as_str())?;
        }
        let merged = builder.build()?;
        let config = Config {
            registry: part(&merged)?,
            agent: part(&merged)?,
        };
        config.validate()
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let (r, a) = (&self.registry, &self.agent);
        if a.ttl < Duration::from_secs(1) {
            return bad(format!("--ttl {:?} is below the 1s minimum", a.ttl));
        }
        if r.registry == RegistryKind::Etcd && a.ttl < Duration::from_secs(2) {
            return bad(format!(
                "--ttl {:?} is below etcd's 2s minimum lease",
                a.ttl
            ));
        }
        if r.etcd_endpoints.is_empty() {
            return bad("--etcd-endpoints is empty".into());
        }
        if !r.etcd_prefix.starts_with('/') {
            return bad(format!(
                "--etcd-prefix {:?} must start with '/'",
                r.etcd_prefix
            ));
        }
        if r.etcd_user.is_some() != r.etcd_password.is_some() {
            return bad(
                "--etcd-user needs a password (BERTH_ETCD_PASSWORD or etcd_password in the config file), and a password needs a user".into(),
            );
        }
        if a.resync < Duration::from_secs(1) {
            return bad(format!("--resync {:?} is below the 1s minimum", a.resync));
        }
        if a.deregister_critical_after < a.ttl {
            return bad(format!(
                "--deregister-critical-after {:?} is shorter than --ttl {:?}",
                a.deregister_critical_after, a.ttl
            ));
        }
        if a.docker_timeout.is_zero() {
            return bad("docker_timeout must be positive".into());
        }
        if a.concurrency == 0 {
            return bad("--concurrency must be at least 1".into());
        }
        if a.probe_concurrency == 0 {
            return bad("--probe-concurrency must be at least 1".into());
        }
        if a.autoheal_failures == 0 {
            return bad("--autoheal-failures must be at least 1".into());
        }
        if a.autoheal_max_restarts == 0 {
            return bad("--autoheal-max-restarts must be at least 1 (leave the autoheal label off to disable self-healing)".into());
        }
        if a.autoheal_window < a.autoheal_cooldown {
            return bad(format!(
                "--autoheal-window {:?} is shorter than --autoheal-cooldown {:?}",
                a.autoheal_window, a.autoheal_cooldown
            ));
        }
        if let Some(n) = &a.node_name
            && (n.trim().is_empty() || n.contains('/'))
        {
            return bad(format!(
                "--node-name {n:?} must be non-empty and contain no '/'"
            ));
        }
        if a.network.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return bad("--network must not be empty".into());
        }
        self.admin_addr()?;
        Ok(self)
    }

    /// The admin server's address, or `None` when `--admin-addr` is empty (disabled).
    pub fn admin_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let addr = self.agent.admin_addr.trim();
        if addr.is_empty() {
            return Ok(None);
        }
        addr.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "--admin-addr {addr:?} is not HOST:PORT with an IP address (e.g. 127.0.0.1:9797, [::]:9797); leave it empty to disable the admin server"
            ))
        })
    }

    /// How often each instance is heartbeated: a third of the TTL.
    pub fn heartbeat_interval(&self) -> Duration {
        self.agent.ttl / 3
    }

    /// The backend this configuration selects, as node `node`'s client. Connects to nothing
    /// yet.
    pub fn registry(&self, node: &str) -> Result<Registry, RegistryError> {
        let (r, a) = (&self.registry, &self.agent);
        // A write must fail before the next heartbeat is due, never pile up.
        let request_timeout = self
            .heartbeat_interval()
            .clamp(Duration::from_millis(300), Duration::from_secs(5));
        Ok(match r.registry {
            RegistryKind::Consul => Registry::Consul(ConsulRegistry::new(ConsulConfig {
                addr: r.consul_addr.clone(),
                node: node.to_owned(),
                token: r.consul_token.clone(),
                ca_cert: r.consul_cacert.clone(),
                client_cert: r.consul_client_cert.clone(),
                client_key: r.consul_client_key.clone(),
                tls_skip_verify: r.consul_tls_skip_verify,
                ttl: a.ttl,
                deregister_critical_after: a.deregister_critical_after,
                request_timeout,
            })?),
            RegistryKind::Etcd => Registry::Etcd(EtcdRegistry::new(EtcdConfig {
                endpoints: r.etcd_endpoints.clone(),
                prefix: r.etcd_prefix.clone(),
                node: node.to_owned(),
                user: r.etcd_user.clone(),
                password: r.etcd_password.clone(),
                ca_cert: r.etcd_cacert.clone(),
                client_cert: r.etcd_cert.clone(),
                client_key: r.etcd_key.clone(),
                ttl: a.ttl,
                request_timeout,
            })?),
        })
    }
}

/// One part of the configuration, read from the merged sources (keys of other parts are
/// left to them).
fn part<T: DeserializeOwned>(merged: &config::Config) -> Result<T, ConfigError> {
    Ok(merged.clone().try_deserialize()?)
}

#[cfg(test)]
mod tests;

//! Configuration tests: every source, their precedence, bad values, and that each setting is
//! declared once (flag, variable, file key and default all come from its field).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `berth run <argv>` resolved against `e`.
fn run(argv: &[&str], e: &[(&str, &str)]) -> Result<Config, String> {
    let mut full = vec!["berth", "run"];
    full.extend_from_slice(argv);
    match parse(full, &env(e)) {
        Ok(Invocation::Run(c)) => Ok(*c),
        Ok(other) => panic!("parsed {other:?}"),
        Err(e) => Err(crate::telemetry::chain(&e)),
    }
}

/// A config file named `name` (its extension picks the format) holding `contents`, in a
/// directory of its own that goes when the value is dropped.
struct File(PathBuf);

impl File {
    fn new(name: &str, contents: &str) -> File {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-cfg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        File(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn defaults() {
    let c = run(&[], &[]).unwrap();
    assert_eq!(c.registry.registry, RegistryKind::Consul);
    assert_eq!(c.registry.consul_addr, "http://127.0.0.1:8500");
    assert_eq!(c.registry.etcd_endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.registry.etcd_prefix, "/berth");
    assert_eq!(c.agent.ttl, Duration::from_secs(15));
    assert_eq!(c.heartbeat_interval(), Duration::from_secs(5));
    assert_eq!(c.agent.resync, Duration::from_secs(30));
    assert_eq!(c.agent.deregister_critical_after, Duration::from_secs(60));
    assert_eq!(c.agent.docker_timeout, Duration::from_secs(10));
    assert_eq!(c.agent.concurrency, 16);
    assert_eq!(c.agent.probe_concurrency, 64);
    assert!(!c.agent.internal && !c.agent.explicit && !c.agent.deregister_on_exit);
    assert_eq!(c.agent.log_format, LogFormat::Plain);
    assert_eq!(c.agent.node_name, None);
}

#[test]
fn flags_beat_env_beat_conventional_env_beat_file() {
    let file = File::new(
        "berth.toml",
        "ttl = \"9s\"\nnode_name = \"from-file\"\nconsul_addr = \"http://file:8500\"\nexplicit = true\n",
    );
    let e = [
        ("BERTH_NODE_NAME", "from-env"),
        ("CONSUL_HTTP_ADDR", "consul-env:8500"),
        ("CONSUL_HTTP_TOKEN", "secret"),
        ("BERTH_TTL", "12s"),
    ];
    let path = file.path();
    let c = run(&["--config", path, "--ttl", "20s"], &e).unwrap();
    assert_eq!(c.agent.ttl, Duration::from_secs(20), "flag wins");
    assert_eq!(
        c.agent.node_name.as_deref(),
        Some("from-env"),
        "BERTH_ env beats file"
    );
    assert_eq!(
        c.registry.consul_addr, "consul-env:8500",
        "CONSUL_HTTP_ADDR beats file"
    );
    assert_eq!(c.registry.consul_token.as_deref(), Some("secret"));
    assert!(
        c.agent.explicit,
        "file value used when nothing else sets it"
    );

    let c = run(
        &["--config", path],
        &[
            ("BERTH_CONSUL_ADDR", "http://berth:1"),
            ("BERTH_TTL", "12s"),
        ],
    )
    .unwrap();
    assert_eq!(c.registry.consul_addr, "http://berth:1");
    assert_eq!(
        c.agent.ttl,
        Duration::from_secs(12),
        "BERTH_ beats the file"
    );
    // `--config` is global: before the subcommand too.
    let Ok(Invocation::Run(c)) = parse(["berth", "--config", path, "run"], &env(&[])) else {
        panic!("--config before run")
    };
    assert_eq!(c.agent.ttl, Duration::from_secs(9));
}

#[test]
fn a_flag_given_its_default_value_still_beats_the_file() {
    let file = File::new("berth.toml", "ttl = \"9s\"\nconcurrency = 4\n");
    let path = file.path();
    let c = run(
        &["--config", path, "--ttl", "15s", "--concurrency", "16"],
        &[],
    )
    .unwrap();
    assert_eq!(c.agent.ttl, Duration::from_secs(15));
    assert_eq!(c.agent.concurrency, 16);
}

#[test]
fn yaml_file_and_bool_flags() {
    let file = File::new(
        "berth.yaml",
        "internal: true\nnetwork: backend\nresync: 1m\n",
    );
    let c = run(
        &["--config", file.path(), "--explicit", "--internal=false"],
        &[],
    )
    .unwrap();
    assert!(!c.agent.internal, "--internal=false overrides the file");
    assert!(c.agent.explicit);
    assert_eq!(c.agent.network.as_deref(), Some("backend"));
    assert_eq!(c.agent.resync, Duration::from_secs(60));
}

#[test]
fn env_values_keep_their_text_and_numbers_and_bools_parse() {
    let c = run(
        &[],
        &[
            ("BERTH_NODE_NAME", "007"),
            ("BERTH_INTERNAL", "true"),
            ("BERTH_CONCURRENCY", "4"),
            ("BERTH_DOCKER_TIMEOUT", "3s"),
            ("BERTH_HOST_IP", "fd00::1"),
        ],
    )
    .unwrap();
    assert_eq!(c.agent.node_name.as_deref(), Some("007"));
    assert!(c.agent.internal);
    assert_eq!(c.agent.concurrency, 4);
    assert_eq!(c.agent.docker_timeout, Duration::from_secs(3));
    assert_eq!(c.agent.host_ip, Some("fd00::1".parse().unwrap()));
}

#[test]
fn consul_ssl_env_adds_scheme() {
    let c = run(
        &[],
        &[
            ("CONSUL_HTTP_ADDR", "consul:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ],
    )
    .unwrap();
    assert_eq!(c.registry.consul_addr, "https://consul:8501");
    assert!(c.registry.consul_tls_skip_verify);
}

#[test]
fn bad_values_are_one_clear_line() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        (&["--ttl", "banana"], &[], "--ttl"),
        (&[], &[("BERTH_TTL", "banana")], "ttl"),
        (&["--ttl", "500ms"], &[], "below the 1s minimum"),
        (&["--host-ip", "not-an-ip"], &[], "--host-ip"),
        (&[], &[("BERTH_HOST_IP", "not-an-ip")], "host_ip"),
        (&["--registry", "zookeeper"], &[], "--registry"),
        (&["--registry", "etcd", "--ttl", "1s"], &[], "2s minimum"),
        (&["--etcd-prefix", "berth"], &[], "must start with '/'"),
        (&["--etcd-user", "root"], &[], "needs a password"),
        (&["--log-format", "xml"], &[], "--log-format"),
        (&[], &[("BERTH_RESYNC", "0s")], "resync"),
        (&["--concurrency", "0"], &[], "--concurrency"),
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
        let err = run(argv, e).expect_err(want);
        let line = err.lines().next().unwrap_or_default();
        assert!(
            err.contains(want),
            "{argv:?} {e:?}: {err:?} should mention {want:?}"
        );
        assert!(
            !line.is_empty() && (!err.contains('\n') || err.starts_with("error:")),
            "one line: {err:?}"
        );
    }
}

#[test]
fn etcd_settings_from_flags_env_and_file() {
    let c = run(&["--registry", "etcd"], &[]).unwrap();
    assert_eq!(c.registry.registry, RegistryKind::Etcd);
    assert_eq!(c.registry.etcd_endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.registry.etcd_prefix, "/berth");

    let c = run(
        &[
            "--registry",
            "etcd",
            "--etcd-endpoints",
            "http://a:2379,http://b:2379",
            "--etcd-endpoints",
            "http://c:2379",
            "--etcd-prefix",
            "/svc",
        ],
        &[("ETCDCTL_ENDPOINTS", "http://ignored:1")],
    )
    .unwrap();
    assert_eq!(
        c.registry.etcd_endpoints,
        ["http://a:2379", "http://b:2379", "http://c:2379"]
    );
    assert_eq!(c.registry.etcd_prefix, "/svc");

    let c = run(
        &[],
        &[
            ("ETCDCTL_ENDPOINTS", "http://x:2379,http://y:2379"),
            ("ETCDCTL_USER", "root:pw"),
            ("BERTH_ETCD_PREFIX", "/p"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.registry.etcd_endpoints,
        ["http://x:2379", "http://y:2379"]
    );
    assert_eq!(c.registry.etcd_user.as_deref(), Some("root"));
    assert_eq!(c.registry.etcd_password.as_deref(), Some("pw"));
    assert_eq!(c.registry.etcd_prefix, "/p");

    let file = File::new(
        "berth.yaml",
        "registry: etcd\netcd_endpoints:\n  - http://f1:2379\n  - http://f2:2379\netcd_user: u\netcd_password: p\n",
    );
    let c = run(&["--config", file.path()], &[]).unwrap();
    assert_eq!(
        c.registry.etcd_endpoints,
        ["http://f1:2379", "http://f2:2379"]
    );
    assert_eq!(c.registry.etcd_password.as_deref(), Some("p"));
}

#[test]
fn lookup_takes_the_registry_flags_and_the_rest_from_env_and_file() {
    // A file written for `berth run` serves `berth lookup` too.
    let file = File::new("berth.toml", "ttl = \"9s\"\nnode_name = \"n7\"\n");
    let argv = [
        "berth",
        "lookup",
        "web",
        "--passing",
        "--json",
        "--registry",
        "etcd",
        "--etcd-prefix",
        "/x",
        "--config",
        file.path(),
    ];
    let Invocation::Lookup {
        service,
        passing,
        json,
        config,
    } = parse(argv, &env(&[])).unwrap()
    else {
        panic!("not lookup")
    };
    assert!(passing && json);
    assert_eq!(service, "web");
    assert_eq!(config.registry.registry, RegistryKind::Etcd);
    assert_eq!(config.registry.etcd_prefix, "/x");
    assert_eq!(config.agent.ttl, Duration::from_secs(9));
    assert_eq!(config.agent.node_name.as_deref(), Some("n7"));
    // Agent flags are not lookup's.
    assert!(parse(["berth", "lookup", "web", "--ttl", "5s"], &env(&[])).is_err());
}

#[test]
fn a_path_that_is_not_utf8_is_refused_not_dropped() {
    use std::os::unix::ffi::OsStrExt as _;
    let bad = std::ffi::OsStr::from_bytes(b"/tmp/\xff.pem");
    let argv: Vec<std::ffi::OsString> = ["berth", "run", "--registry", "etcd", "--etcd-cacert"]
        .iter()
        .map(std::ffi::OsString::from)
        .chain([bad.to_owned()])
        .collect();
    let err = parse(argv, &env(&[])).expect_err("a non-UTF-8 path");
    let err = crate::telemetry::chain(&err);
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn unknown_file_keys_are_rejected() {
    let file = File::new("berth.toml", "tll = \"9s\"\n");
    let err = run(&["--config", file.path()], &[]).unwrap_err();
    assert!(err.contains("tll"), "{err}");
}

/// The value of the setting `key` in `c`, as text (`None` when unset).
fn setting(c: &Config, key: &str) -> Option<String> {
    values(&c.registry)
        .unwrap()
        .into_iter()
        .chain(values(&c.agent).unwrap())
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v)
}

/// Every setting can be set from every source by its one name: the file key, `BERTH_<KEY>`,
/// and the flag `--<key-with-dashes>` where it has one. Values are taken from a setting of
/// another value than its default, so a source that is not read fails the comparison.
#[test]
fn every_setting_is_read_from_each_source_by_its_one_name() {
    let keys = Config::keys().unwrap();
    let defaults = run(&[], &[]).unwrap();
    // A value for each key that differs from its default and passes validation together.
    let sample = |key: &str| -> &str {
        match key {
            "registry" => "etcd",
            "consul_addr" => "http://consul.test:8500",
            "consul_token" => "t0ken",
            "consul_cacert" | "consul_client_cert" | "consul_client_key" => "/tmp/x.pem",
            "etcd_cacert" | "etcd_cert" | "etcd_key" => "/tmp/y.pem",
            "consul_tls_skip_verify" | "internal" | "explicit" | "deregister_on_exit" => "true",
            "etcd_endpoints" => "http://e1:2379",
            "etcd_prefix" => "/elsewhere",
            "etcd_user" => "berth",
            "etcd_password" => "pw",
            "node_name" => "host-9",
            "host_ip" => "10.9.9.9",
            "network" => "backend",
            "tags" => "dc1",
            "ip_from_label" => "com.example.ip",
            "ttl" => "21s",
            "resync" => "45s",
            "deregister_critical_after" => "2m",
            "log_format" => "json",
            "docker_host" => "tcp://docker.test:2375",
            "docker_timeout" => "7s",
            "concurrency" => "5",
            "probe_concurrency" => "9",
            "autoheal_failures" => "4",
            "autoheal_cooldown" => "2m",
            "autoheal_max_restarts" => "5",
            "autoheal_window" => "3h",
            "admin_addr" => "0.0.0.0:9898",
            "drain_on_stop" => "false",
            other => panic!("no sample value for the new setting {other:?}: add one here"),
        }
    };
    let file_values: Vec<String> = keys
        .iter()
        .map(|k| format!("{k} = {:?}", sample(k)))
        .collect();
    let env_values: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            (
                format!("BERTH_{}", k.to_ascii_uppercase()),
                sample(k).to_owned(),
            )
        })
        .collect();
    let file = File::new("all.toml", &file_values.join("\n"));
    let from_file = run(&["--config", file.path()], &[]).unwrap();
    let env_refs: Vec<(&str, &str)> = env_values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let from_env = run(&[], &env_refs).unwrap();
    assert_eq!(
        from_file, from_env,
        "the file and BERTH_* set the same settings"
    );
    for key in &keys {
        assert_ne!(
            setting(&from_file, key),
            setting(&defaults, key),
            "{key} was not read from the file"
        );
    }

    // Flags: every flag of `run` is a setting, under the same name.
    let cmd = Cli::command();
    let run_cmd = cmd.find_subcommand("run").unwrap();
    for arg in run_cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "config" | "help" | "version") {
            continue;
        }
        assert!(keys.contains(id), "flag --{id} is not a setting");
        assert_eq!(
            arg.get_long(),
            Some(id.replace('_', "-").as_str()),
            "the flag of {id}"
        );
        let flag = format!("--{}", id.replace('_', "-"));
        // A user needs a password, which no flag gives.
        let password: &[(&str, &str)] = match id {
            "etcd_user" => &[("BERTH_ETCD_PASSWORD", "pw")],
            _ => &[],
        };
        let from_flag =
            run(&[flag.as_str(), sample(id)], password).unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(
            setting(&from_flag, id).as_deref(),
            Some(sample(id)),
            "{flag} sets {id}"
        );
    }
}

/// docs/configuration.md lists every setting, so the page cannot fall behind the code.
#[test]
fn the_configuration_page_lists_every_setting() {
    let page = include_str!("../../../docs/configuration.md");
    for key in Config::keys().unwrap() {
        assert!(
            page.contains(&format!("`{key}`")),
            "docs/configuration.md does not mention `{key}`"
        );
    }
}

#[test]
fn the_registry_built_is_the_one_configured_for_the_node() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = run(&["--consul-addr", "http://127.0.0.1:18500"], &[]).unwrap();
    let r = c.registry("n1").unwrap();
    assert_eq!(r.describe(), "consul agent at http://127.0.0.1:18500");
    let c = run(&["--registry", "etcd", "--etcd-prefix", "/p"], &[]).unwrap();
    let r = c.registry("n1").unwrap();
    assert!(matches!(r, Registry::Etcd(_)), "{r:?}");
    assert!(r.describe().contains("under /p"), "{}", r.describe());
}

//! The deployment files that no cluster here can run, checked the way a cluster would check
//! them:
//! - deploy/kubernetes/daemonset.yaml against the Kubernetes OpenAPI schemas that
//!   `kubernetes-validate` ships offline (strict: unknown fields are errors), for the oldest
//!   and newest Kubernetes versions it bundles that we support, plus every field the
//!   deployment relies on;
//! - the Swarm stack files through `docker stack config`, the compose demo through
//!   `docker compose config` (or `docker-compose config`).
//!
//! YAML is read through PyYAML (installed with kubernetes-validate) and compared as JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The Kubernetes versions the DaemonSet is validated for.
const KUBERNETES: [&str; 2] = ["1.29.0", "1.37.0"];

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (scripts/install-deps.sh installs it)"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Every YAML document in `yaml`, as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "YAML does not parse: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn validate(file: &Path, version: &str) -> Output {
    run(Command::new("kubernetes-validate")
        .args(["--strict", "-k", version])
        .arg(file))
}

fn daemonset_text() -> String {
    std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).unwrap()
}

#[test]
fn the_daemonset_passes_the_kubernetes_schema_and_a_broken_copy_does_not() {
    let file = deploy("kubernetes/daemonset.yaml");
    for version in KUBERNETES {
        let out = validate(&file, version);
        let said = text(&out);
        assert!(out.status.success(), "Kubernetes {version}:\n{said}");
        for kind in ["namespace/berth", "serviceaccount/berth", "daemonset/berth"] {
            assert!(
                said.contains(&format!("passed for resource {kind}")),
                "{kind} was validated against {version}:\n{said}"
            );
        }
    }

    // The validator is live: a misspelt field and a wrong type are refused.
    let dir = std::env::temp_dir().join(format!("berth-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, from, to) in [
        (
            "a misspelt field",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesytem: true",
        ),
        ("a wrong type", "maxUnavailable: 1", "maxUnavailable: [1]"),
    ] {
        let broken = dir.join("broken.yaml");
        let yaml = daemonset_text();
        assert!(yaml.contains(from));
        std::fs::write(&broken, yaml.replace(from, to)).unwrap();
        let out = validate(&broken, KUBERNETES[1]);
        assert!(
            !out.status.success() && text(&out).contains("did not validate"),
            "{what} passed validation:\n{}",
            text(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
        .collect()
}

#[test]
fn the_daemonset_has_what_a_node_agent_needs() {
    let docs = documents(&daemonset_text());
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ServiceAccount", "DaemonSet"]);
    let (ns, sa, ds) = (&docs[0], &docs[1], &docs[2]);
    assert_eq!(ns["metadata"]["name"], "berth");
    assert_eq!(sa["metadata"]["namespace"], "berth");
    assert_eq!(ds["metadata"]["namespace"], "berth");

    let spec = &ds["spec"];
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(
        spec["selector"]["matchLabels"],
        spec["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            .as_str()
            .map(|n| serde_json::json!({ "app.kubernetes.io/name": n }))
            .unwrap(),
        "the selector matches the pods"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{ "operator": "Exists" }]),
        "tolerates every taint"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["args"], serde_json::json!(["run"]));

    // Identity and address from the downward API; Consul on the node.
    let env = env_of(c);
    let var = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in the container's env"))
    };
    assert_eq!(
        var("BERTH_NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        var("BERTH_HOST_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert_eq!(
        var("CONSUL_HTTP_ADDR")["value"],
        "http://$(BERTH_HOST_IP):8500"
    );
    // $(VAR) expands only variables defined earlier in the list.
    let pos = |name: &str| env.iter().position(|(n, _)| n == name).unwrap();
    assert!(pos("BERTH_HOST_IP") < pos("CONSUL_HTTP_ADDR"));
    assert!(pos("BERTH_HOST_IP") < pos("BERTH_ADMIN_ADDR"));
    assert_eq!(var("BERTH_ADMIN_ADDR")["value"], "$(BERTH_HOST_IP):9797");
    assert!(
        daemonset_text().contains("#   value: etcd"),
        "the commented etcd variant"
    );

    // Probes on the admin server's port.
    let port = &c["ports"][0];
    assert_eq!(port["name"], "admin");
    assert_eq!(port["containerPort"], 9797);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");

    // Small requests, a memory limit.
    let res = &c["resources"];
    assert_eq!(res["requests"]["memory"], "32Mi");
    assert_eq!(res["requests"]["cpu"], "20m");
    assert!(res["limits"]["memory"].is_string(), "a memory limit");

    // Longer than berth's 10 s drain on SIGTERM.
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 10);

    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));

    // The socket, read-only, from the host.
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/var/run/docker.sock");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], "/var/run/docker.sock");
    assert_eq!(volume["hostPath"]["type"], "Socket");
}

/// `docker stack config` of a stack file, with `env`, as JSON.
fn stack_config(file: &str, env: &[(&str, &str)]) -> Result<Value, String> {
    let out = run(Command::new("docker")
        .args(["stack", "config", "-c"])
        .arg(deploy(file))
        .env_remove("DOCKER_GID")
        .envs(env.iter().copied()));
    if !out.status.success() {
        return Err(text(&out));
    }
    Ok(documents(&String::from_utf8_lossy(&out.stdout))[0].clone())
}

#[test]
fn the_swarm_stack_is_a_global_agent_on_the_host_network() {
    let err = stack_config("swarm/berth-stack.yml", &[]).unwrap_err();
    assert!(err.contains("DOCKER_GID"), "DOCKER_GID is required: {err}");

    let stack = stack_config("swarm/berth-stack.yml", &[("DOCKER_GID", "998")]).unwrap();
    let b = &stack["services"]["berth"];
    assert_eq!(b["deploy"]["mode"], "global");
    assert_eq!(b["environment"]["BERTH_NODE_NAME"], "{{.Node.Hostname}}");
    assert_eq!(b["user"], "65532:998");
    assert_eq!(b["read_only"], true);
    assert_eq!(b["cap_drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        b["volumes"][0],
        serde_json::json!({
            "type": "bind",
            "source": "/var/run/docker.sock",
            "target": "/var/run/docker.sock",
            "read_only": true,
        })
    );
    let net = b["networks"].as_object().unwrap().keys().next().unwrap();
    assert_eq!(stack["networks"][net]["name"], "host");
    assert_eq!(stack["networks"][net]["external"], true);
    assert_eq!(
        b["healthcheck"]["test"],
        serde_json::json!(["CMD", "/berth", "health"])
    );
    assert_eq!(b["deploy"]["update_config"]["order"], "stop-first");
    assert_eq!(b["deploy"]["restart_policy"]["condition"], "any");

    let overlay = stack_config(
        "swarm/berth-overlay-stack.yml",
        &[("DOCKER_GID", "998"), ("BERTH_NETWORK", "apps")],
    )
    .unwrap();
    let o = &overlay["services"]["berth"];
    assert_eq!(o["deploy"]["mode"], "global");
    assert_eq!(
        o["command"],
        serde_json::json!(["run", "--internal", "--network", "apps"])
    );
    assert_eq!(
        o["environment"]["BERTH_NODE_NAME"], "{{.Node.Hostname}}-apps",
        "an identity of its own, beside the host agent's"
    );

    let sample = stack_config("swarm/sample-stack.yml", &[("SAMPLE_NETWORK", "apps")]).unwrap();
    let web = &sample["services"]["web"];
    assert_eq!(web["labels"]["SERVICE_NAME"], "sample-web");
    assert_eq!(web["ports"][0]["mode"], "host");
    assert!(
        web["deploy"]["labels"].is_null(),
        "container labels, not service labels"
    );
    assert_eq!(
        sample["services"]["api"]["labels"]["berth.name"],
        "sample-api"
    );
}

/// `docker compose` when the plugin is installed, else `docker-compose`.
fn compose() -> Command {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

#[test]
fn the_compose_demo_is_a_valid_compose_file() {
    let file = deploy("compose/docker-compose.yml");
    let out = run(compose()
        .arg("-f")
        .arg(&file)
        .args(["config"])
        .env("DOCKER_GID", "998"));
    assert!(out.status.success(), "compose config: {}", text(&out));
    let config = documents(&String::from_utf8_lossy(&out.stdout))[0].clone();
    let services: Vec<&String> = config["services"].as_object().unwrap().keys().collect();
    assert_eq!(services, ["berth", "cache", "consul", "web"]);
    let berth = &config["services"]["berth"];
    assert_eq!(
        berth["environment"]["CONSUL_HTTP_ADDR"],
        "http://consul:8500"
    );
    assert_eq!(berth["group_add"], serde_json::json!(["998"]));
    assert_eq!(config["services"]["web"]["labels"]["SERVICE_NAME"], "web");
    assert_eq!(config["services"]["cache"]["labels"]["berth.name"], "cache");

    let out = run(compose()
        .arg("-f")
        .arg(&file)
        .args(["config", "-q"])
        .env_remove("DOCKER_GID"));
    assert!(
        !out.status.success() && text(&out).contains("DOCKER_GID"),
        "DOCKER_GID is required: {}",
        text(&out)
    );
}

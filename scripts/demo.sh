#!/usr/bin/env bash
# A first look at berth on this machine: a Consul dev agent, three labelled sample
# containers, and berth registering them.
#
#   bash scripts/demo.sh         # start everything; berth runs in the foreground (Ctrl-C stops it)
#   bash scripts/demo.sh down    # remove the sample containers and stop the Consul it started
#
# Nothing is pulled: the sample image is built locally FROM scratch with the host's static
# busybox (the same image the end-to-end tests use).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
state=${XDG_RUNTIME_DIR:-/tmp}/berth-demo
image=berth-test-busybox:latest
label=berth-demo=1
node=${BERTH_DEMO_NODE:-$(hostname)}
consul_addr=http://127.0.0.1:8500

say() { printf '==> %s\n' "$*"; }

down() {
  local ids
  ids=$(docker ps -aq --filter "label=$label" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    say "removing the sample containers"
    docker rm -f $ids >/dev/null
  fi
  if [ -f "$state/consul.pid" ]; then
    local pid
    pid=$(cat "$state/consul.pid")
    if kill -0 "$pid" 2>/dev/null; then
      say "stopping the Consul dev agent this demo started (pid $pid)"
      kill "$pid" || true
    fi
    rm -f "$state/consul.pid"
  fi
}

if [ "${1:-}" = "down" ]; then
  down
  exit 0
fi
if [ $# -gt 0 ]; then
  echo "usage: $0 [down]" >&2
  exit 64
fi

mkdir -p "$state"

# 1. Dependencies (consul, the static busybox, curl, dig, jq).
if ! command -v consul >/dev/null || [ ! -x /bin/busybox ] || ! command -v curl >/dev/null \
  || ! command -v dig >/dev/null; then
  say "installing dependencies (scripts/install-deps.sh, needs root)"
  if [ "$(id -u)" -eq 0 ]; then bash scripts/install-deps.sh; else sudo bash scripts/install-deps.sh; fi
fi
if ! docker version >/dev/null 2>&1; then
  echo "demo: cannot reach the Docker engine (is dockerd running?)" >&2
  exit 1
fi

# 2. Consul: reuse one already answering on 127.0.0.1:8500, otherwise start a dev agent.
if curl -fsS "$consul_addr/v1/status/leader" >/dev/null 2>&1; then
  say "using the Consul already answering at $consul_addr"
else
  consul_log=$(mktemp -t berth-demo-consul.XXXXXX.log)
  say "starting consul agent -dev (log: $consul_log)"
  # In a session of its own, so Ctrl-C (meant for berth) does not stop Consul too.
  setsid consul agent -dev -client 127.0.0.1 -bind 127.0.0.1 >"$consul_log" 2>&1 < /dev/null &
  echo $! >"$state/consul.pid"
  for _ in $(seq 1 60); do
    leader=$(curl -fsS "$consul_addr/v1/status/leader" 2>/dev/null || true)
    if [ "${#leader}" -gt 2 ]; then break; fi
    sleep 0.5
  done
  curl -fsS "$consul_addr/v1/status/leader" >/dev/null || { echo "demo: consul did not start, see $consul_log" >&2; exit 1; }
fi

# 3. The sample image (skipped when it exists with the same busybox).
sha=$(sha256sum /bin/busybox | cut -d' ' -f1)
have=$(docker image inspect --format '{{ index .Config.Labels "berth-e2e.busybox-sha256" }}' "$image" 2>/dev/null || true)
if [ "$have" != "$sha" ]; then
  say "building $image from /bin/busybox"
  ctx=$(mktemp -d)
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q --label "berth-e2e.busybox-sha256=$sha" -t "$image" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# 4. Five sample containers (earlier ones are replaced): three that register, one whose
#    health check fails, one with a label berth refuses.
down_samples() { docker rm -f $(docker ps -aq --filter "label=$label") >/dev/null 2>&1 || true; }
down_samples
serve="trap 'exit 0' TERM; httpd -p 81; httpd -f -p 80 & wait"
say "starting the sample containers"
docker run -d --name berth-demo-web --label "$label" -l SERVICE_NAME=web -l SERVICE_TAGS=demo,http \
  -p 80 "$image" sh -c "$serve" >/dev/null
docker run -d --name berth-demo-pair --label "$label" -l SERVICE_NAME=pair \
  -p 80 -p 81 "$image" sh -c "$serve" >/dev/null
docker run -d --name berth-demo-api --label "$label" -l berth.name=api -l berth.tags=v1,internal \
  -p 80 "$image" sh -c "$serve" >/dev/null
docker run -d --name berth-demo-shop --label "$label" -l berth.name=shop -l berth.check.http=/health \
  -l berth.check.interval=5s -p 80 "$image" sh -c "$serve" >/dev/null
docker run -d --name berth-demo-typo --label "$label" -l 'berth.name=!!!' \
  -p 80 "$image" sh -c "$serve" >/dev/null
docker ps --filter "label=$label" --format '    {{.Names}}\t{{.Ports}}'

# 5. berth, in the foreground.
say "building berth"
cargo build -q -p berth --bin berth
target=${CARGO_TARGET_DIR:-$root/target}
trap 'echo; say "berth stopped; removing the sample containers"; down_samples' EXIT

cat <<HELP
==> berth is starting (Ctrl-C stops it and removes the samples). Meanwhile, look at:
    berth's status page:  http://127.0.0.1:9797/   (shop fails its check; typo has a bad label)
    curl -s 127.0.0.1:9797/readyz; curl -s 127.0.0.1:9797/metrics | grep '^berth_instances'
    $target/debug/berth explain berth-demo-typo --node-name $node --host-ip 127.0.0.1
    Consul UI:  http://127.0.0.1:8500/ui
    curl -s 127.0.0.1:8500/v1/health/service/web | jq '.[] | {ID: .Service.ID, Port: .Service.Port, Checks: [.Checks[].Status]}'
    curl -s 127.0.0.1:8500/v1/catalog/services | jq
    dig @127.0.0.1 -p 8600 web.service.consul SRV
    docker stop berth-demo-web    # and watch it leave; docker start berth-demo-web to bring it back
    bash scripts/demo.sh down      # afterwards: stop the Consul this demo started
HELP
BERTH_LOG=${BERTH_LOG:-info} "$target/debug/berth" run \
  --consul-addr "$consul_addr" --node-name "$node" --host-ip 127.0.0.1 \
  --ttl 10s --resync 30s --deregister-critical-after 1m --deregister-on-exit

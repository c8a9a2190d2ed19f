#!/usr/bin/env bash
# The whole suite, as CI runs it: dependencies, formatting, lints, the image, then every
# test (unit, in-process and end to end against the real Docker engine, Consul and etcd,
# and a real single-node Docker swarm).
#
#   bash scripts/test.sh
#
# Environment: TEST_THREADS (default 4) is passed to the test harness.
set -uo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
threads=${TEST_THREADS:-4}
started=$(date +%s)
declare -a results=()
failed=0

step() { printf '\n==> %s\n' "$*"; }
# run NAME CMD...: runs a step, records its outcome and duration, keeps going on failure.
run() {
  local name=$1; shift
  local t0=$(date +%s)
  step "$name: $*"
  if "$@"; then
    results+=("ok      $name ($(( $(date +%s) - t0 ))s)")
  else
    results+=("FAILED  $name ($(( $(date +%s) - t0 ))s)")
    failed=1
  fi
}
summary() {
  printf '\n==> summary (%ss total)\n' "$(( $(date +%s) - started ))"
  printf '    %s\n' "${results[@]}"
  if [ "$failed" -ne 0 ]; then echo "test.sh: FAILED"; else echo "test.sh: all steps passed"; fi
}

step "dependencies"
if ! bash scripts/install-deps.sh; then
  echo "test.sh: installing dependencies failed (scripts/install-deps.sh needs root on Debian bookworm)" >&2
  exit 1
fi

step "docker"
if ! command -v docker >/dev/null; then
  echo "test.sh: the docker CLI is not installed; the end-to-end tests need a local Docker engine" >&2
  exit 1
fi
if ! docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}' ; then
  echo "test.sh: cannot reach the Docker engine (is dockerd running, and is ${DOCKER_HOST:-/var/run/docker.sock} accessible to $(id -un)?)" >&2
  exit 1
fi

# Containers and networks left by an earlier, interrupted run would be seen by every agent.
stale=$(docker ps -aq --filter label=berth-e2e)
if [ -n "$stale" ]; then
  step "removing $(echo "$stale" | wc -l) container(s) left by an earlier run"
  docker rm -f $stale >/dev/null || true
fi
stale_nets=$(docker network ls -q --filter label=berth-e2e)
if [ -n "$stale_nets" ]; then docker network rm $stale_nets >/dev/null || true; fi

# tests/tests/swarm.rs creates (and leaves) its own swarm; it skips on an engine that is
# already in one. Say so up front, since a skipped test still counts as passed.
swarm_state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
if [ "$swarm_state" != "inactive" ]; then
  echo "test.sh: WARNING: the engine's swarm state is '$swarm_state'; the Swarm deployment test will skip"
  results+=("WARNING swarm test skips: engine swarm state '$swarm_state'")
fi

run fmt cargo fmt --all -- --check
run clippy cargo clippy --workspace --all-targets -- -D warnings
# Build everything (including the berth binary the end-to-end tests spawn) before the
# clock of any test starts.
run build cargo build --workspace --all-targets
# The image the deployment tests run (tests/tests/image.rs, swarm.rs): a static release
# build, several minutes from clean, so it is made here rather than inside a test's clock.
run image bash deploy/build-image.sh --tag berth:e2e
test_log=$(mktemp -t berth-test.XXXXXX)
trap 'rm -f "$test_log"' EXIT
cargo_test() { cargo test --workspace --no-fail-fast -- --test-threads "$threads" 2>&1 | tee "$test_log"; }
run test cargo_test

summary
# One closing line that counts every test binary's results.
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i
         if ($(i+1) ~ /^failed/) f += $i
         if ($(i+1) ~ /^ignored/) s += $i
       }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$test_log"
exit "$failed"

#!/usr/bin/env bash
# The project's test command (README "Run the tests"): installs what the
# tests need on a fresh machine, then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# `ss -K` (iproute2) kills live loopback connections in the fault tests.
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
# HAProxy fronts three nodes in the cluster test (docs/CLUSTER.md).
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # A failed install (no network) is not fatal: those tests then skip.
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"; } ||
      echo "note: could not install ${need_apt[*]}: the tests that need them report themselves skipped" >&2
  else
    echo "note: ${need_apt[*]} missing and not root: the tests that need them (ss -K, haproxy) report themselves skipped" >&2
  fi
fi

# Every feature on: the core's simulation (sim) and fuzzing derives are tested too.
cargo test --workspace --all-features --locked "$@"

#!/usr/bin/env bash
# CI smoke run of every fuzz target on stable Rust: coverage-guided libFuzzer
# without a sanitizer (-s none), with debug assertions and overflow checks
# (-a), for FUZZ_SECONDS each (default 30), starting from the committed seeds
# and the dictionary. Fails if any target finds a crash, leak or timeout; the
# failing input is kept under fuzz/artifacts/<target>/ and its path is printed.
#
# Usage: fuzz/smoke.sh [target...]     (default: every target)
#        FUZZ_SECONDS=600 fuzz/smoke.sh session_pair
set -euo pipefail

# Pinned, installed with its lock file: 0.13.2 builds with rustc 1.95.
CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"

cd "$(dirname "$0")"

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "fuzz/smoke.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none -O -a

# Scratch corpora: what the fuzzer adds must not dirty the work tree.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    cp corpus/"$t"/seed-* "$scratch/$t/"
    echo "=== fuzz/smoke.sh: $t for ${SECONDS_PER_TARGET}s"
    # -timeout: one input running this long is a hang, reported like a crash.
    status=0
    cargo fuzz run -s none -O -a "$t" "$scratch/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=60 \
        -dict="$PWD/ftss.dict" -print_final_stats=1 >"$scratch/$t.log" 2>&1 || status=$?
    # The closing lines: executions, coverage (cov) and features (ft).
    grep -E '^#[0-9]+[[:space:]]+DONE|^Done|^stat::(number_of_executed_units|peak_rss_mb)' "$scratch/$t.log" || true
    if [ "$status" -ne 0 ]; then
        echo "=== fuzz/smoke.sh: $t FAILED (exit $status); end of its log:"
        tail -n 60 "$scratch/$t.log"
        grep -E 'Test unit written to' "$scratch/$t.log" || true
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz/smoke.sh: failing targets: ${failed[*]} (inputs under fuzz/artifacts/<target>/;" \
        "reproduce with: cargo fuzz run -s none -a <target> <input>)"
    exit 1
fi
echo "fuzz/smoke.sh: ${#targets[@]} targets ran ${SECONDS_PER_TARGET}s each without a failure"

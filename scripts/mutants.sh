#!/usr/bin/env bash
# Mutation score of ft-session-core, file by file (not part of CI).
#
# Installs cargo-mutants 27.x from crates.io if missing, then mutates each
# file in turn and runs a fast test profile: the core's unit tests, the rule
# tests (tests/protocol_rules.rs), the endpoint, handshake, config and session
# contract tests, and a reduced simulation run (FT_SIM_CASES, default 40). One
# job, a timeout per mutant: the machine may be shared. Mutants are applied in place (the
# tree's own target/ is reused instead of a fresh build in a copy; cargo-mutants
# restores every file), so run it on a clean checkout you are not editing.
# Results go to target/mutants/<file>/
# (outcomes.json, caught.txt, missed.txt, timeout.txt, unviable.txt); the
# table printed at the end has caught, missed, timeout, unviable and the
# score = caught / (caught + missed + timeout) per file.
#
# Usage: scripts/mutants.sh [file.rs ...]      (default: the files below)
#        FT_SIM_CASES=200 MUTANTS_TIMEOUT=300 scripts/mutants.sh frame.rs
#        MUTANTS_SHARD=0/4 scripts/mutants.sh session.rs   (a 1-in-4 sample)
#        MUTANTS_TESTS="--lib --test protocol_rules" scripts/mutants.sh endpoint.rs
# MUTANTS_TESTS replaces the test profile (fewer test targets link faster;
# say which profile a figure came from). The profile is passed to every cargo
# call, so only its targets are built for each mutant, not every test,
# example and bench of the crate.
#
# frame.rs, handshake.rs and stream_buffer.rs are declared twice in lib.rs
# (public under the `testing` feature, private without it); cargo-mutants does
# not evaluate cfg, so it lists each of their mutants twice, the second copy
# after the first. For such a doubled listing the script runs only the first
# half (`--shard 0/2 --sharding slice`) unless MUTANTS_SHARD is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version 2>/dev/null | grep -q ' 27\.'; then
    cargo install cargo-mutants --version '^27' --locked
fi

files=("$@")
if [ "${#files[@]}" -eq 0 ]; then
    files=(stream_buffer.rs frame.rs handshake.rs connection_set.rs endpoint.rs session.rs)
fi
export FT_SIM_CASES="${FT_SIM_CASES:-40}"
export FT_CONFIG_CASES="${FT_CONFIG_CASES:-32}"
timeout="${MUTANTS_TIMEOUT:-180}"
# shellcheck disable=SC2206 # word splitting wanted: a list of cargo test flags
tests=(${MUTANTS_TESTS:---lib --test protocol_rules --test endpoint --test handshake --test config_props --test session_contract --test written_reports --test sim_props})
cargo_args=()
for t in "${tests[@]}"; do
    cargo_args+=(-C "$t")
done

for f in "${files[@]}"; do
    out="target/mutants/${f%.rs}"
    mkdir -p "$out"
    echo "=== scripts/mutants.sh: ft-session-core/src/$f"
    shard=()
    if [ -n "${MUTANTS_SHARD:-}" ]; then
        # round-robin: a spread sample, not the first 1/n of the file in order.
        shard=(--shard "$MUTANTS_SHARD" --sharding round-robin)
    else
        list=$(cargo mutants --package ft-session-core --file "ft-session-core/src/$f" \
            --all-features --list)
        n=$(grep -c . <<<"$list" || true)
        if [ "$n" -gt 0 ] && [ $((n % 2)) -eq 0 ] &&
            [ "$(head -n $((n / 2)) <<<"$list")" = "$(tail -n $((n / 2)) <<<"$list")" ]; then
            shard=(--shard 0/2 --sharding slice) # a doubled listing: see above
        fi
    fi
    # Exit codes 2 (missed) and 3 (timeout) are results, not failures.
    nice -n 19 cargo mutants --package ft-session-core --file "ft-session-core/src/$f" \
        --all-features --in-place --timeout "$timeout" --output "$out" "${shard[@]}" \
        "${cargo_args[@]}" || true
done

printf '\n%-20s %7s %7s %8s %9s %7s\n' file caught missed timeout unviable score
for f in "${files[@]}"; do
    d="target/mutants/${f%.rs}/mutants.out"
    [ -d "$d" ] || continue
    # grep -c prints 0 and fails when nothing matches: one number either way.
    n() { if [ -f "$d/$1" ]; then grep -c . "$d/$1" || true; else echo 0; fi; }
    c=$(n caught.txt) m=$(n missed.txt) t=$(n timeout.txt) u=$(n unviable.txt)
    total=$((c + m + t))
    score=$([ "$total" -gt 0 ] && echo "$((100 * c / total))%" || echo -)
    printf '%-20s %7s %7s %8s %9s %7s\n' "$f" "$c" "$m" "$t" "$u" "$score"
done

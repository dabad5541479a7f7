#!/usr/bin/env bash
# Runs README.md's "A three-node cluster on loopback" as a newcomer pastes it:
# every ```sh block of that section, in order, in one non-interactive bash
# (`set -euo pipefail`, stdin from /dev/null: no TTY), with `kstash` found on
# PATH (target/debug by default; KSTASH_BIN_DIR to choose another build).
#
# Checks: the blocks succeed within TIME_LIMIT seconds; afterwards no process
# they started is left running, the temporary directory they made is gone,
# and the repository has no new untracked or changed entries.
#
# The blocks run in their own session (setsid), so whatever they start is in
# one process group, which is killed by its id on a failure or a timeout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
# pip installs grpcio-tools for the Python block: minutes on a cold cache.
TIME_LIMIT=${TIME_LIMIT:-300}
bin_dir=${KSTASH_BIN_DIR:-$repo/target/debug}

die() {
    printf 'three_node: %s\n' "$*" >&2
    exit 1
}

[[ -x "$bin_dir/kstash" ]] || die "no kstash binary in $bin_dir (cargo build first)"
command -v jq >/dev/null || die "jq is needed (the README section uses it)"
command -v setsid >/dev/null || die "setsid (util-linux) is needed"

# The section: from its heading to the next `## ` heading; its ```sh blocks.
section="A three-node cluster on loopback"
blocks=$(awk -v heading="## $section" '
    $0 == heading { inside = 1; next }
    inside && /^## / { exit }
    inside && /^```sh$/ { code = 1; next }
    inside && code && /^```$/ { code = 0; print ""; next }
    inside && code { print }
' README.md)
[[ -n "$blocks" ]] || die "README.md has no \`\`\`sh block under \"## $section\""
grep -q 'rm -rf "\$dir"' <<<"$blocks" || die "the section does not remove its directory"

work=$(mktemp -d "${TMPDIR:-/tmp}/kstash-readme.XXXXXX")
pgid=""
cleanup() {
    local rc=$?
    if [[ -n "$pgid" ]] && kill -0 -- "-$pgid" 2>/dev/null; then
        kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

{
    echo 'set -euo pipefail'
    printf '%s\n' "$blocks"
} >"$work/section.sh"
mkdir "$work/tmp"
before=$(git status --porcelain --untracked-files=all)

# TMPDIR points into $work, so the section's `mktemp -d` lands there and the
# check below sees whether it removed its directory.
echo "running the ${section} blocks of README.md (log: $work/section.log)"
PATH="$bin_dir:$PATH" TMPDIR="$work/tmp" \
    setsid bash "$work/section.sh" </dev/null >"$work/section.log" 2>&1 &
pgid=$!
rc=""
for ((i = 0; i < TIME_LIMIT * 10; i++)); do
    if ! kill -0 "$pgid" 2>/dev/null; then
        wait "$pgid" && rc=0 || rc=$?
        break
    fi
    sleep 0.1
done
if [[ -z "$rc" ]]; then
    cat "$work/section.log" >&2
    die "the section did not finish within ${TIME_LIMIT} s"
fi
cat "$work/section.log"
if [[ "$rc" -ne 0 ]]; then
    for log in "$work"/tmp/*/n*.log; do
        [[ -f "$log" ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
    done
    die "the section failed (exit $rc)"
fi

# What the section must leave behind: nothing.
sleep 0.5
if kill -0 -- "-$pgid" 2>/dev/null; then
    ps -o pid,args -g "$pgid" >&2 || true
    die "the section left processes running"
fi
pgid=""
leftover=$(find "$work/tmp" -mindepth 1 -maxdepth 1)
[[ -z "$leftover" ]] || die "the section left files behind: $leftover"
after=$(git status --porcelain --untracked-files=all)
if [[ "$after" != "$before" ]]; then
    diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") >&2 || true
    die "the section changed the repository (new or changed entries above)"
fi
# Read back twice: by the CLI, and by the Python gRPC client through node 2.
readback=$(grep -cE '^(Value +)?hunter2$' "$work/section.log" || true)
[[ "$readback" -ge 2 ]] || die "the first secret was not read back by both the CLI and the Python client"
# `operator status` after the unseal calls: every node's row says SEALED false.
unsealed=$(grep -cE '^[123] +127\.0\.0\.1:820[123] +false ' "$work/section.log" || true)
[[ "$unsealed" -eq 3 ]] || die "unsealing through one node did not unseal all three"
echo "three_node: the README section ran, read its secret back and cleaned up"

#!/usr/bin/env bash
# No script that runs under `set -o pipefail` ends a pipeline with a reader
# that may stop before its writer is done (head, grep -q/-m, awk or sed that
# quit at the first match): the writer then dies of SIGPIPE, the pipeline
# fails, and `set -e` ends the script without a word, now and then. That is
# how image_identity failed in 0.6 s once in about thirty runs
# (`ldconfig -p | awk '... { print; exit }'` in tools/images). Read to the end
# instead (`sed -n 1p`, awk with a flag), or test a captured value.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
mapfile -t scripts < <(git ls-files tools tests .ci | while read -r f; do
    [[ -f "$f" && "$f" != *.c && "$f" != *.py && "$f" != *.js && "$f" != *.json ]] &&
        grep -q 'pipefail' "$f" && echo "$f"
done)
((${#scripts[@]} > 10)) || { echo "found only ${#scripts[@]} scripts with pipefail" >&2; exit 1; }
early='[|][[:space:]]*(head([[:space:]]|$)|grep[[:space:]]+-[A-Za-z]*[qm]|awk[[:space:]].*[^a-z_]exit([^a-z_]|$)|sed[[:space:]].*[;{][[:space:]]*q)'
# (comment lines aside; a line marked pipefail-ok was checked by hand)
if grep -nE "$early" "${scripts[@]}" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*#|pipefail-ok'; then
    echo "these pipelines can fail at random under pipefail (see $0)" >&2
    exit 1
fi
echo "${#scripts[@]} scripts checked"

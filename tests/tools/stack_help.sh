#!/usr/bin/env bash
# Every subcommand tools/stack dispatches is described by `tools/stack help`.
set -euo pipefail
stack="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/stack"
help="$("$stack" help)"
commands="$(sed -n 's/^ *\([a-z |]*\)) "cmd_\$cmd" "\$@" ;;$/\1/p' "$stack" | tr -d ' ' | tr '|' '\n')"
[[ -n "$commands" ]] || { echo "no subcommands found in $stack" >&2; exit 1; }
rc=0
for c in $commands; do
    if ! grep -q "^  tools/stack $c " <<<"$help"; then
        echo "tools/stack help does not describe '$c'" >&2
        rc=1
    fi
done
exit "$rc"

#!/usr/bin/env bash
# Sets everything up and runs the main job: installs what is missing, builds,
# fetches the data, then runs the main example.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh"
[ -x "$root/datasets/fetch" ] && "$root/datasets/fetch"
exec "$root/bin/tide" "$root/examples/main.lua" "$@"

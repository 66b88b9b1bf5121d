#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, fetches the data,
# runs every test (C and Lua) with ctest, then the C tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer (with LeakSanitizer).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh"
[ -x "$root/datasets/fetch" ] && "$root/datasets/fetch"
ctest --test-dir "$root/build" --output-on-failure -j2
TIDE_BUILD="$root/build-asan" "$root/scripts/build.sh" -DTIDE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir "$root/build-asan" --output-on-failure -j2 -R '^c_'

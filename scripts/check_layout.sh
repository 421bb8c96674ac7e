#!/usr/bin/env bash
# Checks the layout rules of the README's Development section on src/ and main.cpp:
#   - who may include whom (each module's project includes, below);
#   - only src/store/sqlite/ includes SQLiteCpp; core includes no httplib;
#   - no file over 450 lines (the list of exceptions, with their reason, is below: empty).
# Prints every breach and exits 1 if there is one. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# module -> the modules its files may include (itself and core always).
declare -A may=(
  [core]=""
  [http]=""
  [store]=""
  [queue]=""
  [backend]="http"
  [balancer]="backend http"
  [worker]="queue store balancer backend http"
  [service]="store queue"
  [api]="service store queue worker balancer backend http"
  [cli]="http"
  [config]="cli"
  [app]="*"
)
max_lines=450
declare -A long_ok=()  # file -> why it may be longer (none today)

fail=0
breach() { echo "layout: $*" >&2; fail=1; }

while IFS= read -r f; do
  mod=${f#src/}; mod=${mod%%/*}
  allowed=" $mod core ${may[$mod]-} "
  while IFS= read -r inc; do
    target=${inc%%/*}
    [ "${may[$mod]-}" = "*" ] && continue
    case "$allowed" in *" $target "*) ;; *) breach "$f includes \"$inc\": $mod may include only$allowed" ;; esac
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f" | grep / || true)
  if grep -q '^#include <SQLiteCpp/' "$f" && [[ $f != src/store/sqlite/* ]]; then
    breach "$f includes SQLiteCpp: only src/store/sqlite/ may"
  fi
  if [ "$mod" = core ] && grep -q '^#include <httplib.h>' "$f"; then
    breach "$f: core includes no httplib (the transport is src/http)"
  fi
done < <(find src -name '*.cpp' -o -name '*.h' | sort)

while IFS= read -r inc; do
  case "${inc%%/*}" in app|cli|config|core) ;; *) breach "main.cpp includes \"$inc\": it wires app, cli and config only" ;; esac
done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' main.cpp)

while read -r n f; do
  [ "$f" = total ] && continue
  if [ "$n" -gt "$max_lines" ] && [ -z "${long_ok[$f]-}" ]; then
    breach "$f has $n lines (over $max_lines): split it by concern"
  fi
done < <(find src main.cpp -name '*.cpp' -o -name '*.h' -o -name main.cpp | xargs wc -l)

[ "$fail" = 0 ] && echo "layout: include rules and file sizes hold"
exit "$fail"

#!/usr/bin/env bash
# Installs the Debian packages taskserver needs. Idempotent and quiet when all is there.
#   scripts/install-deps.sh            build and test (the default)
#   scripts/install-deps.sh bench      + wrk and the sqlite3 shell (scripts/bench.sh); redis-server,
#                                      node and npm (the BullMQ peer of scripts/bench_e2e.sh)
#   scripts/install-deps.sh browser    + chromium and node (the dashboard's browser test)
#   scripts/install-deps.sh fuzz       + clang's libFuzzer runtime (scripts/fuzz.sh)
#   scripts/install-deps.sh package    + dpkg-dev, lintian, systemd (the .deb and unit checks)
#   scripts/install-deps.sh metrics    + prometheus (promtool checks the /metrics format)
set -euo pipefail

want=(g++ cmake make pkg-config git ca-certificates curl jq clang-format
      libcpp-httplib-dev libsqlitecpp-dev libsqlite3-dev nlohmann-json3-dev libcli11-dev
      libspdlog-dev libfmt-dev doctest-dev libssl-dev zlib1g-dev)
for extra in "$@"; do
  case "$extra" in
    bench)
      want+=(wrk sqlite3 procps redis-server)
      command -v node >/dev/null || want+=(nodejs)
      command -v npm >/dev/null || want+=(npm)
      ;;
    browser)
      want+=(chromium)
      # Machines with Node.js from NodeSource have node and npm already; Debian's npm package
      # conflicts with that nodejs, so only missing commands pull the Debian packages.
      command -v node >/dev/null || want+=(nodejs)
      command -v npm >/dev/null || want+=(npm)
      ;;
    fuzz) want+=(clang libclang-rt-14-dev) ;;
    package) want+=(dpkg-dev fakeroot lintian systemd file) ;;
    metrics) want+=(prometheus) ;;
    *) echo "install-deps.sh: unknown extra '$extra' (bench, browser, fuzz, package, metrics)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

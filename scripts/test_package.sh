#!/usr/bin/env bash
# Builds the Debian package and checks it as an installer and a service manager would see it:
#   - configure and build in ${BUILD_DIR:-build}, then `cpack -G DEB` there;
#   - dpkg-deb --info (Depends from dpkg-shlibdeps, the conffile) and --contents;
#   - lintian: no error (warnings are printed);
#   - systemd-analyze verify and security on the unit, inside a temp root holding the
#     extracted package and a copy of the host's unit files (nothing is installed on the host);
#   - dpkg --root install, conffile kept over a reinstall, purge (as root only);
#   - the installed binary, run from the temp root: --help, --version, and a short serve with
#     the shipped config and with every commented-out example line of it switched on.
# Needs the extras of `scripts/install-deps.sh package`. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh package

dir="${BUILD_DIR:-build}"
tmp=$(mktemp -d /tmp/taskserver-pkg-XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_package.sh: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

step "build in $dir"
BUILD_DIR="$dir" scripts/build.sh
rm -f "$dir"/taskserver_*.deb
(cd "$dir" && timeout 300 cpack -G DEB >"$tmp/cpack.log" 2>&1) ||
  { cat "$tmp/cpack.log" >&2; fail "cpack"; }
deb=$(ls "$dir"/taskserver_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "cpack made no taskserver_*.deb"
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$dir/CMakeCache.txt")
[ -n "$version" ] || fail "no CMAKE_PROJECT_VERSION in $dir/CMakeCache.txt"
echo "$deb ($(du -k "$deb" | cut -f1) KiB)"

step "dpkg-deb --info"
dpkg-deb --info "$deb" >"$tmp/info"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = taskserver ] || fail "Package is $(field Package)"
[ "$(field Version)" = "$version-1" ] || fail "Version is $(field Version), want $version-1"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is wrong"
depends=$(field Depends)
echo "Depends: $depends"
depends_names=$(tr ',|' '\n\n' <<<"$depends" | sed 's/^ *//; s/[ (].*//')
for lib in libcpp-httplib0.11 libssl3 libstdc++6 libgcc-s1 libc6 zlib1g; do
  grep -qxF "$lib" <<<"$depends_names" || fail "Depends does not name $lib"
done
grep -q '^libsqlite3' <<<"$depends_names" && fail "Depends names libsqlite3 (linked statically)"
# Outputs go to files before grep -q reads them: an early exit of grep would otherwise fail the
# writer with SIGPIPE, and the pipeline with it (pipefail).
mkdir -p "$tmp/control"
dpkg-deb --control "$deb" "$tmp/control"
[ -f "$tmp/control/conffiles" ] || fail "no conffiles"
grep -qx /etc/taskserver/taskserver.toml "$tmp/control/conffiles" ||
  fail "/etc/taskserver/taskserver.toml is not a conffile"

step "dpkg-deb --contents"
dpkg-deb --contents "$deb" >"$tmp/contents"
for f in ./usr/bin/taskserver ./lib/systemd/system/taskserver.service \
         ./etc/taskserver/taskserver.toml ./usr/share/doc/taskserver/copyright \
         ./usr/share/doc/taskserver/changelog.Debian.gz ./usr/share/man/man1/taskserver.1.gz; do
  grep -q " $f\$" "$tmp/contents" || fail "the package lacks $f"
done
awk '$2 != "root/root" { bad = 1 } END { exit bad }' "$tmp/contents" ||
  fail "a file not owned by root/root"
grep -Eq 'taskserver_tests|/build' "$tmp/contents" && fail "test or build files in the package"
root="$tmp/root"
mkdir -p "$root"
dpkg-deb -x "$deb" "$root"
file -b "$root/usr/bin/taskserver" >"$tmp/file"
grep -q ', stripped' "$tmp/file" || fail "the binary is not stripped: $(cat "$tmp/file")"
cmp -s scripts/taskserver.service "$root/lib/systemd/system/taskserver.service" ||
  fail "the packaged unit differs from scripts/taskserver.service"
echo "binary $(du -k "$root/usr/bin/taskserver" | cut -f1) KiB, stripped"

step "lintian"
# --fail-on error: warnings and infos are printed, not fatal.
lintian --fail-on error --display-info "$deb" >"$tmp/lintian" 2>&1 || {
  cat "$tmp/lintian" >&2
  fail "lintian found errors"
}
if [ -s "$tmp/lintian" ]; then cat "$tmp/lintian"; else echo "lintian: clean"; fi

step "systemd-analyze verify (temp root: the package plus the host's unit files)"
vroot="$tmp/vroot"
mkdir -p "$vroot/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$vroot/usr/lib/systemd/"
dpkg-deb -x "$deb" "$vroot"
# Any line it prints (an unknown key, a bad value, a missing binary or man page) is a failure.
# Documentation=man:taskserver(1) is looked up in the extracted package.
verify() {
  if ! MANPATH="$vroot/usr/share/man" timeout 60 systemd-analyze verify --root="$vroot" \
       taskserver.service >"$tmp/verify" 2>&1 || [ -s "$tmp/verify" ]; then
    cat "$tmp/verify" >&2
    fail "systemd-analyze verify ($1)"
  fi
}
verify "the unit as shipped"
timeout 60 systemd-analyze security --offline=true --root="$vroot" taskserver.service \
  >"$tmp/security" 2>&1 || { cat "$tmp/security" >&2; fail "systemd-analyze security"; }
exposure=$(sed -n 's/.*Overall exposure level for [a-z.]*: \([0-9.]*\).*/\1/p' "$tmp/security")
echo "systemd-analyze security: exposure $exposure (0 = locked down, 10 = exposed)"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }' ||
  fail "the unit's exposure level $exposure is above 2.0"
# The drop-in that the config's comments and the README give for API tokens.
mkdir -p "$vroot/etc/systemd/system/taskserver.service.d"
printf '[Service]\nLoadCredential=api-tokens:/etc/taskserver/tokens\n' \
  >"$vroot/etc/systemd/system/taskserver.service.d/tokens.conf"
verify "with the api-tokens credential drop-in"
echo "verify: clean (as shipped, and with the credential drop-in)"
# The unit stops the server after TimeoutStopSec: it must leave room for the shutdown grace.
stop_s=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' scripts/taskserver.service)
grace=$(sed -n 's/^shutdown-grace = \([0-9]*\)$/\1/p' scripts/taskserver.toml)
[ -n "$stop_s" ] && [ -n "$grace" ] && [ "$stop_s" -gt "$grace" ] ||
  fail "TimeoutStopSec ($stop_s) must exceed shutdown-grace ($grace)"

if [ "$(id -u)" -eq 0 ]; then
  step "dpkg --root: install, conffile kept over a reinstall, purge"
  droot="$tmp/droot"
  mkdir -p "$droot/var/lib/dpkg/info" "$droot/var/lib/dpkg/updates" "$droot/var/lib/dpkg/triggers"
  touch "$droot/var/lib/dpkg/status" "$droot/var/lib/dpkg/available"
  # Maintainer scripts run without chroot, with DPKG_ROOT set: they must leave the host alone.
  # Dependencies are the host's business here (the libraries are not in the empty root).
  dpkg_root() {
    timeout 120 dpkg --root="$droot" --log=/dev/null --force-depends --force-script-chrootless \
      --force-confold "$@" >>"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg $*"; }
  }
  dpkg_root -i "$deb"
  [ -x "$droot/usr/bin/taskserver" ] || fail "dpkg --root did not install the binary"
  dpkg --root="$droot" -s taskserver >"$tmp/dpkg-status"
  grep -q '^Status: install ok installed' "$tmp/dpkg-status" ||
    fail "dpkg --root does not list taskserver as installed"
  echo "# edited by test_package.sh" >>"$droot/etc/taskserver/taskserver.toml"
  dpkg_root -i "$deb"
  grep -q 'edited by test_package.sh' "$droot/etc/taskserver/taskserver.toml" ||
    fail "a reinstall overwrote the edited conffile"
  # What `systemctl enable taskserver` leaves; purge removes it.
  mkdir -p "$droot/etc/systemd/system/multi-user.target.wants"
  ln -s /lib/systemd/system/taskserver.service \
    "$droot/etc/systemd/system/multi-user.target.wants/taskserver.service"
  dpkg_root --purge taskserver
  for f in usr/bin/taskserver etc/taskserver/taskserver.toml \
           etc/systemd/system/multi-user.target.wants/taskserver.service; do
    [ ! -e "$droot/$f" ] && [ ! -L "$droot/$f" ] || fail "purge left /$f"
  done
  echo "install, reinstall (conffile kept), purge: ok"
else
  echo "== dpkg --root install: skipped (needs root)"
fi

bin="$root/usr/bin/taskserver"
step "the installed binary: --help, --version"
timeout 10 "$bin" --help >"$tmp/help" 2>&1 || { cat "$tmp/help" >&2; fail "--help"; }
grep -q 'serve' "$tmp/help" || fail "--help does not name serve"
grep -q -- '--config' "$tmp/help" || fail "--help does not name --config"
[ "$(timeout 10 "$bin" --version)" = "$version" ] || fail "--version is not $version"

# Starts the installed binary with a config file on 127.0.0.1:0; sets $url.
start_server() {
  local config="$1" name="$2"
  rm -rf "$tmp/data-$name"
  # A clean environment: no backend URLs, TASKSERVER_* or NOTIFY_SOCKET of the caller.
  env -i PATH="$PATH" "$bin" serve --config "$config" \
    --listen 127.0.0.1:0 --data-dir "$tmp/data-$name" --shutdown-grace 5 \
    >"$tmp/$name.out" 2>"$tmp/$name.err" &
  server_pid=$!
  url=""
  for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$tmp/$name.out" | head -1)
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$tmp/$name.err" >&2; fail "$name: the server did not start"; }
}
stop_server() {
  local name="$1" code=0
  kill -TERM "$server_pid"
  for _ in $(seq 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$server_pid" 2>/dev/null && fail "$name: still running 15 s after SIGTERM"
  wait "$server_pid" || code=$?
  server_pid=""
  [ "$code" -eq 0 ] || { cat "$tmp/$name.err" >&2; fail "$name: exit code $code after SIGTERM"; }
}
http_code() { curl -s -o "$tmp/body" -w '%{http_code}' --max-time 5 "$@"; }

step "serve with the shipped /etc/taskserver/taskserver.toml"
start_server "$root/etc/taskserver/taskserver.toml" shipped
[ "$(http_code "$url/health")" = 200 ] || fail "GET /health: $(cat "$tmp/body")"
[ "$(http_code "$url/metrics")" = 200 ] || fail "GET /metrics"
[ "$(http_code "$url/api/v1/backends")" = 200 ] || fail "GET /api/v1/backends"
jq -e '.backends | length == 0' "$tmp/body" >/dev/null || fail "backends: $(cat "$tmp/body")"
stop_server shipped
echo "$url: /health, /metrics, /api/v1/backends answered; SIGTERM -> exit 0"

step "serve with every example line of the config switched on"
# Uncomments '#key = ...' and '#[section]' lines, points the example backends at a closed
# loopback port (no traffic leaves the machine) and the token file at a temp one.
printf 'token-old\ntoken-new\n' >"$tmp/tokens"
sed -e 's/^#\([a-z\[]\)/\1/' \
    -e 's#http://[a-z0-9.-]*\.example\.internal:[0-9]*#http://127.0.0.1:9#g' \
    -e "s#^api-token-file = .*#api-token-file = \"$tmp/tokens\"#" \
    "$root/etc/taskserver/taskserver.toml" >"$tmp/full.toml"
grep -q '^\[pool.ocr\]' "$tmp/full.toml" || fail "the example has no [pool.ocr] to switch on"
start_server "$tmp/full.toml" full
[ "$(http_code "$url/health")" = 200 ] || fail "full: GET /health"
[ "$(http_code "$url/api/v1/backends")" = 401 ] || fail "full: /api/ without a token is not 401"
for token in token-old token-new; do
  [ "$(http_code -H "Authorization: Bearer $token" "$url/api/v1/backends")" = 200 ] ||
    fail "full: $token refused"
done
pools=$(jq -r '[.backends[].pool] | unique | join(",")' "$tmp/body")
[ "$pools" = "image,ocr,transcribe" ] || fail "full: pools are '$pools', want image,ocr,transcribe"
stop_server full
echo "$url: pools $pools; /api/ without a token 401, with either token 200; SIGTERM -> exit 0"

echo "== package OK: $deb"

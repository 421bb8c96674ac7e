#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan) and runs each for the
# given seconds on a fresh copy of its seeds (tests/fuzz/corpus/<target>/ plus
# tests/fuzz/regressions/<target>/): the committed corpus never grows.
#   scripts/fuzz.sh [seconds-per-target]      default 60
#   FUZZ_TARGETS="url base64" scripts/fuzz.sh 10   only these targets
#   FUZZ_BUILD_DIR=...                          default build-fuzz
# Prints execs/s, corpus size and new units per target. Exits 1 on any crash, leak, timeout,
# out-of-memory, sanitizer report or failed invariant; the input is kept under
# $FUZZ_BUILD_DIR/fuzz-crashes/<target>/ with the command that minimises it.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ && "$secs" -gt 0 ]] || { echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2; exit 2; }
dir="${FUZZ_BUILD_DIR:-build-fuzz}"

scripts/install-deps.sh fuzz

all=()
for src in tests/fuzz/fuzz_*.cpp; do
  name="$(basename "$src" .cpp)"
  all+=("${name#fuzz_}")
done
targets=(${FUZZ_TARGETS:-${all[@]}})

# TASKSERVER_SANITIZE instruments the whole library (fuzzer-no-link: coverage without
# libFuzzer's main); CMake adds -fsanitize=fuzzer to the fuzz executables only.
CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTASKSERVER_FUZZ=ON -DTASKSERVER_WERROR=OFF \
  -DTASKSERVER_SANITIZE=address,undefined,fuzzer-no-link >"$dir.configure.log" 2>&1 ||
  { cat "$dir.configure.log" >&2; exit 1; }
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
echo "building ${build_targets[*]} in $dir" >&2
if ! cmake --build "$dir" --target "${build_targets[@]}" -j"$(nproc)" >"$dir/fuzz-build.log" 2>&1; then
  grep -Ev '^\[ *[0-9]+%\]|^g?make\[[0-9]\]: (Entering|Leaving)' "$dir/fuzz-build.log" | tail -40 >&2
  echo "fuzz build failed (full log: $dir/fuzz-build.log)" >&2
  exit 1
fi

# Inputs bigger than any request the parsers see in practice only slow the search down.
max_len_for() {
  case "$1" in
    task_request | backend_answer) echo 16384 ;;
    base64) echo 8192 ;;
    url) echo 4096 ;;
    list_query | headers) echo 2048 ;;
    cursor | retry_after) echo 128 ;;
    *) echo 4096 ;;
  esac
}
dict_for() {
  case "$1" in
    task_request | backend_answer) echo "$root/tests/fuzz/json.dict" ;;
    list_query | headers) echo "$root/tests/fuzz/query.dict" ;;
  esac
}

# UBSan's checks only print unless told to stop; a report must fail the run.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}"

run_root="$dir/fuzz-run"
crash_root="$dir/fuzz-crashes"
rm -rf "$run_root"
mkdir -p "$run_root" "$crash_root"
failed=()
rows=()
for t in "${targets[@]}"; do
  work="$run_root/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  seeds=0
  for from in "tests/fuzz/corpus/$t" "tests/fuzz/regressions/$t"; do
    if [ -d "$from" ]; then
      cp "$from"/* "$work/corpus/" 2>/dev/null || true
    fi
  done
  seeds=$(find "$work/corpus" -type f | wc -l)
  args=(-max_total_time="$secs" -max_len="$(max_len_for "$t")" -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$work/artifacts/")
  d="$(dict_for "$t")"
  [ -n "$d" ] && args+=(-dict="$d")
  echo "fuzzing $t for ${secs}s ($seeds seeds)" >&2
  rc=0
  # The outer timeout only guards against a hung run; libFuzzer stops itself at max_total_time.
  timeout -k 10 $((secs + 120)) "$dir/fuzz_$t" "${args[@]}" "$work/corpus" >"$work/log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  corpus=$(find "$work/corpus" -type f | wc -l)
  verdict=ok
  if [ "$rc" -ne 0 ] ||
     grep -qE 'runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|invariant failed' "$work/log"; then
    verdict="FAIL (exit $rc)"
    failed+=("$t")
    mkdir -p "$crash_root/$t"
    for a in "$work/artifacts"/*; do
      [ -f "$a" ] || continue
      cp "$a" "$crash_root/$t/"
      echo "  $t: kept $crash_root/$t/$(basename "$a")" >&2
      echo "    minimise: $dir/fuzz_$t -minimize_crash=1 -runs=100000 $crash_root/$t/$(basename "$a")" >&2
    done
    cp "$work/log" "$crash_root/$t/log"
    grep -E 'invariant failed|runtime error|ERROR:|SUMMARY' "$work/log" | head -5 | sed 's/^/    /' >&2
  fi
  rows+=("$(printf '%-16s %10s %12s %8s %8s  %s' "$t" "${execs:-?}" "${runs:-?}" "$seeds" "$corpus" "$verdict")")
done

echo
printf '%-16s %10s %12s %8s %8s  %s\n' target execs/s runs seeds corpus result
for r in "${rows[@]}"; do echo "$r"; done
echo "logs: $run_root/<target>/log"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (inputs in $crash_root/; add them to tests/fuzz/regressions/<target>/)" >&2
  exit 1
fi

#!/usr/bin/env bash
# Builds and runs each cargo-fuzz target (fuzz/fuzz_targets/) for the given number of seconds
# (default 60) from the committed seeds (fuzz/seeds/<target>/), then prints libFuzzer's final
# stats: executions, executions per second, coverage (cov: edges, ft: features), corpus size.
#
#   scripts/fuzz.sh [seconds]                    # every target
#   FUZZ_TARGETS=differential scripts/fuzz.sh 600
#
# New inputs go to fuzz/corpus/<target>/ and crashes to fuzz/artifacts/<target>/ (both
# git-ignored; the seeds are never modified). Reproduce a crash with
#   cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>
# Exits non-zero when a target crashes (panic, abort, leak, timeout, or an allocation over
# -malloc_limit_mb: the api target itself allocates at most 4 MiB per slice).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
targets=${FUZZ_TARGETS:-api differential backward}

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

status=0
summary=()
for t in $targets; do
  echo "== $t: build =="
  cargo +nightly fuzz build "$t"
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  echo "== $t: ${secs}s from seeds/$t ($(ls "seeds/$t" | wc -l) seeds) =="
  set +e
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -max_len=256 -timeout=60 \
    -rss_limit_mb=2048 -malloc_limit_mb=256 >"$log" 2>&1
  rc=$?
  set -e
  # The INITED line (seeds loaded), the last status line, crash reports, the final stats.
  grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | tail -1 || true
  grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true
  grep -E 'ERROR|panicked|SUMMARY|Test unit written|Crash|malloc\(' "$log" | head -20 || true
  grep -E '^stat::' "$log" || true
  execs=$(grep -oP '^stat::number_of_executed_units:\s*\K[0-9]+' "$log" || echo '?')
  rate=$(grep -oP '^stat::average_exec_per_sec:\s*\K[0-9]+' "$log" || echo '?')
  last=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1 || true)
  cov=$(grep -oP 'cov: \K[0-9]+' <<<"$last" || echo '?')
  ft=$(grep -oP 'ft: \K[0-9]+' <<<"$last" || echo '?')
  corp=$(grep -oP 'corp: \K[^ ]+' <<<"$last" || echo '?')
  if [ "$rc" -ne 0 ]; then
    status=1
    summary+=("$t: CRASHED (exit $rc) after $execs execs; see $log and artifacts/$t/")
  else
    summary+=("$t: $execs execs in ${secs}s ($rate/s), cov $cov, ft $ft, corpus $corp")
  fi
done
echo "== summary =="
printf '%s\n' "${summary[@]}"
exit $status

#!/usr/bin/env bash
# On the GPU machine, in the repository root: install the wheels carried so far, and with --check
# run the check and copy GPU.md, GPU.json and the logs to $OUT. Arguments after --check go to the
# check (e.g. --only decode,train). See tools/gpu_check/run_on_device.md.
set -u
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
echo "[device] $(date -u +%FT%TZ); GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
echo "[device] batches here: $(cd build/gpu-check/carry 2>/dev/null && ls -d b* | tr '\n' ' ')"
$PY -m tools.gpu_check.wheels install || echo "[device] a wheel failed to install (above)"
# The real clips, where the tests and the decode benchmark look for them: ../shared/data/real-clips.
clips=$(ls -d build/gpu-check/carry/b*/real-clips 2>/dev/null | head -1)
if [ -n "$clips" ] && [ ! -e ../shared/data/real-clips ]; then
  mkdir -p ../shared/data && ln -s "$PWD/$clips" ../shared/data/real-clips
fi
[ "${1:-}" = "--check" ] || exit 0
shift
corpus=$(ls -d build/gpu-check/carry/b*/corpus 2>/dev/null | head -1)
$PY -m tools.gpu_check --corpus "${corpus:-build/gpu-check/corpus}" "$@"
rc=$?
if [ -n "${OUT:-}" ] && [ -f results/GPU.json ]; then
  cp results/GPU.md results/GPU.json "$OUT"/
  tar czf "$OUT/gpu-check-logs.tar.gz" -C results gpu-check-logs
fi
exit $rc

#!/usr/bin/env bash
# The device check, one command on the GPU machine, at most 6 minutes on one H100:
#
#     bash bench/gpu_check.sh OUT [extra flags of bench/gpu.py]
#
# Needs the CamVid pack, made beforehand on the CPU machine and carried with the checkout:
#     python ../shared/tools/pack_camvid_for_device.py .device_data/camvid      # git-ignored; carry .device_data
# Without it the camvid section is skipped; every other section runs. The machine needs torch,
# torchvision, timm and scikit-image (scipy), nothing of this project: the checkout goes on PYTHONPATH.
# OUT receives gpu.json (rewritten after every section), log.txt and nvidia-smi.txt; run directories
# go to a temporary folder outside OUT.
set -u
OUT=$(mkdir -p "${1:?usage: bash bench/gpu_check.sh OUT [flags of bench/gpu.py]}" && cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)     # GPU images often have python3 alone
WORK=$(mktemp -d "${TMPDIR:-/tmp}/contextrast_gpu_XXXXXX")
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
# the sections stop starting at 330 s; the timeout is the last guard, gpu.json keeps what finished
timeout -k 10 350 "$PY" bench/gpu.py --out "$OUT" --work "$WORK" --camvid .device_data/camvid --budget 330 "$@" 2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$status"

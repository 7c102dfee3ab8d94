#!/usr/bin/env bash
# One-command GPU verification (see tools/gpu_check.py and README "CUDA on a GPU"):
#   tools/gpu_check.sh OUTDIR [--quick] [--dry] [--budget SECONDS] [--build-dir DIR] [--no-build]
# Uses the current Python (PYTHON overrides it); installs nothing from the network.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_check.py" "$@"

#!/usr/bin/env bash
# Builds the CUDA emulator (tools/cuda-emu) with cmake and g++. Progress goes to stderr; the last line
# on stdout is the one `export ...` line that points the CUDA backend at it:
#   eval "$(bash tools/cuda-emu/build.sh | tail -1)"
# Build folder: $VTE_CUDA_EMU_BUILD_DIR, else tools/cuda-emu/build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${VTE_CUDA_EMU_BUILD_DIR:-$here/build}
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$build" -j "$(nproc)" >&2
echo "export VTE_CUDA_LIB_DIR=$build/lib VTE_NVRTC_PATH=$build/lib/libnvrtc.so.12"

#!/usr/bin/env bash
# Stage .NET builds for a GPU host that has an NVIDIA driver and CUDA libraries but no .NET.
#
# Usage, from the project's root:   bash tools/gpu/stage.sh [PROJECT.csproj ...]
# (no argument: the CUDA test project and the benchmark runner, what tools/gpu/verify.sh runs)
#
# It writes .gpu/ (and adds it to .git/info/exclude, so git ignores it):
#   .gpu/dotnet.tar.xz   this machine's .NET runtime (dotnet host + Microsoft.NETCore.App), about 27 MB
#   .gpu/app/NAME/       `dotnet build -c Release` output of each project named (NAME = project file's name)
#   .gpu/env.sh          to source on the GPU host: unpacks the runtime to /tmp/dotnet, puts the CUDA
#                        libraries it finds on LD_LIBRARY_PATH, exports CUDA_HOME, prints what it found
#
# On the GPU host (the whole working tree is there, .gpu carried along):
#   source .gpu/env.sh && dotnet .gpu/app/NAME/NAME.dll [args]
# An xunit v3 test project is an executable: `dotnet .gpu/app/X.Tests/X.Tests.dll` runs its tests
# without the SDK (add -trait "Category=Gpu" to filter, -method/-class to narrow).
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
[ $# -ge 1 ] || set -- tests/VteKernels.Cuda.Tests/VteKernels.Cuda.Tests.csproj bench/VteKernels.Bench/VteKernels.Bench.csproj
# .gpu/ is in .gitignore; a checkout without that line gets it in its exclude file (a worktree's is the common one).
if ! git check-ignore -q .gpu/dotnet.tar.xz; then
  ex=$(git rev-parse --git-path info/exclude); mkdir -p "$(dirname "$ex")"; echo '/.gpu/' >> "$ex"
fi
mkdir -p .gpu/app

droot=$(dirname "$(readlink -f "$(command -v dotnet)")")
rt=$(ls -d "$droot"/shared/Microsoft.NETCore.App/*/ | sort -V | tail -1)
rtver=$(basename "$rt")
if [ ! -f .gpu/dotnet.tar.xz ] || [ "$(cat .gpu/dotnet.version 2>/dev/null)" != "$rtver" ]; then
  echo "packing .NET runtime $rtver ..."
  tar -C "$droot" -cf - dotnet host "shared/Microsoft.NETCore.App/$rtver" | xz -T0 -6 > .gpu/dotnet.tar.xz
  echo "$rtver" > .gpu/dotnet.version
fi

for proj in "$@"; do
  name=$(basename "$proj" .csproj)
  rm -rf ".gpu/app/$name"
  echo "building $proj -> .gpu/app/$name"
  dotnet build "$proj" -c Release -o ".gpu/app/$name" -v quiet -nologo | grep -E "error|Warn|warn" || true
  [ -f ".gpu/app/$name/$name.dll" ] || { echo "build of $proj produced no $name.dll" >&2; exit 1; }
  # Native libraries of other platforms, and llama.cpp's CPU libraries (LLamaSharp.Backend.Cpu, ~110 MB, used by
  # the cpu-* benchmarks only), stay behind: the carried paths must fit in 64 MiB.
  rm -rf ".gpu/app/$name/runtimes"
done

cat > .gpu/env.sh <<'EOF'
# Sourced on the GPU host. Unpacks the carried .NET runtime and finds the CUDA libraries.
_gpu_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ ! -x /tmp/dotnet/dotnet ]; then mkdir -p /tmp/dotnet && tar -C /tmp/dotnet -xJf "$_gpu_dir/dotnet.tar.xz"; fi
export DOTNET_ROOT=/tmp/dotnet PATH=/tmp/dotnet:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# ICU may be missing on the host; invariant globalization needs none.
export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
[ -d /usr/local/cuda ] && export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
_gpu_add() { case ":${LD_LIBRARY_PATH:-}:" in *":$1:"*) ;; *) export LD_LIBRARY_PATH="$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}";; esac; }
for _lib in 'libcuda.so.1' 'libnvrtc.so.*' 'libcublasLt.so.*' 'libcublas.so.*'; do
  _hit=$(ldconfig -p 2>/dev/null | awk -v p="$_lib" 'BEGIN{gsub(/\./,"\\.",p);gsub(/\*/,".*",p)} $1 ~ "^"p"$" {print $NF; exit}')
  if [ -z "$_hit" ]; then
    _hit=$(find /usr/local/nvidia /usr/local/cuda/lib64 /usr/local/cuda/targets /usr/local/cuda-*/lib64 \
                /usr/lib/x86_64-linux-gnu /opt -maxdepth 8 -name "$_lib" 2>/dev/null | grep -v stubs | sort -V | tail -1)
    [ -n "$_hit" ] && _gpu_add "$(dirname "$_hit")"
  fi
  echo "gpu-env: ${_lib%%.so*}: ${_hit:-NOT FOUND}"
done
echo "gpu-env: CUDA_HOME=${CUDA_HOME:-unset} dotnet $(dotnet --list-runtimes 2>/dev/null | awk '{print $2}' | head -1)"
command -v nvidia-smi >/dev/null && nvidia-smi -L
EOF
du -sh .gpu | sed 's/^/staged: /'
size=$(du -sm .gpu | cut -f1); [ "$size" -lt 60 ] || { echo "error: .gpu is ${size} MiB; a device run carries at most 64 MiB with the working tree" >&2; exit 1; }
echo "device run: carry [\".gpu\"], command: bash tools/gpu/verify.sh (or: source .gpu/env.sh && dotnet .gpu/app/NAME/NAME.dll ...)"

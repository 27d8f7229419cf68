#!/usr/bin/env bash
# The GPU check, as run.sh of the bundle that tools/gpu-bundle.sh makes: on a machine with an OpenCL GPU (no Swift,
# no -dev packages, nothing fetched), it writes to RESULTS: devices.txt, parity.txt (every op harness case on the
# GPU against the CPU reference), bench-opencl.{txt,json} (every `bench` workload), torch-cuda.{txt,json} (the same
# workloads in PyTorch CUDA, with the ratios), pretrain/ (a short DDPM pretraining on the GPU with its sample grid)
# and summary.txt (each step's exit status and seconds). Each step has a time limit; all of them add up to 8 minutes.
#
# Usage: run.sh RESULTS [--seconds S] [--limit-scale K] [--pretrain-steps N]
#   --seconds: timing per bench workload (default 0.5); --limit-scale: an integer that multiplies every step's time
#   limit (default 1; more where the OpenCL device is a slow CPU, as when the bundle is tested on PoCL);
#   --pretrain-steps: steps of the short pretraining (default 200, a sample grid every 100).
set -uo pipefail
usage="usage: $0 RESULTS [--seconds S] [--limit-scale K] [--pretrain-steps N]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
mkdir -p "$1" && results=$(cd "$1" && pwd)
shift
seconds=0.5 scale=1 pretrain_steps=200
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || { echo "run.sh: $1 needs a value; $usage" >&2; exit 2; }
    case "$1" in
        --seconds) seconds=$2 ;;
        --limit-scale) scale=$2 ;;
        --pretrain-steps) pretrain_steps=$2 ;;
        *) echo "run.sh: unknown option '$1'; $usage" >&2; exit 2 ;;
    esac
    shift 2
done
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$here/payload.tar.xz" -C "$work"
histodiff=$work/bin/histodiff bench=$work/bin/bench
summary=$results/summary.txt
echo "bundle $(cat "$work/COMMIT") on $(hostname), $(date -u +%FT%TZ)" > "$summary"

# The OpenCL ICD loader finds drivers through .icd files. Where none names NVIDIA's library and the driver is
# installed, register it for this run (a private vendors folder: nothing under /etc changes).
vendors=$work/vendors
mkdir -p "$vendors"
cp /etc/OpenCL/vendors/*.icd "$vendors/" 2>/dev/null
if ! grep -qs nvidia "$vendors"/*.icd; then
    nvidia=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1/{print $NF; exit}')
    for dir in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/lib; do
        [ -n "$nvidia" ] || { [ -e "$dir/libnvidia-opencl.so.1" ] && nvidia=$dir/libnvidia-opencl.so.1; }
    done
    if [ -n "$nvidia" ]; then
        echo "$nvidia" > "$vendors/nvidia.icd"
        echo "registered the NVIDIA ICD: $nvidia" | tee -a "$summary"
    fi
fi
export OCL_ICD_VENDORS=$vendors
export HISTODIFF_CACHE_DIR=$work/cache

# step NAME LIMIT_SECONDS COMMAND…: runs it with its output in RESULTS/NAME.txt, records status and time.
step() {
    local name=$1 limit=$(($2 * scale))
    shift 2
    local start=$SECONDS status
    timeout --kill-after=10 "$limit" "$@" > "$results/$name.txt" 2>&1
    status=$?
    local verdict=ok
    [ $status -eq 0 ] || verdict="exit $status"
    [ $status -eq 124 ] && verdict="timed out after ${limit} s"
    printf '%-14s %-22s %4d s  %s\n' "$name" "$verdict" $((SECONDS - start)) "$(tail -n 1 "$results/$name.txt")" |
        tee -a "$summary"
}

step devices 30 "$histodiff" devices
step parity 90 "$bench" --parity --backend opencl
step bench-opencl 150 "$bench" --backend opencl --seconds "$seconds" --json "$results/bench-opencl.json"
if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    compare=()
    [ -e "$results/bench-opencl.json" ] && compare=(--compare "$results/bench-opencl.json")
    step torch-cuda 90 python3 "$work/python/benchmarks/torch_peer.py" --device cuda --seconds "$seconds" \
        --json "$results/torch-cuda.json" "${compare[@]}"
else
    echo "torch-cuda     skipped: python3 has no torch with CUDA" | tee -a "$summary"
fi
"$histodiff" synth --out "$work/synth" --count 16 --size 128 > /dev/null
step pretrain 120 "$histodiff" pretrain --data "$work/synth" --out "$results/pretrain" --device opencl \
    --steps "$pretrain_steps" --sample-every 100 --patch 64 --batch 16 --samples 16
echo "results: $results" | tee -a "$summary"

#!/usr/bin/env bash
# The GPU path in one bounded run of 8 minutes, installation included: install, check fp16 against fp32
# and that CUDA is really active, measure images/s at batch 1/32/256 and text p50, print one table.
#
#   bench/gpu_check.sh [--dry-run] [--bundle DIR] [--work DIR] [--json FILE]
#
# On a GPU machine it makes its own venv (.cache/gpu-check/venv, or GPU_CHECK_VENV) with the project and the
# onnxruntime-gpu build that matches the driver's CUDA (12 or 13), with NVIDIA's CUDA/cuDNN wheels, so
# no system CUDA toolkit is needed; pip must reach PyPI. Building the random ViT-B/32 bundle needs
# torch: where torch is absent, pass --bundle with an fp32 bundle made elsewhere by
# `python -m embedder_service.models random --preset vit-b-32 --out DIR` (600 MB), or with its skeleton
# (`python -m bench.skeleton strip DIR SKEL`: a few MB, easy to carry; the weights are drawn again here).
# --dry-run uses the current Python (PYTHON, else .venv/bin/python) and no GPU: tiny bundle, CPU only.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0 given=0
for arg in "$@"; do
    [[ "$arg" == --dry-run ]] && dry=1
    [[ "$arg" == --bundle || "$arg" == --bundle=* ]] && given=1
done

if (( dry )); then
    py=${PYTHON:-.venv/bin/python}
    exec timeout 180 "$py" -m bench.gpu_check "$@"
fi

venv=${GPU_CHECK_VENV:-.cache/gpu-check/venv}
driver_cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$' || true)
if [[ -z "$driver_cuda" ]]; then
    echo "gpu_check: nvidia-smi finds no NVIDIA driver here; use --dry-run on a machine without a GPU" >&2
    exit 1
fi
# onnxruntime-gpu 1.27 and later are built for CUDA 13; 1.26.0 is the last for CUDA 12 drivers.
# (cuBLAS comes with the cuDNN wheel, which depends on it.)
if (( driver_cuda >= 13 )); then ort='onnxruntime-gpu[cuda,cudnn]>=1.27'
else ort='onnxruntime-gpu[cuda,cudnn]==1.26.0'; fi
echo "gpu_check: driver supports CUDA $driver_cuda; installing $ort into $venv" >&2

mkdir -p "$(dirname "$venv")"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
timeout 240 "$venv/bin/pip" install -q -e . "$ort" 'grpcio-tools==1.85.1' 'scikit-image>=0.24'
if (( ! given )) && ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    # The bundle builder needs torch; the CPU wheel is 0.2 GB where PyPI's CUDA one brings gigabytes.
    timeout 120 "$venv/bin/pip" install -q torch --index-url https://download.pytorch.org/whl/cpu \
        && timeout 60 "$venv/bin/pip" install -q 'transformers>=4.44' \
        || echo "gpu_check: could not install torch to build the bundle; pass --bundle DIR" >&2
fi
"$venv/bin/python" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. protos/semsearch/v1/*.proto
# Whatever the installation took, the whole run stays within 8 minutes (at least 3 left for the check).
left=$(( 480 - SECONDS - 10 ))
(( left >= 180 )) || left=180
exec timeout $(( left + 10 )) "$venv/bin/python" -m bench.gpu_check --budget-s "$left" "$@"

#!/usr/bin/env bash
# The GPU figures of the README, in one prepared run of a few minutes on one CUDA GPU:
#   training.py      LeNet-5 and AlexNet training images/s at batch 256: ours with mixed
#                    precision and channels-last, in float32 with channels-last, in float32
#                    NCHW, and the plain PyTorch loop; with 2 or more GPUs also ours on 2 and on
#                    all of them (DDP over NCCL, one GPU a rank, as train.<net>.nproc runs it)
#   ddp_projection.py what 2, 4 and 8 GPUs would give AlexNet's training (DDP), projected from
#                    the one-GPU step just measured and assumed link bandwidths
#   determinism.py   two AlexNet trainings from one seed, bit-identical? (ours vs torch's LRN)
#   alexnet_input.py AlexNet's train-time input path, uint8 map -> augmented batch on the GPU
#   projection.py    54 units per conv layer: ours vs Captum per-neuron and the autograd
#                    floor, and the chunk the engine picks vs the best of a sweep
#   mining.py        top-k mining vs a bare forward
#   mining.py --processes  the mine stage's work on VGG-16 on one GPU (with 2 or more GPUs also
#                    on 2 and on all of them, NCCL, as mine.<net>.nproc runs it): the per-GPU rate
#                    docs/gpus.md projects ImageNet's mining from
#   feature_vis.py   AlexNet conv5 feature visualization: ours vs Lucent's recipe (batched, one
#                    unit a call), and ours under bfloat16 autocast against float32 (the 1 % rule)
#   feature_vis_cost.py a whole AlexNet and GoogLeNet visualization, estimated from timed steps
#
#   bash benchmarks/gpu.sh [OUT_DIR]     # default benchmarks/results; needs captum for projection.py
#
# Runs from a source checkout without installing (PYTHONPATH=src), so it also works on a box
# whose Python has torch but not this package's other dependencies.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA GPU"; print(torch.cuda.get_device_name(0), torch.__version__)' || exit 1
status=0
run() { echo "== $*"; python3 "$@" || status=1; }
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
ranks=()
if [ "$gpus" -ge 2 ]; then ranks=(2); fi
if [ "$gpus" -gt 2 ]; then ranks+=("$gpus"); fi
run benchmarks/training.py --device cuda --ranks "${ranks[@]}" --out "$out/training_cuda.json"
run benchmarks/ddp_projection.py --measured "$out/training_cuda.json" --out "$out/ddp_projection.json"
run benchmarks/determinism.py --device cuda --out "$out/determinism_cuda.json"
run benchmarks/alexnet_input.py --device cuda --out "$out/alexnet_input_cuda.json"
run benchmarks/projection.py --device cuda --out "$out/projection_cuda.json"
run benchmarks/mining.py --device cuda --out "$out/mining_cuda.json"
run benchmarks/mining.py --net vgg16 --device cuda --processes 1 "${ranks[@]}" --out "$out/mining_processes_vgg16_cuda.json"
run benchmarks/feature_vis.py --device cuda --amp --out "$out/feature_vis_cuda.json"
run benchmarks/feature_vis_cost.py --device cuda --out "$out/feature_vis_cost_cuda.json"
exit $status

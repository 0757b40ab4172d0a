#!/usr/bin/env bash
# The seeds' GPU workflow, checked in one run (under 8 minutes on one GPU):
#   1. the torch engine on CUDA for every preset: a checkpoint's predictions on the CPU and on
#      the GPU agree (same argmax, outputs within round-off), and one full-MNIST epoch is timed;
#   2. a single-GPU torchrun run (DistributedDataParallel over NCCL) finishes and resumes;
#   3. `lenet5 bench` with the torch peers (their CUDA figures are in the torch engine's epoch
#      times above; bench itself measures the CPU peers beside the NumPy engine).
# Usage: MNIST=/path/to/mnist benchmarks/gpu_check.sh [OUT_DIR]
# Without MNIST the data is downloaded (the device machine has no network: pass it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
DATA=(${MNIST:+--data-dir "$MNIST"})
exec > >(tee "$LOG") 2>&1
echo "# gpu_check $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
lscpu | grep -m1 "Model name" || true
python -c "import torch, lenet5; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'lenet5', lenet5.__version__)"

echo "## 1. every preset on CUDA: one full epoch, then CPU vs CUDA predictions of its checkpoint"
for preset in seed-tanh seed-sigmoid modern lecun1998; do
  extra=()
  [ "$preset" = lecun1998 ] && extra=(--optimizer sgd --lr 0.0005 --batch-size 16)  # SDLM is NumPy-only
  python -m lenet5.cli train --preset "$preset" "${DATA[@]}" --epochs 1 --engine torch --device cuda \
      --out "$OUT/run-$preset" --no-plots --quiet "${extra[@]}"
  python - "$OUT/run-$preset" <<'PY'
import json, sys, numpy as np
from lenet5.checkpoint import load_checkpoint
from lenet5.datasets import load_dataset
from lenet5.torch_replica import TorchModel
run = sys.argv[1]
model, meta = load_checkpoint(f"{run}/model.safetensors")
images = load_dataset("mnist", meta["settings"].get("data_dir"), progress=False).test.images[:2000]
outs = {}
for device in ("cpu", "cuda"):
    engine = TorchModel.from_spec(model.spec, seed=None, device=device)
    engine.load_state_dict(model.state_dict())
    outs[device] = engine.infer(images)
numpy_out = model.infer(images)
same = float((outs["cpu"].argmax(1) == outs["cuda"].argmax(1)).mean())
diff = float(np.abs(outs["cpu"] - outs["cuda"]).max() / np.abs(outs["cpu"]).max())
record = json.loads(open(f"{run}/metrics.jsonl").readline())
print(f"{meta['model']['preset']:<13} epoch {record['train_seconds']:.1f} s train, test acc {100 * record['test_acc']:.2f}%; "
      f"CPU vs CUDA argmax agree {100 * same:.2f}%, max rel diff {diff:.1e}; "
      f"NumPy vs CUDA argmax agree {100 * float((numpy_out.argmax(1) == outs['cuda'].argmax(1)).mean()):.2f}%")
assert same >= 0.999 and diff < 1e-3, "CPU and CUDA disagree"
PY
done

echo "## 2. torchrun, one GPU, NCCL: one epoch, then --resume for a second"
python -m torch.distributed.run --standalone --nproc_per_node 1 -m lenet5.cli train --engine torch --device cuda \
    "${DATA[@]}" --epochs 1 --out "$OUT/ddp" --no-plots --quiet
python -c "import json; print('world_size', json.load(open('$OUT/ddp/config.json'))['settings']['world_size'])"
python -m torch.distributed.run --standalone --nproc_per_node 1 -m lenet5.cli train --engine torch --device cuda \
    --resume "$OUT/ddp" --epochs 2 --no-plots --quiet
tail -n 2 "$OUT/ddp/metrics.jsonl"

echo "## 3. lenet5 bench (CPU peers beside the NumPy engine, on this machine's CPU)"
python -m lenet5.cli bench --batch-sizes 64,256 --repeats 3 --steps 20 --infer-images 5000
echo "# done $(date -u +%FT%TZ)"

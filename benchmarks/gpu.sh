#!/usr/bin/env bash
# Throughput of the seed model on one GPU: fp32 eager, bf16 autocast (FNO trunk; spectral parts fp32),
# bf16 + torch.compile, and the fp32-vs-bf16 loss curves, in one script. Writes JSON into $OUT
# (default benchmarks/gpu_results) and prints the tables. Needs torch with CUDA already installed.
#
#     OUT=/tmp/gpu bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_results}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps -e . >/dev/null
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python3 benchmarks/throughput.py --preset seed --batch-size 128 --device cuda --json "$OUT/throughput_fp32.json"
python3 benchmarks/throughput.py --preset seed --batch-size 128 --device cuda --bf16 --json "$OUT/throughput_bf16.json"
python3 benchmarks/throughput.py --preset seed --batch-size 128 --device cuda --bf16 --compile \
    --json "$OUT/throughput_bf16_compile.json"
python3 benchmarks/bf16_loss_curve.py --preset seed --device cuda --iterations 300 --json "$OUT/bf16_loss_curve.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {k: json.load(open(f"{out}/throughput_{k}.json")) for k in ("fp32", "bf16", "bf16_compile")}
base = rows["fp32"]
print("| variant | train img/s | x fp32 | sample img-steps/s | x fp32 |\n|---|---|---|---|---|")
for k, r in rows.items():
    print(f"| {k} | {r['train_img_per_s']:.1f} | {r['train_img_per_s'] / base['train_img_per_s']:.2f} | "
          f"{r['sample_img_steps_per_s']:.1f} | {r['sample_img_steps_per_s'] / base['sample_img_steps_per_s']:.2f} |")
json.dump({k: {m: r[m] for m in ("train_img_per_s", "sample_img_steps_per_s", "gemm_gflops")} for k, r in rows.items()},
          open(f"{out}/summary.json", "w"), indent=2)
PY

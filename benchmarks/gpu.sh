#!/usr/bin/env bash
# The seed model (with the spec's sparse encoder) on one GPU: training and sampling throughput in fp32,
# bf16 (training: autocast of the FNO trunk; sampling: also the bf16 inference path) and bf16 +
# torch.compile; sampling per rows per call in fp32 and bf16; the conditional data path on the device;
# and a short conditional train + reconstruct on a generated CIFAR-shaped folder. Writes JSON into $OUT (default
# benchmarks/gpu_results), one summary.json, and prints the tables. Needs torch with CUDA installed.
#
#     OUT=/tmp/gpu bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_results}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps -e . >/dev/null
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
python3 benchmarks/throughput.py --preset seed --batch-size 128 --device cuda --bf16-sampling --json "$OUT/throughput_fp32.json"
python3 benchmarks/throughput.py --preset seed --batch-size 128 --device cuda --bf16 --json "$OUT/throughput_bf16.json"
python3 benchmarks/throughput.py --preset seed --batch-size 128 --device cuda --bf16 --compile \
    --json "$OUT/throughput_bf16_compile.json"
python3 benchmarks/throughput.py --preset seed --batch-size 512 --device cuda --sample-rows 64,128,256,512 \
    --bf16-sampling --json "$OUT/sampling_rows.json"
python3 benchmarks/data_path.py --device cuda --workers 4 --json "$OUT/data_path.json"
python3 - "$OUT" <<'PY'
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from data_path import write_cifar_folder
from ddo.cli import main
out = sys.argv[1]
with tempfile.TemporaryDirectory() as d:
    write_cifar_folder(Path(d) / "cifar", 5000, 1000)
    t0 = time.time()
    assert main(["train", "--preset", "seed", "--dataset", "cifar10", "--data-root", f"{d}/cifar", "--out", f"{d}/run",
                 "--conditioning", "sparse-encoder", "--iterations", "200", "--device", "cuda", "--num-sample", "0",
                 "--no-progress"]) == 0
    train_s = time.time() - t0
    t0 = time.time()
    assert main(["reconstruct", "--checkpoint", f"{d}/run/checkpoint.pt", "--dataset", "cifar10", "--data-root",
                 f"{d}/cifar", "--limit", "256", "--num-samples", "4", "--steps", "250", "--device", "cuda",
                 "--out", f"{out}/reconstruct", "--no-progress"]) == 0
    json.dump({"train_200_steps_batch_128_s": train_s, "reconstruct_256_images_4x250_steps_s": time.time() - t0},
              open(f"{out}/conditional_run.json", "w"), indent=2)
rows = {k: json.load(open(f"{out}/throughput_{k}.json")) for k in ("fp32", "bf16", "bf16_compile")}
base = rows["fp32"]
print("| variant | train img/s | x fp32 | sample img-steps/s | x fp32 |\n|---|---|---|---|---|")
for k, r in rows.items():
    print(f"| {k} | {r['train_img_per_s']:.1f} | {r['train_img_per_s'] / base['train_img_per_s']:.2f} | "
          f"{r['sample_img_steps_per_s']:.1f} | {r['sample_img_steps_per_s'] / base['sample_img_steps_per_s']:.2f} |")
summary = {k: {m: r[m] for m in ("train_img_per_s", "sample_img_steps_per_s", "sample_img_steps_per_s_bf16",
                                 "gemm_gflops")} for k, r in rows.items()}
summary["data_path"] = json.load(open(f"{out}/data_path.json"))
summary["conditional_run"] = json.load(open(f"{out}/conditional_run.json"))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
PY

"""Kill-and-resume and multi-process training under torchrun."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from ddo.cli import main

from .conftest import assert_states_equal, tiny_train_args


def _steps_logged(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1])["step"] if lines else 0


@pytest.mark.slow
def test_sigkill_then_resume_loses_at_most_the_steps_since_the_checkpoint(tmp_path, image_folder):
    run = tmp_path / "run"
    args = tiny_train_args(run, image_folder, "--iterations", "100000", "--ckpt-every", "5")
    proc = subprocess.Popen([sys.executable, "-m", "ddo", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while _steps_logged(run) < 13 and time.time() < deadline:
            time.sleep(0.05)
        assert _steps_logged(run) >= 13, "training did not start in time"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    logged = _steps_logged(run)
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert saved % 5 == 0 and 0 <= logged - saved < 5 + 2  # at most the steps since the last checkpoint
    assert main(["train", "--out", str(run), "--resume", "--iterations", str(saved + 3), "--no-progress"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == saved + 3
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, saved + 4))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_shards(tmp_path, image_folder):
    common = ["--iterations", "3", "--batch-size", "8", "--ckpt-every", "2"]
    single = tmp_path / "single"
    assert main(tiny_train_args(single, image_folder, *common, "--grad-accum", "2")) == 0
    multi = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "-m", "ddo", *tiny_train_args(multi, image_folder, *common)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    a = torch.load(single / "checkpoint.pt", weights_only=True)
    b = torch.load(multi / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 3
    # the RNG states differ by construction (each rank draws its own shard's noise)
    assert_states_equal(a, b, keys=("model", "ema", "optimizer", "step"), atol=1e-5)
    la = [json.loads(ln)["loss"] for ln in (single / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(ln)["loss"] for ln in (multi / "metrics.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-5)
    # resume under torchrun
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "-m", "ddo", "train", "--out", str(multi), "--resume",
           "--iterations", "5", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert torch.load(multi / "checkpoint.pt", weights_only=True)["step"] == 5

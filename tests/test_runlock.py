"""One writer per run directory: a second `ddo train` into a directory in use is refused in one line;
the lock dies with its process, so a killed run resumes at once."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ddo import runlock
from ddo.cli import main
from ddo.errors import UserError

from .conftest import tiny_train_args


def test_a_held_directory_is_refused_and_released_on_exit(image_folder, tmp_path, capsys):
    out = tmp_path / "runs" / "a"
    lock = runlock.acquire(out)
    assert runlock.held(out) and (out / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(UserError, match=f"{out} is in use by another ddo train \\(process {os.getpid()}\\)"):
        runlock.acquire(out)
    capsys.readouterr()
    assert main(tiny_train_args(out, image_folder, "--iterations", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in use by another ddo train" in err and "choose another --out" in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    lock.release()
    assert not runlock.held(out) and not (tmp_path / "runs").exists()  # the folders the lock made, still empty
    assert main(tiny_train_args(out, image_folder, "--iterations", "1")) == 0
    assert not runlock.held(out) and not (out / ".lock").exists()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]


def test_a_stale_lock_file_does_not_lock(image_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # left by a killed process: nobody holds it
    assert not runlock.held(out)
    assert main(tiny_train_args(out, image_folder, "--iterations", "1")) == 0


def _ddo(*args, stderr=subprocess.PIPE):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ddo", *args], stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                            env=env)


@pytest.mark.slow
def test_two_concurrent_trainings_then_kill_9_and_resume(image_folder, tmp_path):
    run = tmp_path / "run"
    first = _ddo(*tiny_train_args(run, image_folder, "--iterations", "100000", "--ckpt-every", "5"),
                 stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not (run / "checkpoint.pt").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert (run / "checkpoint.pt").exists() and runlock.held(run), "the first training did not start in time"
        for extra in (["--resume"], []):
            second = _ddo("train", "--out", str(run), "--iterations", "100001", "--no-progress", *extra)
            _, err = second.communicate(timeout=120)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert second.returncode == 2 and len(lines) == 1, err
            assert (f"{run} is in use by another ddo train (process {first.pid})" in lines[0]
                    if extra else "already holds a run" in lines[0]), lines[0]
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert not runlock.held(run)  # the kernel released it with the process
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert main(["train", "--out", str(run), "--resume", "--iterations", str(saved + 2), "--no-progress"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == saved + 2
    assert not [p for p in run.iterdir() if p.name.startswith(".")]

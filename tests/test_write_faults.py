"""A write the machine refuses (disk full, permission denied) leaves the previous file as it was, no
temporary file behind, and ends the command with one line naming the file and the reason (exit code
1: the input was fine)."""
import errno
import json

import pytest
import torch

import ddo.checkpoint
from ddo.checkpoint import atomic_write
from ddo.cli import main
from ddo.errors import WriteError

from .conftest import tiny_train_args


def _failing(code, when=lambda path: True):
    """A replacement for ``os.replace`` that fails with ``code`` for the paths ``when`` selects."""
    real = ddo.checkpoint.os.replace

    def replace(src, dst, *a, **k):
        if when(str(dst)):
            raise OSError(code, __import__("os").strerror(code), str(dst))
        return real(src, dst, *a, **k)

    return replace


def _one_line(capsys, *words):
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddo: error: could not write"), err
    for word in words:
        assert word in lines[0], lines[0]


def test_a_failed_write_keeps_the_previous_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(b"previous")

    def disk_full(f):
        f.write(b"half of the new ")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as e:
        atomic_write(path, disk_full)
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert str(e.value) == (f"could not write {path}: No space left on device; the previous file is unchanged; "
                            "free some space or write elsewhere")
    def denied(f):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(WriteError, match="nothing was written there; check the permissions"):
        atomic_write(tmp_path / "new.json", denied)
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_atomic_write_into_a_file_used_as_a_folder_is_a_write_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="could not write .*file/a.json"):
        atomic_write(tmp_path / "file" / "a.json", lambda f: f.write(b"{}"))


def test_training_whose_checkpoint_cannot_be_written_keeps_the_previous_one(image_folder, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(tiny_train_args(run, image_folder, "--iterations", "2")) == 0
    before = (run / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(ddo.checkpoint.os, "replace", _failing(errno.ENOSPC, lambda p: p.endswith("checkpoint.pt")))
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--iterations", "4", "--no-progress"]) == 1
    _one_line(capsys, f"{run / 'checkpoint.pt'}: No space left on device; the previous file is unchanged")
    assert (run / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    monkeypatch.undo()
    assert main(["train", "--out", str(run), "--resume", "--iterations", "4", "--no-progress"]) == 0  # not locked
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4


def test_calibration_and_results_that_cannot_be_written_keep_the_previous_files(tiny_runs, tmp_path, capsys,
                                                                                monkeypatch):
    import shutil

    from ddo_conditional.io.calibration_file import calibration_path

    checkpoint = tmp_path / "checkpoint.pt"
    shutil.copy(tiny_runs["cond"], checkpoint)
    calibrate = ["calibrate", "--checkpoint", str(checkpoint), "--limit", "2", "--num-samples", "2", "--steps", "1",
                 "--no-progress"]
    assert main(calibrate) == 0
    previous = calibration_path(checkpoint).read_bytes()
    monkeypatch.setattr(ddo.checkpoint.os, "replace", _failing(errno.EACCES))
    capsys.readouterr()
    assert main([*calibrate, "--seed", "5"]) == 1
    _one_line(capsys, "calibration.json: Permission denied; the previous file is unchanged; check the permissions")
    assert calibration_path(checkpoint).read_bytes() == previous

    out = tmp_path / "eval"
    argv = ["reconstruct", "--checkpoint", str(checkpoint), "--images", str(tiny_runs["images"]), "--limit", "1",
            "--num-samples", "2", "--steps", "1", "--out", str(out), "--no-progress"]
    monkeypatch.undo()
    assert main(argv) == 0
    metrics = (out / "metrics.json").read_bytes()
    monkeypatch.setattr(ddo.checkpoint.os, "replace", _failing(errno.ENOSPC, lambda p: p.endswith("metrics.json")))
    capsys.readouterr()
    assert main([*argv, "--seed", "3"]) == 1
    _one_line(capsys, "metrics.json: No space left on device; the previous file is unchanged")
    assert (out / "metrics.json").read_bytes() == metrics and json.loads(metrics)["seed"] == 0
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_log_line_the_disk_refuses_ends_the_run_in_one_line(image_folder, tmp_path, capsys, monkeypatch):
    import ddo.train

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    real_init = ddo.train._Log.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        if self.file is not None:
            self.file.close()
            self.file = FullDisk()

    monkeypatch.setattr(ddo.train._Log, "__init__", init)
    capsys.readouterr()
    assert main(tiny_train_args(tmp_path / "run", image_folder, "--iterations", "2")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device; free some space or write elsewhere" in err, err

"""CIFAR-10 as the paper's users run it: a `cifar-10-batches-py` folder, torchvision datasets, and an
opt-in download checked against a loopback server (nothing leaves the machine)."""
import hashlib
import http.server
import io
import json
import tarfile
import threading

import numpy as np
import pytest
import torch

from ddo.cli import main
from ddo.data import write_cifar_like
from ddo_conditional import FixedSparseMaskDataset, fixed_mask


def write_cifar(root, per_batch=4, seed=0):
    """A CIFAR-10-format folder: five train batches and a test batch of ``per_batch`` images each."""
    write_cifar_like(root, 5 * per_batch, per_batch, seed)
    return root


@pytest.fixture
def cifar_root(tmp_path):
    return write_cifar(tmp_path / "cifar")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--conditioning", "sparse-encoder"],
                                   ["--conditioning", "sparse-biharmonic", "--parameterization", "x0", "--loss",
                                    "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4", "--residual-scale", "context-input", "--refiner-width", "32"]])
def test_seed_model_trains_and_reconstructs_on_a_cifar_folder(tmp_path, cifar_root, extra, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "seed", "--dataset", "cifar10", "--data-root", str(cifar_root), "--out", str(run),
                 "--iterations", "2", "--batch-size", "4", "--num-sample", "0", "--no-progress", *extra]) == 0
    out = tmp_path / "rec"
    assert main(["reconstruct", "--checkpoint", str(run / "checkpoint.pt"), "--dataset", "cifar10", "--data-root",
                 str(cifar_root), "--split", "test", "--limit", "4", "--num-samples", "2", "--steps", "2",
                 "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_images"] == 4 and m["mask_seed"] == 42
    assert np.isfinite(m["methods"]["ddo-mean"]["psnr_query"])
    capsys.readouterr()


class _CIFAR10Folder:
    """torchvision's CIFAR10 on the test's folder (its checksums are those of the real files)."""

    def __new__(cls, root, train):
        from torchvision.datasets import CIFAR10
        from torchvision.transforms import ToTensor

        class Local(CIFAR10):
            def _check_integrity(self):
                return True

            def _load_meta(self):
                self.classes = [f"c{i}" for i in range(10)]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        return Local(str(root), train=train, transform=ToTensor())


def test_a_torchvision_cifar10_object_is_wrapped_directly(cifar_root):
    tv = _CIFAR10Folder(cifar_root, train=True)
    ds = FixedSparseMaskDataset(tv, seed=42)
    item = ds[3]
    image, label = tv[3]
    torch.testing.assert_close(item["image"], image * 2 - 1)  # ToTensor's [0, 1] mapped to [-1, 1]
    assert item["index"] == 3 and item["label"] == label
    ctx, _ = fixed_mask(42, 3, 32, 32)
    assert torch.equal(item["context_indices"], torch.from_numpy(ctx))
    torch.testing.assert_close(item["context_values"], item["image"].reshape(3, -1)[:, ctx].T)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch["context_values"].shape == (4, 102, 3)


def test_items_of_every_kind_follow_one_pixel_range_rule():
    from PIL import Image

    from ddo_conditional.data.datasets import as_item

    x01 = torch.rand(3, 8, 8)
    assert torch.equal(as_item((x01, 7), 5)["image"], x01 * 2 - 1) and as_item((x01, 7), 5)["index"] == 5
    assert torch.equal(as_item(x01, 2)["image"], x01 * 2 - 1)
    assert torch.equal(as_item({"image": x01 * 2 - 1, "index": 9}, 0)["image"], x01 * 2 - 1)
    assert as_item({"image": x01}, 4)["index"] == 4
    assert torch.equal(as_item(x01, 0, value_range="-1,1")["image"], x01)
    pil = Image.fromarray((np.arange(192).reshape(8, 8, 3)).astype(np.uint8))
    got = as_item(pil, 0)["image"]
    want = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255 * 2 - 1
    torch.testing.assert_close(got, want)
    with pytest.raises(TypeError, match="must hold an image tensor or a PIL image"):
        as_item(("not an image", 1), 0)


def _archive(tmp_path) -> bytes:
    src = write_cifar(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue()


@pytest.fixture
def loopback(tmp_path):
    """An HTTP server on 127.0.0.1 serving one CIFAR-format archive; yields (url, md5)."""
    payload = _archive(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz", hashlib.md5(payload).hexdigest()
    server.shutdown()


def test_download_fetches_verifies_and_refuses_a_wrong_checksum(tmp_path, loopback, monkeypatch, capsys):
    import ddo.data

    url, md5 = loopback
    monkeypatch.setattr(ddo.data, "CIFAR10_URL", url)
    args = ["--dataset", "cifar10", "--resolution", "32", "--ch", "8", "--ch-mult", "1", "--num-res-blocks", "1",
            "--modes", "4", "--batch-size", "4", "--iterations", "1", "--num-sample", "0", "--no-progress"]
    root = tmp_path / "data"
    # without --download nothing is fetched, and the error names the flag
    assert main(["train", "--out", str(tmp_path / "r0"), "--data-root", str(root), *args]) == 2
    assert "pass --download" in capsys.readouterr().err and not root.exists()
    # a wrong checksum: one line, exit 2, nothing left behind
    monkeypatch.setattr(ddo.data, "CIFAR10_MD5", "0" * 32)
    assert main(["train", "--out", str(tmp_path / "r1"), "--data-root", str(root), "--download", *args]) == 2
    err = capsys.readouterr().err
    assert "could not download CIFAR-10" in err and len(err.strip().splitlines()) == 1
    assert not root.exists() and not (tmp_path / "r1").exists()
    # the right checksum: fetched, extracted, trained on
    monkeypatch.setattr(ddo.data, "CIFAR10_MD5", md5)
    assert main(["train", "--out", str(tmp_path / "r2"), "--data-root", str(root), "--download", *args]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    # a dataset that is not downloaded refuses the flag
    assert main(["train", "--out", str(tmp_path / "r3"), "--download", *args[2:], "--dataset", "natural-patches"]) == 2
    assert "--download applies to --dataset cifar10" in capsys.readouterr().err


@pytest.mark.slow
def test_worker_processes_give_the_same_run(tmp_path, image_folder):
    from .conftest import assert_states_equal, tiny_train_args

    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main(tiny_train_args(out, image_folder, "--iterations", "5", "--num-workers", workers,
                                    "--conditioning", "sparse-biharmonic", "--parameterization", "x0",
                                    "--loss", "x0-mse", "--loss-weighting", "relative", "--loss-floor", "1e-4", "--augment", "dihedral")) == 0
        runs[workers] = torch.load(out / "checkpoint.pt", weights_only=True)
    assert_states_equal(runs["0"], runs["2"])

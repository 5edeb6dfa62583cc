"""Regression tests of bad input that escaped as a traceback, a kill for memory, a second line on
stderr or a file left behind; each found by hand or by the property-based tests (tests/test_fuzz_*.py)
and fixed. Every refusal: exit code 2, one line on stderr, no file created or changed."""
import io
import json
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from ddo.api import hookimpl
from ddo.cli import main
from ddo.errors import UserError

from .conftest import tiny_train_args
from .fuzzing import cli_warnings, snapshot


def refused(capsys, argv, *words, rc=2):
    """Run ``argv``; assert exit code ``rc``, one stderr line ``ddo...: error: ...`` holding ``words``,
    no warning; return the line."""
    capsys.readouterr()
    with cli_warnings() as caught:
        code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == rc and len(lines) == 1 and lines[0].startswith("ddo") and ": error: " in lines[0], (code, err)
    assert not caught, [str(w.message) for w in caught]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def recon(checkpoint, out, *extra, source=("--images",)):
    return ["reconstruct", "--checkpoint", str(checkpoint), *source, "--limit", "1", "--num-samples", "2",
            "--steps", "1", "--out", str(out), "--no-progress", *extra]


@pytest.fixture
def limited(monkeypatch):
    monkeypatch.setenv("DDO_MEMORY_LIMIT", "512M")


# --- the two escapes of the issue ---------------------------------------------------------------
def test_reconstruct_out_naming_an_existing_file_is_refused(tiny_runs, tmp_path, capsys):
    """Was: FileExistsError traceback, exit code 1, after the whole evaluation."""
    out = tmp_path / "results"
    out.write_text("keep me")
    before = snapshot(tmp_path)
    refused(capsys, recon(tiny_runs["cond"], out, source=("--images", str(tiny_runs["images"]))),
            f"--out {out} is an existing file, not a folder")
    refused(capsys, ["points", "--checkpoint", str(tiny_runs["points"]), "--points", str(tmp_path / "x.csv"),
                     "--out", str(out)], "is an existing file")
    refused(capsys, recon(tiny_runs["cond"], out / "sub", source=("--images", str(tiny_runs["images"]))),
            f"{out} is a file, so nothing can be written inside it")
    assert snapshot(tmp_path) == before and out.read_text() == "keep me"


def test_reconstruct_at_resolution_100000_is_refused_before_allocating(tiny_runs, tmp_path, capsys):
    """Was: killed by the kernel for memory (exit code 137, no message). Refused on any machine, with
    the estimate and the flag to change."""
    for source in (("--images", str(tiny_runs["images"])), ("--dataset", "natural-patches")):
        line = refused(capsys, recon(tiny_runs["cond"], tmp_path / "out", "--resolution", "100000", source=source),
                       "reconstructing 1 image at 100,000x100,000", "TiB of memory", "lower --resolution to")
        assert "available" in line
    csv = tmp_path / "obs.csv"
    csv.write_text("x,y,r,g,b\n" + "".join(f"{0.1 + 0.2 * (i % 4)},{0.1 + 0.2 * (i // 4)},0.5,0.5,0.5\n"
                                           for i in range(16)))
    refused(capsys, ["points", "--checkpoint", str(tiny_runs["points"]), "--points", str(csv), "--resolution",
                     "100000", "--out", str(tmp_path / "out")], "points at 100,000x100,000", "--resolution to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs.csv"]


def test_reconstruct_with_a_batch_size_beyond_sys_maxsize_runs(tiny_runs, tmp_path, capsys):
    """Was: ``ValueError: Stop argument for islice()`` traceback (found by tests/test_fuzz_cli.py): the
    rows per call went to a DataLoader as its batch size. A batch size larger than the images is valid."""
    for rows in ("99999999999999999999", str(2 ** 63)):
        out = tmp_path / f"out{len(rows)}"
        assert main(recon(tiny_runs["cond"], out, "--batch-size", rows, "--num-samples", "1",
                          source=("--images", str(tiny_runs["images"])))) == 0
        methods = json.loads((out / "metrics.json").read_text())["methods"]
        assert np.isfinite(methods["ddo-sample"]["psnr_query"]), methods["ddo-sample"]


def test_periodic_previews_of_no_samples_are_refused(image_folder, tmp_path, capsys):
    """Was: ``ZeroDivisionError`` traceback from the preview grid after the first step (found by
    tests/test_fuzz_cli.py, long profile): ``--num-sample 0 --sample-every 1``."""
    out = tmp_path / "run"
    refused(capsys, tiny_train_args(out, image_folder, "--iterations", "1", "--sample-every", "1"),
            "--sample-every 1 draws preview samples and --num-sample is 0")
    assert not out.exists()


# --- memory guards ------------------------------------------------------------------------------
def test_memory_guards_name_the_flag_and_how_far(tiny_runs, image_folder, tmp_path, capsys, limited):
    refused(capsys, ["sample", "--checkpoint", str(tiny_runs["uncond"]), "--num", "100000", "--out",
                     str(tmp_path / "g.png")], "100000 samples at 16x16", "the 512.0 MiB that DDO_MEMORY_LIMIT allows",
            "lower --num to")
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "1", "--batch-size", "100000"),
            "a training step of 100000 images", "lower --batch-size to", "(or raise --grad-accum)")
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "1", "--ch", "100000"), "--ch to")
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "1", "--conditioning",
                                    "sparse-setconv", "--parameterization", "x0", "--point-feature-dim", "1000000"),
            "--point-feature-dim to")
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "1", "--num-sample", "1000000"),
            "preview samples", "--num-sample to")
    refused(capsys, recon(tiny_runs["cond"], tmp_path / "out", "--num-samples", "1000000",
                          source=("--images", str(tiny_runs["images"]))), "--num-samples to")
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_the_thin_plate_baseline_is_refused_where_its_dense_solve_cannot_fit(tiny_runs, tmp_path, capsys, limited):
    from ddo_conditional.inference.memory import check_thin_plate, thin_plate_bytes

    assert thin_plate_bytes(100, 16) == 8 * 6 * 103 ** 2 + 8 * 3 * 256 * 103
    assert check_thin_plate(0.1, 64) > 0  # 410 points: fits
    with pytest.raises(UserError, match=r"thin-plate baseline at 400x400 \(0.3 of the pixels observed\).*lower "
                       r"--resolution to [0-9,]+ or less \(or leave thin-plate out of --baselines\)"):
        check_thin_plate(0.3, 400)
    refused(capsys, recon(tiny_runs["cond"], tmp_path / "out", "--baselines", "cubic,spline",
                          source=("--images", str(tiny_runs["images"]))), "--baselines", "nearest,linear")
    out = tmp_path / "tps"
    assert main(recon(tiny_runs["cond"], out, "--baselines", "thin-plate,biharmonic",
                      source=("--images", str(tiny_runs["images"])))) == 0
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert {"thin-plate", "biharmonic"} <= set(methods) and "cubic" not in methods


def test_a_csv_too_large_for_the_spline_is_refused_before_it_is_parsed(tiny_runs, tmp_path, capsys, limited,
                                                                      monkeypatch):
    import ddo_conditional.cli.points as scattered

    csv = tmp_path / "big.csv"
    csv.write_text("x,y,r,g,b\n" + "0.5,0.5,0.5,0.5,0.5\n" * 100_000)
    monkeypatch.setattr(scattered, "read_points", lambda *a, **k: pytest.fail("parsed before the memory check"))
    refused(capsys, ["points", "--checkpoint", str(tiny_runs["points"]), "--points", str(csv), "--out",
                     str(tmp_path / "out")], "100,000 points", "lower the number of points in the CSV to")


def test_guard_finds_the_largest_value_that_fits(monkeypatch):
    from ddo.memory import SAFETY, Knob, guard, parse_size

    monkeypatch.setenv("DDO_MEMORY_LIMIT", "1M")
    assert parse_size("1M") == 1 << 20 and parse_size("2.5G") == int(2.5 * (1 << 30)) and parse_size("123") == 123
    assert guard("small", lambda n: 1000 * n, [Knob("n", "--n", 10)]) == int(SAFETY * 10_000)
    with pytest.raises(UserError) as e:
        guard("big", lambda n, m: 1000 * n * m, [Knob("n", "--n", 10_000), Knob("m", "--m", 3)])
    largest = int((1 << 20) / SAFETY / 3000)
    assert f"lower --n to {largest:,} or less" in str(e.value) and "--m" not in str(e.value)
    assert guard("small", lambda n: 1000 * n, [Knob("n", "--n", largest * 3)]) > 0
    monkeypatch.setenv("DDO_MEMORY_LIMIT", "lots")
    with pytest.raises(UserError, match="DDO_MEMORY_LIMIT='lots' is not a size"):
        guard("x", lambda n: n, [Knob("n", "--n", 1)])


def test_available_memory_is_read_from_the_machine(monkeypatch):
    from ddo.memory import available_bytes

    monkeypatch.delenv("DDO_MEMORY_LIMIT", raising=False)
    avail, source = available_bytes()
    assert source == "available" and avail > 0


# --- out locations ------------------------------------------------------------------------------
def test_every_command_refuses_an_out_of_the_wrong_kind(tiny_runs, image_folder, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    before = snapshot(tmp_path)
    refused(capsys, tiny_train_args(plain, image_folder, "--iterations", "1"), "is an existing file, not a folder")
    refused(capsys, ["demo", "--out", str(plain), "--minutes", "0.01"], "is an existing file, not a folder")
    refused(capsys, ["sample", "--checkpoint", str(tiny_runs["uncond"]), "--out", str(folder)],
            "is a folder; name a .png file")
    refused(capsys, ["sample", "--checkpoint", str(tiny_runs["uncond"]), "--out", str(plain / "g.png")],
            "is a file, so nothing can be written inside it")
    refused(capsys, tiny_train_args("", image_folder, "--iterations", "1"), "--out is empty")
    refused(capsys, tiny_train_args(tmp_path / ("x" * 300), image_folder, "--iterations", "1"), "longer than 255 bytes")
    assert snapshot(tmp_path) == before



@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, a file system where nothing can be created")
def test_an_out_whose_parent_cannot_be_created_is_refused(tiny_runs, tmp_path, capsys):
    """Was: a 29-line FileNotFoundError traceback, exit code 1: /proc passes the permission check (as
    root) and refuses every new entry."""
    out = "/proc/ddo-refused/results"
    refused(capsys, recon(tiny_runs["cond"], out, source=("--images", str(tiny_runs["images"]))),
            f"--out {out}: ", " /proc ", "choose another --out")  # as root: "nothing can be created in"
    refused(capsys, tiny_train_args(out, tiny_runs["images"], "--iterations", "1"), " /proc ", "choose another --out")
    refused(capsys, ["sample", "--checkpoint", str(tiny_runs["uncond"]), "--out", "/proc/ddo-refused/g.png"],
            " /proc ", "choose another --out")
    assert not os.path.exists("/proc/ddo-refused")

# --- found by the property-based tests ----------------------------------------------------------
def test_demo_refuses_a_bad_combination_before_reading_data_or_printing(tmp_path, capsys, monkeypatch):
    """Was: the demo's "training ..." line on stderr before the refusal, and the dataset read first."""
    import ddo_conditional.cli.demo as demo

    monkeypatch.setattr(demo, "train", lambda *a, **k: pytest.fail("trained"))
    refused(capsys, ["demo", "--out", str(tmp_path / "d"), "--loss", "nope"], "unknown loss 'nope'")
    refused(capsys, ["demo", "--out", str(tmp_path / "d"), "--num-samples", "10000000"], "--num-samples to")
    assert list(tmp_path.iterdir()) == []


def test_a_run_refused_after_locking_leaves_no_folder(tmp_path, capsys):
    """Was: the empty run folder (made to hold the lock) left behind by a refusal in the data set-up."""
    out = tmp_path / "a" / "run"
    refused(capsys, ["train", "--out", str(out), "--dataset", "image-folder", "--iterations", "1", "--resolution",
                     "16", "--ch", "8", "--ch-mult", "1,2", "--modes", "4", "--no-progress"],
            "image-folder needs --data-root")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,value,words", [
    ("--dropout", "nan", "expected a number in [0, 1), got nan"), ("--dropout", "1.5", "[0, 1)"),
    ("--ema-decay", "2", "expected a number in [0, 1], got 2"), ("--ema-decay", "nan", "[0, 1]"),
    ("--grad-clip", "-1", "at least 0"), ("--grad-clip", "nan", "finite"),
    ("--sigma-blur-max", "inf", "finite"), ("--sigma-blur-max", "nan", "finite"),
    ("--seed", str(2 ** 63), "a seed below 2^63"), ("--num-workers", "99999", "worker processes"),
    ("--resolution", "3", "--resolution 3 is too small for a network of 2 levels"),
    ("--modes", "3", "--modes 3 must be divisible by 2"),
])
def test_training_flags_out_of_range_are_refused_before_anything_is_written(image_folder, tmp_path, capsys, flag,
                                                                            value, words):
    """Was: NaN/negative/oversized values accepted (a NaN loss or NaN EMA later, or a traceback: an
    OverflowError from the seed, a reshape error at 3x3, thousands of worker processes forked)."""
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "1", flag, value), words)
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_a_batch_that_does_not_split_is_refused_before_writing(image_folder, tmp_path, capsys):
    """Was: refused at the first step, after config.json and the log were written."""
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "1", "--batch-size", "3",
                                    "--grad-accum", "2"), "does not split", "multiple of 2")
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_a_diverged_training_is_a_numerical_error(image_folder, tmp_path, capsys):
    """Was: exit code 2 (bad input) for a loss that became NaN."""
    refused(capsys, tiny_train_args(tmp_path / "run", image_folder, "--iterations", "3", "--lr", "1e30"),
            "the training diverged", rc=1)


def test_seeds_and_resolutions_too_small_are_refused_by_sample_and_reconstruct(tiny_runs, tmp_path, capsys):
    refused(capsys, ["sample", "--checkpoint", str(tiny_runs["uncond"]), "--seed", str(2 ** 63), "--out",
                     str(tmp_path / "g.png")], "a seed below 2^63")
    refused(capsys, ["sample", "--checkpoint", str(tiny_runs["uncond"]), "--resolution", "2", "--out",
                     str(tmp_path / "g.png")], "too small for a network of 2 levels")
    refused(capsys, recon(tiny_runs["cond"], tmp_path / "out", "--seed", str(2 ** 64),
                          source=("--images", str(tiny_runs["images"]))), "a seed below 2^63")
    refused(capsys, recon(tiny_runs["cond"], tmp_path / "out", "--resolution", "4",  # was: a shape error in SSIM
                          source=("--images", str(tiny_runs["images"]))), "too small to score")
    assert list(tmp_path.iterdir()) == []


def test_classical_baselines_survive_a_context_with_an_empty_hull(tiny_runs, tmp_path, capsys):
    """Was: scipy's QhullError (a traceback) with fewer than three context pixels or all on one line."""
    from ddo_conditional.classical.baselines import interpolate

    image = np.random.default_rng(0).random((6, 6, 3))
    for idx in ([7], [7, 20], [6, 7, 8, 9]):  # one, two, and four pixels on one row
        for method in ("linear", "cubic"):
            out = interpolate(image, np.array(idx), method)
            assert out.shape == (6, 6, 3) and np.isfinite(out).all()
            np.testing.assert_allclose(out, interpolate(image, np.array(idx), "nearest"))
    assert main(recon(tiny_runs["cond"], tmp_path / "out", "--context-ratio", "0.008",
                      source=("--images", str(tiny_runs["images"])))) == 0


class _GrayData:
    """A plugin with a one-channel dataset."""

    @hookimpl
    def register_datasets(self, register):
        def gray(split="test", data_root=None, resolution=16, download=False, **_):
            return [{"image": torch.zeros(1, resolution, resolution), "index": i} for i in range(3)]

        register("gray-test", gray)


def test_data_with_other_channels_than_the_model_is_refused(tiny_runs, tmp_path, capsys):
    """Was: a convolution's shape error (a traceback) for 1-channel fields and a 3-channel model."""
    argv = recon(tiny_runs["cond"], tmp_path / "out", source=("--dataset", "gray-test"))
    capsys.readouterr()
    assert main(argv, extra_plugins=[_GrayData()]) == 2
    err = capsys.readouterr().err
    assert "--dataset gray-test has 1-channel images" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text,words", [
    ("x,y,r,g,b\n0.1,0.1,0.1,0.1,0.1\n0.2,0.1,0.1,0.1,0.1\n0.3,0.1,0.1,0.1,0.1\n0.4,0.1,0.1,0.1,0.1\n",
     "the points lie on one line"),
    ("x,y,r,g,b\n0.1,0.1,0,0,0\n0.1000002,0.1,0,0,0\n0.5,0.9,0,0,0\n0.9,0.2,0,0,0\n", "closer than"),
    ("x,x,y,r,g\n0.1,0.1,0.1,0.1,0.1\n", "repeats a column name"),
    ("x;y;r;g;b\n0.1;0.1;0.1;0.1;0.1\n", "separated by commas"),
])
def test_degenerate_point_files_are_refused(tmp_path, text, words):
    """Was: a singular spline system (torch's LinAlgError, a traceback) for points on one line or
    closer than float precision resolves."""
    from ddo_conditional.io.points_csv import read_points

    path = tmp_path / "obs.csv"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        read_points(path, 3)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_point_file_encodings(tmp_path):
    """Was: UnicodeDecodeError (a traceback) for a file that is not UTF-8; a byte-order mark hid x."""
    from ddo_conditional.io.points_csv import read_points

    rows = "".join(f"{x},{y},0.5,0.5,0.5\n" for x, y in [(0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.8, 0.7)])
    path = tmp_path / "obs.csv"
    path.write_bytes(("x,y,r,g,b\n" + rows).encode("utf-8-sig"))
    assert read_points(path, 3)[0].shape == (4, 2)
    path.write_bytes(("x,y,r,g,b,é\n" + rows).encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_points(path, 3)


def test_tiny_extent_is_refused_without_a_warning(tiny_runs, tmp_path, capsys):
    csv = tmp_path / "obs.csv"
    csv.write_text("x,y,r,g,b\n" + "".join(f"{x},{y},0.5,0.5,0.5\n" for x, y in
                                           [(0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.8, 0.7)]))
    refused(capsys, ["points", "--checkpoint", str(tiny_runs["points"]), "--points", str(csv), "--extent",
                     "1e-320,1e-320", "--out", str(tmp_path / "out")], "lies outside the extent")


def _png_header(w, h):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_image_folders_with_bombs_16_bit_and_folders_named_like_images(tmp_path):
    """Was: a PIL warning on stderr for a 90-megapixel header; 16-bit PNGs saturated to white."""
    from PIL import Image

    from ddo.data import load_image_folder

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((20, 20), 32896, np.uint16)).save(folder / "a.png")  # mid-grey in 16 bits
    (folder / "sub.png").mkdir()  # a folder with an image's name is not an image
    images = load_image_folder(folder, 16)
    assert images.images.shape == (1, 16, 16, 3) and abs(int(images.images[0, 8, 8, 0]) - 128) <= 1
    (folder / "b.png").write_bytes(_png_header(10_000, 9_000))
    with cli_warnings() as caught, pytest.raises(UserError, match="b.png is not a readable image"):
        load_image_folder(folder, 16)
    assert not caught
    (folder / "b.png").write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(UserError, match="claims more pixels than PIL reads safely"):
        load_image_folder(folder, 16)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _saved(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_damaged_checkpoints_are_refused_in_one_line(tiny_runs, tmp_path, capsys):
    """Was: IndexError/KeyError tracebacks for a flipped first byte (read as the legacy format), a
    TypeError for a config value of the wrong type, a warning line before the refusal of a pickle."""
    raw = tiny_runs["uncond"].read_bytes()
    state = torch.load(tiny_runs["uncond"], weights_only=True)
    marker = tmp_path / "code-ran"
    cases = [
        (bytes([raw[0] ^ 1]) + raw[1:], "is truncated or corrupted"),
        (bytes([raw[0] ^ 2]) + raw[1:], "is truncated or corrupted"),
        (raw[:len(raw) // 2], "is truncated or corrupted"),
        (_saved({**state, "config": {**state["config"], "sigma_blur_max": None}}), "sigma_blur_max = 'None', not a finite"),
        (_saved({**state, "config": {**state["config"], "ch": 10 ** 12}}), "does not match its own configuration"),
        # found by the long fuzzing run: an allocation refused for the lifting layer (exit 1, not 2)
        (_saved({**state, "config": {**state["config"], "channels": 10 ** 12}}), "does not match its own configuration"),
        (_saved({**state, "config": {**state["config"], "ch_mult": []}}), "ch_mult = '[]', not a list of positive"),
        (_saved({**state, "model": {"a": 1}}), "its model state is not a mapping of names to tensors"),
        (_saved({**state, "config": [1]}), "its config is not a mapping"),
        (pickle.dumps(_RunsCode(marker)), "other than tensors and plain data, which could run code"),
        (_saved(_RunsCode(marker)), "holds objects such as posix.system other than tensors"),
    ]
    for data, words in cases:
        bad = tmp_path / "bad.pt"
        bad.write_bytes(data)
        refused(capsys, ["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "g.png")], words)
    assert not marker.exists() and not (tmp_path / "g.png").exists()
    refused(capsys, ["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "g.png")], "is a folder")


@pytest.mark.parametrize("key,value,words", [
    ("query_ratio", [], "query_ratio = '[]', which --query-ratio cannot give"),
    ("mask_seed", [], "mask_seed = '[]', which --mask-seed cannot give"),
    ("mask_seed", "abc", "mask_seed = 'abc', which --mask-seed cannot give"),
    ("mask_pattern", "sparse-wavelet", "mask_pattern = 'sparse-wavelet', which --mask-pattern cannot give"),
    ("context_ratio", {"a": 1}, "context_ratio = \"{'a': 1}\", which --context-ratio cannot give"),
])
def test_checkpoint_plugin_options_of_the_wrong_kind_are_refused_in_one_line(tiny_runs, tmp_path, capsys, key, value,
                                                                            words):
    """Found by the long fuzzing run (tests/test_fuzz_inputs.py): a conditional checkpoint whose config held
    a list for query_ratio or mask_seed ended in a TypeError traceback inside the conditioning wrapper."""
    state = torch.load(tiny_runs["cond"], weights_only=True)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(_saved({**state, "config": {**state["config"], key: value}}))
    refused(capsys, ["reconstruct", "--checkpoint", str(bad), "--dataset", "natural-patches", "--limit", "2", "--out",
                     str(tmp_path / "r")], words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("change,words", [
    ({"spread_scale": 1e300}, "spread_scale must be a number from 0 to 1e+06"),
    ({"spread_floor": 10 ** 400}, "spread_floor must be a number from 0"),
    ({"spread_roughness": float("nan")}, "spread_roughness must be a number"),
    ({"shrinkage": {"feature": ["x"], "a": 1, "b": 1, "center": 1}}, "needs a known feature"),
    ({"shrinkage": {"feature": "roughness", "a": 10 ** 400, "b": 0, "center": 0}}, "needs a known feature"),
])
def test_calibration_files_with_values_that_cannot_apply_are_refused(tiny_runs, tmp_path, change, words):
    """Was: an OverflowError (a traceback) squaring 1e300 or converting 10^400, or an infinite std
    reported as a diverged reconstruction."""
    import shutil

    from ddo_conditional.io.calibration_file import calibration_path, file_sha256, load_calibration

    checkpoint = tmp_path / "checkpoint.pt"
    shutil.copy(tiny_runs["cond"], checkpoint)
    record = {"spread_scale": 0.8, "spread_roughness": 0.5, "spread_floor": 0.01,
              "checkpoint_sha256": file_sha256(checkpoint), **change}
    calibration_path(checkpoint).write_text(json.dumps(record))
    with pytest.raises(UserError) as e:
        load_calibration(checkpoint)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_input_paths_with_line_breaks_or_too_long_are_refused_in_one_line(tiny_runs, tmp_path, capsys):
    """Was: a message quoting a path with a newline printed as two lines; a 300-byte file name raised
    OSError(ENAMETOOLONG) as a traceback."""
    refused(capsys, ["sample", "--checkpoint", "a\nb.pt", "--out", str(tmp_path / "g.png")], "checkpoint a\\nb.pt")
    refused(capsys, ["calibrate", "--checkpoint", str(tiny_runs["cond"]), "--bf16", "\x1e"], "unrecognized arguments")
    refused(capsys, ["calibrate", "--checkpoint", "x" * 300], "a path longer than the file system allows")
    refused(capsys, ["points", "--checkpoint", str(tiny_runs["points"]), "--points", "y" * 300, "--out",
                     str(tmp_path / "out")], "a path longer than the file system allows")
    assert list(tmp_path.iterdir()) == []

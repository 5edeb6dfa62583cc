"""Property-based tests of every file a command reads: CSV point files, image folders, checkpoints
and calibration files, generated with every defect a file can have. Each is read directly (an
accepted file gives well-formed data, a refused one a one-line :class:`UserError`) and through the
command that reads it (the rule of tests/fuzzing.py). Budgets: tests/conftest.py."""
import io
import json
import math
import os
import pickle
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ddo.errors import UserError

from .conftest import fuzz_budget
from .fuzzing import MEMORY_LIMIT, Sandbox, cli_warnings, one_thread, run_in

CHANNELS = 3


@pytest.fixture
def fuzz_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DDO_MEMORY_LIMIT", MEMORY_LIMIT)
    with one_thread():
        yield tmp_path


def refused_in_one_line(error: UserError) -> None:
    text = str(error)
    assert text.strip() and "\n" not in text, f"not one line: {text!r}"


# --- CSV point files ---------------------------------------------------------------------------
NUMBER = st.one_of(st.floats(0, 1), st.floats(-2, 3), st.sampled_from(["nan", "inf", "-inf", "", " ", "abc", "1e400",
                                                                        "0,5", "½", "1_0", "0x1"]))
COLUMNS = st.lists(st.sampled_from(["x", "y", "r", "g", "b", "X", " x", "value", "", "é", "x"]), min_size=0, max_size=7)


@st.composite
def csv_files(draw):
    """The bytes of a CSV of observations: header and separator, rows (numbers, words, NaN, infinities,
    duplicates, points on one line, ragged rows) and an encoding, or no structure at all."""
    kind = draw(st.sampled_from(["table", "table", "table", "collinear", "duplicates", "near", "bytes", "empty",
                                 "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"x,y,r,g,b\n", b"\xef\xbb\xbf", b"\x00\x00"]))
    header = draw(st.one_of(st.just(["x", "y", "r", "g", "b"]), COLUMNS))
    sep = draw(st.sampled_from([",", ",", ";", "\t", " ", ", "]))
    n = draw(st.integers(0, 30))
    rows = [[draw(NUMBER) for _ in header] for _ in range(n)]
    if kind in ("collinear", "duplicates", "near", "huge") and header == ["x", "y", "r", "g", "b"]:
        rows = [[float(v) for v in draw(st.tuples(*[st.floats(0.05, 0.95)] * 5))] for _ in range(max(n, 5))]
        if kind == "collinear":
            for r in rows:
                r[1] = rows[0][1]
        elif kind == "duplicates":
            rows.append(list(rows[0]))
        elif kind == "near":
            rows.append([rows[0][0] + draw(st.sampled_from([1e-12, 1e-9, 1e-7, 3e-6])), *rows[0][1:]])
        else:  # a CSV too large for the spline's memory (and quick to write)
            rows = [[(i % 997) / 997, (i // 997) / 300, 0.5, 0.5, 0.5] for i in range(draw(st.sampled_from(
                [60_000, 200_000])))]
    if draw(st.booleans()) and rows:
        rows[draw(st.integers(0, len(rows) - 1))] = rows[0][:draw(st.integers(0, len(header)))]  # a ragged row
    text = "\n".join([sep.join(header)] + [sep.join(str(v) for v in r) for r in rows]) + "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def _spline_is_finite(coords: np.ndarray, values: np.ndarray) -> bool:
    from ddo_conditional.classical.thin_plate import tps_fit

    coef, loo = tps_fit(torch.from_numpy(coords)[None], torch.from_numpy(values)[None],
                        torch.ones(1, len(coords), dtype=torch.bool))
    return bool(torch.isfinite(coef).all() and torch.isfinite(loo).all())


@fuzz_budget(60)
@given(data=csv_files())
def test_csv_is_read_or_refused_in_one_line(data, tmp_path_factory):
    """An accepted CSV gives at least 4 distinct points in [0, 1]^2 with intensities in [0, 1], and
    their spline is finite; anything else is refused in one line."""
    from ddo_conditional.io.points_csv import read_points

    if len(data) > 100_000:  # large files go through the command, whose memory guard refuses them before parsing
        return
    path = tmp_path_factory.mktemp("csv") / "obs.csv"
    path.write_bytes(data)
    try:
        with cli_warnings() as caught:
            coords, values = read_points(path, CHANNELS)
    except UserError as e:
        refused_in_one_line(e)
        return
    assert not caught, [str(w.message) for w in caught]
    assert coords.shape[1] == 2 and values.shape == (len(coords), CHANNELS) and len(coords) >= 4
    assert np.isfinite(coords).all() and coords.min() >= 0 and coords.max() <= 1
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
    assert len(np.unique(coords, axis=0)) == len(coords)
    assert _spline_is_finite(coords, values)


@fuzz_budget(10)
@given(data=csv_files())
def test_csv_through_reconstruct(data, fuzz_env, tiny_runs, capsys):
    box = Sandbox(fuzz_env, tiny_runs)
    try:
        (box.dir / "obs.csv").write_bytes(data)
        run_in(box, ["points", "--checkpoint", "@points", "--points", "@csv", "--num-samples", "2", "--steps", "1",
                     "--out", "@new", "--no-progress"], capsys)
    finally:
        box.close()


# --- image folders -----------------------------------------------------------------------------
MODES = ("RGB", "L", "LA", "P", "RGBA", "I;16", "1", "CMYK")
SIZES = ((1, 1), (3, 5), (16, 16), (20, 20), (17, 40), (64, 8), (40, 17))


def png_header(w: int, h: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG that is only a header claiming ``w x h`` pixels (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def image_bytes(mode: str, size, fmt: str, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    if fmt == "JPEG" and mode not in ("RGB", "L", "CMYK"):
        fmt = "PNG"  # saved as PNG under a .jpg name: a wrong suffix
    if fmt == "PNG" and mode == "CMYK":
        fmt = "JPEG"
    img.save(buf, fmt)
    return buf.getvalue()


@st.composite
def image_entries(draw):
    """One entry of a folder: a name (PNG/JPEG suffix in any case, or another suffix) and what it holds."""
    suffix = draw(st.sampled_from([".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".txt", ".gif", ""]))
    kind = draw(st.sampled_from(["image", "image", "image", "zero", "truncated", "garbage", "header", "folder"]))
    return suffix, kind, draw(st.sampled_from(MODES)), draw(st.sampled_from(SIZES)), draw(st.integers(0, 1 << 16))


def write_folder(folder, entries) -> int:
    """Write ``entries`` into ``folder``; returns the number of image-suffixed regular files."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, (suffix, kind, mode, size, seed) in enumerate(entries):
        path = folder / f"f{i:02d}{suffix}"
        fmt = "JPEG" if suffix.lower() in (".jpg", ".jpeg") else "PNG"
        if kind == "folder":
            path.mkdir()
            continue
        if kind == "image":
            data = image_bytes(mode, size, fmt, seed)
        elif kind == "truncated":
            full = image_bytes(mode, size, fmt, seed)
            data = full[:seed % max(1, len(full))]
        elif kind == "garbage":
            data = np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes()
        elif kind == "header":
            data = png_header(*[(100_000, 100_000), (30_000, 30_000), (10_000, 9_000), (20, 20)][seed % 4],
                              bit_depth=[8, 16][seed % 2])
        else:
            data = b""
        path.write_bytes(data)
        count += suffix.lower() in (".png", ".jpg", ".jpeg")
    return count


@fuzz_budget(40)
@given(entries=st.lists(image_entries(), max_size=5), res=st.sampled_from([8, 16]))
def test_image_folder_is_read_or_refused_in_one_line(entries, res, tmp_path_factory):
    """An accepted folder gives every PNG/JPEG file as a res x res RGB image; anything else is
    refused in one line, without a warning on the way."""
    from ddo.data import load_image_folder

    folder = tmp_path_factory.mktemp("images") / "images"
    files = write_folder(folder, entries)
    try:
        with cli_warnings() as caught:
            images = load_image_folder(folder, res)
    except UserError as e:
        refused_in_one_line(e)
        assert not caught, [str(w.message) for w in caught]
        return
    assert not caught, [str(w.message) for w in caught]
    assert images.images.shape == (files, res, res, 3) and images.images.dtype == np.uint8
    shutil.rmtree(folder.parent)


@fuzz_budget(10)
@given(entries=st.lists(image_entries(), min_size=1, max_size=4))
def test_image_folder_through_reconstruct(entries, fuzz_env, tiny_runs, capsys):
    box = Sandbox(fuzz_env, tiny_runs)
    try:
        write_folder(box.dir / "images", entries)
        run_in(box, ["reconstruct", "--checkpoint", "@cond", "--images", str(box.dir / "images"), "--limit", "1",
                     "--num-samples", "2", "--steps", "1", "--out", "@new", "--no-progress"], capsys)
    finally:
        box.close()


# --- checkpoints -------------------------------------------------------------------------------
class RunsCode:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


ODD_VALUES = (None, "abc", -1, 0, 10 ** 12, 1.5, [], [0], [1, 10 ** 9], {"a": 1}, True, float("nan"), "sparse-wavelet",
              "1,2", 2 ** 63)
CONFIG_KEYS = ("ch", "ch_mult", "resolution", "channels", "conditioning", "parameterization", "model", "modes",
               "num_res_blocks", "x0_clip", "sigma_blur_max", "sigma_blur_min", "gp_type", "gp_length_scale", "mask_seed",
               "context_ratio", "query_ratio", "mask_pattern", "norm", "dropout", "use_pos", "loss", "refiner_width",
               "residual_scale", "dataset", "seed")


@st.composite
def checkpoint_changes(draw):
    """A change to a checkpoint: its bytes truncated, bits flipped, replaced by garbage or by a pickle
    that would run code; or its structure (a part of the wrong type, a config value of the wrong type
    or size, a part missing)."""
    kind = draw(st.sampled_from(["truncate", "flip", "flip", "garbage", "code", "config", "config", "part"]))
    if kind == "truncate":
        return kind, draw(st.floats(0, 1))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), min_size=1, max_size=8))
    if kind == "config":
        return kind, (draw(st.sampled_from(CONFIG_KEYS)), draw(st.sampled_from(ODD_VALUES)))
    if kind == "part":
        return kind, (draw(st.sampled_from(["config", "model", "ema", "step", "state"])),
                      draw(st.sampled_from(["drop", "list", "str", "dict-of-ints", "none"])))
    return kind, draw(st.integers(0, 2))


def changed_checkpoint(original, change, marker) -> bytes:
    kind, how = change
    raw = original.read_bytes()
    if kind == "truncate":
        return raw[:int(how * len(raw))]
    if kind == "flip":
        data = bytearray(raw)
        for where, bit in how:
            data[min(len(data) - 1, int(where * len(data)))] ^= 1 << bit
        return bytes(data)
    if kind == "garbage":
        return os.urandom(64 + 512 * how)
    if kind == "code":
        if how == 0:
            return pickle.dumps(RunsCode(marker))
        buf = io.BytesIO()
        state = torch.load(original, weights_only=True)
        torch.save({**state, "config": RunsCode(marker)} if how == 1 else RunsCode(marker), buf)
        return buf.getvalue()
    state = torch.load(original, weights_only=True)
    if kind == "config":
        key, value = how
        state["config"] = {**state["config"], key: value}
    else:
        part, what = how
        odd = {"list": [1, 2], "str": "x", "dict-of-ints": {"a": 1}, "none": None}
        if part == "state":
            state = odd.get(what, [])
        elif what == "drop":
            state.pop(part, None)
        else:
            state[part] = odd[what]
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@fuzz_budget(30)
@given(change=checkpoint_changes(), which=st.sampled_from(["cond", "uncond"]))
def test_damaged_checkpoint(change, which, fuzz_env, tiny_runs, capsys):
    """A damaged checkpoint is refused in one line (or, with weights that no longer compute, stops in
    one line as a diverged computation); a pickle that would run code is never run."""
    box = Sandbox(fuzz_env, tiny_runs)
    marker = box.dir / "code-ran"
    try:
        (box.dir / "bad.pt").write_bytes(changed_checkpoint(tiny_runs[which], change, marker))
        bad = str(box.dir / "bad.pt")
        if which == "cond":
            argv = ["reconstruct", "--checkpoint", bad, "--images", "@images", "--limit", "1", "--num-samples", "2",
                    "--steps", "1", "--out", "@new", "--no-progress"]
        else:
            argv = ["sample", "--checkpoint", bad, "--num", "2", "--steps", "1", "--out", "@png", "--no-progress"]
        run_in(box, argv, capsys)
        assert not marker.exists(), "loading the checkpoint ran code"
    finally:
        box.close()


# --- calibration files -------------------------------------------------------------------------
CALIBRATION = {"spread_scale": 0.8, "spread_roughness": 0.5, "spread_floor": 0.01, "fitted_on": "image-folder/train",
               "fitted_images": 2, "fitted_sampler": "ddim"}
CAL_KEYS = ("spread_scale", "spread_roughness", "spread_floor", "shrinkage", "checkpoint_sha256", "fitted_on")
CAL_VALUES = (None, "abc", -1, 0, 1e300, 1e-300, float("nan"), float("inf"), [], {}, True, 10 ** 400,
              {"feature": "roughness", "a": 0.5, "b": 0.0, "center": 0.0}, {"feature": ["x"], "a": 1, "b": 1, "center": 1},
              {"feature": "nope", "a": 1, "b": 1, "center": 1}, {"feature": "roughness", "a": "x", "b": 0, "center": 0})


@st.composite
def calibration_texts(draw):
    """The text of a calibration file: valid, with a field missing or of the wrong type or size, for
    other weights, truncated, not JSON, or not UTF-8."""
    kind = draw(st.sampled_from(["field", "field", "drop", "sha", "truncate", "bytes", "toplevel", "valid"]))
    record = dict(CALIBRATION)
    if kind == "field":
        record[draw(st.sampled_from(CAL_KEYS))] = draw(st.sampled_from(CAL_VALUES))
    elif kind == "drop":
        record.pop(draw(st.sampled_from(CAL_KEYS[:3])))
    elif kind == "sha":
        record["checkpoint_sha256"] = draw(st.sampled_from(["", "0" * 64, 5]))
    elif kind == "toplevel":
        return draw(st.sampled_from([b"[]", b"null", b"1", b'"x"', b"NaN"]))
    elif kind == "bytes":
        return draw(st.binary(max_size=100))
    text = json.dumps(record)
    if kind == "truncate":
        text = text[:draw(st.integers(0, len(text) - 1))]
    return text.encode()


def _with_sha(data: bytes, checkpoint) -> bytes:
    """``data`` with the checkpoint's SHA-256 filled in where a JSON object has none."""
    from ddo_conditional.io.calibration_file import file_sha256

    try:
        record = json.loads(data)
    except ValueError:
        return data
    if isinstance(record, dict) and "checkpoint_sha256" not in record:
        record["checkpoint_sha256"] = file_sha256(checkpoint)
        return json.dumps(record).encode()
    return data


@fuzz_budget(40)
@given(data=calibration_texts())
def test_calibration_file_is_read_or_refused_in_one_line(data, tmp_path_factory, tiny_runs):
    from ddo_conditional.inference.calibration import apply_spread
    from ddo_conditional.io.calibration_file import calibration_path, load_calibration

    folder = tmp_path_factory.mktemp("cal")
    checkpoint = folder / "checkpoint.pt"
    shutil.copy(tiny_runs["cond"], checkpoint)
    calibration_path(checkpoint).write_bytes(_with_sha(data, checkpoint))
    try:
        record = load_calibration(checkpoint)
    except UserError as e:
        refused_in_one_line(e)
        return
    std = apply_spread(torch.rand(2, 3, 4, 4), record, torch.rand(2))
    assert torch.isfinite(std).all() and all(math.isfinite(record[k]) for k in CAL_KEYS[:3])
    shutil.rmtree(folder)


@fuzz_budget(10)
@given(data=calibration_texts())
def test_calibration_file_through_reconstruct(data, fuzz_env, tiny_runs, capsys):
    from ddo_conditional.io.calibration_file import calibration_path

    box = Sandbox(fuzz_env, tiny_runs, copy_checkpoints=True)
    try:
        checkpoint = box.checkpoints["cond"]
        calibration_path(checkpoint).write_bytes(_with_sha(data, checkpoint))
        run_in(box, ["reconstruct", "--checkpoint", "@cond", "--images", "@images", "--limit", "1", "--num-samples", "2",
                     "--steps", "1", "--out", "@new", "--no-progress"], capsys)
    finally:
        box.close()

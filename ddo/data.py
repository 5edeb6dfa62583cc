"""Datasets: real images, offline. Items are ``{"image": (C, H, W) in [-1, 1], "index": int}``.

- ``natural-patches``: crops of the photographs bundled with scikit-image, split by photograph into
  train, validation (``val``) and test.
- ``cifar10``: a local ``cifar-10-batches-py`` folder; fetched only when asked (``download=True``,
  the ``--download`` flag), with torchvision's download-and-verify helper.
- ``image-folder``: PNG/JPEG files of a folder, centre-cropped and resized.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import fields
from .config import CROP_SCALES
from .errors import UserError
from .progress import progress_bar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """``(H, W, C)`` uint8 -> ``(C, H, W)`` float32 in ``[-1, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(127.5).sub(1.0)


class ArrayImages(Dataset):
    """Images held as one uint8 array ``(N, H, W, C)``; ``index_offset`` makes indices global."""

    def __init__(self, images: np.ndarray, index_offset: int = 0, sources: list[str] | None = None):
        self.images, self.index_offset, self.sources = images, index_offset, sources

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": to_tensor(self.images[i]), "index": self.index_offset + int(i)}


def dihedral_invariant(dataset) -> bool:
    """Whether the data's law is invariant to the square's rotations and reflections: natural images
    are; a field says so in its ``field`` record (a forced flow is not: its forcing picks a diagonal),
    read from the first dataset in the ``.dataset`` chain of wrappers that has one."""
    while dataset is not None:
        field = getattr(dataset, "field", None)
        if field is not None:
            return bool(field.get("dihedral_invariant", True))
        dataset = getattr(dataset, "dataset", None)
    return True


class RandomFlip(Dataset):
    """Horizontal flips that are a pure function of ``(seed, epoch, index)`` (reproducible in any
    worker, on resume, at any world size). Call :meth:`set_epoch` once per epoch.

    Data whose law a reflection changes (:func:`dihedral_invariant` false: a flipped Navier-Stokes
    field is not a solution of its equation) pass unflipped."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.enabled = dihedral_invariant(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        inner = getattr(self.dataset, "set_epoch", None)  # a dataset that draws per epoch (PhotoCrops)
        if inner is not None:
            inner(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        if self.enabled and np.random.default_rng([self.seed, self.epoch, item["index"]]).random() < 0.5:
            item["image"] = item["image"].flip(-1)
        return item


# --- natural-patches ---------------------------------------------------------------------------
# Split by photograph. The validation photograph is the one every choice is made on; the test
# photographs are scored once per reported configuration. The stereo pair's right view is the same
# scene as the left, so it is in no split (in training it would leak the validation scene).
TEST_PHOTOS = ("chelsea", "coffee")
VAL_PHOTOS = ("motorcycle_left",)
TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
SPLITS = ("train", "val", "test")
# first global index of each split: a split's masks never depend on another split's length
SPLIT_OFFSETS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
PATCH_SHORT_SIDES = (64, 128, 256)
NATURAL_PATCHES_VERSION = 2


def _photo(name: str) -> np.ndarray:
    """A photograph scikit-image ships, as RGB uint8 (grayscale ones with the channel repeated)."""
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    photo = getattr(skimage.data, name)()
    return np.repeat(photo[..., None], 3, axis=-1) if photo.ndim == 2 else photo


def _crops(photo: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    from PIL import Image

    out = []
    h, w = photo.shape[:2]
    for short in PATCH_SHORT_SIDES:
        scale = short / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        img = np.asarray(Image.fromarray(photo).resize((nw, nh), Image.LANCZOS))
        for y in range(0, nh - size + 1, stride):
            for x in range(0, nw - size + 1, stride):
                out.append(img[y:y + size, x:x + size])
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("DDO_CACHE_DIR", Path.home() / ".cache" / "ddo"))


def _split_photos(train_photos) -> dict[str, tuple]:
    return {"train": tuple(train_photos), "val": VAL_PHOTOS, "test": TEST_PHOTOS}


def build_natural_patches(size: int = 32, train_photos=TRAIN_PHOTOS) -> dict[str, np.ndarray]:
    """Deterministic crops: train and validation photos with stride ``size/2``, test photos without overlap."""
    parts = {}
    for split, names in _split_photos(train_photos).items():
        stride = size if split == "test" else size // 2
        crops, sources = [], []
        for name in names:
            c = _crops(_photo(name), size, stride)
            crops += c
            sources += [name] * len(c)
        parts[split] = np.stack(crops).astype(np.uint8)
        parts[split + "_sources"] = np.array(sources)
    return parts


def load_natural_patches(split: str, size: int = 32, train_photos=TRAIN_PHOTOS,
                         crop_scales: str = "fixed", seed: int = 0) -> Dataset:
    """The ``natural-patches`` split, built on first use and cached under :func:`cache_dir`.

    ``train_photos``: names of ``skimage.data`` photographs for the train split (validation and test
    are always :data:`VAL_PHOTOS` and :data:`TEST_PHOTOS`); a list other than the default is cached
    under its own name. ``crop_scales="continuous"`` (train split only): :class:`PhotoCrops`, as many
    crops per epoch as the fixed split has, at random scales."""
    if split not in SPLITS:
        raise UserError(f"natural-patches has splits {', '.join(SPLITS)}, not {split!r}")
    if size < 8:
        raise UserError(f"natural-patches needs a resolution of at least 8, got {size}")
    if crop_scales not in CROP_SCALES:
        raise UserError(f"--crop-scales must be one of {', '.join(CROP_SCALES)}, got {crop_scales!r}")
    if crop_scales != "fixed" and split != "train":
        raise UserError(f"--crop-scales {crop_scales} draws training crops; the {split} split is fixed")
    train_photos = tuple(train_photos)
    tag = "" if train_photos == TRAIN_PHOTOS else "_" + "-".join(train_photos)
    path = cache_dir() / f"natural_patches_v{NATURAL_PATCHES_VERSION}{tag}_{size}.npz"
    if path.exists():
        with np.load(path) as f:
            parts = {k: f[k] for k in f.files}
    else:
        parts = build_natural_patches(size, train_photos)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **parts)
        os.replace(tmp, path)
        print(f"natural-patches: built {len(parts['train'])} train crops from {len(train_photos)} photos, "
              f"{len(parts['val'])} validation crops from {', '.join(VAL_PHOTOS)} and {len(parts['test'])} test "
              f"crops from {', '.join(TEST_PHOTOS)} ({size}x{size}); cached at {path}", file=sys.stderr)
    if crop_scales == "continuous":
        return PhotoCrops([_photo(n) for n in train_photos], size, len(parts["train"]), seed)
    return ArrayImages(parts[split], SPLIT_OFFSETS[split], list(parts[split + "_sources"]))


def area_crop(photo, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The ``box`` ``(left, top, right, bottom)`` of a PIL image, in its pixel coordinates (fractional
    allowed), resampled to ``size x size`` by area averaging; ``(size, size, C)`` uint8."""
    from PIL import Image

    return np.array(photo.resize((size, size), Image.BOX, box=box))


class PhotoCrops(Dataset):
    """Training crops at continuous random scales: item ``i`` of epoch ``e`` is a ``size x size`` crop of
    a random photograph, taken at a short side drawn log-uniformly over the fixed split's range
    (:data:`PATCH_SHORT_SIDES`, widened by half an octave each way, never above the photograph's own),
    at a random position, area-resampled. A pure function of ``(seed, epoch, i)``; :meth:`set_epoch`
    once per epoch (the trainer's :class:`RandomFlip` forwards it)."""

    def __init__(self, photos: list[np.ndarray], size: int, count: int, seed: int = 0):
        from PIL import Image

        self.photos = [Image.fromarray(p) for p in photos]
        self.size, self.count, self.seed, self.epoch = size, count, seed, 0
        lo, hi = PATCH_SHORT_SIDES[0] / 2 ** 0.5, PATCH_SHORT_SIDES[-1] * 2 ** 0.5
        self.log_range = (np.log(max(lo, size)), np.log(hi))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def crop(self, rng: np.random.Generator) -> np.ndarray:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        w, h = photo.size
        short = min(np.exp(rng.uniform(*self.log_range)), min(h, w))
        side = self.size * min(h, w) / short  # the crop's side in the photograph's pixels
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        return area_crop(photo, (x0, y0, x0 + side, y0 + side), self.size)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 0x5CA1E])
        return {"image": to_tensor(self.crop(rng)), "index": int(i)}


# --- CIFAR-10 ----------------------------------------------------------------------------------
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch",)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a crafted file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_folder(data_root: str | os.PathLike | None) -> Path:
    if data_root is None:
        raise UserError("cifar10 needs --data-root DIR: a folder that holds cifar-10-batches-py "
                        "(add --download to fetch it there)")
    root = Path(data_root)
    folder = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    if not folder.is_dir():
        raise UserError(f"no cifar-10-batches-py folder under {root}; pass --download to fetch CIFAR-10 "
                        "there, or extract the python version of the archive there yourself")
    return folder


def download_cifar10(data_root, url: str | None = None, md5: str | None = None) -> Path:
    """Fetch and extract CIFAR-10 into ``data_root/cifar-10-batches-py`` (nothing if it is there).

    Uses torchvision's ``download_and_extract_archive`` (the archive's MD5 is checked). Everything
    happens in a temporary folder inside ``data_root`` that is moved into place at the end, so a
    failed download (network, checksum) leaves nothing behind.
    """
    import shutil
    import tempfile

    from torchvision.datasets.utils import download_and_extract_archive

    root = Path(data_root)
    if (root / "cifar-10-batches-py").is_dir():
        return root / "cifar-10-batches-py"
    url, md5 = url or CIFAR10_URL, md5 or CIFAR10_MD5
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    quiet = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
    try:
        with quiet:  # torchvision's progress bar: on a terminal only
            download_and_extract_archive(url, str(tmp), filename="cifar-10-python.tar.gz", md5=md5)
        if not (tmp / "cifar-10-batches-py").is_dir():
            raise RuntimeError("the archive holds no cifar-10-batches-py folder")
        os.replace(tmp / "cifar-10-batches-py", root / "cifar-10-batches-py")
    except Exception as e:  # noqa: BLE001 - any failure: one line, nothing left
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise UserError(f"could not download CIFAR-10 from {url}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    shutil.rmtree(tmp, ignore_errors=True)
    return root / "cifar-10-batches-py"


def _read_cifar_batch(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"CIFAR-10 file missing: {path}; the folder must hold data_batch_1..5 and test_batch")
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}  # keys: str or bytes
        data = np.asarray(d["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"data has shape {data.shape} and dtype {data.dtype}")
        if len(d["labels"]) != len(data):
            raise ValueError("labels and data differ in length")
    except Exception as e:  # noqa: BLE001 - any failure means a malformed file
        raise UserError(f"malformed CIFAR-10 file {path}: {e}") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def write_cifar_like(root, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write random uint8 images in the ``cifar-10-batches-py`` layout under ``root`` (five train
    batches of ``n_train / 5`` images, a test batch of ``n_test``, ``batches.meta``): a stand-in for
    CIFAR-10 that :func:`load_cifar10` and torchvision read, for tests and benchmarks without a download."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, size in zip(names, [n_train // 5] * 5 + [n_test]):
        data = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [int(v) for v in rng.integers(0, 10, size)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return folder


def load_cifar10(split: str, data_root=None, resolution: int = 32, download: bool = False) -> ArrayImages:
    """CIFAR-10 ``train`` (indices 0..49,999) or ``test`` (50,000..59,999) from a local folder
    (fetched first with ``download=True``: :func:`download_cifar10`)."""
    if split not in ("train", "test"):
        raise UserError(f"cifar10 has splits 'train' and 'test', not {split!r}")
    if resolution != 32:
        raise UserError(f"cifar10 images are 32x32; use --resolution 32 (got {resolution})")
    if download:
        if data_root is None:
            raise UserError("--download needs --data-root DIR, the folder to put CIFAR-10 in")
        download_cifar10(data_root, CIFAR10_URL, CIFAR10_MD5)
    folder = _cifar_folder(data_root)
    train = [_read_cifar_batch(folder / n) for n in CIFAR_TRAIN_FILES]
    n_train = sum(len(b) for b in train)
    if split == "train":
        return ArrayImages(np.concatenate(train), 0)
    return ArrayImages(np.concatenate([_read_cifar_batch(folder / n) for n in CIFAR_TEST_FILES]), n_train)


# --- image folder ------------------------------------------------------------------------------
def _image_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as e:
        raise UserError(f"{folder} cannot be read ({e.strerror}); check its permissions") from None


def count_images(folder) -> int:
    """The number of PNG/JPEG files in ``folder`` (0 when it is not a readable folder): what
    :func:`load_image_folder` would read, counted without reading them."""
    try:
        return len(_image_files(Path(folder))) if folder is not None and Path(folder).is_dir() else 0
    except UserError:
        return 0


def _rgb(im):
    """A PIL image as RGB: 16-bit grayscale scaled to 8 bits (a plain conversion would saturate it),
    everything else (palette, grayscale, CMYK, alpha) through PIL's conversion."""
    if im.mode.startswith("I;16"):
        from PIL import Image

        gray = (np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return im.convert("RGB")


def load_image_folder(folder, resolution: int = 32) -> ArrayImages:
    """Every PNG/JPEG in ``folder`` (sorted by name), centre-cropped to a square and resized.

    Grayscale, 16-bit, palette and CMYK images are converted to RGB; images smaller than
    ``resolution``, files that are not images (or are truncated, or whose header claims more pixels
    than PIL's decompression-bomb limit) are refused with a message naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    if folder is None:
        raise UserError("image-folder needs --data-root (or --images) naming a folder of PNG/JPEG files")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    files = _image_files(folder)
    if not files:
        raise UserError(f"no PNG or JPEG files in {folder}")
    images = []
    for p in files:
        try:
            with warnings.catch_warnings():
                # an image above PIL's warning size but below its hard limit is read as any other
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(p) as im:
                    w, h = im.size
                    if min(w, h) < resolution:
                        raise UserError(f"{p} is {w}x{h}, smaller than the resolution {resolution}; "
                                        "remove it or lower --resolution")
                    im.load()
                    rgb = _rgb(im)
        except Image.DecompressionBombError:
            raise UserError(f"{p} claims more pixels than PIL reads safely (a decompression bomb, or a damaged "
                            "header); remove it from the folder") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise UserError(f"{p} is not a readable image ({type(e).__name__}); remove it from the folder") from None
        w, h = rgb.size
        s = min(w, h)
        rgb = rgb.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        images.append(np.asarray(rgb.resize((resolution, resolution), Image.LANCZOS)))
    return ArrayImages(np.stack(images), 0, [p.name for p in files])


# --- physical fields ---------------------------------------------------------------------------
class FieldImages(ArrayImages):
    """Generated fields ``(N, 1, H, W)`` float32, already in the model's units (the field divided by
    a fixed per-dataset scale, :data:`FIELD_SCALES`); ``field`` describes them for reports."""

    def __init__(self, fields: np.ndarray, index_offset: int, field: dict):
        super().__init__(fields, index_offset)
        self.field = field

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(self.images[i]), "index": self.index_offset + int(i)}


# fixed scales, model units = field / scale, chosen so that the generated fields stay inside [-1, 1] (README)
FIELD_SCALES = {"navier-stokes": 1.5, "darcy": 0.016}
FIELD_SIZES = {"navier-stokes": (500, 100), "darcy": (1000, 100)}  # (train, test) samples
FIELD_VAL = 100  # validation samples, after the test range: held out for choices (a calibration, a shrinkage)
FIELD_SEED = 0


def area_downsample(x: np.ndarray, size: int) -> np.ndarray:
    n = x.shape[-1]
    if size == n:
        return x
    if n % size:
        raise UserError(f"fields are generated at {n}x{n}; --resolution must divide it, got {size}")
    f = n // size
    return x.reshape(*x.shape[:-2], size, f, size, f).mean(axis=(-3, -1))


def generate_fields(kind: str, count: int, start: int = 0, native: int = 64, progress: bool = False) -> np.ndarray:
    """``count`` raw fields ``(count, native, native)`` of ``kind``, indices ``start..``; cached on disk
    keyed by the kind, the solver's parameters and the index range."""
    params = {**(fields.NS_DEFAULTS if kind == "navier-stokes" else fields.DARCY_DEFAULTS), "resolution": native}
    key = hashlib.sha256(json.dumps([kind, FIELD_SEED, params, start, count], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "fields" / f"{kind}_{native}_{start}_{count}_{key}.npy"
    if path.exists():
        return np.load(path)
    chunks, chunk = [], 50
    for lo in progress_bar(range(start, start + count, chunk), desc=f"generate {kind}", enabled=progress):
        idx = range(lo, min(lo + chunk, start + count))
        chunks.append(fields.navier_stokes(FIELD_SEED, idx, **params) if kind == "navier-stokes"
                      else fields.darcy(FIELD_SEED, idx, **params)[0])
    out = np.concatenate(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


def load_fields(kind: str, split: str, resolution: int = 32, progress: bool = True) -> FieldImages:
    """The ``navier-stokes`` or ``darcy`` split: train indices ``0..n_train``, test after them, validation
    (:data:`FIELD_VAL`) after those (disjoint), generated at 64x64 (at 128x128 for ``resolution`` 128) and
    area-downsampled to ``resolution``."""
    if split not in ("train", "val", "test"):
        raise UserError(f"{kind} has splits 'train', 'val' and 'test', not {split!r}")
    native = 128 if resolution == 128 else 64
    if native % resolution:
        raise UserError(f"{kind} is generated at 64x64 (and 128x128); --resolution must be 16, 32, 64 or 128, "
                        f"got {resolution}")
    n_train, n_test = FIELD_SIZES[kind]
    start, count = {"train": (0, n_train), "test": (n_train, n_test), "val": (n_train + n_test, FIELD_VAL)}[split]
    raw = generate_fields(kind, count, start, native, progress)
    images = area_downsample(raw, resolution)[:, None] / FIELD_SCALES[kind]
    # the forcing sin/cos 2pi(x + y) singles out a diagonal: Navier-Stokes fields have no rotation or
    # reflection symmetry; Darcy's square domain, source and isotropic coefficient field have all 8
    field = {"name": kind, "scale": FIELD_SCALES[kind], "signed": kind == "navier-stokes",
             "quantity": "vorticity" if kind == "navier-stokes" else "pressure",
             "dihedral_invariant": kind == "darcy", "periodic": kind == "navier-stokes"}
    return FieldImages(images.astype(np.float32), start, field)

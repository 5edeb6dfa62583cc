"""Memory estimates of reconstructions, checked before anything is allocated (:func:`ddo.api.guard`):
a request that cannot fit is refused in one line naming the flag to lower and how far."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ddo.api import Knob, guard, images_bytes, network_bytes, sampling_rows

from ..classical.kriging import STD_CHUNK

DIHEDRAL_MOVES = 8  # the symmetrised posterior-mean estimate evaluates the network under 8 moves
TPS_CHUNK = 4096  # targets per chunk of ddo_conditional.classical.thin_plate.tps_eval


def reconstruction_bytes(config: dict, *, resolution: int, batch_size: int, num_samples: int, images: int,
                         points: int = 0, backward: bool = False) -> int:
    """Peak memory of reconstructing ``images`` images at ``resolution``: the network's activations on
    the rows of one call, the samples of one batch and their copies, the symmetrised estimate, the
    context inputs repeated per call, and the per-image outputs kept for every image (the data, mean,
    std, calibrated std, interval); with ``points``, the thin-plate spline and the point encoders; with
    ``backward`` (guidance through the network's gradient), the activations autograd keeps for it."""
    channels = max(1, int(config.get("channels") or 3))
    batch, call = sampling_rows(images, batch_size, num_samples)
    total = (network_bytes(config, call, resolution, training=backward)
             + images_bytes(num_samples * batch, channels, resolution, copies=3)
             + images_bytes(DIHEDRAL_MOVES * batch, channels, resolution, copies=2)
             + images_bytes(call, channels + 4, resolution, copies=2)
             + images_bytes(images, channels, resolution, copies=8))
    if points:
        total += point_bytes(config, points, resolution, call)
    return total


def thin_plate_bytes(points: int, resolution: int) -> int:
    """The thin-plate spline of ``points`` points on the grid: its float64 system, inverse and kernel,
    and the evaluation in chunks of :data:`TPS_CHUNK` targets."""
    k = points + 3
    return 8 * 6 * k * k + 8 * 3 * min(resolution * resolution, TPS_CHUNK) * k


def check_thin_plate(ratio: float, resolution: int, device=None) -> int:
    """Refuse (one line) a thin-plate baseline whose dense solve cannot fit: ``ratio`` of the pixels of a
    ``resolution`` grid (the most an image of the masks observes)."""
    return guard(f"the thin-plate baseline at {resolution:,}x{resolution:,} ({ratio:g} of the pixels observed)",
                 lambda resolution: thin_plate_bytes(math.ceil(ratio * resolution ** 2), resolution),
                 [Knob("resolution", "--resolution", resolution, hint=" (or leave thin-plate out of --baselines)")],
                 device)


def kriging_bytes(points: int, channels: int, resolution: int) -> int:
    """The kriging baseline on one image: the float64 system of ``channels`` observations at ``points``
    pixels (matrix, its Cholesky factor and a copy), the pointwise std's chunk and the fields."""
    m = points * channels
    return 8 * (3 * m * m + 6 * STD_CHUNK + 6 * channels * resolution * resolution)  # the chunk, its indices


def prior_bytes(images: int, channels: int, resolution: int) -> int:
    """Fitting a Gaussian prior: ``images`` training fields in float64 and their centred copy."""
    return 8 * 2 * images * channels * resolution * resolution


def check_kriging(ratio: float, channels: int, resolution: int, images: int, device=None) -> int:
    """Refuse (one line) a kriging baseline whose solve or prior cannot fit: ``ratio`` of the pixels of a
    ``resolution`` grid observed in every channel, a prior fitted on ``images`` training fields."""
    return guard(f"the kriging baseline at {resolution:,}x{resolution:,} ({ratio:g} of the pixels observed)",
                 lambda resolution: max(kriging_bytes(math.ceil(ratio * resolution ** 2), channels, resolution),
                                        prior_bytes(images, channels, resolution)),
                 [Knob("resolution", "--resolution", resolution, hint=" (or leave kriging out of --baselines)")],
                 device)


def point_bytes(config: dict, points: int, resolution: int, rows: int) -> int:
    """The thin-plate spline of ``points`` points on the grid (its float64 system, inverse and
    kernel; evaluation in chunks of :data:`TPS_CHUNK` targets) and the point encoder on ``rows`` rows
    (set convolution, factorised: the row and column Gaussians of each point, the values spread over
    the rows, and the features on the grid; attention: one score per head, grid point and point),
    four float32 copies of each for temporaries."""
    tps = thin_plate_bytes(points, resolution)
    if config.get("conditioning") == "sparse-attention":
        heads = int(config.get("attention_heads") or 4)
        return tps + 4 * 4 * heads * rows * resolution * resolution * points
    c = int(config.get("channels") or 3)
    return tps + 4 * 4 * rows * (points * resolution * (c + 3) + 3 * (c + 1) * resolution * resolution)


FLAGS = {"resolution": "--resolution", "batch_size": "--batch-size", "num_samples": "--num-samples",
         "images": "--limit", "points": "the number of points in the CSV"}


@dataclass(frozen=True)
class ReconstructionSize:
    """What a reconstruction holds at once: the grid (``resolution``), the ``images`` kept, the samples
    per image, the rows per network call, the ``points`` of a CSV (0 for a grid context) and the images
    ``loaded`` at the resolution besides those kept (a folder is read whole: uint8 pixels and their stack);
    ``backward``: each step differentiates the network (``--guidance dps``)."""

    resolution: int
    images: int = 1
    num_samples: int = 4
    batch_size: int = 32
    points: int = 0
    loaded: int = 0
    backward: bool = False


def check_reconstruction(config: dict, size: ReconstructionSize, device=None, what: str | None = None,
                         flags=("resolution", "batch_size", "num_samples", "images")) -> int:
    """Refuse (one line) a reconstruction of ``size`` whose :func:`reconstruction_bytes` cannot fit, naming
    the flag to lower among ``flags`` (those the command has): ``--resolution``, ``--batch-size``,
    ``--num-samples``, ``--limit`` (the images kept), or the points of the CSV."""
    points, loaded = size.points, size.loaded
    values = {"resolution": size.resolution, "batch_size": size.batch_size, "num_samples": size.num_samples,
              "images": size.images, "points": points}
    channels = max(1, int(config.get("channels") or 3))
    knobs = [Knob(name, FLAGS[name], values[name], smallest=4 if name == "points" else 1)
             for name in (*flags, *(("points",) if points else ())) if name != "images" or not points]

    def estimate(**kw):
        v = {**values, **kw}
        return (reconstruction_bytes(config, resolution=v["resolution"], batch_size=v["batch_size"],
                                     num_samples=v["num_samples"], images=v["images"], points=v["points"],
                                     backward=size.backward)
                + 2 * loaded * channels * v["resolution"] ** 2)

    res, images = values["resolution"], values["images"]
    what = what or (f"reconstructing {points:,} points at {res:,}x{res:,}" if points else
                    f"reconstructing {images:,} image{'s' if images != 1 else ''} at {res:,}x{res:,}")
    n = values["num_samples"]
    return guard(f"{what} ({n:,} sample{'s' if n != 1 else ''}, {values['batch_size']:,} rows per call)", estimate,
                 knobs, device)


__all__ = ["ReconstructionSize", "reconstruction_bytes", "point_bytes", "thin_plate_bytes", "kriging_bytes", "check_kriging", "check_reconstruction",
           "check_thin_plate"]

"""Training data for the generators: digits, Fashion-MNIST, a folder of images, 2-D toys.

>>> x, y = load_images("digits", size=16)         # float32 tensor (N, 1, 16, 16) in [-1, 1], labels
>>> pts = load_toy("moons", n=2000, seed=0)        # (2000, 2)

- ``digits``: scikit-learn's 1,797 8x8 digits (embedded in the package), upsampled bilinearly.
- ``fashion``: Fashion-MNIST's 70,000 28x28 images from the standard IDX files (Debian package
  ``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist; ``path`` points
  at your own copy).
- ``folder``: every PNG/JPEG/BMP/GIF/WebP under ``path``, resized to ``size`` (grayscale or RGB).
- toys: ``gmm`` (8 Gaussians on a circle), ``moons``, ``rings``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from studio.errors import StudioError
from studio.limits import current as current_limits

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_DATASETS = ("digits", "fashion", "folder")
TOYS = ("gmm", "moons", "rings")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CLASS_NAMES = {  # the labelled datasets a conditional generator can learn
    "digits": [str(i) for i in range(10)],
    "fashion": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"],
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise StudioError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise StudioError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise StudioError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def _fashion(path: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(path) if path else FASHION_DIR
    prefix = "train" if split == "train" else "t10k"
    images = [folder / f"{prefix}-images-idx3-ubyte{s}" for s in (".gz", "")]
    labels = [folder / f"{prefix}-labels-idx1-ubyte{s}" for s in (".gz", "")]
    img = next((p for p in images if p.is_file()), None)
    lab = next((p for p in labels if p.is_file()), None)
    if img is None or lab is None:
        raise StudioError(f"Fashion-MNIST IDX files not found in {folder}; install the Debian package "
                          "dataset-fashion-mnist or set data.path to a folder with "
                          f"{prefix}-images-idx3-ubyte(.gz) and {prefix}-labels-idx1-ubyte(.gz)")
    return read_idx(img).astype(np.float32) / 255.0, read_idx(lab).astype(np.int64)


MAX_PIXELS = 40_000_000


def _folder(path: str | None, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise StudioError("the folder dataset needs data.path (a folder of images)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise StudioError(f"image folder {folder.name or path} does not exist")
    most = current_limits().folder_images
    files = []
    for p in folder.rglob("*"):  # stops counting past the limit instead of listing a huge tree first
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            files.append(p)
            if len(files) > most:
                raise StudioError(f"the image folder holds more than {most:,} images (limits.folder_images)")
    files.sort()
    if not files:
        raise StudioError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder.name or path}")
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                if im.width * im.height > MAX_PIXELS:  # checked before decoding: a tiny file can claim a huge image
                    raise StudioError(f"image {f.name} is {im.width}x{im.height} pixels; the limit is "
                                      f"{MAX_PIXELS:,} pixels")
                im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise StudioError(f"cannot read image {f.relative_to(folder)}: {exc}; remove it or fix it") from None
        out.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
    return np.stack(out), np.zeros(len(out), dtype=np.int64)


def load_images(name: str, size: int = 16, channels: int = 1, path: str | None = None, split: str = "train",
                limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (N, C, size, size) scaled to [-1, 1], and integer labels."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)
        # a fixed 80/20 split, so held-out digits exist for the metrics
        idx = np.random.default_rng(0).permutation(len(x))
        cut = int(0.8 * len(x))
        idx = idx[:cut] if split == "train" else idx[cut:]
        x, y = x[idx], y[idx]
    elif name == "fashion":
        x, y = _fashion(path, split)
        x = x[:, None]
    elif name == "folder":
        x, y = _folder(path, size, channels)
    else:
        raise StudioError(f"unknown image dataset {name!r}; choose one of: {', '.join(IMAGE_DATASETS)}")
    if limit:
        x, y = x[:limit], y[:limit]
    t = torch.from_numpy(np.ascontiguousarray(x))
    if channels == 3 and t.shape[1] == 1:
        t = t.repeat(1, 3, 1, 1)
    if t.shape[-1] != size:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return (t.clamp(0, 1) * 2 - 1).contiguous(), torch.from_numpy(y)


def load_toy(name: str, n: int = 2000, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """2-D points (n, 2) from a toy distribution, roughly within [-2, 2]."""
    rng = np.random.default_rng(seed)
    if name == "gmm":
        k = rng.integers(0, 8, n)
        centers = np.stack([np.cos(2 * np.pi * k / 8), np.sin(2 * np.pi * k / 8)], 1) * 1.5
        pts = centers + rng.normal(0, noise * 2, (n, 2))
    elif name == "moons":
        half = rng.integers(0, 2, n)
        t = rng.uniform(0, np.pi, n)
        pts = np.where(half[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1),
                       np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)) - [0.5, 0.25]
        pts = pts * 1.2 + rng.normal(0, noise, (n, 2))
    elif name == "rings":
        r = rng.choice([0.6, 1.4], n)
        t = rng.uniform(0, 2 * np.pi, n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1) + rng.normal(0, noise, (n, 2))
    else:
        raise StudioError(f"unknown toy distribution {name!r}; choose one of: {', '.join(TOYS)}")
    return torch.from_numpy(pts.astype(np.float32))

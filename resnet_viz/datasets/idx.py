"""MNIST and Fashion-MNIST in the IDX format of LeCun et al. (http://yann.lecun.com/exdb/mnist/), raw or .gz.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the values in row-major order. Both data sets use unsigned bytes (type
0x08): images are 0x00000803 (count, rows, columns), labels 0x00000801 (count). Only the training
files are read (60,000 examples); a subset of the size the user chose is drawn from them.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from .base import DatasetError, LabeledImages, read_capped

UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one MNIST and Fashion-MNIST use
MAX_ITEMS = 100_000  # more than the 60,000 training examples of either set
MAX_SIDE = 64  # MNIST images are 28x28
MAX_BYTES = 16 + MAX_ITEMS * MAX_SIDE * MAX_SIDE  # header plus the largest image file accepted
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_NAMES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")  # as distributed, and a common rename
LABEL_NAMES = ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte")


def parse_idx(raw: bytes, ndim: int, where: str) -> np.ndarray:
    """The uint8 array of an IDX file of `ndim` dimensions; refuses a wrong magic, a truncated or padded file."""
    if len(raw) < 4:
        raise DatasetError(f"{where}: truncated: {len(raw)} bytes, shorter than an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if raw[:2] != b"\0\0" or raw[2] != UBYTE or raw[3] != ndim:
        raise DatasetError(
            f"{where}: unknown IDX magic 0x{magic:08x}; expected 0x{0x800 | ndim:08x} (unsigned bytes, "
            f"{ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{where}: truncated: {len(raw)} bytes, shorter than an IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if dims[0] > MAX_ITEMS or any(d > MAX_SIDE or d == 0 for d in dims[1:]):
        raise DatasetError(
            f"{where}: dimensions {dims} are out of range (at most {MAX_ITEMS:,} items of at most "
            f"{MAX_SIDE}x{MAX_SIDE})"
        )
    start, size = 4 + 4 * ndim, math.prod(dims)
    if len(raw) - start != size:
        problem = "truncated" if len(raw) - start < size else "longer than its header says"
        raise DatasetError(
            f"{where}: {problem}: the header gives {dims} ({size:,} bytes of values), the file holds "
            f"{len(raw) - start:,}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def find(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` (raw or .gz) present in `folder`."""
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_folder(folder: Path, classes: tuple[str, ...], label: str) -> LabeledImages:
    """The training images and labels of an MNIST-like data set in `folder`."""
    images_path, labels_path = find(folder, IMAGE_NAMES), find(folder, LABEL_NAMES)
    if images_path is None or labels_path is None:
        missing = IMAGE_NAMES[0] if images_path is None else LABEL_NAMES[0]
        raise DatasetError(
            f"{label}: no {missing} (or {missing}.gz) in {folder.name}/; put the data set's IDX files there"
        )
    images = parse_idx(read_capped(images_path, MAX_BYTES, images_path.name), 3, images_path.name)
    labels = parse_idx(read_capped(labels_path, 8 + MAX_ITEMS, labels_path.name), 1, labels_path.name)
    if len(images) != len(labels):
        raise DatasetError(f"{label}: {len(images):,} images but {len(labels):,} labels")
    if len(labels) and int(labels.max()) >= len(classes):
        raise DatasetError(f"{labels_path.name}: label {int(labels.max())} out of range (0 to {len(classes) - 1})")
    return LabeledImages(images[..., None], labels.astype(np.int64), classes)

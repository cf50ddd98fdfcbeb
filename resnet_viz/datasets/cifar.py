"""CIFAR-10 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html), binary version only.

Each file ``data_batch_N.bin`` is a run of 3,073-byte records: one label byte (0-9), then 1,024 red,
1,024 green and 1,024 blue bytes of a 32x32 image, row by row. The "python version" of the same data
is a set of pickles; unpickling runs code from the file, so it is refused by its names and its first
bytes, never opened with pickle: the message names the binary version instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetError, LabeledImages, read_capped

RECORD = 1 + 3 * 32 * 32  # label byte + 32x32 RGB planes
BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))  # the training files, 10,000 records each
MAX_BYTES = 10_000 * RECORD  # one batch file
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDERS = ("cifar-10-batches-bin", ".")  # where the archive unpacks, or the files directly in the folder
PICKLE_FOLDER = "cifar-10-batches-py"
BINARY_HINT = (
    "CIFAR-10's pickled python version is never unpickled here; download the binary version "
    "(cifar-10-binary.tar.gz) and unpack it so that cifar-10-batches-bin/data_batch_1.bin is in {folder}"
)


def looks_pickled(head: bytes) -> bool:
    """A pickle of protocol 2 or later starts with 0x80 and its protocol number; CIFAR's labels are 0-9."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def parse_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) int64) of one binary batch file."""
    if looks_pickled(raw[:2]):
        raise DatasetError(f"{where}: a pickle, not a binary batch. " + BINARY_HINT.format(folder="the data folder"))
    if not raw or len(raw) % RECORD:
        raise DatasetError(f"{where}: truncated: {len(raw):,} bytes is not a whole number of {RECORD:,}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= len(CLASSES))
    if len(bad):
        raise DatasetError(
            f"{where}: record {int(bad[0])} has label byte {int(labels[bad[0]])}; CIFAR-10 labels are "
            "0 to 9 (is this the binary version of CIFAR-10, not CIFAR-100?)"
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels


def _python_version(folder: Path) -> Path | None:
    """A file or folder of the python version, found by name only (nothing is opened)."""
    candidates = [folder / PICKLE_FOLDER, folder / BATCHES[0], folder / FOLDERS[0] / BATCHES[0]]
    return next((p for p in candidates if p.exists()), None)


def read_folder(folder: Path, needed: int) -> LabeledImages:
    """Enough training batches, in order, to hold `needed` examples (all five at most).

    Every batch file is checked for a pickle's first bytes before it is parsed (parse_batch), so a
    python-version file renamed to .bin is refused too.
    """
    base = next((folder / sub for sub in FOLDERS if (folder / sub / f"{BATCHES[0]}.bin").is_file()), None)
    if base is None:
        found = _python_version(folder)
        if found is not None:
            hint = BINARY_HINT.format(folder=f"{folder.name}/")
            raise DatasetError(f"cifar10: {found.name} is the python version. {hint}")
        raise DatasetError(
            f"cifar10: no {FOLDERS[0]}/{BATCHES[0]}.bin in {folder.name}/; "
            "put CIFAR-10's binary version there (cifar-10-binary.tar.gz)"
        )
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for name in BATCHES:
        path = base / f"{name}.bin"
        if not path.is_file() or sum(len(y) for _, y in parts) >= needed:
            break
        parts.append(parse_batch(read_capped(path, MAX_BYTES, path.name), path.name))
    images = np.concatenate([x for x, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    return LabeledImages(images, labels, CLASSES)

"""Where data sets come from: files in the data folder (MNIST, Fashion-MNIST, CIFAR-10) and uploads by hash.

Files are looked up in ``$RESNET_VIZ_DATA_DIR/datasets`` (or the folder `set_folder` gives, the CLI's
``--data-dir``), one sub-folder per data set. Uploaded data sets are kept in a run store's
``datasets`` table and named by content hash; this module finds them for `data.load_dataset`
without `data` knowing about the store: in memory (`register`, for library use), in stores the
process named (`use_store`), then in the default run store.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import cifar, idx
from .base import DatasetError, LabeledImages
from .uploads import Upload

FILE_SETS = {  # name -> (folder names tried in order, what to put there)
    "mnist": (("mnist", "MNIST"), "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (IDX, raw or .gz)"),
    "fashion_mnist": (
        ("fashion_mnist", "fashion-mnist", "FashionMNIST"),
        "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz of Fashion-MNIST (IDX, raw or .gz)",
    ),
    "cifar10": (("cifar10", "cifar-10"), "cifar-10-batches-bin/ from CIFAR-10's binary version"),
}
_lock = threading.Lock()
_folder: Path | None = None  # set by --data-dir; else the default below


def folder() -> Path:
    """The folder holding one sub-folder per file data set."""
    if _folder is not None:
        return _folder
    from ..store import default_data_dir  # the store's folder: one place for everything the app keeps

    return default_data_dir() / "datasets"


def set_folder(path: Path | str | None) -> None:
    """Read file data sets from `path` (None: back to ``$RESNET_VIZ_DATA_DIR/datasets``)."""
    global _folder
    _folder = Path(path).expanduser() if path is not None else None


def file_folder(name: str) -> Path:
    """The sub-folder of data set `name` (the first of its accepted names that exists)."""
    base = folder()
    names = FILE_SETS[name][0]
    return next((base / n for n in names if (base / n).is_dir()), base / names[0])


PLACE = "the server's data-set folder ($RESNET_VIZ_DATA_DIR/datasets, or the CLI's --data-dir)"


def where_to_put(name: str) -> str:
    """One line: which files to put where, for a data set whose files are missing. It names the folder
    relative to the data-set folder: the page shows it to students, who need not see the server's paths."""
    return f"put {FILE_SETS[name][1]} in {file_folder(name).name}/ of {PLACE}"


def present(name: str) -> bool:
    """Whether the files of `name` seem to be there (names only; nothing is read)."""
    sub = file_folder(name)
    if name == "cifar10":
        return any((sub / s / f"{cifar.BATCHES[0]}.bin").is_file() for s in cifar.FOLDERS)
    return idx.find(sub, idx.IMAGE_NAMES) is not None and idx.find(sub, idx.LABEL_NAMES) is not None


def read_file_set(name: str, n: int, seed: int) -> LabeledImages:
    """`n` training examples of file data set `name`, drawn by `seed`."""
    sub = file_folder(name)
    if not sub.is_dir():
        raise DatasetError(f"{name}: no folder {sub.name}/ in {PLACE}; {where_to_put(name)}")
    if name == "cifar10":
        images = cifar.read_folder(sub, n)
    else:
        images = idx.read_folder(sub, idx.MNIST_CLASSES if name == "mnist" else idx.FASHION_CLASSES, name)
    return images.subset(n, seed)


# --------------------------------------------------------------------------------------------------
# Uploads by content hash


@dataclass(frozen=True)
class UploadInfo:
    """A stored upload for listings and for model fields: known without loading its arrays."""

    digest: str  # content hash (Upload.digest)
    name: str  # what the user called it (untrusted text)
    kind: str  # "points" or "images"
    classes: tuple[str, ...]  # class names (untrusted text)
    counts: tuple[int, ...]  # examples per class

    @classmethod
    def of(cls, upload: Upload) -> UploadInfo:
        return cls(upload.digest, upload.name, upload.kind, upload.classes, upload.counts)

    @property
    def size(self) -> int:
        return sum(self.counts)


class Source(Protocol):
    """Where uploads are kept (a RunStore)."""

    def dataset_info(self, digest: str) -> UploadInfo | None: ...

    def get_dataset(self, digest: str) -> Upload | None: ...


_memory: dict[str, Upload] = {}
_infos: dict[str, UploadInfo] = {}  # content-addressed: an entry never changes
_sources: list[Source] = []


def register(upload: Upload) -> str:
    """Keep `upload` in memory (library use, no store); returns its content hash for `DataConfig(upload=...)`."""
    upload.check(upload.name)
    digest = upload.digest
    with _lock:
        _memory[digest] = upload
        _infos[digest] = UploadInfo.of(upload)
    return digest


def use_store(source: Source) -> None:
    """Look uploads up in `source` too (before the default store): the CLI's --store, a notebook's store."""
    with _lock:
        if source not in _sources:
            _sources.insert(0, source)


def _all_sources() -> list[Source]:
    from ..store import RunStore  # the default store, at its folder now (tests and servers set it by env)

    with _lock:
        return [*_sources, RunStore()]


def _unknown(digest: str) -> DatasetError:
    return DatasetError(f"no stored data set has content hash {digest[:12]}...; upload it again", "upload")


def info(digest: str) -> UploadInfo:
    """What the upload `digest` holds, without its arrays; raises DatasetError when no source has it."""
    with _lock:
        known = _infos.get(digest)
    if known is not None:
        return known
    for source in _all_sources():
        found = source.dataset_info(digest)
        if found is not None:
            with _lock:
                _infos[digest] = found
            return found
    raise _unknown(digest)


def upload(digest: str) -> Upload:
    """The upload `digest` with its arrays (memory first, then the stores)."""
    with _lock:
        kept = _memory.get(digest)
    if kept is not None:
        return kept
    for source in _all_sources():
        found = source.get_dataset(digest)
        if found is not None:
            return found
    raise _unknown(digest)


def forget(digest: str) -> None:
    """Drop the cached info of an upload a store no longer holds (one `register`ed in memory is kept)."""
    with _lock:
        if digest not in _memory:
            _infos.pop(digest, None)


def remember(upload: Upload) -> None:
    """Note an upload's info once a store holds it (no arrays kept)."""
    with _lock:
        _infos[upload.digest] = UploadInfo.of(upload)

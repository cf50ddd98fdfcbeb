"""Data sets uploaded in the app: a CSV of 2-D points, or a zip of image folders. Bounded and validated.

Untrusted input, so nothing is read unbounded (`options.UPLOADS` holds every limit): the byte size is
checked before parsing, a CSV's rows are counted before they are split, a zip's members are counted
before zipfile lists them, checked for unsafe paths, links and encryption (`archive.check_member`),
and each is unpacked in chunks with a cap (`archive.read_member`: a 1 GB zip-bomb member costs one
chunk); an image's width and height are read from its header before it is decoded. A file that
breaks any rule is refused whole with one message naming the problem: nothing is partly imported.

An upload is content-addressed: `Upload.digest` hashes its kind, classes and arrays (not its name),
so the same data uploaded twice is one entry, and two different uploads never share a run. Images
are kept at 32x32 RGB (uint8) and resized to the input size a run chooses; tensors are stored as
safetensors, never pickled.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import PurePosixPath

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..archive import ArchiveError, check_member, count_members, read_member
from ..options import UPLOADS, UploadLimits
from .base import DatasetError

KINDS = ("points", "images")
SIDE = 32  # uploaded images are kept at SIDE x SIDE RGB and resized to a run's input size
FORMAT = "resnet-viz-data"  # the safetensors metadata's format tag
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLUMNS = ("x", "y", "label")


@dataclass(frozen=True)
class Upload:
    """An uploaded data set: points (N, 2) float32 or images (N, SIDE, SIDE, 3) uint8, labels (N,) int64."""

    name: str  # what the user called it (untrusted text: show it with safe_text)
    kind: str  # "points" or "images"
    classes: tuple[str, ...]  # class names; label i is classes[i]
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)

    @property
    def digest(self) -> str:
        """sha256 of the kind, classes and arrays: what a DataConfig names this data by."""
        h = sha256(json.dumps([self.kind, list(self.classes), list(self.x.shape), str(self.x.dtype)]).encode())
        h.update(np.ascontiguousarray(self.x).tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()

    @property
    def counts(self) -> tuple[int, ...]:
        """Examples per class, in class order."""
        return tuple(int(c) for c in np.bincount(self.y, minlength=len(self.classes)))

    def to_safetensors(self) -> bytes:
        meta = {"format": FORMAT, "name": self.name, "kind": self.kind, "classes": json.dumps(list(self.classes))}
        return save_safetensors(
            {"x": torch.from_numpy(np.ascontiguousarray(self.x)), "y": torch.from_numpy(np.ascontiguousarray(self.y))},
            metadata=meta,
        )

    @classmethod
    def from_safetensors(cls, blob: bytes, where: str, limits: UploadLimits = UPLOADS) -> Upload:
        """An upload from its safetensors bytes, every field checked as on upload (never a pickle)."""
        try:
            tensors = load_safetensors(blob)
            meta = _metadata(blob)
        except Exception as exc:  # safetensors raises its own error types for any malformed header
            raise DatasetError(f"{where}: not a data set file ({type(exc).__name__}: {exc})") from exc
        if meta.get("format") != FORMAT or set(tensors) != {"x", "y"}:
            raise DatasetError(f"{where}: not a {FORMAT} file (needs tensors x and y)")
        try:
            classes = tuple(json.loads(meta.get("classes", "")))
        except ValueError as exc:
            raise DatasetError(f"{where}: class names are not JSON") from exc
        upload = cls(
            str(meta.get("name", ""))[: limits.name_chars],
            str(meta.get("kind")),
            classes,
            tensors["x"].numpy(),
            tensors["y"].numpy(),
        )
        upload.check(where, limits)
        return upload

    def check(self, where: str, limits: UploadLimits = UPLOADS) -> Upload:
        """Refuse anything an upload could not have produced: kind, shapes, dtypes, labels, finite values."""
        x, y, n = self.x, self.y, len(self.y)
        shape = (n, 2) if self.kind == "points" else (n, SIDE, SIDE, 3)
        dtype = np.float32 if self.kind == "points" else np.uint8
        ok = self.kind in KINDS and y.dtype == np.int64 and y.ndim == 1 and x.shape == shape and x.dtype == dtype
        if not ok:
            raise DatasetError(f"{where}: {self.kind} data must be {shape} {np.dtype(dtype)} with int64 labels")
        names_ok = all(isinstance(c, str) and 0 < len(c) <= limits.name_chars for c in self.classes)
        if not (names_ok and 2 <= len(self.classes) <= limits.classes and len(set(self.classes)) == len(self.classes)):
            raise DatasetError(f"{where}: needs 2 to {limits.classes} distinct class names")
        cap = limits.rows if self.kind == "points" else limits.images
        if not limits.min_examples <= n <= cap or y.min() < 0 or y.max() >= len(self.classes):
            raise DatasetError(f"{where}: needs {limits.min_examples} to {cap:,} examples with labels in range")
        if self.kind == "points" and not np.isfinite(x).all():
            raise DatasetError(f"{where}: points must be finite")
        return self


def _metadata(blob: bytes) -> dict[str, str]:
    """The __metadata__ of safetensors bytes: an 8-byte little-endian header length, then the JSON header."""
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("metadata must map names to strings")
    return meta


def _name(text: str, limits: UploadLimits) -> str:
    stem = PurePosixPath(text.replace("\\", "/")).name.rsplit(".", 1)[0] or "upload"
    return stem[: limits.name_chars]


def _class_order(labels: list[str]) -> tuple[str, ...]:
    """Sorted class names: numerically when every label is an integer ("2" before "10"), else as text."""
    names = set(labels)
    if all(n.lstrip("-").isdigit() for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


def _check_classes(classes: tuple[str, ...], what: str, limits: UploadLimits) -> None:
    if len(classes) < 2:
        only = f" ({classes[0][:40]!r})" if classes else ""
        raise DatasetError(f"only one class{only}: a classifier needs at least two {what}", "upload")
    if len(classes) > limits.classes:
        raise DatasetError(f"{len(classes)} classes, more than the {limits.classes} allowed", "upload")


def points_from_csv(raw: bytes, filename: str, limits: UploadLimits = UPLOADS) -> Upload:
    """2-D points from a CSV with a header naming x, y and label (any order, other columns ignored)."""
    where = _name(filename, limits)
    if len(raw) > limits.csv_bytes:
        raise DatasetError(f"too large: {len(raw):,} bytes, a CSV may have {limits.csv_bytes:,}", "upload")
    if raw.count(b"\n") > 2 * limits.rows + 2:  # a first bound before splitting (blank lines are allowed)
        raise DatasetError(f"too many rows: more than {limits.rows:,} points", "upload")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text (byte {exc.start}); save the CSV as UTF-8", "upload") from exc
    rows = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(rows)]
    except StopIteration:
        raise DatasetError("the file is empty; it needs a header row naming x, y and label", "upload") from None
    except csv.Error as exc:
        raise DatasetError(f"not a CSV file ({exc})", "upload") from exc
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"missing column {missing[0]!r}: the header row must name x, y and label", "upload")
    cols = [header.index(c) for c in COLUMNS]
    points: list[tuple[float, float]] = []
    labels: list[str] = []
    try:
        for line, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) <= max(cols):
                raise DatasetError(f"row {line}: {len(row)} values, the header has {len(header)}", "upload")
            values = []
            for column, index in zip(("x", "y"), cols, strict=False):
                cell = row[index].strip()
                try:
                    value = float(cell) if len(cell) <= 40 else math.nan
                except ValueError:
                    raise DatasetError(f"row {line}: {column} is not a number ({cell[:40]!r})", "upload") from None
                if not math.isfinite(value):
                    raise DatasetError(
                        f"row {line}: {column} is {cell[:40]!r} (NaN, infinite or too long); every x "
                        "and y must be a finite number",
                        "upload",
                    )
                values.append(value)
            label = row[cols[2]].strip()
            if not label or len(label) > limits.name_chars:
                raise DatasetError(f"row {line}: the label must be 1 to {limits.name_chars} characters", "upload")
            points.append((values[0], values[1]))
            labels.append(label)
            if len(points) > limits.rows:
                raise DatasetError(f"too many rows: more than {limits.rows:,} points", "upload")
    except csv.Error as exc:
        raise DatasetError(f"not a CSV file ({exc})", "upload") from exc
    if len(points) < limits.min_examples:
        raise DatasetError(
            f"only {len(points)} points: at least {limits.min_examples} are needed to fill the "
            "train, validation and test splits",
            "upload",
        )
    classes = _class_order(labels)
    _check_classes(classes, "labels", limits)
    index = {c: i for i, c in enumerate(classes)}
    x = np.asarray(points, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DatasetError("a value is too large for a 32-bit float; scale the points down", "upload")
    y = np.asarray([index[label] for label in labels], dtype=np.int64)
    return Upload(where, "points", classes, x, y).check(where, limits)


def _image(data: bytes, where: str, limits: UploadLimits) -> np.ndarray:
    """One PNG or JPEG as SIDE x SIDE RGB uint8; the pixel count is checked from the header before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
            width, height = img.size
            if width * height > limits.pixels:
                raise DatasetError(
                    f"{where}: {width}x{height} pixels, more than the {limits.pixels:,} an image may have", "upload"
                )
            img.load()
            rgb = img.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=None)
    except DatasetError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        EOFError,
    ) as exc:
        # Pillow's message can name its in-memory file ("<_io.BytesIO object at 0x...>"): noise to a student
        said = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))[:80]
        raise DatasetError(f"{where}: unreadable image ({type(exc).__name__}: {said})", "upload") from exc
    return np.asarray(rgb, dtype=np.uint8)


def _members(archive: zipfile.ZipFile, limits: UploadLimits) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class, member) per image: ``class/image.png``, or the same inside one top folder."""
    files = []
    for info in archive.infolist():
        path = check_member(info)
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
            continue  # folders, and the hidden files macOS and others add
        files.append((path, info))
    roots = {p.parts[0] for p, _ in files}
    strip = len(roots) == 1 and all(len(p.parts) == 3 for p, _ in files)
    out = []
    for path, info in files:
        parts = path.parts[1:] if strip else path.parts
        shown = str(path)[:80]
        if len(parts) != 2:
            raise DatasetError(f"{shown!r}: images must be in one folder per class (class/image.png)", "upload")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{shown!r}: only PNG and JPEG images (.png, .jpg, .jpeg)", "upload")
        if len(parts[0]) > limits.name_chars:
            raise DatasetError(f"{shown!r}: a class folder name may have {limits.name_chars} characters", "upload")
        out.append((parts[0], info))
    return out


def images_from_zip(raw: bytes, filename: str, limits: UploadLimits = UPLOADS) -> Upload:
    """Images from a zip with one folder per class (the folder name is the class), PNG or JPEG."""
    where = _name(filename, limits)
    if len(raw) > limits.zip_bytes:
        raise DatasetError(f"too large: {len(raw):,} bytes, a zip may have {limits.zip_bytes:,}", "upload")
    if count_members(raw) > limits.images + limits.classes + 64:  # images, class folders, a few hidden files
        raise DatasetError(f"too many files: a zip may hold {limits.images:,} images", "upload")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"not a zip file ({exc})", "upload") from exc
    with archive:
        try:
            members = _members(archive, limits)
        except ArchiveError as err:
            raise DatasetError(str(err), "upload") from err
        if len(members) > limits.images:
            raise DatasetError(f"too many images: {len(members):,}, a zip may hold {limits.images:,}", "upload")
        if len(members) < limits.min_examples:
            raise DatasetError(
                f"only {len(members)} images: at least {limits.min_examples} are needed to fill the "
                "train, validation and test splits",
                "upload",
            )
        classes = _class_order([c for c, _ in members])
        _check_classes(classes, "folders (one per class)", limits)
        index = {c: i for i, c in enumerate(classes)}
        images, labels, total = [], [], 0
        for cls, info in sorted(members, key=lambda m: m[1].filename):
            shown = info.filename[:80]
            if info.file_size > limits.image_bytes:
                raise DatasetError(
                    f"{shown!r}: too large ({info.file_size:,} bytes unpacked; an image may have "
                    f"{limits.image_bytes:,})",
                    "upload",
                )
            try:
                data = read_member(archive, info, limits.image_bytes, repr(shown))
            except ArchiveError as err:
                raise DatasetError(f"too large or damaged: {err}", "upload") from err
            total += len(data)
            if total > limits.unpacked_bytes:
                raise DatasetError(f"too large: more than {limits.unpacked_bytes:,} bytes of images unpacked", "upload")
            images.append(_image(data, repr(shown), limits))
            labels.append(index[cls])
    x = np.stack(images)
    return Upload(where, "images", classes, x, np.asarray(labels, dtype=np.int64)).check(where, limits)


def read_upload(raw: bytes, filename: str, limits: UploadLimits = UPLOADS) -> Upload:
    """An uploaded file by its extension: a .csv of points or a .zip of image folders."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix == ".csv":
        return points_from_csv(raw, filename, limits)
    if suffix == ".zip":
        return images_from_zip(raw, filename, limits)
    raise DatasetError("upload a .csv of points (x, y, label) or a .zip of image folders (one per class)", "upload")

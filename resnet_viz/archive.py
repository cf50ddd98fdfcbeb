"""A run as plain files (the exported folder), and reading such files back from a folder or a zip, bounded.

One writer serves `RunStore.export` and the CLI's ``--out``: manifest.json, config.json, summary.json,
records.json (what import reads), steps.csv and layers.csv (for people and spreadsheets) and one
``<model>.safetensors`` per model (its final weights). A run with weight snapshots along training adds
snapshots.json (their steps and each model's skip scale at each) and one ``<model>.snapshots.safetensors``
per model (tensors named ``<step>/<name>``): the step slider and the training path of the analysis pages,
wherever the run is imported.

Reading is for untrusted uploads. Every member is read through ``read(name, cap)``: a folder member is
size-checked before it is read, a zip member is decompressed in chunks and refused as soon as it
passes its cap, so a small zip that inflates to gigabytes costs one chunk of memory. The caller picks
each cap from the schema (records.json from the number of steps and layers the config implies). A zip
is checked before it is opened: few members, plain relative names (no absolute paths, ``..``,
backslashes), no symlinks, no encryption, only stored or deflated members.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path, PurePosixPath

from .training import History, StepRecord

MANIFEST = "manifest.json"
MAX_MEMBERS = 32  # an export has 6 files, 1-2 per model and snapshots.json; anything near this is not an export
SNAPSHOT_INDEX = "snapshots.json"
CHUNK = 1 << 20  # decompression step: a refused member costs at most this much beyond its cap
_CENTRAL_ENTRY = b"PK\x01\x02"  # zip central-directory signature: counts members before zipfile parses them

SkipEvent = tuple[str, int, float]  # (model, step it took effect, alpha)


class ArchiveError(ValueError):
    """A file or zip that is not a readable export; the message names the member and the problem."""


RECORD_FIELDS = tuple(f.name for f in fields(StepRecord))


def history_json(history: History, skip_events: Sequence[SkipEvent]) -> str:
    """records.json (and the store's history column): names, live skip changes, every step record.

    Each record is read field by field, not with `dataclasses.asdict`, which deep-copies every probe
    list first: storing the default pair took 0.22-0.23 s with it and 0.19-0.20 s without, and a tab
    waits for the store before it shows "Finished"."""
    return json.dumps(
        {
            "layer_names": history.layer_names,
            "block_names": history.block_names,
            "skip_events": [list(e) for e in skip_events],
            "records": [{f: getattr(r, f) for f in RECORD_FIELDS} for r in history.records],
        },
        separators=(",", ":"),
    )


def write_run_folder(
    out: Path,
    manifest: Mapping[str, object],
    config: Mapping[str, object],
    summaries: Mapping[str, Mapping[str, object]],
    history: History,
    skip_events: Sequence[SkipEvent],
    weights: Mapping[str, bytes],
    snapshot_index: Mapping[str, object] | None = None,
    snapshots: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a run as the exported folder; `weights` maps each model to its safetensors bytes, `snapshots` to
    the safetensors of its snapshots (written with their `snapshot_index` when there are any)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    (out / "records.json").write_text(history_json(history, skip_events))
    history.steps_frame().to_csv(out / "steps.csv", index=False)
    history.layers_frame().to_csv(out / "layers.csv", index=False)
    for model, blob in weights.items():
        (out / f"{model}.safetensors").write_bytes(blob)
    if snapshot_index and snapshots:
        (out / SNAPSHOT_INDEX).write_text(json.dumps(snapshot_index))
        for model, blob in snapshots.items():
            (out / snapshot_file(model)).write_bytes(blob)
    return out


def snapshot_file(model: str) -> str:
    """The exported file of a model's snapshots (model names have no dots: it cannot be another's weights)."""
    return f"{model}.snapshots.safetensors"


def zip_folder(folder: Path) -> bytes:
    """The folder's files as a zip with one top folder of the same name (what `ZipMembers` reads)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}/{path.name}")
    return buffer.getvalue()


class FolderMembers:
    """The files of an exported folder, each read only when its size is within the cap."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ArchiveError(f"{self.folder}: not a folder (export writes a folder)")
        self.label = str(self.folder)

    def has(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def read(self, name: str, cap: int) -> bytes:
        path = self.folder / name
        try:
            info = path.lstat()
        except OSError:
            raise ArchiveError(f"{name}: missing") from None
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(f"{name}: not a regular file (links are refused)")
        if info.st_size > cap:
            raise ArchiveError(f"{name}: {info.st_size} bytes, more than a run of this config can need ({cap})")
        data = path.read_bytes()
        if len(data) > cap:  # it grew between the check and the read
            raise ArchiveError(f"{name}: more than {cap} bytes")
        return data


def check_member(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's path, if it is safe to read: relative, no ``..``, no link, not encrypted, stored or deflated."""
    name = info.filename
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name or "\x00" in name:
        raise ArchiveError(f"unsafe path {name[:80]!r} in the zip")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{name[:80]!r} is a symbolic link; links are refused")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{name[:80]!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"{name[:80]!r} uses compression method {info.compress_type}; only stored or deflated")
    return path


def count_members(data: bytes) -> int:
    """Central-directory entries in zip bytes, counted before zipfile parses (and lists) them."""
    return data.count(_CENTRAL_ENTRY)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, name: str | None = None) -> bytes:
    """A member's bytes, decompressed in chunks and refused as soon as they pass `cap` (a zip bomb costs one chunk)."""
    name = name or info.filename[:80]
    parts, size = [], 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(min(CHUNK, cap + 1 - size)):
                size += len(chunk)
                if size > cap:
                    raise ArchiveError(f"{name}: more than {cap} bytes unpacked (the zip claims {info.file_size})")
                parts.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # zlib.error is an Exception subclass
        raise ArchiveError(f"{name}: cannot unpack ({type(exc).__name__}: {exc})") from exc
    return b"".join(parts)


class ZipMembers:
    """The members of an exported zip (flat, or inside one top folder), decompressed with a byte cap."""

    def __init__(self, data: bytes, label: str = "upload") -> None:
        self.label = label
        if count_members(data) > MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} files: not an exported run")
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
            raise ArchiveError(f"not a zip file ({exc}); export a run to get one") from exc
        self._members: dict[str, zipfile.ZipInfo] = {}
        roots = set()
        for info in infos:
            name = info.filename
            path = check_member(info)
            if info.is_dir():
                continue
            if len(path.parts) > 2:
                raise ArchiveError(f"{name[:80]!r} is nested too deep: an export is one folder of files")
            roots.add(path.parts[0] if len(path.parts) == 2 else "")
            if path.name in self._members:
                raise ArchiveError(f"{path.name[:80]!r} appears twice in the zip")
            self._members[path.name] = info
        if len(roots) > 1:
            raise ArchiveError("files in several folders: an export is one folder of files")

    def has(self, name: str) -> bool:
        return name in self._members

    def read(self, name: str, cap: int) -> bytes:
        info = self._members.get(name)
        if info is None:
            raise ArchiveError(f"{name}: missing")
        if info.file_size > cap:  # the declared size; read_member enforces the cap whatever it says
            raise ArchiveError(f"{name}: {info.file_size} bytes, more than a run of this config can need ({cap})")
        return read_member(self._zip, info, cap, name)

    def close(self) -> None:
        self._zip.close()

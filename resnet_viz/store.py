"""The run store: finished runs kept in one SQLite file, loaded instead of retrained.

A deep plain/residual pair takes minutes on a laptop CPU, and a class replays the same handful of
configurations (He et al. 2015, Fig. 1 at six depths) again and again. Training is deterministic for
a given config and seed, so a finished run is stored under a hash of everything that decides it
(data, training and model configs, the seed, live skip-scale changes and `SCHEMA_VERSION`), and
the next request for the same key loads it instead of training again.

One run is one row (configs, per-model summaries, the step records as compressed JSON) plus one
safetensors blob per model, written in a single transaction. Several sessions may finish runs at
once: the database is in WAL mode, every operation opens its own connection (sqlite3 connections
must not cross threads), writes take the write lock up front (``BEGIN IMMEDIATE``) and wait on a
busy timeout. Nothing is ever pickled: weights go through safetensors, everything else is JSON,
and an imported run is validated field by field before it is stored.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from hashlib import sha256
from pathlib import Path
from typing import Literal

try:
    import fcntl  # advisory file locks between processes (POSIX)
except ImportError:  # Windows: one process per store folder
    fcntl = None

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .archive import (
    MANIFEST,
    SNAPSHOT_INDEX,
    ArchiveError,
    FolderMembers,
    ZipMembers,
    history_json,
    snapshot_file,
    write_run_folder,
    zip_folder,
)
from .data import DataConfig, Dataset, load_dataset
from .datasets import registry
from .datasets.base import DatasetError
from .datasets.registry import UploadInfo
from .datasets.uploads import Upload
from .models import (
    ConfigError,
    ModelConfig,
    block_names,
    build_model,
    flops_per_example,
    layer_names,
    load_model,
    network,
)
from .probes import LAYER_METRICS, METRICS
from .summary import summarize_records
from .training import (
    DIVERGED_LOSS,
    History,
    ModelState,
    Snapshot,
    StepRecord,
    TrainConfig,
    Trainer,
    fit_to_data,
    lr_at,
    steps_per_epoch,
    summarize,
)

SCHEMA_VERSION = 1  # bump when the stored layout changes: old keys then miss and runs retrain
FORMAT = "resnet-viz-run"  # names an exported folder's manifest and the database's meta table
DB_FILE = "runs.sqlite3"
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another session's transaction
COMPLETE = ("finished", "diverged")  # model states a retrain would reproduce: only such runs are stored
# Config fields added after runs were stored: absent there, default here (ModelConfig, then DataConfig)
ADDED_FIELDS = {"init_gain": 1.0, "color": "grey", "upload": "", "heads": 2}
DATA_DECIDED = tuple(DataConfig().model_fields())  # the ModelConfig fields the data decides (left out of keys)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # model keys become file names on export
IMPORTED_PREFIX = "imported-"  # imported runs are keyed by this plus a content hash, never by a config key
CLOCK_SKEW_S = 300.0  # an imported timestamp may be this far in the future (another machine's clock)
MIN_CREATED = 1_577_836_800.0  # 2020-01-01 UTC: no run of this project was stored before it
MAX_IMPORT_MODELS = 4  # the lab stores two models, a sweep run a pair
IMPORT_MEMORY_BUDGET = 80 * 2**20  # bytes an import may need at once (estimated before anything big is read)
SMALL_JSON_CAP = 64 * 1024  # manifest.json, config.json, summary.json: a few kB each in a real export
_NUMBER_TEXT = 25  # longest number JSON writes for a float ("-1.2345678901234567e-308") plus its comma
_RECORD_TEXT = 320  # one record's JSON besides its numbers: field names, punctuation, the model name
_RECORD_MEMORY = 3000  # bytes per parsed record besides its numbers (dicts, lists, the StepRecord, re-dump)
_NUMBER_MEMORY = 48  # bytes per parsed number (float object, list slot, its copy in the re-dump)
_DIVERGED_MESSAGE = re.compile(
    r"loss became (nan|-?inf|[0-9.e+-]{1,16}) at step (\d{1,9}); training of (\S{1,64}) stopped"
)

SkipEvent = tuple[str, int, float]  # (model, step it took effect, alpha), as Trainer.skip_events

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # info: what list_runs shows, readable without touching the big columns; config: {data, train, models};
    # summaries: {model: summarize() + flops}; history: zlib-compressed JSON of names, skip events, records.
    # origin: 'trained' (by this server, keyed by run_key) or 'imported' (keyed by IMPORTED_PREFIX + content hash).
    "CREATE TABLE runs (key TEXT PRIMARY KEY, created REAL NOT NULL, info TEXT NOT NULL, config TEXT NOT NULL, "
    "summaries TEXT NOT NULL, history BLOB NOT NULL, origin TEXT NOT NULL DEFAULT 'trained')",
    # data: safetensors bytes of a model's final state_dict.
    "CREATE TABLE weights (key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, model TEXT NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (key, model))",
)
# Results computed from a run (a loss landscape, ...) by kind and settings (canonical JSON); result: zlib-compressed
# canonical JSON. No foreign key (a live run may be analysed before it is stored); `delete` removes a run's rows.
_ANALYSES = (
    "CREATE TABLE IF NOT EXISTS analyses (run_key TEXT NOT NULL, kind TEXT NOT NULL, params TEXT NOT NULL, "
    "created REAL NOT NULL, result BLOB NOT NULL, PRIMARY KEY (run_key, kind, params))"
)
MAX_ANALYSIS_BYTES = 16 * 2**20  # an analysis result's JSON, on write and on read (a 101 x 101 grid pair is ~0.5 MB)
_ANALYSIS_KIND = re.compile(r"[a-z0-9_.-]{1,64}")
# Uploaded data sets by content hash (datasets.uploads.Upload.digest); info: JSON of name, kind, classes, counts
# (listings read no tensors); data: the Upload as safetensors. Created like analyses: with new stores, or on first put.
_DATASETS = (
    "CREATE TABLE IF NOT EXISTS datasets (digest TEXT PRIMARY KEY, created REAL NOT NULL, info TEXT NOT NULL, "
    "data BLOB NOT NULL)"
)
MAX_DATASET_BYTES = 64 * 2**20  # one stored data set's safetensors (5,000 images of 32x32x3 bytes are 15 MB)
# A trained run's weight snapshots between its first and last step (safetensors per model and step): the analysis
# pages' "Training step" slider and the loss landscape's training path for a run that is replayed from the store,
# as every session but the one that trained it sees it. The initial weights are rebuilt from the seed and the
# final ones are the `weights` row, so neither is kept twice. Created on the first save that has some.
_SNAPSHOTS = (
    "CREATE TABLE IF NOT EXISTS snapshots (key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, "
    "model TEXT NOT NULL, step INTEGER NOT NULL, skip_scale REAL NOT NULL, data BLOB NOT NULL, "
    "PRIMARY KEY (key, model, step))"
)
# Bytes of snapshots kept per run, all models together: evenly spaced steps are dropped until they fit. The
# default pair (depth 20 on digits, 2.1 MB a step for both models) keeps 5 of its 10, so its slider and training
# path have 7 points; a depth-56 pair (6.5 MB a step) keeps 1. `warm`'s 30 runs keep 258 MB of snapshots in all.
MAX_SNAPSHOT_BYTES = 12 * 2**20


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _has_analyses(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'analyses'").fetchone() is not None


StoreErrorKind = Literal[
    "corrupt",  # SQLite says the file is not a database or is damaged: the only kind that may be moved aside
    "foreign",  # a SQLite database, but not a run store of this schema: left alone
    "busy",  # another session held the write lock for longer than the busy timeout
    "readonly",  # the file or its folder cannot be written
    "full",  # the disk (or the database's size limit) is full
    "io",  # any other disk or SQLite failure
    "missing",  # the folder or file cannot be created or opened (missing folder, permissions)
    "invalid_import",  # an imported file or zip was refused; the store is unchanged
    "damaged_run",  # one stored run does not parse; the others are fine
    "refused",  # the call itself was wrong (an unfinished run to save, nothing to move aside)
]


class StoreError(ValueError):
    """The store or an imported file is unusable; the message names the file and the problem.

    `kind` says what happened, for callers that act on it (only "corrupt" may be moved aside): never
    match the message text.
    """

    def __init__(self, message: str, kind: StoreErrorKind = "invalid_import") -> None:
        super().__init__(message)
        self.kind: StoreErrorKind = kind

    @property
    def can_move_aside(self) -> bool:
        """SQLite itself called the file damaged or not a database: moving it aside loses nothing usable."""
        return self.kind == "corrupt"


_MOVE_ASIDE = "move it aside to start an empty store (the teacher's button in the app, or RunStore.quarantine())"
_SQLITE_KINDS: dict[int, tuple[StoreErrorKind, str]] = {  # primary result code -> kind, what to do
    sqlite3.SQLITE_CORRUPT: ("corrupt", f"the file is damaged; {_MOVE_ASIDE}"),
    sqlite3.SQLITE_NOTADB: ("corrupt", f"not a database; {_MOVE_ASIDE}"),
    sqlite3.SQLITE_BUSY: ("busy", "try again in a moment; nothing was changed"),
    sqlite3.SQLITE_LOCKED: ("busy", "try again in a moment; nothing was changed"),
    sqlite3.SQLITE_READONLY: ("readonly", "the store is read-only; make the file and its folder writable"),
    sqlite3.SQLITE_FULL: ("full", "the disk is full; free some space (nothing was moved or deleted)"),
    sqlite3.SQLITE_IOERR: ("io", "disk I/O error; check the disk (nothing was moved or deleted)"),
    sqlite3.SQLITE_CANTOPEN: ("missing", "cannot open the run store; check that the folder exists and is writable"),
    sqlite3.SQLITE_PERM: ("missing", "no permission to use the run store; check the file's permissions"),
}


def default_data_dir() -> Path:
    """``$RESNET_VIZ_DATA_DIR``, else ``$XDG_DATA_HOME/resnet-viz``, else ``~/.local/share/resnet-viz``."""
    if os.environ.get("RESNET_VIZ_DATA_DIR"):
        return Path(os.environ["RESNET_VIZ_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "resnet-viz"


# --------------------------------------------------------------------------------------------------
# Keys


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _config_dict(models: Mapping[str, ModelConfig], train: TrainConfig, data: DataConfig) -> dict[str, object]:
    return {"data": data.to_dict(), "train": train.to_dict(), "models": {k: c.to_dict() for k, c in models.items()}}


def _key(
    models: Mapping[str, ModelConfig], train: TrainConfig, data: DataConfig, skip_events: Sequence[SkipEvent]
) -> str:
    config = _config_dict(models, train, data)
    for cfg in config["models"].values():
        for name in DATA_DECIDED:
            del cfg[name]
        for name, default in ADDED_FIELDS.items():  # at their default, later fields keep older keys unchanged
            if cfg.get(name) == default:
                del cfg[name]
    for name, default in ADDED_FIELDS.items():
        if config["data"].get(name) == default:
            del config["data"][name]
    payload = {"schema": SCHEMA_VERSION, "config": config, "skip_events": [list(e) for e in skip_events]}
    return sha256(_canonical(payload).encode()).hexdigest()


def run_key(
    models: Mapping[str, ModelConfig],
    train: TrainConfig,
    data: DataConfig,
    skip_events: Sequence[SkipEvent] = (),
) -> str:
    """The store key of a run: sha256 of the canonical JSON of its configs, the seed inside `train`, any
    live skip-scale changes, and `SCHEMA_VERSION`.

    The model fields that the data decides (`DATA_DECIDED`) are left out: the data config, which is
    in the key, fixes them. So a key needs no dataset loaded, and a cached replay stays fast.
    """
    return _key(models, train.validate(), data.validate(), skip_events)


# --------------------------------------------------------------------------------------------------
# Parsing and validation (shared by loading and importing: one code path, no trust in the bytes)


def _expect(ok: bool, where: str, problem: str, kind: StoreErrorKind = "invalid_import") -> None:
    if not ok:
        raise StoreError(f"{where}: {problem}", kind)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _typed_fields(cls: type, values: object, where: str) -> dict[str, object]:
    """The fields of dataclass `cls` from a JSON dict, each present and of its default's type."""
    _expect(isinstance(values, dict), where, f"must be a JSON object, got {type(values).__name__}")
    out = {}
    for f in fields(cls):
        if f.name not in values and f.name in ADDED_FIELDS:  # stored before the field existed
            continue
        _expect(f.name in values, where, f"missing field {f.name!r}")
        value, default = values[f.name], f.default
        ok = _is_number(value) if isinstance(default, float) else type(value) is type(default)
        _expect(ok, where, f"{f.name} must be {type(default).__name__}, got {value!r}")
        out[f.name] = float(value) if isinstance(default, float) else value
    return out


def _parse_config(obj: object, where: str) -> tuple[dict[str, ModelConfig], TrainConfig, DataConfig]:
    _expect(isinstance(obj, dict) and {"data", "train", "models"} <= set(obj), where, "needs data, train and models")
    models = obj["models"]
    _expect(isinstance(models, dict) and len(models) > 0, where, "models must be a non-empty object")
    try:
        data = DataConfig(**_typed_fields(DataConfig, obj["data"], f"{where}: data")).validate()
        train = TrainConfig(**_typed_fields(TrainConfig, obj["train"], f"{where}: train")).validate()
        configs = {}
        for key, cfg in models.items():
            _expect(bool(_SAFE_NAME.fullmatch(key)), where, f"model name {key!r} must match {_SAFE_NAME.pattern}")
            configs[key] = ModelConfig(**_typed_fields(ModelConfig, cfg, f"{where}: models.{key}")).validate()
    except ConfigError as err:
        raise StoreError(f"{where}: invalid config: {err}") from err
    return configs, train, data


def _check_fitted(configs: Mapping[str, ModelConfig], data: DataConfig, where: str) -> Dataset:
    """The fields the data decides must be what the data gives (the key leaves them out); returns the data."""
    dataset = load_dataset(data)
    for key, cfg in configs.items():
        try:
            ok = fit_to_data(cfg, dataset) == cfg
        except ConfigError as err:
            raise StoreError(f"{where}: models.{key}: invalid config: {err}") from err
        _expect(ok, where, f"models.{key}: {', '.join(DATA_DECIDED)} do not match the {data.name} data")
    return dataset


def _parse_float(
    value: object, where: str, finite: bool = True, low: float = -math.inf, high: float = math.inf
) -> float:
    _expect(_is_number(value), where, f"must be a number, got {value!r}")
    _expect(not finite or math.isfinite(value), where, f"must be finite, got {value!r}")
    _expect(not (value < low or value > high), where, f"must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


_RECORD_RANGES = {  # field -> (low, high) of what training writes; all finite
    "epoch": (0.0, math.inf),
    "lr": (0.0, math.inf),
    "loss": (0.0, DIVERGED_LOSS),  # a larger loss ends training as diverged, unrecorded
    "acc": (0.0, 1.0),
    "skip_scale": (0.0, 1.0),
    "seconds": (0.0, math.inf),
    "val_loss": (0.0, math.inf),
    "val_acc": (0.0, 1.0),
}


def _parse_record(obj: object, sizes: dict[str, dict[str, int]], where: str) -> StepRecord:
    names = [f.name for f in fields(StepRecord)]
    _expect(isinstance(obj, dict) and sorted(obj) == sorted(names), where, f"must have exactly the fields {names}")
    _expect(isinstance(obj["model"], str) and obj["model"] in sizes, where, f"unknown model {obj['model']!r}")
    step = obj["step"]
    _expect(isinstance(step, int) and not isinstance(step, bool) and step >= 1, where, f"bad step {step!r}")
    values = {
        n: None if obj[n] is None and n.startswith("val_") else _parse_float(obj[n], f"{where}.{n}", True, *limits)
        for n, limits in _RECORD_RANGES.items()
    }
    probes = obj["probes"]
    if probes is not None:  # norms, ratios and stds: >= 0, or inf or NaN, which is what a probe shows on a blow-up
        _expect(isinstance(probes, dict) and set(probes) <= set(METRICS), where, f"probes keys must be in {METRICS}")
        for metric, vals in probes.items():
            limit = sizes[obj["model"]][metric]
            _expect(
                isinstance(vals, list) and len(vals) <= limit,
                where,
                f"probes.{metric} must list at most {limit} values",
            )
            if not all(type(v) is float and not v < 0 for v in vals):  # fast check: what JSON writes for floats
                probes[metric] = [_parse_float(v, f"{where}.probes.{metric}", False, 0.0) for v in vals]
    return StepRecord(model=obj["model"], step=step, probes=probes, **values)


def _parse_history(obj: object, configs: Mapping[str, ModelConfig], where: str) -> tuple[History, list[SkipEvent]]:
    keys = {"layer_names", "block_names", "skip_events", "records"}
    _expect(isinstance(obj, dict) and set(obj) == keys, where, f"must be an object with exactly {sorted(keys)}")
    for part in ("layer_names", "block_names"):
        names = obj[part]
        ok = isinstance(names, dict) and set(names) == set(configs)
        ok = ok and all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in names.values())
        _expect(ok, where, f"{part} must map every model to a list of names")
    sizes = {
        k: {m: len(obj["layer_names" if m in LAYER_METRICS else "block_names"][k]) for m in METRICS} for k in configs
    }
    events = obj["skip_events"]
    _expect(isinstance(events, list), where, "skip_events must be a list")
    parsed_events = []
    for e in events:
        ok = isinstance(e, list) and len(e) == 3 and isinstance(e[0], str) and e[0] in configs
        ok = ok and isinstance(e[1], int) and _is_number(e[2])
        _expect(ok and 0.0 <= e[2] <= 1.0, where, f"bad skip event {e!r}: needs [model, step, alpha in [0, 1]]")
        parsed_events.append((e[0], e[1], float(e[2])))
    _expect(isinstance(obj["records"], list), where, "records must be a list")
    records = [_parse_record(r, sizes, f"{where}: records[{i}]") for i, r in enumerate(obj["records"])]
    return History(obj["layer_names"], obj["block_names"], records), parsed_events


_SUMMARY_TYPES: dict[str, type] = {
    "model": str,
    "status": str,
    "message": str,
    "steps": int,
    "params": int,
    "flops": int,
    "final_train_loss": float,
    "final_train_acc": float,
    "final_val_loss": float,
    "final_val_acc": float,
    "first_layer_grad_norm": float,
    "last_layer_grad_norm": float,
    "seconds": float,
}


def _parse_summaries(obj: object, configs: Mapping[str, ModelConfig], where: str) -> dict[str, dict[str, object]]:
    _expect(isinstance(obj, dict) and set(obj) == set(configs), where, f"must have one summary per model {[*configs]}")
    for key, summary in obj.items():
        _expect(isinstance(summary, dict), where, f"{key} must be an object")
        for name, kind in _SUMMARY_TYPES.items():
            value = summary.get(name)
            ok = _is_number(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)
            _expect(ok, where, f"{key}.{name} must be {kind.__name__}, got {value!r}")
        _expect(summary["status"] in COMPLETE, where, f"{key}.status must be one of {COMPLETE}")
    return obj


def _meta_net(cfg: ModelConfig) -> nn.Module:
    """The net `cfg` builds, on the meta device: shapes and names without memory or init."""
    with torch.device("meta"):
        return network(cfg)


def _names(cfg: ModelConfig) -> tuple[list[str], list[str]]:
    net = _meta_net(cfg)
    return layer_names(net), block_names(net)


def _shapes(cfg: ModelConfig) -> dict[str, tuple[torch.dtype, torch.Size]]:
    """Dtype and shape of every state_dict entry of the net `cfg` builds."""
    return {k: (v.dtype, v.shape) for k, v in _meta_net(cfg).state_dict().items()}


def _load_tensors(blob: bytes, where: str) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes (never a pickle)."""
    try:
        return load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error types for any malformed header
        raise StoreError(f"{where}: not a valid safetensors file ({type(exc).__name__}: {exc})") from exc


def _parse_weights(blob: bytes, cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes, checked against the net the config builds."""
    return _check_state(_load_tensors(blob, where), _shapes(cfg), where)


def _check_state(
    state: dict[str, torch.Tensor], expected: Mapping[str, tuple[torch.dtype, torch.Size]], where: str
) -> dict[str, torch.Tensor]:
    """`state` if it has exactly the `expected` tensor names, dtypes and shapes (`_shapes` of a config)."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    _expect(
        not missing and not extra,
        where,
        f"tensor names do not match the config (missing {missing[:3]}, unexpected {extra[:3]})",
    )
    for name, (dtype, shape) in expected.items():
        got = state[name]
        _expect(
            got.dtype == dtype and got.shape == shape,
            where,
            f"{name} is {got.dtype} {tuple(got.shape)}, the config needs {dtype} {tuple(shape)}",
        )
    return state


# --------------------------------------------------------------------------------------------------
# Import checks: what a complete run of the imported configs must look like, known before the big files
# are read. The sizes bound every read (a 1 MB zip of 256 MiB of "0.0," is refused after one chunk), the
# counts bound what json.loads builds, and the exact checks refuse records that training cannot produce.


@dataclass(frozen=True)
class _Plan:
    train: TrainConfig  # the run's training config (schedule, validation and probe cadence)
    per_epoch: int  # optimizer steps per epoch
    total: int  # optimizer steps of a finished run
    layers: dict[str, int]  # model -> weighted layers (length of grad_norm, update_ratio)
    blocks: dict[str, int]  # model -> blocks (length of block_grad_norm, act_std)
    alphas: dict[str, float]  # model -> skip scale at the start
    records: int  # most records the run can have
    numbers: int  # most numbers its records.json can hold
    text: int  # most bytes its records.json can take, written as export writes it
    weights: dict[str, int]  # model -> most bytes of its safetensors file

    @property
    def memory(self) -> int:
        """About the most memory the import holds at once: records text, parsed records, re-dump, weights."""
        parsed = self.records * _RECORD_MEMORY + self.numbers * _NUMBER_MEMORY
        return 3 * self.text + parsed + 2 * max(self.weights.values())


def _plan(configs: Mapping[str, ModelConfig], train: TrainConfig, dataset: Dataset) -> _Plan:
    per_epoch = steps_per_epoch(len(dataset.y_train), train.batch_size)
    total = per_epoch * train.epochs
    names = {k: _names(cfg) for k, cfg in configs.items()}
    layers, blocks = {k: len(n[0]) for k, n in names.items()}, {k: len(n[1]) for k, n in names.items()}
    probed = len(range(0, total, train.probe_every)) if train.probe_every else 0
    records = total * len(configs)
    numbers = records * 12 + sum(probed * 2 * (layers[k] + blocks[k]) for k in configs)  # 9 fields + events
    name_text = sum(len(s) + 3 for n in names.values() for s in n[0] + n[1])
    weights = {}
    for k, cfg in configs.items():
        shapes = _shapes(cfg)
        weights[k] = 1024 + sum(256 + dtype.itemsize * shape.numel() for dtype, shape in shapes.values())
    return _Plan(
        train=train,
        per_epoch=per_epoch,
        total=total,
        layers=layers,
        blocks=blocks,
        alphas={k: cfg.alpha for k, cfg in configs.items()},
        records=records,
        numbers=numbers,
        text=1024 + 2 * name_text + records * _RECORD_TEXT + numbers * _NUMBER_TEXT,
        weights=weights,
    )


def _check_records_text(raw: bytes, plan: _Plan, where: str) -> None:
    """Count separators and containers before parsing: json.loads then builds no more than a real run holds."""
    commas, containers = raw.count(b","), raw.count(b"{") + raw.count(b"[")
    _expect(
        commas <= plan.numbers + 16 * plan.records + 64,
        where,
        f"{commas} values, more than a run of this config can have",
    )
    _expect(
        containers <= 8 * plan.records + 64,
        where,
        f"{containers} objects and lists, more than a run of this config can have",
    )


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _check_records(history: History, events: Sequence[SkipEvent], plan: _Plan, where: str) -> None:
    """Refuse records training cannot write: each model's steps 1, 2, 3, ... in step order, the epoch, learning
    rate and skip scale of each step, validation and probes exactly on the steps that have them."""
    train, last_step = plan.train, 0
    for i, (_, step, _) in enumerate(events):
        _expect(
            1 <= step <= plan.total and step >= last_step,
            f"{where}: skip_events[{i}]",
            f"step must be in 1..{plan.total} and in order, got {step}",
        )
        last_step = step
    pending = list(events)
    alpha = dict(plan.alphas)
    done = dict.fromkeys(plan.alphas, 0)
    seconds = dict.fromkeys(plan.alphas, 0.0)
    last_step = 0
    for i, r in enumerate(history.records):
        here = f"{where}: records[{i}]"
        _expect(
            r.step == done[r.model] + 1 and r.step >= last_step and r.step <= plan.total,
            f"{here}.step",
            f"got {r.step}: each model's steps run 1, 2, ... {plan.total} without gaps, in step order",
        )
        done[r.model], last_step = r.step, r.step
        while pending and pending[0][1] <= r.step:
            alpha[pending[0][0]] = pending.pop(0)[2]
        _expect(_close(r.epoch, r.step / plan.per_epoch), f"{here}.epoch", f"must be step / {plan.per_epoch}")
        expected_lr = lr_at(train, r.step - 1, plan.total)
        _expect(_close(r.lr, expected_lr), f"{here}.lr", f"is {r.lr!r}, the schedule gives {expected_lr!r}")
        _expect(r.skip_scale == alpha[r.model], f"{here}.skip_scale", f"must be the alpha in force ({alpha[r.model]})")
        _expect(r.seconds >= seconds[r.model], f"{here}.seconds", "must not decrease")
        seconds[r.model] = r.seconds
        validated = r.step % plan.per_epoch == 0 or bool(train.val_every and r.step % train.val_every == 0)
        _expect(
            (r.val_loss is not None) == validated and (r.val_acc is not None) == validated,
            f"{here}.val_loss",
            "validation values belong exactly to epoch ends and every val_every steps",
        )
        armed = bool(train.probe_every) and (r.step - 1) % train.probe_every == 0
        _expect((r.probes is not None) == armed, f"{here}.probes", "probes belong exactly to every probe_every-th step")
        if r.probes is not None:
            sizes = {m: plan.layers[r.model] if m in LAYER_METRICS else plan.blocks[r.model] for m in METRICS}
            ok = set(r.probes) == set(METRICS) and all(len(r.probes[m]) == n for m, n in sizes.items())
            _expect(ok, f"{here}.probes", f"must list {sizes} values")


def _check_summaries(
    given: Mapping[str, Mapping[str, object]], computed: Mapping[str, Mapping[str, object]], where: str
) -> None:
    """The summaries in the file must be what its records give; a divergence message must have training's form."""
    for key, summary in computed.items():
        for name, value in summary.items():
            got = given[key].get(name)
            if isinstance(value, float):
                ok = _is_number(got) and (_close(got, value) or (math.isnan(got) and math.isnan(value)))
            else:
                ok = got == value and type(got) is type(value)
            _expect(ok, where, f"{key}.{name} is {str(got)[:40]}, the records give {value!r}")
        message = summary["message"]
        if summary["status"] == "finished":
            _expect(message == "", where, f"{key}.message must be empty for a finished model")
        else:
            match = _DIVERGED_MESSAGE.fullmatch(message)
            ok = match is not None and int(match[2]) == summary["steps"] + 1 and match[3] == key
            _expect(
                ok,
                where,
                f"{key}.message must say 'loss became <value> at step {summary['steps'] + 1}; "
                f"training of {key} stopped'",
            )


def _content_key(
    config: dict,
    summaries: dict,
    history_text: str,
    weights: Mapping[str, bytes],
    snapshots: Sequence[SnapshotRow] = (),
) -> str:
    """IMPORTED_PREFIX + sha256 of everything stored: an imported run never lands on a config key. The snapshots
    count too (a run without any keeps the key it had before they were exported): else a file with other
    snapshots, imported first, would stand for the genuine one, whose import then changed nothing."""
    digest = sha256(json.dumps({"config": config, "summaries": summaries}, sort_keys=True).encode())
    digest.update(history_text.encode())
    for model in sorted(weights):
        digest.update(model.encode() + b"\0" + sha256(weights[model]).digest())
    for model, step, alpha, blob in sorted(snapshots):
        digest.update(f"{model}\0{step}\0{alpha!r}\0".encode() + sha256(blob).digest())
    return IMPORTED_PREFIX + digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# What the store hands out


@dataclass
class RunInfo:
    """One stored run for a listing: metadata only, read without loading records or weights."""

    key: str  # the store key (sha256 hex)
    created: float  # when it was stored (Unix time)
    dataset: str  # DataConfig.name
    epochs: int  # TrainConfig.epochs
    seed: int  # TrainConfig.seed
    depths: dict[str, int]  # model -> depth
    skips: dict[str, bool]  # model -> shortcuts on
    status: dict[str, str]  # model -> finished / diverged
    final_train_loss: dict[str, float]  # model -> mean training loss over the last epoch
    final_val_loss: dict[str, float]  # model -> last validation loss
    skip_changes: int = 0  # live skip-scale changes while it trained (runs stored before it was listed: 0)
    imported: bool = False  # True: imported from a file (keyed by its content), not trained by this server


@dataclass
class StoredRun:
    """A finished run as the store keeps it: everything a page draws, and the final weights on demand."""

    key: str  # the store key (sha256 hex)
    created: float  # when it was stored (Unix time)
    data: DataConfig  # the dataset it trained on
    train: TrainConfig  # the training budget and seed
    configs: dict[str, ModelConfig]  # model -> config, fitted to the data as the Trainer fitted it
    history: History  # every step record, probes included: exactly what training produced
    summaries: dict[str, dict[str, object]]  # model -> summarize() plus "flops" (forward FLOPs per example)
    skip_events: list[SkipEvent]  # live skip-scale changes while training
    cached: bool = True  # True: loaded from the store; False: trained by this call (and stored)
    imported: bool = False  # True: imported from a file (keyed by its content), not trained by this server
    weights: Callable[[str], dict[str, torch.Tensor]] | None = field(default=None, repr=False)  # loads on demand
    # Steps with stored snapshots, the same for every model, first and last excluded (`snapshots`), and their loader
    snapshot_steps: list[int] = field(default_factory=list)
    snapshot_loader: Callable[[str], dict[int, tuple[float, dict[str, torch.Tensor]]]] | None = field(
        default=None, repr=False
    )

    @property
    def states(self) -> dict[str, ModelState]:
        """Per model: status (finished / diverged), last step and the divergence message."""
        return {k: ModelState(s["status"], s["steps"], s["message"]) for k, s in self.summaries.items()}

    @property
    def steps_per_epoch(self) -> int:
        last = self.history.records[-1] if self.history.records else None
        return round(last.step / last.epoch) if last else 0

    def final_skip_scale(self, key: str) -> float:
        events = [alpha for model, _, alpha in self.skip_events if model == key]
        return events[-1] if events else self.configs[key].alpha

    def model(self, key: str) -> nn.Module:
        """A fresh copy of model `key` with its final weights, in eval mode (weights via safetensors only)."""
        if key not in self.configs:
            raise KeyError(f"no model {key!r} in run {self.key[:12]}; models: {', '.join(self.configs)}")
        if self.weights is None:
            raise StoreError(f"run {self.key[:12]}: no weights attached")
        return load_model(self.configs[key], self.weights(key), self.final_skip_scale(key))

    def snapshots(self, key: str) -> list[Snapshot]:
        """Model `key`'s weights along training, by step, as a live run's `Trainer.snapshots` holds them: the
        initial weights (rebuilt from the seed), the stored steps between, and the final weights."""
        if key not in self.configs:
            raise KeyError(f"no model {key!r} in run {self.key[:12]}; models: {', '.join(self.configs)}")
        if self.weights is None:
            raise StoreError(f"run {self.key[:12]}: no weights attached")
        cfg = self.configs[key]
        first = Snapshot(0, build_model(cfg, seed=self.train.seed).state_dict(), cfg.alpha)
        stored = self.snapshot_loader(key) if self.snapshot_loader is not None and self.snapshot_steps else {}
        middle = [Snapshot(step, state, alpha) for step, (alpha, state) in sorted(stored.items())]
        last = self.states[key].step
        final = [Snapshot(last, self.weights(key), self.final_skip_scale(key))] if last > 0 else []
        return [first, *middle, *final]


def snapshots_to_keep(trainer: Trainer, budget: int = MAX_SNAPSHOT_BYTES) -> list[int]:
    """The steps whose snapshots a finished run keeps: those every model has between its first and its last
    step, thinned evenly (the last one kept) until all models' weights at them fit in `budget` bytes."""
    between = [
        {s.step for s in snaps if 0 < s.step < trainer.states[key].step} for key, snaps in trainer.snapshots.items()
    ]
    steps = sorted(set.intersection(*between)) if between else []
    # Bytes as stored (BatchNorm's int64 step counters take 8): import checks the same sum against the same bound.
    per_step = sum(t.nbytes for m in trainer.models.values() for t in m.state_dict().values())
    fits = min(len(steps), budget // max(per_step, 1))
    if fits <= 1:
        return steps[-1:] if fits == 1 else []
    return sorted({steps[round(i * (len(steps) - 1) / (fits - 1))] for i in range(fits)})


# --------------------------------------------------------------------------------------------------
# The store


def _common_steps(rows: Sequence[tuple[str, int]], configs: Mapping[str, ModelConfig]) -> list[int]:
    """The snapshot steps that every model of a run has (what the analysis pages' step slider offers)."""
    by_model: dict[str, set[int]] = {key: set() for key in configs}
    for model, step in rows:
        if model in by_model:
            by_model[model].add(int(step))
    return sorted(set.intersection(*by_model.values())) if by_model else []


def _json_loads(text: str | bytes, where: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StoreError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from exc


def short_key(key: str) -> str:
    """What listings show of a key: 12 hex digits, after the imported prefix where there is one."""
    return key[: len(IMPORTED_PREFIX) + 12] if key.startswith(IMPORTED_PREFIX) else key[:12]


def _info(config: dict, summaries: dict[str, dict[str, object]], skip_changes: int) -> dict[str, object]:
    models = config["models"]
    return {
        "dataset": config["data"]["name"],
        "epochs": config["train"]["epochs"],
        "seed": config["train"]["seed"],
        "depths": {k: c["depth"] for k, c in models.items()},
        "skips": {k: c["skip"] for k, c in models.items()},
        "status": {k: s["status"] for k, s in summaries.items()},
        "final_train_loss": {k: s["final_train_loss"] for k, s in summaries.items()},
        "final_val_loss": {k: s["final_val_loss"] for k, s in summaries.items()},
        "skip_changes": skip_changes,
    }


class RunStore:
    """Finished runs in ``<directory>/runs.sqlite3``; safe to share between threads and processes.

    The instance holds no connection, only the path: every method opens and closes its own. A
    damaged or foreign database file raises `StoreError` from the first operation that touches it;
    `quarantine()` then moves it aside and the store starts empty.
    """

    def __init__(self, directory: Path | str | None = None, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.directory = Path(directory).expanduser() if directory else default_data_dir()
        self.path = self.directory / DB_FILE
        self.busy_timeout_s = busy_timeout_s  # how long a writer waits for another session's transaction
        self._checked: tuple[int, int, int] | None = (
            None  # (device, inode, ctime) of the file last found to be a run store
        )
        self._checked_lock = threading.Lock()

    # ---- connections and transactions

    def _error(self, exc: sqlite3.Error) -> StoreError:
        """A StoreError whose kind is what SQLite's result code says, with what to do about it."""
        code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_ERROR) & 0xFF  # the primary result code
        text = str(exc)[:200]
        if code == sqlite3.SQLITE_ERROR and text.startswith("no such table"):
            self._checked = None  # the file was deleted or replaced since it was checked: check the next one
            return StoreError(f"{self.path} was deleted or replaced while in use ({text}); try again", "missing")
        kind, advice = _SQLITE_KINDS.get(code, ("io", "nothing was moved or deleted"))
        if kind == "busy":
            advice = f"another session kept it locked for over {self.busy_timeout_s:g} s; {advice}"
        return StoreError(f"{self.path}: {advice} (SQLite: {text})", kind)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.directory}: cannot create the run store's folder ({exc.strerror or exc}); check the path "
                "and its permissions",
                "missing",
            ) from exc
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            self._configure(conn)
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Settings of every connection: wait on other writers, enforce the weights' foreign key."""
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Take the write lock now (no upgrade deadlocks later); all or nothing."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _identity(self) -> tuple[int, int, int] | None:
        """Which file the path holds now. The inode alone is not enough: a file deleted and made again
        often gets the same inode number; its change time differs (so does a checkpoint's: a re-check)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino, info.st_ctime_ns

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialise creating, checking and moving the file between processes (an advisory lock file beside it)."""
        handle = None
        if fcntl is not None:
            with suppress(OSError):  # a folder that cannot hold the lock file cannot hold a new store either
                self.directory.mkdir(parents=True, exist_ok=True)
                handle = open(self.directory / f"{DB_FILE}.lock", "a")  # noqa: SIM115 - closed below
        try:
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            if handle is not None:
                handle.close()

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection to a database known to be a run store of this schema (created when absent).

        The check is redone whenever the file is not the one last checked: deleted, replaced, or moved
        aside by another server on the same folder. It costs one stat per operation.
        """
        if self._checked is None or self._identity() != self._checked:
            with self._checked_lock, self._file_lock():
                if self._checked is None or self._identity() != self._checked:
                    self._checked = None
                    if self._identity() is None:
                        self._move_aside("orphan")  # a WAL left by a deleted file must not replay into a new one
                    with self._connect() as conn:
                        self._prepare(conn)
                    self._checked = self._identity()
        with self._connect() as conn:
            yield conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check an existing run store, or create (or migrate) one. Writes only when something is missing,
        so a store that is read-only, or busy with another session's write, can still be read."""
        if self._layout(conn) == "ready":
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        with self._transaction(conn):
            layout = self._layout(conn)  # again under the write lock: another process may have done it
            if layout == "empty":
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))]
                )
            elif layout == "old":  # a store from before provenance: its runs were trained here
                conn.execute("ALTER TABLE runs ADD COLUMN origin TEXT NOT NULL DEFAULT 'trained'")
            conn.execute(_ANALYSES)  # IF NOT EXISTS; a ready store without it gets it from its first put_analysis
            conn.execute(_DATASETS)  # likewise, from its first put_dataset

    def _layout(self, conn: sqlite3.Connection) -> Literal["empty", "old", "ready"]:
        """What the file holds: nothing yet, a run store without the origin column, or a current run store."""
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return "empty"
        meta = dict(conn.execute("SELECT name, value FROM meta")) if "meta" in tables else {}
        hint = "nothing was moved: use another folder (--store DIR or RESNET_VIZ_DATA_DIR), or remove it by hand"
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.path} is a SQLite database but not a run store; {hint}", "foreign")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path} is a run store of schema {str(meta.get('schema_version'))[:20]}, this version reads "
                f"{SCHEMA_VERSION}; {hint}",
                "foreign",
            )
        return "ready" if "origin" in {row[1] for row in conn.execute("PRAGMA table_info(runs)")} else "old"

    def _diagnose(self) -> StoreError | None:
        """What SQLite says about the file now, reading every page (PRAGMA quick_check); None when healthy."""
        try:
            with self._connect() as conn:
                self._prepare(conn)
                rows = conn.execute("PRAGMA quick_check").fetchall()
        except StoreError as err:
            return err
        if rows != [("ok",)]:
            problem = str(rows[0][0])[:200] if rows else "no answer"
            return StoreError(f"{self.path} is damaged (SQLite quick_check: {problem}); {_MOVE_ASIDE}", "corrupt")
        return None

    def check(self, thorough: bool = False) -> StoreError | None:
        """The store's problem now, or None when it works: for a page that shows a failure from elsewhere.

        `thorough` reads every page (slow on a big store); otherwise one small query.
        """
        if thorough:
            with self._checked_lock, self._file_lock():
                return self._diagnose()
        try:
            with self._open() as conn:
                conn.execute("SELECT count(*) FROM runs").fetchone()
        except StoreError as err:
            return err
        return None

    def _move_aside(self, label: str) -> Path | None:
        """Rename the file and its WAL files to ``<name>.<label>-<time>[-wal|-shm]``; the new name, or None."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{DB_FILE}.{label}-{stamp}")
        n = 1
        while any(target.with_name(target.name + s).exists() for s in ("", "-wal", "-shm")):
            target, n = self.path.with_name(f"{DB_FILE}.{label}-{stamp}-{n}"), n + 1
        moved = None
        for suffix in ("-wal", "-shm", ""):  # the database last: a reader never sees it without its WAL
            source = self.path.with_name(DB_FILE + suffix)
            if not source.exists():
                continue
            try:
                source.rename(target.with_name(target.name + suffix))
            except OSError as exc:
                raise StoreError(f"{source}: cannot be moved aside ({exc.strerror or exc})", "readonly") from exc
            moved = target
        return moved

    def quarantine(self) -> Path | None:
        """Move a damaged database (and its WAL files) aside to ``<name>.corrupt-<time>``; the store starts empty.

        Only when SQLite, asked again here, calls the file damaged or not a database: the error a page
        showed may be stale (another server may have moved the file and started a fresh one since).
        Otherwise nothing is moved and this raises what is wrong instead (busy, full, read-only, foreign,
        ...), or a StoreError of kind "refused" when the store works. Returns the new path of the old
        file, or None when there was none. Sessions reading the file at that moment get an error once.
        """
        with self._checked_lock, self._file_lock():
            if self._identity() is None:
                return None
            problem = self._diagnose()
            if problem is None:
                raise StoreError(f"{self.path} works (SQLite finds no damage); nothing was moved", "refused")
            if not problem.can_move_aside:
                raise problem
            self._checked = None
            return self._move_aside("corrupt")

    # ---- keys, saving and loading

    def save(self, trainer: Trainer, history: History, skip_events: Sequence[SkipEvent] | None = None) -> str:
        """Store a finished run (every model finished or diverged) in one transaction; returns its key.

        A stopped run is refused: it is not what its config produces, so it must not answer for it.
        When the store cannot take it (full disk, read-only, busy, damaged), the StoreError says the run
        was not saved, with the store's kind.
        """
        events = list(trainer.skip_events if skip_events is None else skip_events)
        for key, state in trainer.states.items():
            _expect(
                state.status in COMPLETE,
                "save",
                f"model {key!r} is {state.status}; only finished runs are stored",
                "refused",
            )
            _expect(
                bool(_SAFE_NAME.fullmatch(key)),
                "save",
                f"model name {key!r} must match {_SAFE_NAME.pattern}",
                "refused",
            )
        config = _config_dict(trainer.configs, trainer.train, trainer.dataset.config)
        run_key_ = _key(trainer.configs, trainer.train, trainer.dataset.config, events)
        summaries = trained_summaries(trainer, history)
        blob = zlib.compress(history_json(history, events).encode(), 6)
        snapshots = snapshot_rows(trainer)
        try:
            weights = model_weights(trainer)
            self._write(run_key_, time.time(), config, summaries, blob, weights, "trained", len(events), snapshots)
        except StoreError as err:
            raise StoreError(f"The run was not saved. {err}", err.kind) from err
        return run_key_

    def _write(
        self,
        key: str,
        created: float,
        config: dict,
        summaries: dict,
        history: bytes,
        weights: Mapping[str, bytes],
        origin: Literal["trained", "imported"],
        skip_changes: int,
        snapshots: Sequence[SnapshotRow] = (),
    ) -> None:
        """`snapshots`: (model, step, skip scale, safetensors) of the steps kept between the first and the last."""
        with self._open() as conn, self._transaction(conn):
            conn.execute("DELETE FROM runs WHERE key = ?", (key,))  # cascades to its weights and snapshots
            conn.execute(
                "INSERT INTO runs (key, created, info, config, summaries, history, origin) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    created,
                    json.dumps(_info(config, summaries, skip_changes)),
                    json.dumps(config),
                    json.dumps(summaries),
                    history,
                    origin,
                ),
            )
            conn.executemany("INSERT INTO weights VALUES (?, ?, ?)", [(key, k, w) for k, w in weights.items()])
            if snapshots:
                conn.execute(_SNAPSHOTS)
                conn.executemany("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)", [(key, *row) for row in snapshots])

    def _holds(self, key: str, history_text: str, weights: Mapping[str, bytes]) -> bool:
        """Whether this server trained run `key` and stored exactly this history and these weights: an
        import of it is then the run itself, and answering with its key keeps one copy, not two."""
        with self._open() as conn:
            row = conn.execute("SELECT history FROM runs WHERE key = ? AND origin = 'trained'", (key,)).fetchone()
            if row is None:
                return False
            stored = dict(conn.execute("SELECT model, data FROM weights WHERE key = ?", (key,)).fetchall())
        try:
            return stored == dict(weights) and zlib.decompress(row[0]).decode() == history_text
        except (zlib.error, UnicodeDecodeError):  # a damaged row is not this run
            return False

    def has(self, key: str) -> bool:
        with self._open() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def get(self, key: str) -> StoredRun | None:
        """The stored run with this key (records and summaries loaded, weights on demand), or None."""
        with self._open() as conn:
            row = conn.execute(
                "SELECT created, config, summaries, history, origin FROM runs WHERE key = ?", (key,)
            ).fetchone()
            stored = (
                conn.execute("SELECT model, step FROM snapshots WHERE key = ?", (key,)).fetchall()
                if _has_table(conn, "snapshots")
                else []
            )
        if row is None:
            return None
        where = f"{self.path}: run {short_key(key)}"
        try:
            configs, train, data = _parse_config(_json_loads(row[1], where), where)
            history, events = _parse_history(_json_loads(zlib.decompress(row[3]), where), configs, where)
            summaries = _parse_summaries(_json_loads(row[2], where), configs, where)
        except zlib.error as exc:
            raise StoreError(f"{where}: damaged history ({exc}); delete the run", "damaged_run") from exc
        except StoreError as err:
            raise StoreError(f"{err}; delete the run", "damaged_run") from err
        return StoredRun(
            key,
            row[0],
            data,
            train,
            configs,
            history,
            summaries,
            events,
            weights=self._loader(key),
            imported=row[4] == "imported",
            snapshot_steps=_common_steps(stored, configs),
            snapshot_loader=self._snapshot_loader(key),
        )

    def _snapshot_loader(self, key: str) -> Callable[[str], dict[int, tuple[float, dict[str, torch.Tensor]]]]:
        def load(model: str) -> dict[int, tuple[float, dict[str, torch.Tensor]]]:
            return self.snapshots(key, model)

        return load

    def snapshots(self, key: str, model: str) -> dict[int, tuple[float, dict[str, torch.Tensor]]]:
        """Step -> (skip scale, state_dict) of one model's stored snapshots, each checked against its config."""
        with self._open() as conn:
            config = conn.execute("SELECT config FROM runs WHERE key = ?", (key,)).fetchone()
            rows = (
                conn.execute(
                    "SELECT step, skip_scale, data FROM snapshots WHERE key = ? AND model = ? ORDER BY step",
                    (key, model),
                ).fetchall()
                if _has_table(conn, "snapshots")
                else []
            )
        where = f"{self.path}: run {short_key(key)} snapshots of {model!r}"
        _expect(config is not None, where, "not in the store", "refused")
        try:
            configs, _, _ = _parse_config(_json_loads(config[0], where), where)
            _expect(model in configs, where, "no such model", "refused")
            return {
                step: (float(alpha), _parse_weights(data, configs[model], f"{where} at step {step}"))
                for step, alpha, data in rows
            }
        except StoreError as err:
            raise StoreError(str(err), "damaged_run") from err

    def _loader(self, key: str) -> Callable[[str], dict[str, torch.Tensor]]:
        def load(model: str) -> dict[str, torch.Tensor]:
            return self.weights(key, model)

        return load

    def weights(self, key: str, model: str) -> dict[str, torch.Tensor]:
        """The final state_dict of one model of a stored run, checked against its config."""
        with self._open() as conn:
            row = conn.execute("SELECT data FROM weights WHERE key = ? AND model = ?", (key, model)).fetchone()
            config = conn.execute("SELECT config FROM runs WHERE key = ?", (key,)).fetchone()
        where = f"{self.path}: run {short_key(key)} weights of {model!r}"
        _expect(row is not None and config is not None, where, "not in the store", "refused")
        try:
            configs, _, _ = _parse_config(_json_loads(config[0], where), where)
            return _parse_weights(row[0], configs[model], where)
        except StoreError as err:
            raise StoreError(str(err), "damaged_run") from err

    def list_runs(self) -> list[RunInfo]:
        """Every stored run, newest first: metadata only (fast)."""
        with self._open() as conn:
            rows = conn.execute("SELECT key, created, info, origin FROM runs ORDER BY created DESC").fetchall()
        runs = []
        for key, created, info, origin in rows:
            where = f"{self.path}: run {short_key(key)}"
            try:
                runs.append(
                    RunInfo(key=key, created=created, imported=origin == "imported", **_json_loads(info, where))
                )
            except (StoreError, TypeError) as exc:
                raise StoreError(f"{where}: damaged listing ({exc}); delete the run", "damaged_run") from exc
        return runs

    def delete(self, key: str) -> bool:
        """Remove a run, its weights, snapshots and analyses; False if it was not there."""
        with self._open() as conn, self._transaction(conn):
            if _has_analyses(conn):
                conn.execute("DELETE FROM analyses WHERE run_key = ?", (key,))
            return conn.execute("DELETE FROM runs WHERE key = ?", (key,)).rowcount > 0

    # ---- analyses: results computed from a run, cached by kind and settings

    def put_analysis(self, run_key: str, kind: str, params: dict, result: dict) -> None:
        """Keep `result` (a JSON-able dict, no NaN) for the run `run_key`, `kind` and `params`; replaces an old one."""
        _expect(
            bool(_ANALYSIS_KIND.fullmatch(kind)),
            "put_analysis",
            f"kind must match {_ANALYSIS_KIND.pattern}; got {kind[:80]!r}",
            "refused",
        )
        try:
            text = _canonical(result).encode()
        except (TypeError, ValueError) as exc:
            raise StoreError(f"put_analysis: {kind} result is not strict JSON ({exc})", "refused") from exc
        _expect(
            len(text) <= MAX_ANALYSIS_BYTES,
            "put_analysis",
            f"{kind} result of {len(text)} bytes is over the {MAX_ANALYSIS_BYTES} byte limit",
            "refused",
        )
        row = (run_key, kind, _canonical(params), time.time(), zlib.compress(text, 6))
        with self._open() as conn, self._transaction(conn):
            conn.execute(_ANALYSES)  # stores made before analyses were kept get the table on first use
            conn.execute("INSERT OR REPLACE INTO analyses VALUES (?, ?, ?, ?, ?)", row)

    def get_analysis(self, run_key: str, kind: str, params: dict) -> dict | None:
        """The result kept for this run, kind and params, or None. A damaged row raises StoreError ("damaged_run")."""
        with self._open() as conn:
            if not _has_analyses(conn):  # a store from before analyses were kept (and read-only stores stay readable)
                return None
            row = conn.execute(
                "SELECT result FROM analyses WHERE run_key = ? AND kind = ? AND params = ?",
                (run_key, kind, _canonical(params)),
            ).fetchone()
        if row is None:
            return None
        where = f"{self.path}: {kind} analysis of run {run_key[:12]}"
        _expect(isinstance(row[0], bytes) and len(row[0]) <= MAX_ANALYSIS_BYTES, where, "too large", "damaged_run")
        inflate = zlib.decompressobj()
        try:
            text = inflate.decompress(row[0], MAX_ANALYSIS_BYTES + 1)
        except zlib.error as exc:
            raise StoreError(f"{where}: damaged ({exc})", "damaged_run") from exc
        _expect(len(text) <= MAX_ANALYSIS_BYTES and inflate.eof, where, "damaged or over the size limit", "damaged_run")
        try:
            result = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"{where}: not valid JSON ({exc})", "damaged_run") from exc
        _expect(isinstance(result, dict), where, "must be a JSON object", "damaged_run")
        return result

    # ---- uploaded data sets, by content hash

    def put_dataset(self, upload: Upload) -> str:
        """Keep a validated upload under its content hash (once: the same data again is the same entry)."""
        upload.check(upload.name)
        blob = upload.to_safetensors()
        _expect(
            len(blob) <= MAX_DATASET_BYTES, "put_dataset", f"{len(blob)} bytes, over {MAX_DATASET_BYTES}", "refused"
        )
        info = UploadInfo.of(upload)
        text = _canonical(
            {"name": info.name, "kind": info.kind, "classes": list(info.classes), "counts": list(info.counts)}
        )
        with self._open() as conn, self._transaction(conn):
            conn.execute(_DATASETS)
            conn.execute("INSERT OR IGNORE INTO datasets VALUES (?, ?, ?, ?)", (info.digest, time.time(), text, blob))
        registry.remember(upload)
        return info.digest

    def _dataset_info(self, digest: str, text: object) -> UploadInfo:
        where = f"{self.path}: data set {digest[:12]}"
        obj = _json_loads(text, where) if isinstance(text, str) else None
        ok = isinstance(obj, dict) and isinstance(obj.get("name"), str) and obj.get("kind") in ("points", "images")
        ok = ok and all(isinstance(obj.get(k), list) for k in ("classes", "counts"))
        _expect(ok, where, "damaged listing", "damaged_run")
        return UploadInfo(digest, obj["name"], obj["kind"], tuple(map(str, obj["classes"])), tuple(obj["counts"]))

    def list_datasets(self) -> list[UploadInfo]:
        """Every stored data set, newest first: names, kinds, classes and counts (no tensors read)."""
        with self._open() as conn:
            if not _has_table(conn, "datasets"):
                return []
            rows = conn.execute("SELECT digest, info FROM datasets ORDER BY created DESC").fetchall()
        return [self._dataset_info(digest, text) for digest, text in rows]

    def dataset_info(self, digest: str) -> UploadInfo | None:
        """The stored data set's listing, or None (a store not yet created is not created for this)."""
        if not self.path.exists():
            return None
        with self._open() as conn:
            if not _has_table(conn, "datasets"):
                return None
            row = conn.execute("SELECT info FROM datasets WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else self._dataset_info(digest, row[0])

    def get_dataset(self, digest: str) -> Upload | None:
        """The stored data set with its tensors, checked (safetensors, never a pickle), or None."""
        if not self.path.exists():
            return None
        with self._open() as conn:
            if not _has_table(conn, "datasets"):
                return None
            row = conn.execute("SELECT data FROM datasets WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            return None
        where = f"{self.path}: data set {digest[:12]}"
        _expect(isinstance(row[0], bytes) and len(row[0]) <= MAX_DATASET_BYTES, where, "too large", "damaged_run")
        try:
            upload = Upload.from_safetensors(row[0], where)
        except DatasetError as err:
            raise StoreError(str(err), "damaged_run") from err
        _expect(upload.digest == digest, where, "its content does not match its hash", "damaged_run")
        return upload

    _USING = "json_extract(config, '$.data.name') = 'upload' AND json_extract(config, '$.data.upload') = ?"

    def runs_using_dataset(self, digest: str) -> int:
        """How many stored runs trained on the upload `digest` (`delete_dataset` removes them with it)."""
        if not self.path.exists():
            return 0
        with self._open() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM runs WHERE {self._USING}", (digest,)).fetchone()[0])

    def delete_dataset(self, digest: str) -> bool:
        """Remove an uploaded data set and every run trained on it (one transaction); False if it was not there.

        The runs go with it: a stored run's config names its data, and its analyses, retraining and replay
        checks need the examples. Uploading the same file again brings back the same content hash.
        """
        if not self.path.exists():
            return False
        with self._open() as conn, self._transaction(conn):
            keys = [k for (k,) in conn.execute(f"SELECT key FROM runs WHERE {self._USING}", (digest,))]
            if keys and _has_analyses(conn):
                conn.executemany("DELETE FROM analyses WHERE run_key = ?", [(k,) for k in keys])
            conn.executemany("DELETE FROM runs WHERE key = ?", [(k,) for k in keys])
            removed = _has_table(conn, "datasets") and (
                conn.execute("DELETE FROM datasets WHERE digest = ?", (digest,)).rowcount > 0
            )
        registry.forget(digest)
        return removed

    # ---- export and import

    def export(self, key: str, folder: Path | str) -> Path:
        """Write a run as the exported folder (`archive.write_run_folder`): what `import_run` reads back."""
        run = self.get(key)
        _expect(run is not None, str(folder), f"no run {short_key(key)} in {self.path}", "refused")
        with self._open() as conn:
            weights = dict(conn.execute("SELECT model, data FROM weights WHERE key = ?", (key,)).fetchall())
            rows = (
                conn.execute("SELECT model, step, skip_scale, data FROM snapshots WHERE key = ?", (key,)).fetchall()
                if _has_table(conn, "snapshots")
                else []
            )
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "key": key,
            "created": run.created,
            "origin": "imported" if run.imported else "trained",
            "models": list(run.configs),
        }
        config = _config_dict(run.configs, run.train, run.data)
        index, snapshots = snapshot_files(rows, list(run.configs))
        return write_run_folder(
            Path(folder), manifest, config, run.summaries, run.history, run.skip_events, weights, index, snapshots
        )

    def export_zip(self, key: str) -> bytes:
        """The exported folder of a run as a zip (one top folder ``resnet-viz-run-<key>``): what `import_zip` takes."""
        with tempfile.TemporaryDirectory(prefix="resnet-viz-export-") as tmp:
            return zip_folder(self.export(key, Path(tmp) / f"resnet-viz-run-{short_key(key)}"))

    def import_run(self, folder: Path | str) -> str:
        """Validate an exported folder completely and store it as an imported run; returns its key.

        See `import_zip`. Raises StoreError (kind "invalid_import", naming the file and field) for
        anything malformed, tampered with or foreign; the store is then unchanged.
        """
        try:
            members = FolderMembers(folder)
        except ArchiveError as err:
            raise StoreError(str(err)) from err
        return self._import(members)

    def import_zip(self, data: bytes, name: str) -> str:
        """Validate an exported zip completely and store it as an imported run; returns its key.

        Provenance: the run is kept under ``imported-<sha256 of its content>``, marked imported, so it
        never replaces or answers for a run this server trained (whose keys come from configs); the
        same file imported twice is stored once. Every field is checked against its range and against
        what training writes; the summaries are recomputed from the records (a file whose summary
        disagrees is refused). Bounded: each member is capped by what its config implies before it is
        unpacked or parsed, and a run too big to check within IMPORT_MEMORY_BUDGET is refused.
        """
        try:
            members = ZipMembers(data, name)
        except ArchiveError as err:
            raise StoreError(f"{name}: {err}") from err
        try:
            return self._import(members)
        finally:
            members.close()

    def _import(self, members: FolderMembers | ZipMembers) -> str:
        label = members.label

        def read(name: str, cap: int) -> bytes:
            try:
                return members.read(name, cap)
            except ArchiveError as err:
                raise StoreError(f"{label}: {err}") from err

        def read_json(name: str) -> object:
            return _json_loads(read(name, SMALL_JSON_CAP), f"{label}: {name}")

        where = f"{label}: {MANIFEST}"
        manifest = read_json(MANIFEST)
        _expect(isinstance(manifest, dict) and manifest.get("format") == FORMAT, where, f"not a {FORMAT} manifest")
        version = str(manifest.get("schema_version"))[:20]
        _expect(
            manifest.get("schema_version") == SCHEMA_VERSION,
            where,
            f"schema version {version}, this version reads {SCHEMA_VERSION}",
        )
        created = manifest.get("created")
        ok = _is_number(created) and math.isfinite(created) and MIN_CREATED <= created <= time.time() + CLOCK_SKEW_S
        _expect(ok, f"{where}: created", f"must be a Unix time from 2020 to now, got {str(created)[:40]}")

        where = f"{label}: config.json"
        configs, train, data = _parse_config(read_json("config.json"), where)
        _expect(len(configs) <= MAX_IMPORT_MODELS, where, f"at most {MAX_IMPORT_MODELS} models, got {len(configs)}")
        plan = _plan(configs, train, _check_fitted(configs, data, where))
        _expect(
            plan.memory <= IMPORT_MEMORY_BUDGET,
            where,
            f"a run this long needs about {plan.memory >> 20} MB "
            f"to check; imports take up to {IMPORT_MEMORY_BUDGET >> 20} MB (fewer epochs or probes)",
        )

        where = f"{label}: records.json"
        raw = read("records.json", plan.text)
        _check_records_text(raw, plan, where)
        obj = _json_loads(raw, where)
        del raw  # the parsed records replace the text
        history, events = _parse_history(obj, configs, where)
        del obj
        for k, cfg in configs.items():
            _expect(
                (history.layer_names[k], history.block_names[k]) == _names(cfg),
                where,
                f"layer/block names of {k!r} do not match its config",
            )
        _check_records(history, events, plan, where)

        where = f"{label}: summary.json"
        given = _parse_summaries(read_json("summary.json"), configs, where)
        summaries = {
            k: summarize_records(
                k,
                cfg,
                train,
                plan.per_epoch,
                [r for r in history.records if r.model == k],
                history.layer_names[k],
                str(given[k]["message"]),
            )
            for k, cfg in configs.items()
        }
        _check_summaries(given, summaries, where)

        weights = {}
        for k, cfg in configs.items():
            name = f"{k}.safetensors"
            weights[k] = read(name, plan.weights[k])
            _parse_weights(weights[k], cfg, f"{label}: {name}")
        snapshots = []
        if members.has(SNAPSHOT_INDEX):  # exports from before snapshots were exported have none
            index = _json_loads(read(SNAPSHOT_INDEX, SMALL_JSON_CAP), f"{label}: {SNAPSHOT_INDEX}")
            snapshots = _parse_snapshots(index, read, configs, plan, history, events, label)
        config = _config_dict(configs, train, data)
        text = history_json(history, events)
        trained = _key(configs, train, data, events)
        if self._holds(trained, text, weights):  # this server's own run, exported and brought back: no copy
            return trained
        key = _content_key(config, summaries, text, weights, snapshots)
        if not self.has(key):  # the same content imported before: nothing to change
            blob = zlib.compress(text.encode(), 6)
            self._write(key, float(created), config, summaries, blob, weights, "imported", len(events), snapshots)
        return key


def model_weights(trainer: Trainer) -> dict[str, bytes]:
    """Each model's final state_dict as safetensors bytes (what the store and an exported folder keep)."""
    return {k: _state_bytes(m.state_dict()) for k, m in trainer.models.items()}


def _state_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """A state_dict as safetensors bytes (CPU, contiguous): how the store and an export keep weights."""
    return save_safetensors({n: t.detach().cpu().contiguous() for n, t in state.items()})


def trained_summaries(trainer: Trainer, history: History) -> dict[str, dict[str, object]]:
    """Per model: `summarize` plus forward FLOPs per example, as the store keeps them."""
    return {
        k: summarize(trainer, history, k) | {"flops": flops_per_example(m, trainer.configs[k])}
        for k, m in trainer.models.items()
    }


def export_trained(trainer: Trainer, history: History, folder: Path | str) -> Path:
    """Write a finished run that was not stored as the exported folder (`RunStore.export`'s format)."""
    data = trainer.dataset.config
    events = trainer.skip_events
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created": time.time(),
        "origin": "trained",
        "key": _key(trainer.configs, trainer.train, data, events),
        "models": list(trainer.configs),
    }
    config = _config_dict(trainer.configs, trainer.train, data)
    summaries = trained_summaries(trainer, history)
    index, snapshots = snapshot_files(snapshot_rows(trainer), list(trainer.configs))
    weights = model_weights(trainer)
    return write_run_folder(Path(folder), manifest, config, summaries, history, events, weights, index, snapshots)


SnapshotRow = tuple[str, int, float, bytes]  # (model, step, skip scale then, safetensors of its state_dict)


def snapshot_rows(trainer: Trainer) -> list[SnapshotRow]:
    """The snapshots a finished run keeps (`snapshots_to_keep`), one a model and step, as the store holds them."""
    keep = set(snapshots_to_keep(trainer))
    kept = {(k, s.step): s for k, snaps in trainer.snapshots.items() for s in snaps if s.step in keep}  # one a step
    return [(k, step, s.skip_scale, _state_bytes(s.state)) for (k, step), s in kept.items()]


def snapshot_files(rows: Sequence[SnapshotRow], models: Sequence[str]) -> tuple[dict[str, object], dict[str, bytes]]:
    """A run's snapshots as an export carries them: the index (the steps every model has, and each model's skip
    scale at each) and one safetensors file per model, its tensors named ``<step>/<name>``. Empty without any."""
    steps = _common_steps([(model, step) for model, step, _, _ in rows], dict.fromkeys(models))
    if not steps:
        return {}, {}
    wanted = set(steps)
    alphas: dict[str, dict[int, float]] = {m: {} for m in models}
    tensors: dict[str, dict[str, torch.Tensor]] = {m: {} for m in models}
    for model, step, alpha, blob in rows:
        if step in wanted and model in tensors:
            alphas[model][step] = float(alpha)
            tensors[model].update({f"{step}/{name}": t for name, t in load_safetensors(blob).items()})
    index = {"steps": steps, "skip_scales": {m: [alphas[m][step] for step in steps] for m in models}}
    return index, {m: save_safetensors(t) for m, t in tensors.items()}


_STEP_PREFIX = re.compile(r"([0-9]{1,9})/(.+)", re.DOTALL)


def _parse_snapshots(
    index: object,
    read: Callable[[str, int], bytes],
    configs: Mapping[str, ModelConfig],
    plan: _Plan,
    history: History,
    events: Sequence[tuple[str, int, float]],
    label: str,
) -> list[SnapshotRow]:
    """An import's snapshots (`snapshot_files`), checked as training writes them: steps strictly between the
    first and the last, at most `max_snapshots`, each model's tensors exactly its config's, a skip scale its
    config or a recorded live change gave it, and no more bytes than the store keeps of a run it trains."""
    where = f"{label}: {SNAPSHOT_INDEX}"
    fields = {"steps", "skip_scales"}
    _expect(isinstance(index, dict) and set(index) == fields, where, 'must hold "steps" and "skip_scales" only')
    steps, scales = index["steps"], index["skip_scales"]
    last = min(max((r.step for r in history.records if r.model == k), default=0) for k in configs)
    most = plan.train.max_snapshots
    ok = isinstance(steps, list) and 0 < len(steps) <= most and all(type(step) is int for step in steps)
    _expect(
        ok and steps == sorted(set(steps)) and steps[0] > 0 and steps[-1] < last,
        f"{where}: steps",
        f"must be 1 to {most} whole steps in increasing order, each between 0 and the last step ({last})",
    )
    _expect(
        isinstance(scales, dict) and set(scales) == set(configs),
        f"{where}: skip_scales",
        f"must give each model's list: {', '.join(configs)}",
    )
    rows: list[SnapshotRow] = []
    stored = 0
    for key, cfg in configs.items():
        allowed = sorted({cfg.alpha} | {alpha for model, _, alpha in events if model == key})
        values = scales[key]
        known = all(_is_number(v) and v in allowed for v in values) if isinstance(values, list) else False
        _expect(
            known and len(values) == len(steps),
            f"{where}: skip_scales.{key}",
            f"must be {len(steps)} values, one a step, each {key}'s configured or recorded skip scale ({allowed})",
        )
        name = snapshot_file(key)
        cap = min(len(steps) * plan.weights[key], 2 * MAX_SNAPSHOT_BYTES)  # a real one: its tensors and a header
        state = _load_tensors(read(name, cap), f"{label}: {name}")
        by_step: dict[int, dict[str, torch.Tensor]] = {step: {} for step in steps}
        for full, tensor in state.items():
            match = _STEP_PREFIX.fullmatch(full)
            _expect(
                match is not None and int(match[1]) in by_step,
                f"{label}: {name}",
                f"tensor {full[:80]!r} is not named <step>/<name> with a step of {SNAPSHOT_INDEX}",
            )
            by_step[int(match[1])][match[2]] = tensor
        expected = _shapes(cfg)
        for step, alpha in zip(steps, values, strict=True):
            one = _check_state(by_step[step], expected, f"{label}: {name} at step {step}")
            stored += sum(t.nbytes for t in one.values())
            _expect(  # checked as they come: what a refused import holds stays near the store's own bound
                stored <= MAX_SNAPSHOT_BYTES + MAX_SNAPSHOT_BYTES // 100,  # 1%: runs kept before int64s counted 8
                where,
                f"more than {MAX_SNAPSHOT_BYTES >> 20} MB of snapshots; a run keeps at most that",
            )
            rows.append((key, step, float(alpha), save_safetensors(one)))
    return rows

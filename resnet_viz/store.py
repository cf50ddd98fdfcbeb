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
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from hashlib import sha256
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .data import DataConfig, load_dataset
from .jobs import LIMITER, JobLimiter, JobView
from .models import (
    ConfigError,
    ModelConfig,
    Net,
    block_names,
    build_model,
    flops_per_example,
    layer_names,
    set_skip_scale,
)
from .probes import LAYER_METRICS, METRICS
from .training import History, ModelState, StepRecord, TrainConfig, Trainer, fit_to_data, summarize

SCHEMA_VERSION = 1  # bump when the stored layout changes: old keys then miss and runs retrain
FORMAT = "resnet-viz-run"  # names an exported folder's manifest and the database's meta table
DB_FILE = "runs.sqlite3"
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another session's transaction
COMPLETE = ("finished", "diverged")  # model states a retrain would reproduce: only such runs are stored
DATA_DECIDED = ("family", "in_channels", "input_size", "num_classes")  # ModelConfig fields fit_to_data sets
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # model keys become file names on export

SkipEvent = tuple[str, int, float]  # (model, step it took effect, alpha), as Trainer.skip_events

_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # info: what list_runs shows, readable without touching the big columns; config: {data, train, models};
    # summaries: {model: summarize() + flops}; history: zlib-compressed JSON of names, skip events, records.
    "CREATE TABLE runs (key TEXT PRIMARY KEY, created REAL NOT NULL, info TEXT NOT NULL, config TEXT NOT NULL, "
    "summaries TEXT NOT NULL, history BLOB NOT NULL)",
    # data: safetensors bytes of a model's final state_dict.
    "CREATE TABLE weights (key TEXT NOT NULL REFERENCES runs(key) ON DELETE CASCADE, model TEXT NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (key, model))",
)


class StoreError(ValueError):
    """The store or an imported file is unusable; the message names the file and the problem."""


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


def _expect(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise StoreError(f"{where}: {problem}")


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _typed_fields(cls: type, values: object, where: str) -> dict[str, object]:
    """The fields of dataclass `cls` from a JSON dict, each present and of its default's type."""
    _expect(isinstance(values, dict), where, f"must be a JSON object, got {type(values).__name__}")
    out = {}
    for f in fields(cls):
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


def _check_fitted(configs: Mapping[str, ModelConfig], data: DataConfig, where: str) -> None:
    """The fields the data decides must be what the data gives: the key leaves them out."""
    dataset = load_dataset(data)
    for key, cfg in configs.items():
        try:
            ok = fit_to_data(cfg, dataset) == cfg
        except ConfigError as err:
            raise StoreError(f"{where}: models.{key}: invalid config: {err}") from err
        _expect(ok, where, f"models.{key}: {', '.join(DATA_DECIDED)} do not match the {data.name} data")


def _parse_float(value: object, where: str, finite: bool = True) -> float:
    _expect(_is_number(value), where, f"must be a number, got {value!r}")
    _expect(not finite or math.isfinite(value), where, f"must be finite, got {value!r}")
    return float(value)


def _parse_record(obj: object, sizes: dict[str, dict[str, int]], where: str) -> StepRecord:
    names = [f.name for f in fields(StepRecord)]
    _expect(isinstance(obj, dict) and sorted(obj) == sorted(names), where, f"must have exactly the fields {names}")
    _expect(isinstance(obj["model"], str) and obj["model"] in sizes, where, f"unknown model {obj['model']!r}")
    step = obj["step"]
    _expect(isinstance(step, int) and not isinstance(step, bool) and step >= 1, where, f"bad step {step!r}")
    values = {n: _parse_float(obj[n], f"{where}.{n}") for n in ("epoch", "lr", "loss", "acc", "skip_scale", "seconds")}
    for n in ("val_loss", "val_acc"):
        values[n] = None if obj[n] is None else _parse_float(obj[n], f"{where}.{n}")
    probes = obj["probes"]
    if probes is not None:  # probe values may be inf or NaN: that is what a probe shows on a blow-up
        _expect(isinstance(probes, dict) and set(probes) <= set(METRICS), where, f"probes keys must be in {METRICS}")
        for metric, vals in probes.items():
            limit = sizes[obj["model"]][metric]
            _expect(
                isinstance(vals, list) and len(vals) <= limit,
                where,
                f"probes.{metric} must list at most {limit} values",
            )
            if not all(type(v) is float for v in vals):  # the fast check passes what JSON writes for floats
                probes[metric] = [_parse_float(v, f"{where}.probes.{metric}", finite=False) for v in vals]
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


def _meta_net(cfg: ModelConfig) -> Net:
    """The net `cfg` builds, on the meta device: shapes and names without memory or init."""
    with torch.device("meta"):
        return Net(cfg)


def _names(cfg: ModelConfig) -> tuple[list[str], list[str]]:
    net = _meta_net(cfg)
    return layer_names(net), block_names(net)


def _shapes(cfg: ModelConfig) -> dict[str, tuple[torch.dtype, torch.Size]]:
    """Dtype and shape of every state_dict entry of the net `cfg` builds."""
    return {k: (v.dtype, v.shape) for k, v in _meta_net(cfg).state_dict().items()}


def _parse_weights(blob: bytes, cfg: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes (never a pickle), checked against the net the config builds."""
    try:
        state = load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error types for any malformed header
        raise StoreError(f"{where}: not a valid safetensors file ({type(exc).__name__}: {exc})") from exc
    expected = _shapes(cfg)
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    _expect(not missing and not extra, where, f"tensor names do not match the config (missing {missing[:3]}, "
            f"unexpected {extra[:3]})")  # fmt: skip
    for name, (dtype, shape) in expected.items():
        got = state[name]
        _expect(got.dtype == dtype and got.shape == shape, where, f"{name} is {got.dtype} {tuple(got.shape)}, "
                f"the config needs {dtype} {tuple(shape)}")  # fmt: skip
    return state


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
    weights: Callable[[str], dict[str, torch.Tensor]] | None = field(default=None, repr=False)  # loads on demand

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

    def view(self) -> JobView:
        """The run as a finished job's view, so the training lab draws a stored run like a live one."""
        history = self.history
        states = self.states
        step = max((s.step for s in states.values()), default=0)
        per_epoch = self.steps_per_epoch
        return JobView(
            status="finished", message="", step=step, total_steps=per_epoch * self.train.epochs,
            steps_per_epoch=per_epoch, steps_per_second=0.0, eta_seconds=0.0, queue_position=0, states=states,
            records=history.records, skip_events=list(self.skip_events), layer_names=history.layer_names,
            block_names=history.block_names,
        )  # fmt: skip

    def model(self, key: str) -> Net:
        """A fresh copy of model `key` with its final weights, in eval mode (weights via safetensors only)."""
        if key not in self.configs:
            raise KeyError(f"no model {key!r} in run {self.key[:12]}; models: {', '.join(self.configs)}")
        if self.weights is None:
            raise StoreError(f"run {self.key[:12]}: no weights attached")
        net = build_model(self.configs[key], seed=self.train.seed)
        set_skip_scale(net, self.final_skip_scale(key))
        net.load_state_dict(self.weights(key))
        return net.eval()


# --------------------------------------------------------------------------------------------------
# The store


def _json_loads(text: str | bytes, where: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: not valid JSON ({exc})") from exc


def _history_json(history: History, skip_events: Sequence[SkipEvent]) -> str:
    return json.dumps(
        {
            "layer_names": history.layer_names,
            "block_names": history.block_names,
            "skip_events": [list(e) for e in skip_events],
            "records": [asdict(r) for r in history.records],
        },
        separators=(",", ":"),
    )


def _info(config: dict, summaries: dict[str, dict[str, object]]) -> dict[str, object]:
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
    }


class RunStore:
    """Finished runs in ``<directory>/runs.sqlite3``; safe to share between threads and processes.

    The instance holds no connection, only the path: every method opens and closes its own. A
    damaged or foreign database file raises `StoreError` from the first operation that touches it;
    `quarantine()` then moves it aside and the store starts empty.
    """

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_data_dir()
        self.path = self.directory / DB_FILE
        self._ready = False
        self._ready_lock = threading.Lock()

    # ---- connections and transactions

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return StoreError(f"{self.path}: busy for over {BUSY_TIMEOUT_S:.0f} s (another session is writing): {text}")
        if "unable to open" in text:
            return StoreError(f"{self.path}: cannot open the run store ({text}); check the folder and its permissions")
        return StoreError(
            f"{self.path} is not a valid run store ({text}). Move it away to start fresh: RunStore.quarantine() "
            f"renames it to {DB_FILE}.corrupt-<time>, or delete the file."
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.path}: cannot open the run store ({exc})") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

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

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection to a database known to be a run store of this schema (created when absent)."""
        with self._connect() as conn:
            with self._ready_lock:
                if not self._ready:
                    self._prepare(conn)
                    self._ready = True
            yield conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        with self._transaction(conn):
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))]
                )
                return
            meta = dict(conn.execute("SELECT name, value FROM meta")) if "meta" in tables else {}
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.path} is not a valid run store (no resnet-viz metadata); {self._move_hint()}")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise StoreError(
                f"{self.path} is a run store of schema {meta.get('schema_version')}, this version reads "
                f"{SCHEMA_VERSION}; {self._move_hint()}"
            )

    def _move_hint(self) -> str:
        return f"move it away to start fresh (RunStore.quarantine() renames it to {DB_FILE}.corrupt-<time>)"

    def quarantine(self) -> Path | None:
        """Move a damaged database (and its WAL files) aside to ``<name>.corrupt-<time>``; start empty.

        Returns the new path of the old file, or None when there was none. Call it only when the
        store raised StoreError: other sessions using the file at that moment lose their handle.
        """
        with self._ready_lock:
            self._ready = False
            if not self.path.exists():
                return None
            stamp = time.strftime("%Y%m%d-%H%M%S")
            target = self.path.with_name(f"{DB_FILE}.corrupt-{stamp}")
            n = 1
            while target.exists():
                target, n = self.path.with_name(f"{DB_FILE}.corrupt-{stamp}-{n}"), n + 1
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(DB_FILE + suffix)
                if side.exists():
                    side.rename(target.with_name(target.name + suffix))
            self.path.rename(target)
            return target

    # ---- keys, saving and loading

    def key_for(
        self,
        models: Mapping[str, ModelConfig],
        train: TrainConfig,
        data: DataConfig,
        skip_events: Sequence[SkipEvent] = (),
    ) -> str:
        """The key a run of these configs is stored under (see `run_key`)."""
        return run_key(models, train, data, skip_events)

    def save(self, trainer: Trainer, history: History, skip_events: Sequence[SkipEvent] | None = None) -> str:
        """Store a finished run (every model finished or diverged) in one transaction; returns its key.

        A stopped run is refused: it is not what its config produces, so it must not answer for it.
        """
        events = list(trainer.skip_events if skip_events is None else skip_events)
        for key, state in trainer.states.items():
            _expect(state.status in COMPLETE, "save", f"model {key!r} is {state.status}; only finished runs are stored")
            _expect(bool(_SAFE_NAME.fullmatch(key)), "save", f"model name {key!r} must match {_SAFE_NAME.pattern}")
        config = _config_dict(trainer.configs, trainer.train, trainer.dataset.config)
        run_key_ = _key(trainer.configs, trainer.train, trainer.dataset.config, events)
        summaries = {
            k: summarize(trainer, history, k) | {"flops": flops_per_example(m, trainer.configs[k])}
            for k, m in trainer.models.items()
        }
        weights = {
            k: save_safetensors({n: t.detach().cpu().contiguous() for n, t in m.state_dict().items()})
            for k, m in trainer.models.items()
        }
        blob = zlib.compress(_history_json(history, events).encode(), 6)
        self._write(run_key_, time.time(), config, summaries, blob, weights)
        return run_key_

    def _write(
        self, key: str, created: float, config: dict, summaries: dict, history: bytes, weights: dict[str, bytes]
    ) -> None:
        with self._open() as conn, self._transaction(conn):
            conn.execute("DELETE FROM runs WHERE key = ?", (key,))  # cascades to its weights
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    created,
                    json.dumps(_info(config, summaries)),
                    json.dumps(config),
                    json.dumps(summaries),
                    history,
                ),
            )
            conn.executemany("INSERT INTO weights VALUES (?, ?, ?)", [(key, k, w) for k, w in weights.items()])

    def has(self, key: str) -> bool:
        with self._open() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def get(self, key: str) -> StoredRun | None:
        """The stored run with this key (records and summaries loaded, weights on demand), or None."""
        with self._open() as conn:
            row = conn.execute("SELECT created, config, summaries, history FROM runs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        where = f"{self.path}: run {key[:12]}"
        try:
            history_json = zlib.decompress(row[3])
        except zlib.error as exc:
            raise StoreError(f"{where}: damaged history ({exc}); delete the run") from exc
        configs, train, data = _parse_config(_json_loads(row[1], where), where)
        history, events = _parse_history(_json_loads(history_json, where), configs, where)
        summaries = _parse_summaries(_json_loads(row[2], where), configs, where)
        return StoredRun(key, row[0], data, train, configs, history, summaries, events, weights=self._loader(key))

    def _loader(self, key: str) -> Callable[[str], dict[str, torch.Tensor]]:
        def load(model: str) -> dict[str, torch.Tensor]:
            return self.weights(key, model)

        return load

    def weights(self, key: str, model: str) -> dict[str, torch.Tensor]:
        """The final state_dict of one model of a stored run, checked against its config."""
        with self._open() as conn:
            row = conn.execute("SELECT data FROM weights WHERE key = ? AND model = ?", (key, model)).fetchone()
            config = conn.execute("SELECT config FROM runs WHERE key = ?", (key,)).fetchone()
        where = f"{self.path}: run {key[:12]} weights of {model!r}"
        _expect(row is not None and config is not None, where, "not in the store")
        configs, _, _ = _parse_config(_json_loads(config[0], where), where)
        return _parse_weights(row[0], configs[model], where)

    def list_runs(self) -> list[RunInfo]:
        """Every stored run, newest first: metadata only (fast)."""
        with self._open() as conn:
            rows = conn.execute("SELECT key, created, info FROM runs ORDER BY created DESC").fetchall()
        return [RunInfo(key=k, created=c, **_json_loads(info, f"{self.path}: run {k[:12]}")) for k, c, info in rows]

    def delete(self, key: str) -> bool:
        """Remove a run and its weights; False if it was not there."""
        with self._open() as conn, self._transaction(conn):
            return conn.execute("DELETE FROM runs WHERE key = ?", (key,)).rowcount > 0

    # ---- export and import

    def export(self, key: str, folder: Path | str) -> Path:
        """Write a run as plain files: manifest.json, config.json, summary.json, records.json (what import
        reads), steps.csv and layers.csv (for people and spreadsheets), <model>.safetensors."""
        run = self.get(key)
        _expect(run is not None, str(folder), f"no run {key[:12]} in {self.path}")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "key": key, "created": run.created,
                    "models": list(run.configs)}  # fmt: skip
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (out / "config.json").write_text(json.dumps(_config_dict(run.configs, run.train, run.data), indent=2))
        (out / "summary.json").write_text(json.dumps(run.summaries, indent=2))
        (out / "records.json").write_text(_history_json(run.history, run.skip_events))
        run.history.steps_frame().to_csv(out / "steps.csv", index=False)
        run.history.layers_frame().to_csv(out / "layers.csv", index=False)
        with self._open() as conn:
            for model, blob in conn.execute("SELECT model, data FROM weights WHERE key = ?", (key,)):
                (out / f"{model}.safetensors").write_bytes(blob)
        return out

    def import_run(self, folder: Path | str) -> str:
        """Validate an exported folder completely and store it; returns its key. Raises StoreError naming
        the file and the problem for anything malformed, tampered with or foreign. The CSV files are
        not read: records.json is the source of truth."""
        src = Path(folder)
        _expect(src.is_dir(), str(src), "not a folder (export writes a folder)")

        def read_json(name: str) -> object:
            path = src / name
            _expect(path.is_file(), str(path), "missing")
            return _json_loads(path.read_bytes(), str(path))

        manifest = read_json("manifest.json")
        where = str(src / "manifest.json")
        _expect(isinstance(manifest, dict) and manifest.get("format") == FORMAT, where, f"not a {FORMAT} manifest")
        _expect(manifest.get("schema_version") == SCHEMA_VERSION, where,
                f"schema version {manifest.get('schema_version')!r}, this version reads {SCHEMA_VERSION}")  # fmt: skip
        key, created = manifest.get("key"), manifest.get("created")
        _expect(isinstance(key, str) and _is_number(created), where, "needs a string key and a numeric created time")
        config_obj = read_json("config.json")
        configs, train, data = _parse_config(config_obj, str(src / "config.json"))
        _check_fitted(configs, data, str(src / "config.json"))
        history, events = _parse_history(read_json("records.json"), configs, str(src / "records.json"))
        for k, cfg in configs.items():
            _expect((history.layer_names[k], history.block_names[k]) == _names(cfg), str(src / "records.json"),
                    f"layer/block names of {k!r} do not match its config")  # fmt: skip
        summaries = _parse_summaries(read_json("summary.json"), configs, str(src / "summary.json"))
        _expect(_key(configs, train, data, events) == key, where,
                "key does not match config.json and records.json (edited, or from another version)")  # fmt: skip
        weights = {}
        for k, cfg in configs.items():
            path = src / f"{k}.safetensors"
            _expect(path.is_file(), str(path), "missing")
            blob = path.read_bytes()
            _parse_weights(blob, cfg, str(path))
            weights[k] = blob
        stored = _config_dict(configs, train, data)
        blob = zlib.compress(_history_json(history, events).encode(), 6)
        self._write(key, float(created), stored, summaries, blob, weights)
        return key


# --------------------------------------------------------------------------------------------------
# Load or train


def get_or_train(
    store: RunStore,
    models: Mapping[str, ModelConfig],
    train: TrainConfig,
    data: DataConfig,
    stop: threading.Event | None = None,
    limiter: JobLimiter = LIMITER,
    on_step: Callable[[Trainer, list[StepRecord]], None] | None = None,
    owner: object | None = None,
) -> StoredRun | None:
    """The stored run for these configs, or train it (in this thread, inside a limiter slot) and store it.

    Returns the run (`cached` True when it came from the store), or None when `stop` was set before
    it finished: a stopped run is not stored. `on_step(trainer, records)` is called after every step;
    `owner` is who waits in the limiter queue (for its queue position), the trainer by default.
    """
    run = store.get(store.key_for(models, train, data))
    if run is not None:
        return run
    stop = stop or threading.Event()
    trainer = Trainer(models, train, data, stop)
    if not limiter.acquire(owner or trainer, stop):
        return None
    try:
        history = trainer.history()
        for records in trainer.run():
            history.add(records)
            if on_step is not None:
                on_step(trainer, records)
    finally:
        limiter.release()
    if any(s.status not in COMPLETE for s in trainer.states.values()):
        return None
    stored = store.get(store.save(trainer, history))
    return replace(stored, cached=False) if stored is not None else None

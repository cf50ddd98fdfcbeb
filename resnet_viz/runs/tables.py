"""What a live run keeps for its charts and its record, at a bounded cost per step.

A run's `History` is a list of `StepRecord`s with Python lists of probe values: about 8 KB per model
and step at depth 56, and a chart refresh that rebuilds tables from it grows with the run. A live
run keeps instead:

- `CompactHistory`: every record in growable numpy columns (scalars as float64, probe values as
  float32, which holds them exactly: they come from float32 tensors), about 0.7 KB per model and
  step at depth 56; it gives the exact `History` back for storing and downloads;
- `ChartTables`: what the charts draw, updated per step: training loss and accuracy in at most
  `MAX_POINTS` bins per model (bins double in width as the run grows, so each drawn point is the mean
  of the steps it covers), the validation points, the latest probe of each model (the profile
  charts), and the gradient-norm heatmap in at most `MAX_HEATMAP_COLUMNS` binned columns. Drawing
  copies these small tables, so a refresh costs the same at step 100 and at step 100,000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..figures.common import MAX_HEATMAP_COLUMNS, MAX_POINTS
from ..probes import LAYER_METRICS, METRICS
from ..training import History, StepRecord

SCALARS = ("step", "epoch", "lr", "loss", "acc", "skip_scale", "seconds", "val_loss", "val_acc")
SMOOTH_STEPS = 10  # the accuracy chart's training curve is a 10-step mean


class _Grow:
    """A growable 2-D float array (rows appended, capacity doubled): amortised O(row) per append."""

    def __init__(self, width: int, dtype: type) -> None:
        self.data = np.empty((16, width), dtype=dtype)
        self.n = 0

    def append(self, row: np.ndarray) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n] = row
        self.n += 1

    def rows(self, stop: int | None = None) -> np.ndarray:
        return self.data[: self.n if stop is None else stop]

    def truncated(self, n: int) -> _Grow:
        out = _Grow(self.data.shape[1], self.data.dtype.type)
        out.data = self.data[: max(n, 1)].copy()
        out.n = n
        return out


class _ModelColumns:
    """One model's records as columns."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.scalars = _Grow(len(SCALARS), np.float64)
        self.probes = {m: _Grow(sizes[m], np.float32) for m in METRICS}
        self.probed = _Grow(1, np.bool_)
        self.lengths = {m: _Grow(1, np.int32) for m in METRICS}  # values a probe gave (a layer may be skipped)

    def append(self, r: StepRecord) -> None:
        nan = float("nan")
        self.scalars.append(
            np.array(
                [
                    r.step,
                    r.epoch,
                    r.lr,
                    r.loss,
                    r.acc,
                    r.skip_scale,
                    r.seconds,
                    nan if r.val_loss is None else r.val_loss,
                    nan if r.val_acc is None else r.val_acc,
                ],
                dtype=np.float64,
            )
        )
        self.probed.append(np.array([r.probes is not None]))
        for m, grow in self.probes.items():
            values = (r.probes or {}).get(m) or []
            row = np.full(grow.data.shape[1], np.nan, dtype=np.float32)
            row[: len(values)] = values
            grow.append(row)
            self.lengths[m].append(np.array([len(values)], dtype=np.int32))

    def records(self, model: str) -> list[StepRecord]:
        """Every record, in order. Each column goes to Python lists at once: per record, a run's save took
        0.25 s of the server's CPU for a 100-step pair, under the GIL the tabs draw with."""
        # validation loss and accuracy: None on steps without a validation (NaN in the columns)
        validation = [[None if x != x else x for x in col] for col in self.scalars.rows()[:, 7:9].T.tolist()]
        rows = self.scalars.rows()[:, :7].tolist()
        probed = self.probed.rows()[:, 0].tolist()
        probes = {m: self.probes[m].rows().tolist() for m in METRICS}
        lengths = {m: self.lengths[m].rows()[:, 0].tolist() for m in METRICS}
        out = []
        for i, (v, val_loss, val_acc) in enumerate(zip(rows, *validation, strict=True)):
            out.append(
                StepRecord(
                    model=model,
                    step=int(v[0]),
                    epoch=v[1],
                    lr=v[2],
                    loss=v[3],
                    acc=v[4],
                    skip_scale=v[5],
                    seconds=v[6],
                    val_loss=val_loss,
                    val_acc=val_acc,
                    probes={m: probes[m][i][: lengths[m][i]] for m in METRICS} if probed[i] else None,
                )
            )
        return out

    def truncated(self, n: int) -> _ModelColumns:
        out = object.__new__(_ModelColumns)
        out.scalars = self.scalars.truncated(n)
        out.probes = {m: g.truncated(n) for m, g in self.probes.items()}
        out.probed = self.probed.truncated(n)
        out.lengths = {m: g.truncated(n) for m, g in self.lengths.items()}
        return out

    def nbytes(self) -> int:
        grows = [self.scalars, self.probed, *self.probes.values(), *self.lengths.values()]
        return sum(g.data.nbytes for g in grows)


class CompactHistory:
    """Every step record of a run in numpy columns; `history()` gives the exact `History` back."""

    def __init__(self, layer_names: dict[str, list[str]], block_names: dict[str, list[str]]) -> None:
        self.layer_names, self.block_names = layer_names, block_names
        self._columns = {
            k: _ModelColumns({m: len(layer_names[k] if m in LAYER_METRICS else block_names[k]) for m in METRICS})
            for k in layer_names
        }
        self._order_rows = _Grow(2, np.int32)  # (model index, row) per record, the same order compactly
        self._keys = list(layer_names)

    def add(self, records: list[StepRecord]) -> None:
        for r in records:
            cols = self._columns[r.model]
            self._order_rows.append(np.array([self._keys.index(r.model), cols.scalars.n], dtype=np.int32))
            cols.append(r)

    def __len__(self) -> int:
        return self._order_rows.n

    def last_step(self) -> int:
        return max((int(c.scalars.data[c.scalars.n - 1, 0]) for c in self._columns.values() if c.scalars.n), default=0)

    def history(self) -> History:
        """The exact records, as the engine produced them (for the store and the CSV downloads)."""
        per_model = [self._columns[k].records(k) for k in self._keys]
        records = [per_model[k][i] for k, i in self._order_rows.rows().tolist()]
        return History(self.layer_names, self.block_names, records)

    def up_to(self, step: int) -> CompactHistory:
        """A copy holding the records of steps <= `step` (a fork's history)."""
        out = object.__new__(CompactHistory)
        out.layer_names, out.block_names, out._keys = self.layer_names, self.block_names, self._keys
        counts = {k: int(np.searchsorted(c.scalars.rows()[:, 0], step, side="right")) for k, c in self._columns.items()}
        out._columns = {k: c.truncated(counts[k]) for k, c in self._columns.items()}
        keep = [i for i, (k, row) in enumerate(self._order_rows.rows()) if row < counts[self._keys[k]]]
        out._order_rows = self._order_rows.truncated(len(keep))
        out._order_rows.data[: len(keep)] = self._order_rows.data[keep]
        return out

    def columns(self, model: str) -> _ModelColumns:
        return self._columns[model]

    def nbytes(self) -> int:
        return self._order_rows.data.nbytes + sum(c.nbytes() for c in self._columns.values())


class _Bins:
    """Means of consecutive values in at most `limit` bins; bins double in width when full."""

    def __init__(self, width: int, limit: int) -> None:
        self.limit = limit
        self.sums = np.zeros((limit, width))
        self.counts = np.zeros(limit, dtype=np.int64)
        self.last_step = np.zeros(limit, dtype=np.int64)
        self.n = 0  # bins in use
        self.size = 1  # values per full bin

    def add(self, step: int, values: np.ndarray) -> None:
        if self.n == 0 or self.counts[self.n - 1] >= self.size:
            if self.n == self.limit:
                self._halve()
            self.n += 1
        i = self.n - 1
        self.sums[i] += values
        self.counts[i] += 1
        self.last_step[i] = step

    def _halve(self) -> None:
        half = self.limit // 2
        self.sums[:half] = self.sums[0::2] + self.sums[1::2]
        self.counts[:half] = self.counts[0::2] + self.counts[1::2]
        self.last_step[:half] = self.last_step[1::2]
        self.sums[half:], self.counts[half:] = 0.0, 0
        self.n, self.size = half, self.size * 2

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(last step of each bin, mean values of each bin) for the bins in use."""
        counts = np.maximum(self.counts[: self.n], 1)[:, None]
        return self.last_step[: self.n].copy(), self.sums[: self.n] / counts


@dataclass
class _ModelTables:
    curve: _Bins  # (loss, acc) per step, binned
    heat: _Bins  # log10 grad norm per layer per probed step, binned
    val: list[tuple[int, float, float, float]]  # (step, epoch, val_loss, val_acc)
    latest: StepRecord | None  # the last probed record
    recent_acc: list[float]  # the last SMOOTH_STEPS training accuracies


class ChartTables:
    """What the lab's charts draw, kept per step at a fixed size (see the module docstring)."""

    def __init__(self, layer_names: dict[str, list[str]], block_names: dict[str, list[str]]) -> None:
        self.layer_names, self.block_names = layer_names, block_names
        # Every layer and block name of every model, once: the categories of the layers frame's name column.
        every = (n for table in (layer_names, block_names) for names in table.values() for n in names)
        self._layer_categories = list(dict.fromkeys(every))
        code = {n: i for i, n in enumerate(self._layer_categories)}
        # per model: the codes of its layer names and of its block names, made once (not at every redraw)
        self._name_codes = {
            k: tuple(np.array([code[n] for n in names[k]], dtype=np.int64) for names in (layer_names, block_names))
            for k in layer_names
        }
        self._models = {
            k: _ModelTables(_Bins(3, MAX_POINTS), _Bins(len(layer_names[k]), MAX_HEATMAP_COLUMNS), [], None, [])
            for k in layer_names
        }

    @classmethod
    def of(cls, history: History) -> ChartTables:
        tables = cls(history.layer_names, history.block_names)
        tables.add(history.records)
        return tables

    def add(self, records: list[StepRecord]) -> None:
        for r in records:
            t = self._models[r.model]
            t.recent_acc = [*t.recent_acc[-(SMOOTH_STEPS - 1) :], r.acc]
            t.curve.add(r.step, np.array([r.loss, r.acc, float(np.mean(t.recent_acc))]))
            if r.val_loss is not None:
                t.val.append((r.step, r.epoch, r.val_loss, r.val_acc if r.val_acc is not None else float("nan")))
            grads = (r.probes or {}).get("grad_norm")
            if grads is not None and len(grads) == len(self.layer_names[r.model]):
                t.latest = r
                t.heat.add(r.step, np.log10(np.clip(np.asarray(grads, dtype=np.float64), 1e-12, None)))

    def steps_frame(self) -> pd.DataFrame:
        """Chart rows: per model the binned training curve (loss, acc, 10-step mean acc) and validation points.

        Columns as `History.steps_frame()` (model, step, epoch, lr, loss, acc, skip_scale, seconds,
        val_loss, val_acc) plus ``acc_smooth``; training rows have NaN validation values and
        validation rows NaN training values.
        """
        model, step, train, val = [], [], [], []
        for code, t in enumerate(self._models.values()):
            steps, means = t.curve.means()
            points = np.array(t.val, dtype=np.float64).reshape(-1, 4)
            model += [np.full(len(steps) + len(points), code)]
            step += [steps, points[:, 0].astype(np.int64)]
            train += [means, np.full((len(points), 3), np.nan)]
            val += [np.full((len(steps), 2), np.nan), points[:, 2:]]
        train_values, val_values = (
            np.concatenate(train or [np.empty((0, 3))]),
            np.concatenate(val or [np.empty((0, 2))]),
        )
        return pd.DataFrame(
            {
                "model": self._codes(model, list(self._models)),
                "step": np.concatenate(step or [np.empty(0, np.int64)]),
                "loss": train_values[:, 0],
                "acc": train_values[:, 1],
                "acc_smooth": train_values[:, 2],
                "val_loss": val_values[:, 0],
                "val_acc": val_values[:, 1],
            }
        )

    def layers_frame(self) -> pd.DataFrame:
        """Chart rows in `History.layers_frame()` form: every metric at each model's latest probed step,
        plus the binned ``grad_norm`` heatmap columns (metric ``grad_norm_binned``, value in log10).

        Made from NumPy columns, names as categorical codes: a redraw reads them every 0.8 s, and lists of
        a few thousand names cost more than the charts drawn from them."""
        model, step, layer, metric, value, index = [], [], [], [], [], []

        def rows(code: int, at: np.ndarray, names: np.ndarray, kind: int, values: np.ndarray) -> None:
            width = len(names)
            model.append(np.full(values.size, code))
            step.append(np.repeat(at, width)[: values.size])
            layer.append(np.tile(names, len(at))[: values.size])
            metric.append(np.full(values.size, kind))
            value.append(values.ravel())
            index.append(np.tile(np.arange(width), len(at))[: values.size])

        for code, (key, t) in enumerate(self._models.items()):
            r = t.latest
            if r is not None and r.probes:
                for kind, name in enumerate(METRICS):
                    values = np.asarray(r.probes.get(name) or [], dtype=np.float64)
                    names = self._name_codes[key][0 if name in LAYER_METRICS else 1]
                    rows(code, np.array([r.step]), names[: values.size], kind, values)
            steps, means = t.heat.means()
            rows(code, steps, self._name_codes[key][0], len(METRICS), means)
        return pd.DataFrame(
            {
                "model": self._codes(model, list(self._models)),
                "step": np.concatenate(step or [np.empty(0, np.int64)]).astype(np.int64),
                "layer": self._codes(layer, self._layer_categories),
                "metric": self._codes(metric, [*METRICS, "grad_norm_binned"]),
                "value": np.concatenate(value or [np.empty(0)]),
                "depth_index": np.concatenate(index or [np.empty(0, np.int64)]).astype(np.int64),
            }
        )

    @staticmethod
    def _codes(parts: list[np.ndarray], categories: list[str]) -> pd.Categorical:
        """A name column from its codes: the figures filter and group by names at every redraw (on pandas'
        Arrow strings that was a fifth of a redraw), and codes spare hashing every row's name."""
        return pd.Categorical.from_codes(np.concatenate(parts or [np.empty(0, np.int64)]), categories=categories)

"""One net's loss landscape, end to end: settings, results, and the four computations.

`compute_landscapes` runs, for each net (a plain net and its residual twin, say), in this order so
both nets' charts fill in together:

1. the 1-D interpolation from the initial to the trained weights (Goodfellow et al. 2015),
2. the 2-D surface around the trained weights along two filter-normalised random directions
   (Li et al. 2018, Sec. 4 and Fig. 5),
3. the extreme Hessian eigenvalues and ``|lambda_min / lambda_max|`` (Li et al. Sec. 6),
4. the training path in the plane of its first two principal directions (Li et al. Sec. 7).

Everything runs on a fixed subset of the training split (its first `examples` examples: the split
is already a random permutation) with BatchNorm in eval mode and the trained statistics, on CUDA
when present. Results are plain arrays with `to_dict`/`from_dict` (JSON-able, for the run store).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataConfig, Dataset, load_dataset
from ..models import ConfigError, ModelConfig, build_model
from ..training import Snapshot, resolve_device
from .directions import random_plane
from .evaluate import Objective, evaluate_points, interpolate
from .hessian import extreme_eigenvalues
from .params import buffers, parameters
from .roughness import local_minima, non_quadratic
from .trajectory import MIN_POINTS, pca_plane

VERSION = 1  # bump when results change meaning: cached landscapes of older versions are then recomputed
INTERPOLATION_T = np.arange(-5, 26) / 20  # t in [-0.25, 1.25] by 0.05: 0 is the init, 1 the trained net
HVP_COST = 6.0  # a Hessian-vector product costs about this many forward passes (for progress and ETA)
PHASES = ("interpolation", "surface", "curvature", "trajectory")
TRAJECTORY_MARGIN = 0.25  # the PCA contour extends this share of the path's extent beyond it on each side


@dataclass(frozen=True)
class LandscapeConfig:
    """What to compute. Validated by `validate()`; every field but `device` is part of the cache key."""

    grid: int = 21  # points per axis of the random-direction surface (odd: its centre is the trained net)
    span: float = 1.0  # the surface covers [-span, span] along each filter-normalised direction
    examples: int = 1000  # training examples the loss is averaged over (validation: up to as many)
    trajectory_grid: int = 15  # points per axis of the contour under the training path (odd)
    hessian_iterations: int = 20  # Lanczos steps, one Hessian-vector product each
    seed: int = 0  # the random directions (and the Lanczos start vector)
    device: str = "auto"  # auto: CUDA when present

    def validate(self) -> LandscapeConfig:
        checks = [
            (
                "grid",
                isinstance(self.grid, int) and 5 <= self.grid <= 101 and self.grid % 2 == 1,
                "an odd integer from 5 to 101",
            ),
            (
                "span",
                isinstance(self.span, int | float) and 0 < self.span <= 10 and math.isfinite(self.span),
                "a number in (0, 10]",
            ),
            (
                "examples",
                isinstance(self.examples, int) and 10 <= self.examples <= 20000,
                "an integer from 10 to 20000",
            ),
            (
                "trajectory_grid",
                isinstance(self.trajectory_grid, int)
                and 5 <= self.trajectory_grid <= 51
                and self.trajectory_grid % 2 == 1,
                "an odd integer from 5 to 51",
            ),
            (
                "hessian_iterations",
                isinstance(self.hessian_iterations, int) and 2 <= self.hessian_iterations <= 200,
                "an integer from 2 to 200",
            ),
            ("seed", isinstance(self.seed, int) and 0 <= self.seed < 2**31, "an integer from 0 to 2^31-1"),
            ("device", self.device in ("auto", "cpu", "cuda"), "one of auto, cpu, cuda"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(name, f"must be {allowed}; got {getattr(self, name)!r}")
        return self

    def key(self) -> dict[str, Any]:
        """The settings that decide the results (the cache key's part of them)."""
        return {k: v for k, v in asdict(self).items() if k != "device"} | {"version": VERSION}

    def axis(self) -> np.ndarray:
        half = (self.grid - 1) // 2
        return self.span * np.arange(-half, half + 1) / half  # exactly 0 in the middle


class ChosenLike(Protocol):
    """What an analysis page hands over for one net (`resnet_viz.ui.snapshots.ChosenModel`)."""

    key: str
    label: str
    config: ModelConfig
    model: nn.Module
    step: int
    seed: int
    run_key: str | None
    snapshots: list[Snapshot]


@dataclass
class Target:
    """One net to analyse: its trained weights, where it started, and the snapshots of its path."""

    key: str  # "A", "plain", ...
    label: str  # legend label
    model: nn.Module  # the trained weights (never modified: the analysis works on a deep copy)
    step: int = 0  # optimizer steps behind these weights (0: initialisation, nothing to interpolate)
    init: nn.Module | None = None  # the same net at initialisation (interpolation start); None: no interpolation
    snapshots: list[Snapshot] = field(default_factory=list)  # weights along training, by step
    run_key: str | None = None  # store key of the run (results are cached under it); None: not cached

    @classmethod
    def of(cls, chosen: ChosenLike) -> Target:
        """From a chosen model: its initial weights rebuilt from its config and seed."""
        init = build_model(chosen.config, chosen.seed) if chosen.step > 0 else None
        return cls(chosen.key, chosen.label, chosen.model, chosen.step, init, list(chosen.snapshots), chosen.run_key)


# --------------------------------------------------------------------------------------------------
# Results


def _json_floats(values: np.ndarray) -> list:
    """Nested lists with None for non-finite values (strict JSON has no NaN or infinity)."""
    return (
        [_json_floats(v) for v in values] if values.ndim > 1 else [float(v) if np.isfinite(v) else None for v in values]
    )


def _array(values: Any) -> np.ndarray:
    return np.array(values, dtype=float)  # None -> nan


@dataclass
class Interpolation:
    """Loss along the line from the initial (t = 0) to the trained weights (t = 1)."""

    t: np.ndarray  # positions on the line
    train_loss: np.ndarray  # on the training subset
    val_loss: np.ndarray  # on the validation split


@dataclass
class Surface:
    """Loss on a grid around the trained weights: loss[i, j] at alphas[j] * d1 + betas[i] * d2."""

    alphas: np.ndarray  # coefficients along the first direction
    betas: np.ndarray  # coefficients along the second direction
    loss: np.ndarray  # (len(betas), len(alphas)); NaN where not (yet) evaluated
    trained_loss: float  # the trained net's loss on the subset, computed by its own forward pass

    @property
    def local_minima(self) -> int:
        return local_minima(self.loss)

    @property
    def non_quadratic(self) -> float:
        return non_quadratic(self.alphas, self.betas, self.loss)


@dataclass
class Curvature:
    """Extreme Hessian eigenvalues at the trained weights."""

    lambda_max: float
    lambda_min: float
    products: int  # Hessian-vector products used

    @property
    def ratio(self) -> float:
        """Li et al.'s |lambda_min / lambda_max|: 0 at a convex minimum, large where it is far from convex."""
        return abs(self.lambda_min / self.lambda_max) if self.lambda_max else float("nan")


@dataclass
class Trajectory:
    """The training path in its PCA plane, over the loss in that plane."""

    steps: list[int]  # the step of each point of the path (the last: the trained weights)
    coords: np.ndarray  # (points, 2) coordinates along the two principal directions
    explained: tuple[float, float]  # share of the path's variance along each
    surface: Surface  # the loss in the plane (coefficients along the unit principal directions)


@dataclass
class NetLandscape:
    """Everything computed for one net. A part is None when it was not (or cannot be) computed: `notes` say why."""

    key: str
    label: str
    step: int
    surface: Surface
    interpolation: Interpolation | None = None
    curvature: Curvature | None = None
    trajectory: Trajectory | None = None
    notes: dict[str, str] = field(default_factory=dict)  # phase -> why it is missing
    seconds: float = 0.0  # computing time

    def summary(self) -> dict[str, Any]:
        """The headline numbers (CLI --json, tables)."""
        s, c, tr = self.surface, self.curvature, self.trajectory
        finite = s.loss[np.isfinite(s.loss)]
        return {
            "label": self.label,
            "step": self.step,
            "trained_loss": s.trained_loss,
            "centre_loss": _nan_none(s.loss[len(s.betas) // 2, len(s.alphas) // 2]),
            "surface_min": _nan_none(finite.min() if finite.size else np.nan),
            "surface_max": _nan_none(finite.max() if finite.size else np.nan),
            "local_minima": s.local_minima,
            "non_quadratic": _nan_none(s.non_quadratic),
            "lambda_max": c.lambda_max if c else None,
            "lambda_min": c.lambda_min if c else None,
            "ratio": _nan_none(c.ratio) if c else None,
            "trajectory_explained": list(tr.explained) if tr else None,
            "notes": self.notes,
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        def surface(s: Surface) -> dict[str, Any]:
            return {
                "alphas": _json_floats(s.alphas),
                "betas": _json_floats(s.betas),
                "loss": _json_floats(s.loss),
                "trained_loss": _nan_none(s.trained_loss),
            }

        i, c, tr = self.interpolation, self.curvature, self.trajectory
        return {
            "key": self.key,
            "label": self.label,
            "step": self.step,
            "surface": surface(self.surface),
            "interpolation": None
            if i is None
            else {
                "t": _json_floats(i.t),
                "train_loss": _json_floats(i.train_loss),
                "val_loss": _json_floats(i.val_loss),
            },
            "curvature": None
            if c is None
            else {"lambda_max": c.lambda_max, "lambda_min": c.lambda_min, "products": c.products},
            "trajectory": None
            if tr is None
            else {
                "steps": tr.steps,
                "coords": _json_floats(tr.coords),
                "explained": list(tr.explained),
                "surface": surface(tr.surface),
            },
            "notes": self.notes,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetLandscape:
        """Inverse of `to_dict`; raises KeyError, TypeError or ValueError on anything malformed."""

        def surface(s: dict[str, Any]) -> Surface:
            loss = _array(s["loss"])
            alphas, betas = _array(s["alphas"]), _array(s["betas"])
            if loss.shape != (len(betas), len(alphas)):
                raise ValueError(f"surface of {loss.shape} for {len(betas)} x {len(alphas)} coefficients")
            return Surface(alphas, betas, loss, float(_array(s["trained_loss"])))

        i, c, tr = d["interpolation"], d["curvature"], d["trajectory"]
        return cls(
            key=str(d["key"]),
            label=str(d["label"]),
            step=int(d["step"]),
            surface=surface(d["surface"]),
            interpolation=None
            if i is None
            else Interpolation(_array(i["t"]), _array(i["train_loss"]), _array(i["val_loss"])),
            curvature=None
            if c is None
            else Curvature(float(c["lambda_max"]), float(c["lambda_min"]), int(c["products"])),
            trajectory=None
            if tr is None
            else Trajectory(
                [int(s) for s in tr["steps"]],
                _array(tr["coords"]),
                tuple(float(e) for e in tr["explained"]),
                surface(tr["surface"]),
            ),
            notes={str(k): str(v) for k, v in d["notes"].items()},
            seconds=float(d["seconds"]),
        )


def _nan_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# --------------------------------------------------------------------------------------------------
# Progress


class Progress:
    """Work done and to do, in example-evaluations (one forward pass of one example), for a progress bar.

    Its lock also guards the result arrays a worker fills while a UI thread copies them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0.0
        self.done = 0.0
        self.phase = ""  # what runs now, e.g. "B · residual 20: surface 120/441"
        self.started = time.perf_counter()

    def add(self, units: float, phase: str | None = None) -> None:
        with self.lock:
            self.done = min(self.total, self.done + units)
            if phase is not None:
                self.phase = phase

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta_seconds(self) -> float:
        elapsed = time.perf_counter() - self.started
        return elapsed * (self.total - self.done) / self.done if self.done else float("nan")


# --------------------------------------------------------------------------------------------------
# The computations


class NetAnalysis:
    """The four computations for one net, on a deep copy of it, each filling `result` as it goes."""

    def __init__(
        self, target: Target, dataset: Dataset, config: LandscapeConfig, device: torch.device, progress: Progress
    ) -> None:
        self.target, self.config, self.progress = target, config, progress
        model = copy.deepcopy(target.model).to(device).eval()
        n = min(config.examples, len(dataset.y_train))
        self.train = Objective(model, dataset.x_train[:n], dataset.y_train[:n])
        n_val = min(config.examples, len(dataset.y_val))
        self.val = Objective(model, dataset.x_val[:n_val], dataset.y_val[:n_val])
        self.params = self.train.params
        with torch.no_grad():
            trained = float(F.cross_entropy(model(self.train.x), self.train.y))
        axis = config.axis()
        grid = np.full((len(axis), len(axis)), np.nan)
        self.result = NetLandscape(target.key, target.label, target.step, Surface(axis, axis.copy(), grid, trained))
        self.path = [s for s in sorted(target.snapshots, key=lambda s: s.step) if s.step < target.step]
        self.elapsed = 0.0

    def cost(self) -> float:
        """Estimated example-evaluations of all four computations."""
        c = self.config
        units = c.grid**2 * self.train.n + c.hessian_iterations * HVP_COST * self.train.n
        if self.target.init is not None:
            units += len(INTERPOLATION_T) * (self.train.n + self.val.n)
        if len(self.path) + 1 >= MIN_POINTS:
            units += c.trajectory_grid**2 * self.train.n
        return units

    def run(self, phase: str, stop: threading.Event | None) -> None:
        started = time.perf_counter()
        getattr(self, phase)(stop)
        self.elapsed += time.perf_counter() - started
        self.result.seconds = self.elapsed

    def _say(self, text: str, units: float = 0.0) -> None:
        self.progress.add(units, f"{self.target.label}: {text}")

    def interpolation(self, stop: threading.Event | None) -> None:
        init = self.target.init
        if init is None:
            self.result.notes["interpolation"] = "The net is at its initialisation: there is no path to interpolate."
            return
        self._say("interpolation from the initial weights")
        start = (parameters(init), buffers(init))
        end = (self.params, buffers(self.train.model))
        train = interpolate(self.train, start, end, INTERPOLATION_T, stop)
        self._say("interpolation (training loss)", len(INTERPOLATION_T) * self.train.n)
        val = interpolate(self.val, start, end, INTERPOLATION_T, stop)
        self._say("interpolation (validation loss)", len(INTERPOLATION_T) * self.val.n)
        with self.progress.lock:
            self.result.interpolation = Interpolation(INTERPOLATION_T.copy(), train, val)

    def surface(self, stop: threading.Event | None) -> None:
        directions = random_plane(self.params, self.config.seed)
        self._plane(self.result.surface, directions, "surface", stop)

    def _plane(self, surface: Surface, directions: tuple, name: str, stop: threading.Event | None) -> None:
        a, b = np.meshgrid(surface.alphas, surface.betas)
        points = np.stack([a.ravel(), b.ravel()], axis=1)
        flat = surface.loss.reshape(-1)  # a view: the chart sees rows fill in

        def on_chunk(start: int, values: np.ndarray) -> None:
            with self.progress.lock:
                flat[start : start + len(values)] = values
            self._say(f"{name} {start + len(values)}/{len(points)} points", len(values) * self.train.n)

        self._say(f"{name} 0/{len(points)} points")
        evaluate_points(self.train, self.params, list(directions), points, on_chunk, stop)

    def curvature(self, stop: threading.Event | None) -> None:
        iterations = self.config.hessian_iterations

        def on_step(j: int) -> None:
            self._say(f"Hessian-vector product {j}/{iterations}", HVP_COST * self.train.n)

        self._say(f"Hessian-vector product 0/{iterations}")
        eigen = extreme_eigenvalues(self.train, self.params, iterations, self.config.seed, on_step, stop)
        if stop is not None and stop.is_set():
            return
        with self.progress.lock:
            self.result.curvature = Curvature(eigen.lambda_max, eigen.lambda_min, eigen.products)

    def trajectory(self, stop: threading.Event | None) -> None:
        if len(self.path) + 1 < MIN_POINTS:
            if self.target.step == 0:
                why = "a net at its initialisation has no training path"
            elif not self.target.snapshots:
                why = (
                    "no weight snapshots come with these weights (a run stored before runs kept their snapshots, "
                    "or imported from an export made before exports carried them, has its final weights only)"
                )
            else:
                why = f"it needs at least {MIN_POINTS} weight snapshots up to this step; there are {len(self.path) + 1}"
            self.result.notes["trajectory"] = f"No training path: {why}."
            return
        names = set(self.params)
        path = [{n: t for n, t in s.state.items() if n in names} for s in self.path]
        try:
            plane = pca_plane(self.params, path)
        except ValueError as err:
            self.result.notes["trajectory"] = str(err).capitalize() + "."
            return
        (a0, a1), (b0, b1) = (_extent(plane.coords[:, k]) for k in (0, 1))
        if a1 - a0 < 0.05 * (b1 - b0) or b1 - b0 < 0.05 * (a1 - a0):  # one direction barely moved: keep it visible
            width = max(a1 - a0, b1 - b0)
            (a0, a1), (b0, b1) = _widen(a0, a1, width), _widen(b0, b1, width)
        n = self.config.trajectory_grid
        surface = Surface(
            np.linspace(a0, a1, n), np.linspace(b0, b1, n), np.full((n, n), np.nan), self.result.surface.trained_loss
        )
        steps = [s.step for s in self.path] + [self.target.step]
        with self.progress.lock:
            self.result.trajectory = Trajectory(steps, plane.coords, plane.explained, surface)
        self._plane(surface, plane.directions, "training-path plane", stop)


def _extent(values: np.ndarray) -> tuple[float, float]:
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    pad = TRAJECTORY_MARGIN * (high - low)
    return low - pad, high + pad


def _widen(low: float, high: float, width: float) -> tuple[float, float]:
    middle, half = (low + high) / 2, max(high - low, 0.05 * width) / 2
    return middle - half, middle + half


def compute_landscapes(
    targets: list[Target],
    data: DataConfig,
    config: LandscapeConfig,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    results: dict[str, NetLandscape] | None = None,
) -> dict[str, NetLandscape]:
    """Landscapes of every target, phase by phase across the nets; `results` (if given) fills as it goes.

    Stops between units of work when `stop` is set: what was computed stays, the rest is NaN or None.
    """
    config.validate()
    progress = progress or Progress()
    results = {} if results is None else results
    dataset = load_dataset(data.validate())
    device = resolve_device(config.device)
    analyses = []
    for target in targets:
        analysis = NetAnalysis(target, dataset, config, device, progress)
        with progress.lock:
            results[target.key] = analysis.result
            progress.total += analysis.cost()
        analyses.append(analysis)
    for phase in PHASES:
        for analysis in analyses:
            if stop is not None and stop.is_set():
                return results
            analysis.run(phase, stop)
    return results

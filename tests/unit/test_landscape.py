"""Loss landscapes: directions, grid evaluation, interpolation, Hessian, trajectory, cache; reference checks."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_viz import cli
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.landscape import LandscapeConfig, LandscapeTask, NetLandscape, Target, compute_landscapes
from resnet_viz.landscape.directions import filter_norms, random_plane
from resnet_viz.landscape.evaluate import Objective, evaluate_points
from resnet_viz.landscape.hessian import extreme_eigenvalues
from resnet_viz.landscape.params import parameters
from resnet_viz.landscape.roughness import local_minima, non_quadratic
from resnet_viz.landscape.trajectory import pca_plane
from resnet_viz.models import ConfigError, ModelConfig, build_model
from resnet_viz.store import RunStore, StoreError
from resnet_viz.tasks import InlineExecutor
from resnet_viz.training import TrainConfig, model_at, train_models

TINY = LandscapeConfig(grid=5, examples=100, trajectory_grid=5, hessian_iterations=4)


@pytest.fixture(scope="module")
def trained_pair():
    """A depth-8 plain/residual pair on digits after 2 epochs, with its weight snapshots."""
    models = {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}
    trainer, history = train_models(models, TrainConfig(epochs=2, warmup_steps=2, probe_every=0), DataConfig())
    return trainer, history


def _targets(trainer, run_key: str | None = None) -> list[Target]:
    out = []
    for key, cfg in trainer.configs.items():
        snaps = trainer.snapshots[key]
        model = model_at(trainer, key, snaps[-1])
        out.append(Target(key, key, model, snaps[-1].step, build_model(cfg, trainer.train.seed), snaps, run_key))
    return out


def _eval_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), y))


# --------------------------------------------------------------------------------------------------
# Directions (Li et al. 2018, Sec. 4)


def test_filter_normalised_directions_have_the_weights_filter_norms():
    net = build_model(ModelConfig(depth=8, width=8), seed=3)
    params = parameters(net)
    d1, d2 = random_plane(params, seed=0)
    weights = [n for n, p in params.items() if p.dim() > 1]
    assert "stem.conv.weight" in weights and "head.weight" in weights
    for name, w in params.items():
        for d in (d1, d2):
            if w.dim() > 1:  # every filter (output channel / row) as long as the weights' filter (Li et al. Sec. 4)
                torch.testing.assert_close(filter_norms(d[name]), filter_norms(w), rtol=1e-5, atol=1e-7)
            else:  # biases and BatchNorm parameters are not moved
                assert not d[name].any(), name
    assert not torch.equal(d1["stem.conv.weight"], d2["stem.conv.weight"])
    twin = parameters(build_model(ModelConfig(depth=8, width=8, skip=False), seed=3))
    assert torch.equal(random_plane(twin, seed=0)[0]["head.weight"], d1["head.weight"])  # one plane for the pair


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="grid: must be an odd integer"):
        LandscapeConfig(grid=20).validate()
    with pytest.raises(ConfigError, match="span"):
        LandscapeConfig(span=0.0).validate()
    assert LandscapeConfig(grid=5, span=2.0).axis().tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]


# --------------------------------------------------------------------------------------------------
# A quadratic toy model: known Hessian, closed-form landscape


class Quadratic(nn.Module):
    """Loss 0.5 (w - w*)^T A (w - w*) of a 2 x 3 weight, the same for every example."""

    def __init__(self, eigenvalues: list[float]) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
        self.register_buffer("a", q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T)
        self.register_buffer("optimum", torch.randn(6, generator=g, dtype=torch.float64))
        self.weight = nn.Parameter(torch.randn(2, 3, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.weight.reshape(-1).double() - self.optimum
        return (0.5 * e @ self.a @ e).float().expand(len(x))


def _mean(outputs: torch.Tensor, _targets: torch.Tensor) -> torch.Tensor:
    return outputs.mean()


EIGENVALUES = [-2.0, -0.5, 0.25, 1.0, 3.0, 5.0]


def test_quadratic_hessian_eigenvalues_match_the_known_ones():
    toy = Quadratic(EIGENVALUES)
    objective = Objective(toy, torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), criterion=_mean)
    eigen = extreme_eigenvalues(objective, objective.params, iterations=20)
    assert eigen.lambda_max == pytest.approx(5.0, rel=1e-4)
    assert eigen.lambda_min == pytest.approx(-2.0, rel=1e-4)
    assert eigen.ratio == pytest.approx(0.4, rel=1e-4)
    assert eigen.products <= 7  # the Krylov space of a 6-dimensional problem is exhausted after 6 steps


def test_quadratic_landscape_matches_the_closed_form_with_and_without_vmap():
    toy = Quadratic(EIGENVALUES)
    x, y = torch.zeros(3, 1), torch.zeros(3, dtype=torch.long)
    origin = parameters(toy)
    d1, d2 = random_plane(origin, seed=1)
    axis = np.linspace(-1, 1, 5)
    a, b = np.meshgrid(axis, axis)
    points = np.stack([a.ravel(), b.ravel()], axis=1)
    e0 = origin["weight"].reshape(-1).double() - toy.optimum
    v1, v2 = d1["weight"].reshape(-1).double(), d2["weight"].reshape(-1).double()
    expected = [float(0.5 * (e0 + p * v1 + q * v2) @ toy.a @ (e0 + p * v1 + q * v2)) for p, q in points]
    for chunk in (1, 4):  # 4: stacked weights through torch.func.vmap, the CUDA path
        objective = Objective(toy, x, y, criterion=_mean, chunk=chunk)
        got = evaluate_points(objective, origin, [d1, d2], points)
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_vmap_chunks_match_one_point_at_a_time_on_a_real_net():
    ds = load_dataset(DataConfig())
    net = build_model(ModelConfig(depth=8, width=8), seed=0).eval()
    params = parameters(net)
    directions = list(random_plane(params, seed=0))
    points = np.array([[0.0, 0.0], [0.5, -0.25], [-1.0, 1.0]])
    one = evaluate_points(Objective(net, ds.x_train[:64], ds.y_train[:64]), params, directions, points)
    batched = evaluate_points(Objective(net, ds.x_train[:64], ds.y_train[:64], chunk=3), params, directions, points)
    np.testing.assert_allclose(batched, one, rtol=1e-4)
    assert one[0] == pytest.approx(_eval_loss(net, ds.x_train[:64], ds.y_train[:64]), rel=1e-5)


def test_evaluation_stops_when_asked():
    toy = Quadratic(EIGENVALUES)
    objective = Objective(toy, torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), criterion=_mean)
    stop = threading.Event()
    seen = []

    def on_chunk(start: int, values: np.ndarray) -> None:
        seen.append(start)
        stop.set()

    out = evaluate_points(
        objective, objective.params, list(random_plane(objective.params, 0)), np.zeros((5, 2)), on_chunk, stop
    )
    assert seen == [0] and np.isfinite(out[0]) and np.isnan(out[1:]).all()


# --------------------------------------------------------------------------------------------------
# The whole analysis on a trained pair


def test_centre_interpolation_endpoints_and_trajectory(trained_pair):
    trainer, _ = trained_pair
    ds = load_dataset(DataConfig())
    results = compute_landscapes(_targets(trainer), DataConfig(), TINY)
    assert list(results) == ["plain", "residual"]
    x, y, xv, yv = ds.x_train[:100], ds.y_train[:100], ds.x_val[:100], ds.y_val[:100]
    for target in _targets(trainer):
        r = results[target.key]
        trained = _eval_loss(target.model, x, y)
        assert r.surface.loss[2, 2] == pytest.approx(trained, rel=1e-5)  # the grid's centre is the trained net
        assert r.surface.trained_loss == pytest.approx(trained, rel=1e-5)
        assert np.isfinite(r.surface.loss).all() and r.surface.loss.shape == (5, 5)
        line = r.interpolation  # Goodfellow et al. 2015: t = 0 the initial net, t = 1 the trained one
        i0, i1 = list(line.t).index(0.0), list(line.t).index(1.0)
        assert line.train_loss[i0] == pytest.approx(_eval_loss(target.init, x, y), rel=1e-5)
        assert line.train_loss[i1] == pytest.approx(trained, rel=1e-5)
        assert line.val_loss[i0] == pytest.approx(_eval_loss(target.init, xv, yv), rel=1e-5)
        assert line.val_loss[i1] == pytest.approx(_eval_loss(target.model, xv, yv), rel=1e-5)
        assert r.curvature.lambda_max > 0 and r.curvature.products == 4
        tr = r.trajectory  # Li et al. Sec. 7: the path's first two principal directions
        assert tr.steps == [s.step for s in trainer.snapshots[target.key]]
        assert tr.coords.shape == (len(tr.steps), 2) and tr.coords[-1].tolist() == [0.0, 0.0]
        assert 0.5 < sum(tr.explained) <= 1.0 + 1e-6 and tr.explained[0] >= tr.explained[1]
        assert np.isfinite(tr.surface.loss).all()
        back = NetLandscape.from_dict(json.loads(json.dumps(r.to_dict(), allow_nan=False)))
        np.testing.assert_array_equal(back.surface.loss, r.surface.loss.astype(np.float32).astype(float))
        assert back.summary()["ratio"] == pytest.approx(r.summary()["ratio"])


def test_fresh_net_has_no_path_and_says_why():
    net = build_model(ModelConfig(depth=8, width=8), seed=0).eval()
    results = compute_landscapes([Target("A", "A · residual 8", net)], DataConfig(), TINY)
    r = results["A"]
    assert r.interpolation is None and r.trajectory is None
    assert "initialisation" in r.notes["interpolation"] and "initialisation" in r.notes["trajectory"]


def test_pca_plane_recovers_a_planar_path():
    final = {"w": torch.zeros(4, 3), "b": torch.zeros(4)}
    e1, e2 = torch.zeros(12), torch.zeros(12)
    e1[0], e2[5] = 1.0, 1.0
    xs, ys = [4.0, 3.0, 2.0, 1.0], [1.0, -1.0, -1.0, 1.0]  # uncorrelated around their mean: PCs are e1, e2
    path = [{"w": (x * e1 + y * e2).reshape(4, 3), "b": torch.ones(4)} for x, y in zip(xs, ys, strict=True)]
    plane = pca_plane(final, path)
    points = np.array([[x, y] for x, y in zip(xs, ys, strict=True)] + [[0.0, 0.0]])
    variance = np.linalg.svd(points - points.mean(0), compute_uv=False) ** 2
    np.testing.assert_allclose(plane.explained, variance / variance.sum(), rtol=1e-5)
    np.testing.assert_allclose(np.abs(plane.coords), np.abs(points), atol=1e-5)
    assert not plane.directions[0]["b"].any()  # biases stay out of the plane, as on the random surface
    with pytest.raises(ValueError, match="at least 3"):
        pca_plane(final, path[:1])


def test_roughness_of_a_bowl_and_of_a_rippled_bowl():
    axis = np.linspace(-1, 1, 21)
    a, b = np.meshgrid(axis, axis)
    bowl = 1 + a**2 + 2 * b**2
    assert local_minima(bowl) == 1 and non_quadratic(axis, axis, bowl) == pytest.approx(0.0, abs=1e-9)
    rippled = bowl + 0.5 * np.cos(12 * a) * np.cos(12 * b)
    assert local_minima(rippled) > 4 and non_quadratic(axis, axis, rippled) > 0.3


# --------------------------------------------------------------------------------------------------
# The analysis cache in the run store


def test_store_keeps_analyses_by_run_kind_and_params(tmp_path, trained_pair):
    trainer, history = trained_pair
    store = RunStore(tmp_path)
    key = store.save(trainer, history)
    store.put_analysis(key, "landscape", {"grid": 5, "model": "A"}, {"loss": [1.5, None]})
    assert store.get_analysis(key, "landscape", {"model": "A", "grid": 5}) == {"loss": [1.5, None]}  # canonical
    assert store.get_analysis(key, "landscape", {"model": "A", "grid": 7}) is None
    assert store.get_analysis(key, "other", {"model": "A", "grid": 5}) is None
    with pytest.raises(StoreError, match="strict JSON"):
        store.put_analysis(key, "landscape", {}, {"loss": float("nan")})
    with pytest.raises(StoreError, match="kind must match"):
        store.put_analysis(key, "Bad Kind!", {}, {})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE analyses SET result = ? WHERE kind = 'landscape'", (b"not zlib",))
    with pytest.raises(StoreError, match="damaged") as err:
        store.get_analysis(key, "landscape", {"model": "A", "grid": 5})
    assert err.value.kind == "damaged_run"
    bomb = zlib.compress(b"[" * (17 * 2**20))  # 17 MiB of JSON from 17 kB: refused before it is parsed
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE analyses SET result = ? WHERE kind = 'landscape'", (bomb,))
    with pytest.raises(StoreError, match="size limit"):
        store.get_analysis(key, "landscape", {"model": "A", "grid": 5})
    assert store.delete(key)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM analyses").fetchone() == (0,)  # gone with their run


def test_store_from_before_analyses_gets_the_table(tmp_path):
    store = RunStore(tmp_path)
    store.list_runs()  # creates the store
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TABLE analyses")
    old = RunStore(tmp_path)
    assert old.get_analysis("k", "landscape", {}) is None
    old.put_analysis("k", "landscape", {}, {"x": 1})
    assert old.get_analysis("k", "landscape", {}) == {"x": 1}


def test_a_stored_run_has_the_training_path_of_the_run_it_replays(tmp_path, trained_pair):
    """The store keeps a run's snapshots: replayed, it draws the path the live run drew (before, a stored run's
    path was "No training path: ... final weights only", and a class sees stored runs)."""
    trainer, history = trained_pair
    store = RunStore(tmp_path)
    run = store.get(store.save(trainer, history))
    replayed = [
        Target(k, k, run.model(k), run.states[k].step, build_model(c, run.train.seed), run.snapshots(k))
        for k, c in run.configs.items()
    ]
    live, stored = (compute_landscapes(t, DataConfig(), TINY) for t in (_targets(trainer), replayed))
    for key, result in live.items():
        a, b = result.trajectory, stored[key].trajectory
        assert b is not None and b.steps == a.steps == [s.step for s in trainer.snapshots[key]]
        np.testing.assert_allclose(b.coords, a.coords, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.surface.loss, a.surface.loss, rtol=1e-5)


def test_task_caches_stored_runs_and_a_second_request_is_instant(tmp_path, trained_pair):
    trainer, _ = trained_pair
    store = RunStore(tmp_path)
    first = LandscapeTask(_targets(trainer, run_key="run-1"), DataConfig(), TINY, store=store, threads=1)
    InlineExecutor().submit(first)
    view = first.view()
    assert view.status == "finished" and view.cached == set() and view.fraction == 1.0
    second = LandscapeTask(_targets(trainer, run_key="run-1"), DataConfig(), TINY, store=store, threads=1)
    InlineExecutor().submit(second)
    again = second.view()
    assert again.cached == {"plain", "residual"} and second.progress.total == 0  # nothing computed
    for key, r in view.results.items():
        np.testing.assert_allclose(again.results[key].surface.loss, r.surface.loss, rtol=1e-6)
        assert again.results[key].curvature.ratio == pytest.approx(r.curvature.ratio, rel=1e-6)
    other = LandscapeTask(_targets(trainer), DataConfig(), TINY, store=store, threads=1)  # no run key: not cached
    InlineExecutor().submit(other)
    assert other.view().cached == set() and other.progress.total > 0


def test_cli_landscape_json():
    code = cli.main(
        [
            "landscape",
            "--depth",
            "8",
            "--width",
            "4",
            "--epochs",
            "1",
            "--grid",
            "5",
            "--examples",
            "50",
            "--hessian-iterations",
            "3",
            "--trajectory-grid",
            "5",
            "--json",
        ]
    )
    assert code == 0


def test_cli_landscape_refuses_an_even_grid(capsys):
    assert cli.main(["landscape", "--grid", "4", "--json"]) == 2
    assert "grid: must be an odd integer from 5 to 101; got 4" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Reference check: Li et al. 2018, Fig. 5 and Sec. 6 (ResNet-56 with and without shortcuts on CIFAR-10)


def test_trained_plain_net_is_rougher_and_less_convex_than_its_residual_twin():
    """Li et al. 2018, Fig. 5: without shortcuts the deep net's surface is chaotic, with them smooth; Sec. 6: the
    plain net's minimum is far sharper. Here at depth 32 (the deepest pair that trains in a few seconds on digits;
    measured: the plain net degrades to a training loss of ~1.4, the residual one reaches ~0.1), one fixed seed.

    Li et al.'s Fig. 7 maps |lambda_min / lambda_max| over the plane: the plain net's map has large non-convex
    regions, but both maps are near-convex at the centre, the trained point, which is where this ratio is
    measured. There both ratios are small and their order is not stable: 0.032 (plain) against 0.045
    (residual) on an AVX-512 Xeon, converged (16, 32 and 64 Lanczos steps agree), while another machine's
    kernels gave the plain net the larger one. So only "near-convex at the minimum" is asserted of it."""
    models = {"plain": ModelConfig(depth=32, width=8, skip=False), "residual": ModelConfig(depth=32, width=8)}
    trainer, _ = train_models(
        models, TrainConfig(epochs=5, warmup_steps=5, probe_every=0, max_snapshots=2), DataConfig()
    )
    targets = [Target(k, k, trainer.models[k].eval(), trainer.states[k].step) for k in models]
    config = LandscapeConfig(grid=9, examples=256, hessian_iterations=16)
    results = compute_landscapes(targets, DataConfig(), config)
    plain, residual = results["plain"], results["residual"]
    assert plain.surface.trained_loss > 5 * residual.surface.trained_loss  # the degradation (He et al. Fig. 1)
    assert plain.surface.local_minima > residual.surface.local_minima == 1
    assert plain.curvature.ratio < 0.2 and residual.curvature.ratio < 0.2  # the centre of Fig. 7's maps
    assert plain.curvature.lambda_max > 3 * residual.curvature.lambda_max  # and far sharper
    assert not math.isnan(plain.surface.non_quadratic)

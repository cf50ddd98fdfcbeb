"""Reference checks of the families beyond CNNs against their papers, through our probes and presets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.figures.families import sublayer_grads
from resnet_viz.gcn import smoothing_profile
from resnet_viz.lab import PRESETS
from resnet_viz.models import ModelConfig
from resnet_viz.training import TrainConfig, Trainer, summarize, train_models


def _layer_grads(order: str, seed: int) -> np.ndarray:
    """Gradient norm of each encoder layer's weights (attention and MLP together) at initialisation,
    measured by the probes on the first step of a 12-layer Transformer."""
    data = DataConfig(name="sort", n_samples=400)
    cfg = ModelConfig(family="transformer", depth=26, width=64, heads=4, norm="layer", order=order, init="xavier")
    trainer = Trainer({"m": cfg}, TrainConfig(epochs=1, batch_size=256, optimizer="adam", seed=seed), data)
    history = trainer.history()
    history.add(next(trainer.run()))
    table = sublayer_grads(history.layers_frame())
    squared = table.assign(sq=table.value**2).groupby("layer").sq.sum()
    return np.sqrt(squared.sort_index().to_numpy())


def test_post_ln_gradients_grow_towards_the_output_pre_ln_do_not() -> None:
    """Xiong et al. 2020, Fig. 3 and Thm. 1: at initialisation the post-LN Transformer's gradient grows with the
    layer index, so its last layers get the largest; pre-LN's does not grow, and its last layer's gradient is
    smaller than post-LN's by about sqrt(L) (Thm. 1: O(d sqrt(ln d)) against O(d sqrt(ln d / L)))."""
    post = np.mean([_layer_grads("post", seed) for seed in range(2)], axis=0)
    pre = np.mean([_layer_grads("pre", seed) for seed in range(2)], axis=0)
    assert len(post) == len(pre) == 12
    assert post[-1] / post[0] > 1.6  # measured 3.3
    assert pre[-1] / pre[0] < 1.0  # measured 0.7
    assert np.corrcoef(np.arange(12), post)[0, 1] > 0.8  # grows layer after layer, not one jump (measured 0.97)
    assert post[-1] > 2 * pre[-1]  # measured 3.0, sqrt(12) = 3.5


def _train(key: str, only: str | None = None, **changes: object) -> dict[str, dict[str, object]]:
    """Train preset `key` (or only its model `only`) with `changes` to its recipe; each model's summary and net."""
    cfg = PRESETS[key].config.normalized()
    train = replace(cfg.train, **changes)
    models = {only: cfg.models()[only]} if only else cfg.models()
    trainer, history = train_models(models, train, cfg.data)
    return {k: summarize(trainer, history, k) | {"model": trainer.models[k]} for k in trainer.models}


def test_post_ln_without_warmup_fails_where_pre_ln_learns() -> None:
    """Xiong et al. 2020, Sec. 3.2 and Fig. 2: with Adam at a large learning rate and no warm-up, post-LN trains
    badly while pre-LN is fine; warm-up rescues post-LN. The "Post-LN needs warm-up" preset, fixed seed."""
    post, pre = _train("postln").values()
    assert pre["final_train_loss"] < 0.2 and pre["final_val_acc"] > 0.95  # measured 0.013, 0.99
    assert post["final_train_loss"] > 1.5  # measured 2.30: chance is ln 10 = 2.30
    (warmed,) = _train("postln", only="A", warmup_steps=100).values()
    assert warmed["final_train_loss"] < 0.2  # measured 0.013


def test_transformer_without_residuals_stops_training() -> None:
    """The "Transformer without residuals" preset: six pre-LN layers learn to sort with shortcuts, barely
    without (the plain stack's gradients reach its early layers through every sub-layer)."""
    plain, residual = _train("transformer").values()
    assert residual["final_train_loss"] < 0.3 and residual["final_val_acc"] > 0.95  # measured 0.09, 0.99
    assert plain["final_train_loss"] > 1.2  # measured 1.8


def test_deep_gcn_oversmooths_without_residuals() -> None:
    """Li et al. 2019 (DeepGCNs), Fig. 1 and Sec. 4: a deep plain GCN does not train (its node features collapse,
    Li, Han & Wu 2018) while the residual one does; the normalised Dirichlet energy (Cai & Wang 2020) of the
    plain net falls towards 0 with depth and stays up through the trained residual net."""
    plain, residual = _train("oversmooth").values()
    assert residual["final_val_acc"] > plain["final_val_acc"] + 0.25  # measured 0.69 against 0.26 (chance 0.25)
    data = PRESETS["oversmooth"].config.data
    graphs = load_dataset(data).x_val[:64]
    flat, kept = smoothing_profile(plain["model"], graphs), smoothing_profile(residual["model"], graphs)
    assert flat[-1] < flat[0] / 10  # measured 0.42 -> 0.02
    assert min(kept[1:]) > 3 * max(flat[len(flat) // 2 :])  # measured 0.13 against 0.03

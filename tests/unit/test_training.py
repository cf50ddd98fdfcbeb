"""Training engine: probes vs autograd, determinism, reference checks, divergence, stop, skip changes."""

import threading
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.lab import PRESETS
from resnet_viz.models import ConfigError, ModelConfig, block_names, build_model, layer_names
from resnet_viz.probes import Probe
from resnet_viz.training import TrainConfig, Trainer, lr_at, model_at, summarize, train_models


def _first_step(models, train, data=None):
    stop = threading.Event()
    trainer = Trainer(models, train, data or DataConfig(), stop)
    records = next(trainer.run())
    return trainer, records


def test_probes_agree_with_independent_autograd(tiny_train):
    cfg = ModelConfig(depth=14, width=8)
    trainer, records = _first_step({"m": cfg}, tiny_train)
    probes = records[0].probes
    # Independently: the same init, the same first batch, gradients by autograd on a fresh copy.
    ds = load_dataset(DataConfig())
    idx = torch.randperm(len(ds.y_train), generator=torch.Generator().manual_seed(tiny_train.seed))[:128]
    model = build_model(trainer.configs["m"], seed=tiny_train.seed).train()
    outputs, responses = [], []
    for name in block_names(model):
        block = model.get_submodule(name)
        block.register_forward_hook(lambda m, i, o: outputs.append(o))
        block.response().register_forward_hook(lambda m, i, o: responses.append(o.detach().std().item()))
    loss = F.cross_entropy(model(ds.x_train[idx]), ds.y_train[idx])
    weights = [model.get_submodule(n).weight for n in layer_names(model)]
    grads = torch.autograd.grad(loss, weights + outputs)
    expected = [g.norm().item() for g in grads[: len(weights)]]
    expected_blocks = [g.norm().item() for g in grads[len(weights) :]]
    assert records[0].loss == pytest.approx(loss.item(), rel=1e-6)
    assert probes["grad_norm"] == pytest.approx(expected, rel=1e-4)
    assert probes["block_grad_norm"] == pytest.approx(expected_blocks, rel=1e-4)
    assert probes["act_std"] == pytest.approx(responses, rel=1e-5)
    # update ratio: SGD's first step with momentum is lr * (grad + wd * w).
    w0 = weights[1].detach()
    update = tiny_train.lr * (grads[1] + tiny_train.weight_decay * w0)
    assert probes["update_ratio"][1] == pytest.approx((update.norm() / w0.norm()).item(), rel=1e-3)


def test_block_gradient_read_from_the_node_or_from_the_tensor_is_the_gradient_of_that_output():
    """A block's output that is its node's first output is read by a pre-hook on the node; one that is not (a
    second output: its node's first incoming gradient is another tensor's) by a hook on the tensor."""
    probe = Probe(build_model(ModelConfig(depth=8, width=8), seed=0))
    x = torch.randn(6, 3, requires_grad=True)
    first, second, _ = torch.unbind(x * 1.0, dim=1)  # one node, three outputs
    assert (first.output_nr, second.output_nr) == (0, 1)
    probe.arm()
    for out in (first, second):
        probe.output(out)
    (2 * first + 3 * second).sum().backward()  # dL/d(first) = 2, dL/d(second) = 3 in each of 6 entries
    assert sorted(g.item() for g in probe._block_grads) == pytest.approx([4 * 6, 9 * 6])


def _probed_and_measured_stds(
    cfg: ModelConfig, dead_channel: bool = False, eval_norm: bool = False
) -> tuple[list[float], list[float]]:
    """act_std of one probed training step, and each block's response std measured directly (forward hooks on
    `block.response()` in a second forward of the same weights and batch: BN normalises with the batch's own
    statistics in training mode, so both forwards compute the same responses)."""
    ds = load_dataset(DataConfig())
    model = build_model(cfg, seed=0).train()
    if dead_channel:  # first block's last conv: output channel 0 constant, so its BN input has variance 0
        with torch.no_grad():
            model.get_submodule(block_names(model)[0]).conv2.weight[0].zero_()
    if eval_norm:  # the second block's BN normalises with its running statistics: that response takes the dots
        model.get_submodule(block_names(model)[1]).bn2.eval()
    probe = Probe(model)
    probe.arm()
    x, y = ds.x_train[:128], ds.y_train[:128]
    F.cross_entropy(model(x), y).backward()
    probe.before_step()
    probed = probe.read()["act_std"]
    probe.close()
    measured = []
    for name in block_names(model):
        model.get_submodule(name).response().register_forward_hook(lambda m, i, o: measured.append(o.std().item()))
    with torch.no_grad():
        model(x)
    return probed, measured


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(depth=14, width=8),  # post order, BatchNorm: the std from BN's statistics
        ModelConfig(depth=14, width=8, skip=False),
        ModelConfig(depth=11, width=8, block="bottleneck"),
        ModelConfig(depth=14, width=8, zero_init_last=True),  # gamma 0: every response is beta, std 0
        ModelConfig(depth=14, width=8, order="pre"),  # ends in a convolution: dot products
        ModelConfig(depth=14, width=8, norm="none"),
    ],
    ids=["post-bn", "plain-bn", "bottleneck", "zero-init-last", "pre", "no-norm"],
)
def test_response_std_from_batchnorm_statistics_or_dot_products_is_the_measured_std(cfg):
    """Ioffe & Szegedy 2015, Algorithm 1: per channel, BN's output gamma * x_hat + beta has mean beta and
    variance gamma^2 * var / (var + eps); the probe sums those instead of reading each response again."""
    probed, measured = _probed_and_measured_stds(cfg)
    assert probed == pytest.approx(measured, rel=1e-5, abs=1e-6)
    if cfg.zero_init_last:
        assert max(probed) < 1e-6


def test_blocks_whose_std_comes_from_batchnorm_and_blocks_read_again_keep_their_order():
    """One BN in eval mode among training ones: its block's std takes the dot products, the others BN's
    statistics, and each std stays with its own block."""
    probed, measured = _probed_and_measured_stds(ModelConfig(depth=14, width=8), eval_norm=True)
    assert probed == pytest.approx(measured, rel=1e-5, abs=1e-6)
    assert len(set(round(v, 4) for v in probed)) > 1  # distinct values, so a swapped order would show


def test_a_dead_channel_in_a_batchnorm_response_counts_as_beta_alone():
    """A channel whose BN input is constant (variance 0) outputs beta exactly; the std from BN's statistics
    agrees with the measured one (the running variance's update could not give this: it is off by ~1e-6)."""
    cfg = ModelConfig(depth=8, width=8)
    probed, measured = _probed_and_measured_stds(cfg, dead_channel=True)
    assert probed == pytest.approx(measured, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("order", "reads_responses"), [("post", False), ("pre", True)])
def test_batchnorm_responses_are_not_read_again(monkeypatch, order, reads_responses):
    """A post-order branch ends in BN: its std comes from BN's statistics, with no pass over the response (the
    dot products' vector of ones is never asked for); a pre-order branch ends in a convolution and is read."""
    asked = []
    monkeypatch.setattr(Probe, "_ones_like", lambda self, x: asked.append(x.numel()) or torch.ones_like(x))
    model = build_model(ModelConfig(depth=8, width=8, order=order), seed=0).train()
    probe = Probe(model)
    probe.arm()
    model(torch.randn(16, 1, 8, 8)).sum().backward()
    probe.before_step()
    assert len(probe.read()["act_std"]) == 3
    assert bool(asked) is reads_responses


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_update_ratio_is_the_weights_measured_move_at_every_step(tiny_train, optimizer):
    """SGD with momentum: the ratio comes from lr x the momentum buffer (no copy of the weights); Adam: from a
    copy. Either way it is what the weights moved, ||w_after - w_before|| / ||w_before||, step after step."""
    train = TrainConfig(**{**tiny_train.to_dict(), "optimizer": optimizer, "lr": 0.05 if optimizer == "sgd" else 1e-3})
    trainer = Trainer({"m": ModelConfig(depth=8, width=8)}, train, DataConfig())
    weights = [trainer.models["m"].get_submodule(n).weight for n in layer_names(trainer.models["m"])]
    before = [w.detach().clone() for w in weights]
    for step, records in enumerate(trainer.run(), start=1):
        moved = [((w.detach() - b).norm() / b.norm()).item() for w, b in zip(weights, before, strict=True)]
        assert records[0].probes["update_ratio"] == pytest.approx(moved, rel=1e-3, abs=1e-9), step
        before = [w.detach().clone() for w in weights]
        if step == 6:
            break


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_the_probes_sgd_step_is_torchs_bit_for_bit_and_measures_what_it_moved(weight_decay):
    """An armed probe takes SGD's step itself (norms while each layer is in cache): after four steps (the first
    creates the momentum buffers) every weight and buffer is exactly what torch.optim.SGD made from the same
    gradients, and the norms are those of the gradients, the weights before the step and lr x the buffers."""
    cfg = ModelConfig(depth=8, width=8, shortcut="projection")  # projection convs: weights beyond the main path
    models = [build_model(cfg, seed=0).train() for _ in range(2)]
    sgds = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=weight_decay) for m in models]
    probe = Probe(models[1], sgds[1])
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        probe.arm()
        for model, sgd in zip(models, sgds, strict=True):
            sgd.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
        weights = [models[1].get_submodule(n).weight for n in probe.layers]
        grads = [w.grad.norm().item() for w in weights]
        before = [w.detach().clone() for w in weights]
        probe.before_step()
        sgds[0].step()
        probe.step(sgds[1])
        read = probe.read()
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert torch.equal(a, b)
            assert torch.equal(sgds[0].state[a]["momentum_buffer"], sgds[1].state[b]["momentum_buffer"])
        assert read["grad_norm"] == pytest.approx(grads, rel=1e-5)
        moved = [((w.detach() - b).norm() / b.norm()).item() for w, b in zip(weights, before, strict=True)]
        assert read["update_ratio"] == pytest.approx(moved, rel=1e-3)


def test_the_probe_takes_only_its_own_optimizers_step():
    """`before_step` leaves the norms to the probe's SGD step: another optimizer's step there is an error, not a
    step without measurements."""
    model = build_model(ModelConfig(depth=8, width=8), seed=0)
    probe = Probe(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    probe.arm()
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    probe.before_step()
    with pytest.raises(ValueError, match="the optimizer must be the one the probe was made with"):
        probe.step(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))


def test_the_engine_steps_sgd_through_the_probe_on_armed_steps_only(monkeypatch, tiny_models, digits):
    """SGD.step runs only on unarmed steps (probes at steps 1, 4, 7 and 10 of 10: six SGD steps per model);
    Adam always takes its own step, armed or not."""
    calls = {torch.optim.SGD: 0, torch.optim.Adam: 0}

    def counted(cls: type[torch.optim.Optimizer]) -> None:
        step = cls.step

        def step_and_count(self: torch.optim.Optimizer, *args: object) -> object:
            calls[cls] += 1
            return step(self, *args)

        monkeypatch.setattr(cls, "step", step_and_count)

    counted(torch.optim.SGD)
    counted(torch.optim.Adam)
    train_models(tiny_models, TrainConfig(epochs=1, probe_every=3), digits)
    assert calls == {torch.optim.SGD: 6 * len(tiny_models), torch.optim.Adam: 0}
    train_models(tiny_models, TrainConfig(epochs=1, probe_every=3, optimizer="adam", lr=1e-3), digits)
    assert calls[torch.optim.Adam] == 10 * len(tiny_models)


def test_probes_do_not_change_training(tiny_models, tiny_train, digits):
    _, with_probes = train_models(tiny_models, tiny_train, digits)
    _, without = train_models(tiny_models, TrainConfig(**{**tiny_train.to_dict(), "probe_every": 0}), digits)
    assert [r.loss for r in with_probes.records] == [r.loss for r in without.records]
    assert all(r.probes is None for r in without.records)


def test_probe_sampling_every_k_steps(tiny_models, digits):
    _, history = train_models(tiny_models, TrainConfig(epochs=1, probe_every=3), digits)
    probed = sorted({r.step for r in history.records if r.probes})
    assert probed == list(range(1, 11, 3))


def test_same_config_and_seed_give_identical_records(tiny_models, tiny_train, digits):
    _, a = train_models(tiny_models, tiny_train, digits)
    _, b = train_models(tiny_models, tiny_train, digits)
    assert [(r.loss, r.acc, r.val_loss, r.probes) for r in a.records] == [
        (r.loss, r.acc, r.val_loss, r.probes) for r in b.records
    ]
    _, c = train_models(tiny_models, TrainConfig(**{**tiny_train.to_dict(), "seed": 1}), digits)
    assert [r.loss for r in a.records] != [r.loss for r in c.records]


def test_lockstep_models_start_identical_and_see_the_same_batches(tiny_train):
    # Two identical residual nets in lockstep must produce identical records: same init, same batches.
    cfg = ModelConfig(depth=8, width=8)
    _, history = train_models({"x": cfg, "y": cfg}, tiny_train, DataConfig())
    xs = [r.loss for r in history.records if r.model == "x"]
    ys = [r.loss for r in history.records if r.model == "y"]
    assert xs == ys and len(xs) == 10


def test_he2015_fig1_deep_plain_nets_degrade_residual_nets_do_not(digits):
    # He et al. 2015, Fig. 1 and Fig. 6: with the same budget, a deeper plain net ends with *higher
    # training* error than a shallower one (degradation, not overfitting), while a deeper ResNet does not.
    train = TrainConfig(epochs=10)
    models = {
        "plain8": ModelConfig(depth=8, skip=False),
        "plain56": ModelConfig(depth=56, skip=False),
        "res56": ModelConfig(depth=56),
    }
    trainer, history = train_models(models, train, digits)
    loss = {k: summarize(trainer, history, k)["final_train_loss"] for k in models}
    assert loss["plain56"] > loss["plain8"] + 0.5
    assert loss["plain56"] > 1.0  # near chance (ln 10 = 2.30)
    assert loss["res56"] < 0.1
    assert loss["res56"] < loss["plain56"] / 10


@pytest.mark.parametrize("depth", [32, 56])
def test_gradient_flow_at_init_without_normalisation(depth, tiny_train):
    # Vanishing gradients (Hochreiter 1991; Glorot & Bengio 2010; He et al. 2016, Eq. 5): without
    # normalisation, the loss gradient reaching the first block of a plain net is orders of magnitude
    # below the one at its last block, and so are the first layers' weight gradients compared to a
    # residual net's. The shortcut carries dL/dx_L to every block, so the residual net's does not vanish.
    models = {"plain": ModelConfig(depth=depth, norm="none", skip=False), "res": ModelConfig(depth=depth, norm="none")}
    _, records = _first_step(models, tiny_train)
    plain, res = (r.probes for r in records)
    assert plain["block_grad_norm"][0] / plain["block_grad_norm"][-1] < 1e-2
    assert res["block_grad_norm"][0] / res["block_grad_norm"][-1] > 0.1
    assert plain["grad_norm"][1] < 1e-3 * res["grad_norm"][1]


def test_plain_net_with_batchnorm_explodes_at_init(tiny_train):
    # The textbook story says deep plain nets vanish; with BatchNorm they explode instead: BN keeps
    # the forward signal at unit scale, and the backward pass through each BN multiplies the
    # gradient (Yang et al. 2019, "A Mean Field Theory of Batch Normalization"). At depth 56 the first
    # 3x3 conv's gradient is more than 100x the last one's; the residual net stays within about 10x.
    models = {"plain": ModelConfig(depth=56, skip=False), "res": ModelConfig(depth=56)}
    _, records = _first_step(models, tiny_train)
    plain, res = (r.probes["grad_norm"] for r in records)
    assert plain[1] / plain[-2] > 100
    assert res[1] / res[-2] < 10


def test_the_exploding_preset_explodes_once_then_its_early_layers_starve():
    """What the "Exploding gradients with BatchNorm" preset says, over its first epoch: the plain net's first
    layer gets about 1,000x its last layer's gradient at step 1 (Yang et al. 2019), under half of it from step 3
    on and under a fifth from step 4, once that first update has wrecked the early layers; the residual net's
    layers stay within a factor of 60 of each other at every step. How far it has fallen by step 3 depends on the
    CPU's float rounding, which the explosion amplifies: 0.29 on an AMD EPYC, under 0.2 on the Intel machines
    this test was first run on."""
    cfg = PRESETS["exploding"].config.normalized()
    _, history = train_models(cfg.models(), replace(cfg.train, epochs=1), cfg.data)
    grad = history.layers_frame().query("metric == 'grad_norm'").sort_values(["step", "depth_index"])
    first_over_last = grad.groupby(["model", "step"]).value.agg(lambda v: v.iloc[0] / v.iloc[-1])
    spread = grad.groupby(["model", "step"]).value.agg(lambda v: v.max() / v.min())
    assert first_over_last["A", 1] > 300
    assert (first_over_last["A"].loc[3:] < 0.5).all() and (first_over_last["A"].loc[4:] < 0.2).all()
    assert (spread["B"] < 60).all() and spread["A"].max() > 1000


def test_divergence_stops_with_status_and_keeps_records(digits):
    trainer, history = train_models(
        {"m": ModelConfig(depth=8, width=8)}, TrainConfig(epochs=3, lr=100, warmup_steps=0), digits
    )
    state = trainer.states["m"]
    assert state.status == "diverged"
    assert "step" in state.message and str(state.step + 1) in state.message
    assert len(history.records) == state.step < trainer.total_steps
    assert all(r.loss == r.loss for r in history.records)  # no NaN kept


def test_one_diverging_model_does_not_stop_the_other(digits):
    # Without normalisation a deep residual net's activations grow with depth; lr 5 blows it up.
    models = {"calm": ModelConfig(depth=8, width=8), "wild": ModelConfig(depth=8, width=8, norm="none")}
    trainer, _ = train_models(models, TrainConfig(epochs=2, lr=5, warmup_steps=0), digits)
    assert trainer.states["wild"].status == "diverged"
    assert trainer.states["calm"].status == "finished"
    assert trainer.states["calm"].step == trainer.total_steps


def test_stop_mid_epoch(tiny_models, digits):
    stop = threading.Event()
    trainer = Trainer(tiny_models, TrainConfig(epochs=2), digits, stop)
    seen = []
    for records in trainer.run():
        seen.append(records[0].step)
        if len(seen) == 3:
            stop.set()
    assert seen == [1, 2, 3] and trainer.steps_per_epoch > 3
    assert {s.status for s in trainer.states.values()} == {"stopped"}
    assert trainer.snapshots["plain"][-1].step == 3  # the stopped model is kept where it got to


def test_skip_scale_changes_live_and_is_recorded(tiny_train, digits):
    trainer = Trainer({"m": ModelConfig(depth=8, width=8)}, TrainConfig(epochs=1), digits)
    scales = []
    for records in trainer.run():
        scales.append(records[0].skip_scale)
        if records[0].step == 4:
            trainer.set_skip_scale("m", 0.0)
    assert scales[:4] == [1.0] * 4 and scales[4:] == [0.0] * (len(scales) - 4)
    assert trainer.skip_events == [("m", 5, 0.0)]
    with pytest.raises(ConfigError, match="skip_scale"):
        trainer.set_skip_scale("m", 2.0)


def test_snapshots_are_bounded_and_restore_the_model(digits):
    trainer, _ = train_models({"m": ModelConfig(depth=8, width=8)}, TrainConfig(epochs=3, max_snapshots=4), digits)
    snaps = trainer.snapshots["m"]
    assert [s.step for s in snaps] == [0, 10, 20, 30]
    restored = model_at(trainer, "m", snaps[-1])
    live = trainer.models["m"].eval()
    x = load_dataset(digits).x_test[:16]
    assert torch.equal(restored(x), live(x))
    assert restored is not live


def test_validation_and_frames(tiny_models, digits):
    trainer, history = train_models(tiny_models, TrainConfig(epochs=2, val_every=4), digits)
    steps = history.steps_frame()
    assert set(steps.model) == {"plain", "residual"}
    validated = steps.dropna(subset=["val_loss"]).step.unique().tolist()
    assert validated == [4, 8, 10, 12, 16, 20]  # every 4 steps and at the epoch ends (10 steps/epoch)
    layers = history.layers_frame()
    assert set(layers.metric) == {"grad_norm", "update_ratio", "block_grad_norm", "act_std"}
    first = layers[(layers.model == "plain") & (layers.step == 1) & (layers.metric == "grad_norm")]
    assert first.layer.tolist() == layer_names(trainer.models["plain"])
    assert first.depth_index.tolist() == list(range(8))


def test_warmup_and_schedules():
    t = TrainConfig(lr=0.1, warmup_steps=10, schedule="cosine")
    assert lr_at(t, 0, 110) == pytest.approx(0.01)
    assert lr_at(t, 9, 110) == pytest.approx(0.1)
    assert lr_at(t, 60, 110) == pytest.approx(0.05)
    step = TrainConfig(lr=0.1, warmup_steps=0, schedule="step")  # He et al.: /10 at 50% and 75%
    assert [lr_at(step, s, 100) for s in (0, 49, 50, 75)] == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_adam_and_mlp_on_spirals_learn():
    data = DataConfig(name="spirals", noise=0.1)
    trainer, history = train_models(
        {"m": ModelConfig(family="mlp", depth=8, width=32)},
        TrainConfig(epochs=15, optimizer="adam", lr=0.01, batch_size=64, warmup_steps=0),
        data,
    )
    summary = summarize(trainer, history, "m")
    assert summary["final_val_acc"] > 0.8
    assert trainer.configs["m"].in_channels == 2 and trainer.configs["m"].num_classes == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"lr": 0}, "lr"), ({"epochs": 0}, "epochs"), ({"optimizer": "rmsprop"}, "optimizer"), ({"lr": -1}, "lr")],
)
def test_invalid_train_config(kwargs, field):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs).validate()
    assert err.value.field == field


def test_two_models_step_side_by_side_one_thread_each_as_in_one_thread_runs():
    """With a thread per model, a pair steps its models at once (one intra-op thread each): each model's
    numbers are then exactly those of that model trained alone on one thread, and the run's thread
    count is back when it ends."""
    models = {"A": ModelConfig(depth=8, width=8, skip=False), "B": ModelConfig(depth=8, width=8)}
    train = TrainConfig(epochs=1, seed=5, val_every=5)
    torch.set_num_threads(2)
    pair = Trainer(models, train, DataConfig())
    seen = []
    step_validated = pair._step_validated
    pair._step_validated = lambda *args: (
        seen.append((threading.current_thread().name, torch.get_num_threads())) or (step_validated(*args))
    )
    together = [r for records in pair.run() for r in records]
    assert torch.get_num_threads() == 2
    assert len(seen) == 2 * pair.total_steps and all(n.startswith("model-step") and t == 1 for n, t in seen)
    torch.set_num_threads(1)
    for key, cfg in models.items():
        alone = [r for records in Trainer({key: cfg}, train, DataConfig()).run() for r in records]
        mine = [r for r in together if r.model == key]
        assert [(r.loss, r.acc, r.val_loss) for r in mine] == [(r.loss, r.acc, r.val_loss) for r in alone]
    sequential = Trainer(models, train, DataConfig())  # one thread for two models: one after the other
    seen.clear()
    step_validated = sequential._step_validated
    sequential._step_validated = lambda *args: seen.append(threading.current_thread().name) or step_validated(*args)
    list(sequential.run())
    assert set(seen) == {threading.current_thread().name}

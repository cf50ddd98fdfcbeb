"""Run store: exact round trips, the cache, export/import with validation, concurrent writers, corruption."""

import dataclasses
import json
import os
import pickle
import re
import sqlite3
import threading

import pandas as pd
import pytest
import torch
from harness import EXPORTED
from safetensors.torch import load_file, save_file

import resnet_viz.store as store_module
from resnet_viz.data import DataConfig
from resnet_viz.models import ModelConfig
from resnet_viz.store import RunStore, StoreError, default_data_dir, run_key
from resnet_viz.training import TrainConfig, Trainer, summarize, train_models
from resnet_viz.ui.store import run_option

MODELS = {"plain": ModelConfig(depth=8, width=8, skip=False), "residual": ModelConfig(depth=8, width=8)}
TRAIN = TrainConfig(epochs=1, warmup_steps=0)
DATA = DataConfig(name="digits")


@pytest.fixture(scope="module")
def trained():
    """One tiny finished plain/residual run (10 steps), shared by the tests that only store it."""
    return train_models(MODELS, TRAIN, DATA)


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "store")


def same_json(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN (summaries hold NaN where nothing was measured)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def assert_same_run(run, trainer, history) -> None:
    pd.testing.assert_frame_equal(run.history.steps_frame(), history.steps_frame())
    pd.testing.assert_frame_equal(run.history.layers_frame(), history.layers_frame())
    assert run.history.records == history.records  # every field, probes included, bit for bit
    assert run.configs == trainer.configs and run.train == trainer.train and run.data == trainer.dataset.config
    for key, model in trainer.models.items():
        expected, loaded = model.state_dict(), run.model(key).state_dict()
        assert expected.keys() == loaded.keys()
        assert all(torch.equal(expected[name], loaded[name]) for name in expected)


def test_round_trip_list_and_delete(store, trained):
    trainer, history = trained
    key = store.save(trainer, history)
    assert key == run_key(MODELS, TRAIN, DATA)  # the unfitted configs give the same key
    run = store.get(key)
    assert run.cached and run.key == key
    assert_same_run(run, trainer, history)
    expected = {k: summarize(trainer, history, k) for k in trainer.models}
    assert same_json({k: {n: v for n, v in s.items() if n != "flops"} for k, s in run.summaries.items()}, expected)
    assert run.summaries["plain"]["flops"] > 0
    assert {k: (s.status, s.step) for k, s in run.states.items()} == {
        "plain": ("finished", 10),
        "residual": ("finished", 10),
    }
    model = run.model("residual")
    assert not model.training and run.final_skip_scale("residual") == 1.0 and run.final_skip_scale("plain") == 0.0

    [info] = store.list_runs()
    assert info.key == key and info.dataset == "digits" and info.epochs == 1 and info.seed == 0
    assert info.depths == {"plain": 8, "residual": 8} and info.skips == {"plain": False, "residual": True}
    assert info.status == {"plain": "finished", "residual": "finished"}
    assert info.final_train_loss == {k: s["final_train_loss"] for k, s in run.summaries.items()}

    assert store.delete(key) and not store.delete(key)
    assert store.get(key) is None and store.list_runs() == []


def test_snapshots_are_kept_and_restore_each_step_exactly(store, trained):
    """A replayed run offers the steps a live one does: its init (rebuilt from the seed), the stored steps
    between, and its final weights, each bit for bit what training had at that step."""
    trainer, history = trained
    key = store.save(trainer, history)
    run = store.get(key)
    assert run.snapshot_steps == list(range(1, 10))  # 11 snapshots of a 10-step run; first and last not kept twice
    for model, live in trainer.snapshots.items():
        replayed = run.snapshots(model)
        assert [s.step for s in replayed] == [s.step for s in live] == list(range(11))
        for got, want in zip(replayed, live, strict=True):
            assert got.skip_scale == want.skip_scale
            assert got.state.keys() == want.state.keys()
            assert all(torch.equal(got.state[n], want.state[n]) for n in want.state), (model, got.step)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots WHERE key = ?", (key,)).fetchone()[0] == 18
    assert store.delete(key)
    with sqlite3.connect(store.path) as conn:  # deleted with its run
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0] == 0


def test_snapshots_are_thinned_to_the_budget_and_shared_by_every_model(trained):
    trainer, _ = trained
    per_step = sum(t.numel() * t.element_size() for m in trainer.models.values() for t in m.state_dict().values())
    assert per_step > 4 * sum(t.numel() for m in trainer.models.values() for t in m.state_dict().values())  # int64
    assert store_module.snapshots_to_keep(trainer) == list(range(1, 10))
    assert store_module.snapshots_to_keep(trainer, 3 * per_step) == [1, 5, 9]  # evenly spread, the last kept
    assert store_module.snapshots_to_keep(trainer, per_step) == [9]
    assert store_module.snapshots_to_keep(trainer, per_step - 1) == []
    # A model that diverged at step 6: only steps both have before it ended are kept (the slider's steps).
    diverged = dataclasses.replace(trainer.states["plain"], status="diverged", step=6)
    partial = dict(trainer.snapshots, plain=[s for s in trainer.snapshots["plain"] if s.step <= 6])
    fake = dataclasses.make_dataclass("T", ["states", "snapshots", "models"])(
        {"plain": diverged, "residual": trainer.states["residual"]}, partial, trainer.models
    )
    assert store_module.snapshots_to_keep(fake) == [1, 2, 3, 4, 5]


def test_runs_without_snapshots_replay_init_and_final_and_forged_ones_are_refused(store, trained):
    trainer, history = trained
    key = store.save(trainer, history)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE snapshots SET data = ? WHERE step = 4 AND model = 'plain'", (b"not safetensors",))
    with pytest.raises(StoreError, match="step 4: not a valid safetensors") as err:
        store.get(key).snapshots("plain")
    assert err.value.kind == "damaged_run"
    with sqlite3.connect(store.path) as conn:  # a store from before snapshots were kept
        conn.execute("DROP TABLE snapshots")
    run = store.get(key)
    assert run.snapshot_steps == []
    assert [s.step for s in run.snapshots("residual")] == [0, 10]
    assert_same_run(run, trainer, history)


def test_skip_events_are_part_of_the_key_and_restore_alpha(store, trained):
    trainer, history = trained
    events = [("residual", 4, 0.25)]
    key = store.save(trainer, history, skip_events=events)
    assert key != run_key(MODELS, TRAIN, DATA) and key == run_key(MODELS, TRAIN, DATA, events)
    run = store.get(key)
    assert run.skip_events == events and run.final_skip_scale("residual") == 0.25
    assert run.model("residual").stage1.block1.alpha == 0.25
    # the listing says which runs had their skips moved live (two such runs looked the same as a clean one)
    clean = store.save(trainer, history)
    listed = {info.key: info.skip_changes for info in store.list_runs()}
    assert listed == {key: 1, clean: 0}


def test_every_picker_names_a_stored_run_alike(store, trained):
    """Runs of one config differ only in when and their key: the label shows both, and says which are imports."""
    key = store.save(*trained)
    [info] = store.list_runs()
    label = run_option(info)
    assert re.fullmatch(rf"\d\d-\d\d \d\d:\d\d · {key[:12]} · digits · 1 ep · seed 0 · plain 8 · residual 8", label), (
        label
    )
    with_losses = run_option(info, losses=True)
    assert with_losses.endswith(
        f"plain 8 → {info.final_train_loss['plain']:.3g} · residual 8 → {info.final_train_loss['residual']:.3g}"
    )
    imported = dataclasses.replace(info, key=f"imported-{key}", imported=True, skip_changes=2)
    label = run_option(imported)  # the key once, without its "imported-" prefix repeating the suffix
    assert f" · {key[:12]} (imported) · digits" in label and "imported-" not in label and "α moved live 2×" in label


def test_a_stopped_run_is_not_stored(store):
    stop = threading.Event()
    stop.set()
    trainer = Trainer(MODELS, TRAIN, DATA, stop)
    for _ in trainer.run():
        pass
    assert trainer.states["plain"].status == "stopped"
    with pytest.raises(StoreError, match="only finished runs are stored"):
        store.save(trainer, trainer.history())


def test_export_import_round_trip(store, trained, tmp_path):
    trainer, history = trained
    key = store.save(trainer, history)
    folder = store.export(key, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} == EXPORTED
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] == key and manifest["schema_version"] == store_module.SCHEMA_VERSION
    other = RunStore(tmp_path / "other")
    imported = other.import_run(folder)
    assert imported.startswith(store_module.IMPORTED_PREFIX) and imported != key  # never under a config key
    assert other.get(key) is None and other.get(imported).imported and not store.get(key).imported
    assert_same_run(other.get(imported), trainer, history)
    assert same_json(other.get(imported).summaries, store.get(key).summaries)
    assert other.import_run(folder) == imported and len(other.list_runs()) == 1  # the same content: stored once
    [info] = other.list_runs()
    assert info.imported and info.key == imported
    # Brought back to the server that trained it, the file is that run: no second, "imported" copy.
    assert store.import_run(folder) == key and [i.key for i in store.list_runs()] == [key]
    assert store.import_zip(store.export_zip(key), "run.zip") == key and not store.get(key).imported
    # ... but only while it is that run byte for byte: a file with other weights stays an import.
    state = {n: t.detach().clone().contiguous() for n, t in trainer.models["residual"].state_dict().items()}
    name = next(n for n, t in state.items() if t.is_floating_point())
    state[name].view(-1)[0] += 1.0  # the same shapes, another run
    save_file(state, str(folder / "residual.safetensors"))
    assert store.import_run(folder).startswith(store_module.IMPORTED_PREFIX) and len(store.list_runs()) == 2


def test_export_carries_the_snapshots_and_import_restores_each_step_exactly(store, trained, tmp_path):
    """An imported run had its final weights only: no "Training step" slider, no training path."""
    trainer, history = trained
    key = store.save(trainer, history)
    folder = store.export(key, tmp_path / "export")
    index = json.loads((folder / "snapshots.json").read_text())
    assert index["steps"] == list(range(1, 10)) and index["skip_scales"] == {"plain": [0.0] * 9, "residual": [1.0] * 9}
    other = RunStore(tmp_path / "other")
    run = other.get(other.import_run(folder))
    assert run.imported and run.snapshot_steps == store.get(key).snapshot_steps == list(range(1, 10))
    for model, live in trainer.snapshots.items():
        replayed = run.snapshots(model)
        assert [(s.step, s.skip_scale) for s in replayed] == [(s.step, s.skip_scale) for s in live]
        assert all(torch.equal(g.state[n], w.state[n]) for g, w in zip(replayed, live, strict=True) for n in w.state)
    # Other snapshots are another run: a file imported first cannot stand for the genuine one.
    state = load_file(str(folder / "plain.snapshots.safetensors"))
    state["5/stem.conv.weight"] = state["5/stem.conv.weight"] + 1.0
    save_file(state, str(folder / "plain.snapshots.safetensors"))
    forged = RunStore(tmp_path / "forged")
    assert forged.import_run(folder) != run.key and forged.import_run(folder) == forged.list_runs()[0].key
    # An export written before snapshots were exported still imports, with its final weights only.
    for name in ("snapshots.json", "plain.snapshots.safetensors", "residual.snapshots.safetensors"):
        (folder / name).unlink()
    old = RunStore(tmp_path / "old")
    assert old.get(old.import_run(folder)).snapshot_steps == []


def test_an_import_with_more_snapshot_bytes_than_the_store_keeps_is_refused(store, trained, tmp_path, monkeypatch):
    folder = store.export(store.save(*trained), tmp_path / "export")
    per_step = sum(4 * t.numel() for m in trained[0].models.values() for t in m.state_dict().values())
    monkeypatch.setattr(store_module, "MAX_SNAPSHOT_BYTES", 8 * per_step)  # the export holds 9 steps
    other = RunStore(tmp_path / "other")
    with pytest.raises(StoreError, match=r"snapshots.json: more than \d+ MB of snapshots; a run keeps at most that"):
        other.import_run(folder)
    assert other.list_runs() == []


def test_a_run_trained_without_the_store_is_exported_with_its_snapshots(trained, tmp_path):
    trainer, history = trained
    folder = store_module.export_trained(trainer, history, tmp_path / "out")
    run = RunStore(tmp_path / "store").get(RunStore(tmp_path / "store").import_run(folder))
    assert run.snapshot_steps == list(range(1, 10))
    step5 = next(s for s in run.snapshots("residual") if s.step == 5)
    want = next(s for s in trainer.snapshots["residual"] if s.step == 5)
    assert all(torch.equal(step5.state[n], want.state[n]) for n in want.state)


def _edit_json(name, edit):
    def apply(folder):
        path = folder / name
        obj = json.loads(path.read_text())
        edit(obj)
        path.write_text(json.dumps(obj))

    return apply


def _write(name, data: bytes):
    def apply(folder):
        (folder / name).write_bytes(data)

    return apply


def _wrong_shapes(folder):
    state = load_file(str(folder / "plain.safetensors"))
    state["stem.conv.weight"] = torch.zeros(8, 1, 5, 5)
    save_file(state, str(folder / "plain.safetensors"))


def _snapshot_named(name):
    def apply(folder):
        path = folder / "plain.snapshots.safetensors"
        state = load_file(str(path))
        first = next(n for n in state if n.startswith("1/"))
        state[name(first)] = state.pop(first)
        save_file(state, str(path))

    return apply


def _snapshot_wrong_shape(folder):
    path = folder / "plain.snapshots.safetensors"
    state = load_file(str(path))
    state["3/stem.conv.weight"] = torch.zeros(8, 1, 5, 5)
    save_file(state, str(path))


def _pickle_as_safetensors(folder):
    torch.save({"stem.conv.weight": torch.zeros(8, 1, 3, 3)}, folder / "plain.safetensors")


def _rename_model(folder):
    config = json.loads((folder / "config.json").read_text())
    config["models"]["../evil"] = config["models"].pop("plain")
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("tamper", "file", "problem"),
    [
        (_write("config.json", b"{not json"), "config.json", "not valid JSON"),
        (_edit_json("manifest.json", lambda m: m.update(schema_version=99)), "manifest.json", "schema version 99"),
        (_edit_json("manifest.json", lambda m: m.update(format="other")), "manifest.json", "not a resnet-viz-run"),
        (_edit_json("config.json", lambda c: c["models"]["plain"].update(depth=21)), "config.json", "depth"),
        (_edit_json("config.json", lambda c: c["models"]["plain"].update(depth="8")), "config.json", "depth"),
        (_edit_json("config.json", lambda c: c["models"]["plain"].update(in_channels=3)), "config.json", "data"),
        (_edit_json("config.json", lambda c: c["train"].update(epochs=2)), "records.json", "lr"),
        (_edit_json("config.json", lambda c: c["models"].update(residual=c["models"]["plain"])), "records", "skip"),
        (_edit_json("records.json", lambda r: r["records"][0].update(loss="low")), "records.json", "loss"),
        (_edit_json("records.json", lambda r: r["records"][0].update(loss=float("inf"))), "records.json", "finite"),
        (_edit_json("records.json", lambda r: r["records"][0].pop("acc")), "records.json", "fields"),
        (
            _edit_json("records.json", lambda r: r["records"][0]["probes"]["act_std"].extend([1.0] * 9)),
            "records.json",
            "act_std",
        ),
        (_edit_json("summary.json", lambda s: s["plain"].update(status="stopped")), "summary.json", "status"),
        (_wrong_shapes, "plain.safetensors", "stem.conv.weight"),
        (_pickle_as_safetensors, "plain.safetensors", "not a valid safetensors file"),
        (_write("plain.safetensors", pickle.dumps({"a": 1})), "plain.safetensors", "not a valid safetensors file"),
        (lambda folder: (folder / "residual.safetensors").unlink(), "residual.safetensors", "missing"),
        (_rename_model, "config.json", "model name"),
        (_edit_json("snapshots.json", lambda i: i["steps"].append(10)), "snapshots.json: steps", "last step (10)"),
        (_edit_json("snapshots.json", lambda i: i.update(steps=[2, 1, *i["steps"][2:]])), "steps", "increasing"),
        (_edit_json("snapshots.json", lambda i: i.update(extra=1)), "snapshots.json", '"skip_scales" only'),
        (_edit_json("snapshots.json", lambda i: i["skip_scales"].pop("plain")), "skip_scales", "each model"),
        (_edit_json("snapshots.json", lambda i: i["skip_scales"]["plain"].__setitem__(4, 0.5)), "plain", "[0.0]"),
        (_edit_json("snapshots.json", lambda i: i["skip_scales"]["plain"].pop()), "skip_scales.plain", "9 values"),
        (_snapshot_wrong_shape, "plain.snapshots.safetensors at step 3", "stem.conv.weight"),
        (_snapshot_named(lambda n: "12" + n[1:]), "plain.snapshots.safetensors", "<step>/<name>"),
        (_snapshot_named(lambda n: n[2:]), "plain.snapshots.safetensors", "<step>/<name>"),
        (_snapshot_named(lambda n: "１/" + n[2:]), "plain.snapshots.safetensors", "<step>/<name>"),  # a fullwidth 1
        (_write("plain.snapshots.safetensors", pickle.dumps({"a": 1})), "plain.snapshots", "not a valid safetensors"),
        (lambda f: (f / "residual.snapshots.safetensors").unlink(), "residual.snapshots.safetensors", "missing"),
        (_write("plain.snapshots.safetensors", bytes(2**21)), "plain.snapshots.safetensors", "more than a run"),
    ],
)
def test_import_rejects_malformed_or_foreign_files(store, trained, tmp_path, tamper, file, problem):
    trainer, history = trained
    folder = store.export(store.save(trainer, history), tmp_path / "export")
    tamper(folder)
    other = RunStore(tmp_path / "other")
    with pytest.raises(StoreError) as err:
        other.import_run(folder)
    assert file in str(err.value) and problem in str(err.value)
    assert other.list_runs() == []  # nothing half-imported


def test_concurrent_writers_lose_nothing(tmp_path, trained):
    # Four sessions (two sharing one RunStore object, two with their own) each store three runs at once.
    trainer, history = trained
    shared = RunStore(tmp_path / "store")
    stores = [shared, shared, RunStore(tmp_path / "store"), RunStore(tmp_path / "store")]
    barrier = threading.Barrier(len(stores))
    keys: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            for j in range(3):  # distinct live skip changes give distinct keys for the same records
                keys[i, j] = stores[i].save(trainer, history, skip_events=[("residual", 1, (4 * j + i) / 16)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    fresh = RunStore(tmp_path / "store")
    assert {info.key for info in fresh.list_runs()} == set(keys.values()) and len(keys) == 12
    for (i, j), key in keys.items():
        run = fresh.get(key)
        assert run.skip_events == [("residual", 1, (4 * j + i) / 16)]
        assert (
            len(run.history.records) == 20
            and run.weights("plain").keys() == trainer.models["plain"].state_dict().keys()
        )


@pytest.mark.parametrize("keep_header", [False, True])
def test_corrupted_database_is_reported_and_quarantined(store, trained, keep_header):
    trainer, history = trained
    key = store.save(trainer, history)
    size = store.path.stat().st_size
    with open(store.path, "r+b") as f:  # random bytes over the file (optionally sparing the SQLite header)
        f.seek(100 if keep_header else 0)
        f.write(os.urandom(size))
    fresh = RunStore(store.directory)
    with pytest.raises(StoreError) as err:
        fresh.get(key)
    assert err.value.kind == "corrupt" and err.value.can_move_aside
    moved = fresh.quarantine()
    assert moved.exists() and ".corrupt-" in moved.name and not store.path.exists()
    assert fresh.list_runs() == []  # a fresh, empty store
    assert fresh.save(trainer, history) == key and fresh.get(key) is not None


def test_foreign_sqlite_file_is_refused(store):
    store.directory.mkdir(parents=True)
    with sqlite3.connect(store.path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(StoreError, match="not a run store") as err:
        store.list_runs()
    assert err.value.kind == "foreign" and not err.value.can_move_aside


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RESNET_VIZ_DATA_DIR", str(tmp_path / "env"))
    assert RunStore().path == tmp_path / "env" / "runs.sqlite3"
    monkeypatch.delenv("RESNET_VIZ_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "resnet-viz"

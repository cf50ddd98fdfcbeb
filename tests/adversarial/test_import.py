"""Imports a hostile student might upload: forged summaries and records, impossible timestamps, a zip bomb.

Every refused import names the file and field, has kind "invalid_import" (never "move the store aside")
and leaves the store exactly as it was; an accepted one is kept apart as imported, under a content key.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import pytest
import torch
from runs_factory import DIGITS, PAIR, edit_json, synthetic_run

from resnet_viz.archive import zip_folder
from resnet_viz.data import load_dataset
from resnet_viz.store import IMPORTED_PREFIX, RunStore, StoreError, _plan, run_key
from resnet_viz.summary import summarize_records
from resnet_viz.training import TrainConfig, summarize, train_models
from resnet_viz.ui.store import format_time

TRAIN = TrainConfig(epochs=1, warmup_steps=0)


@pytest.fixture(scope="module")
def trained():
    return train_models(PAIR, TRAIN, DIGITS)


@pytest.fixture(scope="module")
def genuine(trained, tmp_path_factory):
    """The genuine run's key and its exported folder (copy it before editing)."""
    trainer, history = trained
    store = RunStore(tmp_path_factory.mktemp("source"))
    key = store.save(trainer, history)
    return key, store.export(key, tmp_path_factory.mktemp("export") / "run")


@pytest.fixture
def target(trained, tmp_path):
    """The class's store, holding the genuine run that this server trained."""
    store = RunStore(tmp_path / "target")
    store.save(*trained)
    return store


def _copy(genuine, tmp_path):
    return shutil.copytree(genuine[1], tmp_path / "upload")


def _refused(store: RunStore, folder, *fragments: str) -> StoreError:
    before = [(r.key, r.final_train_loss) for r in store.list_runs()]
    with pytest.raises(StoreError) as err:
        store.import_run(folder)
    assert err.value.kind == "invalid_import" and not err.value.can_move_aside
    assert all(f in str(err.value) for f in fragments), str(err.value)
    assert [(r.key, r.final_train_loss) for r in store.list_runs()] == before  # the store is unchanged
    return err.value


def _same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_summaries_recomputed_from_records_match_training(trained):
    # The pure function gives exactly what training.summarize gives, FLOPs included.
    trainer, history = trained
    for key, cfg in trainer.configs.items():
        records = [r for r in history.records if r.model == key]
        got = summarize_records(key, cfg, trainer.train, trainer.steps_per_epoch, records, history.layer_names[key])
        expected = summarize(trainer, history, key)
        assert got["flops"] == 378_496 and all(_same(got[k], v) for k, v in expected.items()), (got, expected)


def test_summaries_of_a_diverged_run_match_training():
    trainer, history = train_models(PAIR, TrainConfig(epochs=1, warmup_steps=0, lr=900.0), DIGITS)
    assert {s.status for s in trainer.states.values()} == {"diverged"}
    for key, cfg in trainer.configs.items():
        records = [r for r in history.records if r.model == key]
        message = trainer.states[key].message
        got = summarize_records(
            key, cfg, trainer.train, trainer.steps_per_epoch, records, history.layer_names[key], message
        )
        assert all(_same(got[k], v) for k, v in summarize(trainer, history, key).items())


def test_a_forged_summary_is_refused(genuine, target, tmp_path):
    folder = _copy(genuine, tmp_path)
    edit_json(folder, "summary.json", lambda s: s["plain"].update(final_train_loss=0.001))
    _refused(target, folder, "summary.json", "plain.final_train_loss", "the records give")


def test_a_forged_divergence_message_is_refused(genuine, target, tmp_path):
    folder = _copy(genuine, tmp_path)
    edit_json(folder, "summary.json", lambda s: s["plain"].update(message="[Click to log in](https://evil.example)"))
    _refused(target, folder, "summary.json", "plain.message")


def test_a_consistent_forgery_is_kept_apart_and_never_replaces_the_trained_run(genuine, target, tmp_path):
    # Records and summary forged together pass every check (only retraining could tell), so the run is
    # stored as imported under its content hash: the class's genuine run under the config key is untouched.
    key = genuine[0]
    before = target.get(key)
    folder = synthetic_run(tmp_path / "forged", TRAIN, loss_scale=1e-3)
    edit_json(folder, "manifest.json", lambda m: m.update(key=key, origin="trained"))  # claims the genuine key
    imported = target.import_run(folder)
    assert imported.startswith(IMPORTED_PREFIX) and imported != key
    after = target.get(key)
    assert not after.imported and after.history.records == before.history.records
    assert json.dumps(after.summaries) == json.dumps(before.summaries)  # NaN-safe equality
    assert target.get(imported).imported and run_key(PAIR, TRAIN, DIGITS) == key
    assert {(r.key, r.imported) for r in target.list_runs()} == {(key, False), (imported, True)}


@pytest.mark.parametrize("created", [1e308, math.inf, -1e308, 1e20, math.nan, -math.inf, "2024-01-01", None, 0, 1e9])
def test_impossible_created_times_are_refused(genuine, target, tmp_path, created):
    folder = _copy(genuine, tmp_path)
    edit_json(folder, "manifest.json", lambda m: m.update(created=created))  # json writes Infinity / NaN tokens
    _refused(target, folder, "manifest.json: created")


@pytest.mark.parametrize("created", [1e308, math.inf, -1e308, 1e20, math.nan, -math.inf, -1.0])
def test_pages_format_any_stored_time_without_crashing(created):
    # A store written before these checks may hold such times: datetime.fromtimestamp would raise on them.
    assert format_time(created) == "unknown time"
    assert format_time(1_700_000_000.0).startswith("2023-11-1")


def test_a_created_time_in_the_future_is_refused_beyond_clock_skew(genuine, target, tmp_path):
    folder = _copy(genuine, tmp_path)
    edit_json(folder, "manifest.json", lambda m: m.update(created=time.time() + 86_400))
    _refused(target, folder, "manifest.json: created")
    edit_json(folder, "manifest.json", lambda m: m.update(created=time.time() + 60))  # a slightly fast clock is fine
    assert target.import_run(folder) == genuine[0]  # accepted: byte for byte the run this server trained
    assert RunStore(tmp_path / "elsewhere").import_run(folder).startswith(IMPORTED_PREFIX)  # accepted as an import


def _record(index: int, **changes):
    return lambda r: r["records"][index].update(changes)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_record(0, acc=1.5), "records[0].acc"),
        (_record(0, loss=-1.0), "records[0].loss"),
        (_record(0, loss=2e6), "records[0].loss"),  # above the divergence threshold: training never records it
        (_record(0, seconds=math.nan), "records[0].seconds"),
        (_record(0, lr=0.2), "records[0].lr"),
        (_record(0, epoch=0.5), "records[0].epoch"),
        (_record(0, step=2), "records[0].step"),
        (_record(0, skip_scale=0.5), "records[0].skip_scale"),
        (_record(0, val_loss=0.5, val_acc=0.5), "records[0].val_loss"),
        (_record(0, val_acc=-0.1), "records[0].val_acc"),
        (_record(0, probes=None), "records[0].probes"),
        (lambda r: r["records"][0]["probes"]["grad_norm"].__setitem__(0, -1.0), "records[0].probes.grad_norm"),
        (lambda r: r["records"][0]["probes"]["act_std"].pop(), "records[0].probes"),
        (lambda r: r["records"].pop(2), "records[3].step"),  # plain step 2 gone: its step 3 comes next
        (lambda r: r.update(skip_events=[["residual", 999, 0.5]]), "skip_events[0]"),
    ],
)
def test_every_record_field_is_checked_with_its_range(genuine, target, tmp_path, edit, field):
    folder = _copy(genuine, tmp_path)
    edit_json(folder, "records.json", edit)
    _refused(target, folder, "records.json", field)


def test_a_run_too_big_to_check_is_refused_before_its_records_are_read(genuine, target, tmp_path):
    folder = _copy(genuine, tmp_path)
    edit_json(folder, "config.json", lambda c: c["train"].update(epochs=1000, batch_size=16))
    (folder / "records.json").write_bytes(b"\x00" * 10)  # never read: the config alone decides
    _refused(target, folder, "config.json", "MB to check")


def test_the_memory_estimate_bounds_the_real_peak(tmp_path):
    # The budget check trusts `_Plan.memory` as an upper bound of what an import holds: measured here on a
    # synthetic run of 2 x 1000 records with full-precision probes (tracemalloc counts Python allocations).
    train = TrainConfig(epochs=100, warmup_steps=0, probe_every=2)
    data = zip_folder(synthetic_run(tmp_path / "big", train))
    store = RunStore(tmp_path / "store")
    store.list_runs()
    tracemalloc.start()
    try:
        key = store.import_zip(data, "big.zip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    run = store.get(key)
    plan = _plan(run.configs, train, load_dataset(DIGITS))
    assert len(run.history.records) == 2000 and peak < plan.memory, (peak, plan.memory)


BOMB_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from resnet_viz.store import RunStore, StoreError

    def status_kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    store = RunStore(sys.argv[1])
    store.import_zip(open(sys.argv[2], "rb").read(), "genuine.zip")  # warm up: imports, data, the database
    data = open(sys.argv[3], "rb").read()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size (Linux >= 4.0)
    before, t0 = status_kb("VmRSS"), time.process_time()
    try:
        store.import_zip(data, "bomb.zip")
        result = {"refused": False}
    except StoreError as err:
        result = {"refused": True, "kind": err.kind, "message": str(err)}
    growth = (status_kb("VmHWM") - before) / 1024
    result |= {"growth_mb": growth, "cpu_s": time.process_time() - t0, "runs": len(store.list_runs())}
    print(json.dumps(result))
    """
)


def test_a_small_zip_of_256_mib_records_is_refused_quickly_with_bounded_memory(genuine, trained, tmp_path):
    # The case: under 1 MB of zip, 256 MiB of "0.0," in records.json. The member is capped by
    # what the config implies and decompressed in chunks, so the refusal costs one chunk, not gigabytes.
    folder = genuine[1]
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(folder.iterdir()):
            if path.name != "records.json" and "snapshots" not in path.name:  # snapshots are optional: < 1 MB
                archive.write(path, f"run/{path.name}")
        with archive.open("run/records.json", "w") as member:
            chunk = b"0.0," * (2**20 // 4)
            member.write(b'{"records":[')
            for _ in range(256):
                member.write(chunk)
            member.write(b"0.0]}")
    assert bomb.stat().st_size < 2**20
    (tmp_path / "genuine.zip").write_bytes(zip_folder(folder))
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(tmp_path / "store"), str(tmp_path / "genuine.zip"), str(bomb)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["refused"] and result["kind"] == "invalid_import", result
    assert "bomb.zip: records.json" in result["message"] and "more than" in result["message"]
    assert result["growth_mb"] < 100, result  # the issue measured +2.9 GB before
    assert result["runs"] == 1  # only the genuine import: nothing of the bomb was stored
    print(f"zip bomb refused: RSS growth {result['growth_mb']:.1f} MB, {result['cpu_s']:.2f} s CPU")


def test_a_small_zip_of_256_mib_snapshots_is_refused_after_its_cap(genuine, target, tmp_path):
    # The snapshots (exported since session 30) are read like the rest: capped by what the config implies
    # for the steps snapshots.json names (a member declaring more is refused unread; one that lies about its
    # size is cut off after a chunk, as the records test above shows).
    folder = genuine[1]
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(folder.iterdir()):
            if path.name != "plain.snapshots.safetensors":
                archive.write(path, f"run/{path.name}")
        with archive.open("run/plain.snapshots.safetensors", "w") as member:
            for _ in range(256):
                member.write(bytes(2**20))
    assert bomb.stat().st_size < 2 * 2**20  # the genuine files and 256 MiB of zeros
    before = [r.key for r in target.list_runs()]
    with pytest.raises(StoreError, match=r"bomb.zip: plain.snapshots.safetensors: 268435456 bytes, more than a run"):
        target.import_zip(bomb.read_bytes(), "bomb.zip")
    assert [r.key for r in target.list_runs()] == before


def test_weights_of_a_genuine_export_survive_the_round_trip(genuine, trained, target):
    trainer, _ = trained
    key = target.import_zip(zip_folder(genuine[1]), "run.zip")
    for model, net in trainer.models.items():
        loaded = target.get(key).weights(model)
        assert all(torch.equal(loaded[name], t) for name, t in net.state_dict().items())

"""Python for a run: the generated script, run in a subprocess, reproduces the app's losses to the last digit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from resnet_viz import cli
from resnet_viz.codegen import LOAD_SNIPPET, data_file_name, model_bundle, run_script
from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.datasets import registry
from resnet_viz.datasets.uploads import points_from_csv
from resnet_viz.models import ModelConfig
from resnet_viz.runs import RunRequest, RunService, Scheduler
from resnet_viz.store import RunStore
from resnet_viz.tasks import InlineExecutor
from resnet_viz.training import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TINY = {"A": ModelConfig(depth=8, width=8, skip=False), "B": ModelConfig(depth=8, width=8)}
TRAIN = TrainConfig(epochs=1, batch_size=128, warmup_steps=0, seed=3)


def _run(script: str, folder: Path) -> dict[str, float]:
    """Execute the script as a user would (its own process, its own folder); its printed final losses."""
    (folder / "run.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "run.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (folder / "loss.html").stat().st_size > 1000  # the loss plot was written
    lines = [line.split() for line in proc.stdout.splitlines() if "final_train_loss" in line]
    return {words[0]: float(words[3]) for words in lines}


def _app_run(tmp_path: Path, data: DataConfig, move_at: int = 0):
    """The run as the app trains it: through the run service, alone on one core (one intra-op thread).

    With `move_at`, B's skip scale is moved to 0.25 after that step, as the lab's live slider does.
    """
    service = RunService(RunStore(tmp_path / "store"), Scheduler(cores=1), InlineExecutor())

    def slider(run, records) -> None:
        if records[0].step == move_at:
            run.set_skip_scale("B", 0.25)

    return service.fetch(RunRequest(TINY, TRAIN, data), "test", on_step=slider)


def test_the_script_reproduces_the_apps_final_losses_exactly_with_a_live_skip_change(tmp_path):
    stored = _app_run(tmp_path, DataConfig(), move_at=4)
    assert stored.skip_events == [("B", 5, 0.25)]
    script = run_script(stored.configs, stored.train, stored.data, stored.skip_events, threads=1)
    compile(script, "run.py", "exec")
    assert "DataConfig()" in script and "seed=3" in script and "in_channels" not in script
    got = _run(script, tmp_path)
    assert got == {k: stored.summaries[k]["final_train_loss"] for k in TINY}  # exact, not approximately


def test_the_script_of_an_uploaded_data_set_reads_the_downloaded_file(tmp_path):
    rows = ["x,y,label"] + [f"{np.sin(i)},{np.cos(3 * i)},{'in' if i % 3 else 'out'}" for i in range(300)]
    upload = points_from_csv("\n".join(rows).encode(), "ring.csv")
    store = RunStore(tmp_path / "store")
    registry.use_store(store)
    digest = store.put_dataset(upload)
    mlp = {k: ModelConfig(family="mlp", depth=4, width=8, skip=k == "B") for k in TINY}
    service = RunService(store, Scheduler(cores=1), InlineExecutor())
    stored = service.fetch(RunRequest(mlp, TRAIN, DataConfig(name="upload", upload=digest)), "test")
    script = run_script(stored.configs, stored.train, stored.data, threads=1)
    assert f"upload={digest!r}" in script and "ring" not in script  # no user text in the code
    (tmp_path / data_file_name(digest)).write_bytes(upload.to_safetensors())  # what "Download data" gives
    assert _run(script, tmp_path) == {k: stored.summaries[k]["final_train_loss"] for k in TINY}


def test_file_data_sets_name_their_folder_as_a_literal(tmp_path):
    folder = tmp_path / 'it\'s "odd"\nhere'
    script = run_script(TINY, TRAIN, DataConfig(name="mnist", color="rgb", n_samples=500), data_dir=folder)
    compile(script, "run.py", "exec")
    assert f"registry.set_folder({str(folder)!r})" in script
    assert "DataConfig(name='mnist', n_samples=500, color='rgb')" in script


def test_the_model_download_loads_with_its_snippet(tmp_path):
    stored = _app_run(tmp_path, DataConfig())
    classes = load_dataset(stored.data).classes
    blob = model_bundle(
        stored.configs,
        {k: stored.weights(k) for k in TINY},
        {k: stored.final_skip_scale(k) for k in TINY},
        stored.data,
        classes,
    )
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        assert sorted(archive.namelist()) == ["A.json", "A.safetensors", "B.json", "B.safetensors", "load_model.py"]
        archive.extractall(tmp_path / "models")
        meta = json.loads(archive.read("B.json"))
        weights = load_safetensors(archive.read("B.safetensors"))
    assert meta["classes"] == list(classes) and meta["input_shape"] == [1, 8, 8] and meta["skip_scale"] == 1.0
    assert all(torch.equal(weights[n], t) for n, t in stored.weights("B").items())
    x = load_dataset(stored.data).x_test[:4]
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path / "models")
    try:
        exec(
            compile("import torch\n" + LOAD_SNIPPET.replace('key = "A"', 'key = "B"'), "load_model.py", "exec"),
            namespace,
        )
    finally:
        os.chdir(cwd)
    with torch.no_grad():
        assert torch.equal(namespace["net"](x), stored.model("B")(x))


def test_cli_print_code_prints_the_script_without_training(capsys):
    argv = ["compare", "--depth", "8", "--width", "8", "--epochs", "1", "--seed", "3", "--print-code"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    compile(out, "run.py", "exec")
    assert "'residual': ModelConfig(depth=8, width=8)" in out and "TrainConfig(epochs=1, seed=3)" in out

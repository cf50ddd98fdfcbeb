"""Python for a run: a short script that reproduces it with the library, and its models as files to take home.

The lab shows `run_script` under "Python for this run" and the CLI prints it (``--print-code``). The
script builds the same configs, data and seed, trains in lockstep as the app does (same batches, same
initial weights), applies any skip-scale change at the step it took effect, prints each model's final
training loss and plots the loss curves. Training is deterministic on the CPU for a given seed and
thread count, so the script's losses are the app's to the last digit when both use as many threads.

Nothing a user typed goes into the code: configs are validated values, an uploaded data set is named by
its hex content hash, and a data folder path is written as a Python string literal (`repr`).

`model_bundle` writes "Download model": each model's final weights as safetensors (never a pickle),
its config and skip scale as JSON, and a loader snippet (`LOAD_SNIPPET`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from .data import FILE_DATASETS, UPLOAD, DataConfig
from .models import ModelConfig, example_input
from .store import DATA_DECIDED
from .training import TrainConfig

SkipEvent = tuple[str, int, float]  # (model, step it took effect, alpha)


def data_file_name(digest: str) -> str:
    """The file name of an uploaded data set's download, which the script reads from beside itself."""
    return f"data-{digest[:12]}.safetensors"


def _call(cls: type, obj: object, skip: Sequence[str] = ()) -> str:
    """``Cls(field=value, ...)`` with only the fields that differ from the defaults."""
    default = cls()
    args = [
        f"{f.name}={getattr(obj, f.name)!r}"
        for f in fields(cls)
        if f.name not in skip and getattr(obj, f.name) != getattr(default, f.name)
    ]
    return f"{cls.__name__}({', '.join(args)})"


def _data_lines(data: DataConfig, data_dir: Path | None) -> tuple[list[str], list[str]]:
    """(imports, statements) that make the data findable: the files' folder, or the uploaded data set's file."""
    if data.name in FILE_DATASETS:
        folder = str(data_dir) if data_dir is not None else None
        return ["from resnet_viz.datasets import registry"], [
            f"# The folder holding {data.name}/ (the app read its files from here; change it to yours):",
            f"registry.set_folder({folder!r})",
        ]
    if data.name == UPLOAD:
        return ["from resnet_viz.datasets import registry", "from resnet_viz.datasets.uploads import Upload"], [
            "# The uploaded data set: the lab's 'Download data' button saves this file; keep it beside the script.",
            f"DATA_FILE = Path(__file__).with_name({data_file_name(data.upload)!r})",
            "registry.register(Upload.from_safetensors(DATA_FILE.read_bytes(), DATA_FILE.name))",
        ]
    return [], []


def run_script(
    models: Mapping[str, ModelConfig],
    train: TrainConfig,
    data: DataConfig,
    skip_events: Sequence[SkipEvent] = (),
    data_dir: Path | None = None,
    threads: int | None = None,
) -> str:
    """A runnable script that retrains this run and plots its loss (written next to it as loss.html).

    `data_dir` is the folder the app read MNIST/CIFAR files from; `threads` the intra-op threads the run
    trained with, when known (sums of floats differ in their last digits between thread counts).
    """
    train, data = train.validate(), data.validate()
    imports, data_setup = _data_lines(data, data_dir)
    model_lines = [f"    {key!r}: {_call(ModelConfig, cfg, DATA_DECIDED)}," for key, cfg in models.items()]
    thread_line = (
        [f"torch.set_num_threads({int(threads)})  # the app's run used this many CPU threads"]
        if threads
        else ["# torch.set_num_threads(n): float sums differ in their last digits between thread counts"]
    )
    events = [tuple(e) for e in skip_events]
    lines = [
        '"""Retrain a resnet-viz run: same configs, data and seed; prints the final losses, plots the curves.',
        "",
        "Run it from the resnet-viz folder (or with resnet_viz installed): python this_file.py",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import plotly.express as px",
        "import torch",
        "",
        *sorted(set(imports)),
        "from resnet_viz.data import DataConfig",
        "from resnet_viz.models import ModelConfig",
        "from resnet_viz.training import TrainConfig, Trainer, summarize",
        "",
        *thread_line,
        *data_setup,
        "",
        "models = {",
        *model_lines,
        "}",
        f"train = {_call(TrainConfig, train)}",
        f"data = {_call(DataConfig, data)}",
        f"skip_changes = {events!r}  # (model, step it takes effect, skip scale α) moved live in the app",
        "",
        "trainer = Trainer(models, train, data)  # every model starts from the same seed and sees the same batches",
        "history = trainer.history()",
        "for model, step, alpha in skip_changes:",
        "    if step == 1:",
        "        trainer.set_skip_scale(model, alpha)",
        "for records in trainer.run():",
        "    history.add(records)",
        "    for model, step, alpha in skip_changes:",
        "        if step == records[0].step + 1:",
        "            trainer.set_skip_scale(model, alpha)",
        "",
        "for key in models:",
        "    summary = summarize(trainer, history, key)",
        "    print(key, summary['status'], 'final_train_loss', repr(summary['final_train_loss']))",
        "",
        "steps = history.steps_frame()",
        'fig = px.line(steps, x="step", y="loss", color="model", log_y=True,',
        '              title="Training loss per step", labels={"step": "step", "loss": "cross-entropy (nats)"})',
        'out = Path("loss.html")',
        "fig.write_html(out)",
        'print("loss curves:", out.resolve())',
    ]
    return "\n".join(lines) + "\n"


LOAD_SNIPPET = """import json
from safetensors.torch import load_file
from resnet_viz.models import ModelConfig, example_input, load_model

key = "A"  # each model of the run has <key>.safetensors and <key>.json in the zip
meta = json.load(open(f"{key}.json"))
cfg = ModelConfig(**meta["config"])
net = load_model(cfg, load_file(f"{key}.safetensors"), meta["skip_scale"])
print(net(example_input(cfg, 1)).softmax(1))  # class probabilities (eval mode), per token or node for those families
"""


def model_bundle(
    configs: Mapping[str, ModelConfig],
    states: Mapping[str, Mapping[str, torch.Tensor]],
    skip_scales: Mapping[str, float],
    data: DataConfig,
    classes: Sequence[str],
) -> bytes:
    """A zip of each model's final weights (<key>.safetensors) and config (<key>.json), and load_model.py."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, cfg in configs.items():
            state = {name: t.detach().to("cpu").contiguous() for name, t in states[key].items()}
            archive.writestr(f"{key}.safetensors", save_safetensors(state))
            shape = list(example_input(cfg, 1, "meta").shape[1:])
            meta = {
                "config": cfg.to_dict(),
                "skip_scale": float(skip_scales[key]),
                "input_shape": shape,
                "data": data.to_dict(),
                "classes": list(classes),
            }
            archive.writestr(f"{key}.json", json.dumps(meta, indent=2))
        archive.writestr("load_model.py", "import torch\n" + LOAD_SNIPPET)
    return buffer.getvalue()

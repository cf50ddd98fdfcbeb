"""CLI: happy paths with --json and --out, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest
from harness import EXPORTED
from safetensors.torch import load_file

from resnet_viz.cli import main
from resnet_viz.models import ModelConfig, build_model

SUMMARY_KEYS = {
    "final_train_loss",
    "final_val_loss",
    "final_val_acc",
    "status",
    "steps",
    "params",
    "first_layer_grad_norm",
    "last_layer_grad_norm",
}
TINY = ["--depth", "8", "--width", "8", "--epochs", "1"]


def test_train_json(capsys):
    assert main(["train", *TINY, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["status"] == "finished" and summary["steps"] == 10
    # By hand: stem 72+16, stage1 2*576+2*16, stage2 1152+2304+2*32, stage3 4608+9216+2*64, head 330.
    assert summary["params"] == 19_074
    assert 0 < summary["final_train_loss"] < 3


def test_compare_json_and_out(tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main(["compare", *TINY, "--json", "--out", str(out_dir)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"status", "plain", "residual"} and payload["status"] == "finished"
    assert payload["plain"]["params"] == payload["residual"]["params"]  # identity shortcuts: same params
    assert all(payload[k].keys() >= SUMMARY_KEYS for k in ("plain", "residual"))
    files = {p.name for p in out_dir.iterdir()}
    assert files == EXPORTED  # the folder RunStore.export writes, so it can be imported
    config = json.loads((out_dir / "config.json").read_text())
    assert config["models"]["plain"]["skip"] is False and config["models"]["residual"]["skip"] is True
    weights = load_file(str(out_dir / "residual.safetensors"))
    model = build_model(ModelConfig(**config["models"]["residual"]))
    model.load_state_dict(weights)  # strict: every key and shape matches


def test_table_output_and_progress(capsys):
    assert main(["compare", *TINY]) == 0
    captured = capsys.readouterr()
    assert "final_train_loss" in captured.out and "plain" in captured.out and "residual" in captured.out
    assert "10/10" in captured.err  # the progress bar reached the end


def test_mlp_dataset(capsys):
    assert main(["train", "--dataset", "moons", "--depth", "6", "--epochs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "finished"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--depth", "21"], "depth"),
        (["--dataset", "cifar"], "--dataset"),
        (["--lr", "0"], "lr"),
        (["--lr", "-1"], "lr"),
        (["--skip-scale", "1.5"], "skip_scale"),
        (["--depth", "abc"], "--depth"),
        (["--block", "wide"], "--block"),
        (["--epochs", "0"], "epochs"),
        (["--dataset", "spirals", "--block", "bottleneck", "--depth", "11"], "block"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, field):
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_viz", "train", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert field in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""

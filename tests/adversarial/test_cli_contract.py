"""The CLI's contract under bad stores and diverged runs: one line and exit status 2 for a store error, in every
subcommand; --json is strict JSON (non-finite numbers as null) with a status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY = ["--depth", "8", "--width", "8", "--epochs", "1"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_viz", *args], capture_output=True, text=True, timeout=300)


def _strict(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("command", [["sweep", "--depths", "8", "--epochs", "1"], ["train", *TINY]])
def test_a_damaged_store_is_one_line_and_exit_2(tmp_path, command):
    (tmp_path / "runs.sqlite3").write_bytes(b"definitely not sqlite" * 200)
    proc = _cli(*command, "--store", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a database" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert (tmp_path / "runs.sqlite3").exists()  # nothing moved


def test_a_diverged_run_prints_strict_json_with_nulls_and_its_status(tmp_path):
    proc = _cli("compare", *TINY, "--lr", "900", "--json", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()
    payload = _strict(line)
    assert payload["status"] == "diverged"
    for model in ("plain", "residual"):
        assert payload[model]["status"] == "diverged" and payload[model]["final_val_loss"] is None
        assert payload[model]["message"].startswith("loss became")


def test_out_in_an_unwritable_place_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("in the way")
    proc = _cli("train", *TINY, "--out", str(tmp_path / "file" / "run"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # one line, and before any training (no progress bar above it)
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'file' / 'run'}: Not a directory"]

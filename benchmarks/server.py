"""One `streamlit run app.py` for a benchmark or the browser tests (and the Chromium that drives it), with
CPU and memory read from /proc.

The app trains in worker processes (resnet_viz/runs/remote.py), so CPU and memory are counted over
the server and every process below it: the server alone would leave the training out.

    server = Server()                  # an empty run store of its own, in a temporary folder
    server.wait_healthy()
    ... server.url ...
    server.stop()
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHROMIUM = "/usr/bin/chromium"  # Debian's Chromium (`playwright install` cannot download browsers here)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Server:
    """`streamlit run app.py` on a free port, its output in a log file (a pipe nobody reads would fill
    up and block the server)."""

    def __init__(self, data_dir: Path | None = None, log_path: Path | None = None, **env: str) -> None:
        """`data_dir`: its run store (default: a new temporary folder, removed by `stop`); `env`: extra
        environment variables (RESNET_VIZ_GRACE_SECONDS="2", ...)."""
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="resnet-viz-server-")) if data_dir is None else data_dir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.data_dir / "server.log"
        self._log = self.log_path.open("w")
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port)]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "RESNET_VIZ_DATA_DIR": str(self.data_dir), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.perf_counter()

    def wait_healthy(self, timeout: float = 90.0) -> float:
        """Seconds until /_stcore/health answered "ok"."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        return time.perf_counter() - self.started
            except OSError:
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.1)
                raise RuntimeError(f"streamlit exited: {self.log_path.read_text()[-2000:]}")
        raise RuntimeError("streamlit did not become healthy")

    def pids(self) -> list[int]:
        """The server's pid and its descendants' (the training workers), from /proc/<pid>/task/*/children."""
        pids = [self.proc.pid]
        for pid in pids:  # the list grows while it is walked: each child comes after its parent
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    pids.extend(int(child) for child in children.read_text().split())
        return pids

    def cpu_seconds(self, server_only: bool = False) -> float:
        """CPU time of the server and its workers, those still running and those it has reaped; with
        `server_only`, of the server process alone (script runs, figures, websockets: no training)."""
        total = 0
        for pid in [self.proc.pid] if server_only else self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                own = fields[11:13] if server_only else fields[11:15]  # utime, stime (+ cutime, cstime)
                total += sum(int(f) for f in own)
        return total / CLK_TCK

    def memory_mb(self) -> dict[str, float]:
        """Resident memory now and peak (VmRSS, VmHWM) of the server, and summed over it and its workers."""
        out = {"rss_mb": 0.0, "peak_rss_mb": 0.0, "server_rss_mb": 0.0, "server_peak_rss_mb": 0.0}
        for pid in self.pids():
            with contextlib.suppress(OSError, KeyError):
                text = Path(f"/proc/{pid}/status").read_text()
                status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                rss, peak = (int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
                out["rss_mb"] += rss
                out["peak_rss_mb"] += peak  # an upper bound: the workers' peaks need not coincide
                if pid == self.proc.pid:
                    out["server_rss_mb"], out["server_peak_rss_mb"] = rss, peak
        return {k: round(v, 1) for k, v in out.items()}

    def stop(self) -> dict[str, object]:
        """Stop it (and its workers, which leave when their pipes close); errors its log names."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()
        lines = self.log_path.read_text(errors="replace").splitlines()
        # the last line of a traceback names the error ("NameError: ...")
        errors = [line[:300] for line in lines if re.match(r"^\w+(Error|Exception)\b", line)]
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return {"server_log_errors": errors[:5], "server_log_lines": len(lines)}

"""How fast the daemon starts: ``quantmesh --version``, ``check-config`` and ``quantmesh run``
on the default configuration (simulated exchange, SQLite, no Redis) until its first order,
each in a fresh process beside ``python -c pass`` started the same way; and the peak RSS of
the run at its first order beside that of ``python -c pass``.

Rounds interleave the commands (the machine's load drifts); each figure is the median of
the rounds with its spread. ``python -m bench.bench_start`` prints them alone.

The checkout's modules are compiled to bytecode first, as installing the package compiles
them: with ``PYTHONDONTWRITEBYTECODE`` set (CI images often set it) every start would
otherwise compile the whole daemon from source, which no installed daemon does.
"""

from __future__ import annotations

import compileall
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stats import median_spread

ROOT = Path(__file__).resolve().parents[1]
QUANTMESH = [sys.executable, "-m", "quantmesh.cli"]
FIRST_ORDER = b"order_placed"


@dataclass(frozen=True, slots=True)
class StartFigures:
    """Medians (s, MB) and spreads over the rounds."""

    baseline_s: float
    version_s: float
    check_config_s: float
    first_order_s: float
    first_order_spread: float
    baseline_rss_mb: float
    run_rss_mb: float
    rounds: int


def _vm_hwm_mb(pid: int) -> float:
    """The peak RSS of a live process (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - started


def _baseline(cwd: Path) -> tuple[float, float]:
    """``python -c pass`` (reading its own peak RSS as it ends): seconds, and that RSS."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/status').read())"],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - started
    for line in done.stdout.splitlines():
        if line.startswith("VmHWM:"):
            return seconds, int(line.split()[1]) / 1024
    return seconds, float("nan")


def _first_order(workdir: Path) -> tuple[float, float]:
    """``quantmesh run`` on the default config in a fresh directory: seconds until its first
    ``order_placed`` line, and its peak RSS then."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copytree(ROOT / "config", workdir / "config")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*QUANTMESH, "run", "-c", "config/config.yaml"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if FIRST_ORDER in line:
                return time.perf_counter() - started, _vm_hwm_mb(proc.pid)
        raise RuntimeError("quantmesh run ended before its first order")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)  # drains and closes its output
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def measure_start(rounds: int = 5) -> StartFigures:
    base: list[float] = []
    version: list[float] = []
    check: list[float] = []
    first: list[float] = []
    base_rss: list[float] = []
    run_rss: list[float] = []
    compileall.compile_dir(ROOT / "quantmesh", quiet=1)  # as an install does
    with tempfile.TemporaryDirectory(prefix="qm-bench-start-") as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "config", root / "config")
        for index in range(rounds):
            seconds, rss = _baseline(root)
            base.append(seconds)
            base_rss.append(rss)
            version.append(_timed([*QUANTMESH, "--version"], root))
            check.append(_timed([*QUANTMESH, "check-config", "config/config.yaml"], root))
            seconds, rss = _first_order(root / f"run-{index}")
            first.append(seconds)
            run_rss.append(rss)
    first_median, first_spread = median_spread(first)
    return StartFigures(
        baseline_s=median_spread(base)[0],
        version_s=median_spread(version)[0],
        check_config_s=median_spread(check)[0],
        first_order_s=first_median,
        first_order_spread=first_spread,
        baseline_rss_mb=median_spread(base_rss)[0],
        run_rss_mb=median_spread(run_rss)[0],
        rounds=rounds,
    )


if __name__ == "__main__":
    figures = measure_start()
    print(figures)

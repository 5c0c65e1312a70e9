"""Crash points: parsed strictly, inert unless armed, and a real SIGKILL when reached."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quantmesh import failpoints
from tests.cli.support import run_cli, write_config


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    failpoints.arm("")


def test_a_spec_names_points_and_counts() -> None:
    assert failpoints.parse("fill_applied@2, order_answered") == {
        "fill_applied": 2,
        "order_answered": 1,
    }
    assert failpoints.parse("") == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [("fill_aplied", "unknown failpoint 'fill_aplied'"), ("fills_stored@0", "@0 is not")],
)
def test_a_bad_spec_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        failpoints.parse(spec)


def test_an_unarmed_point_does_nothing() -> None:
    failpoints.arm("fills_stored@1")
    failpoints.reach("fill_applied")  # another point: the process lives on
    assert failpoints.armed() == ["fills_stored"]


def test_the_counted_hit_kills_the_process() -> None:
    code = (
        "from quantmesh import failpoints\n"
        "failpoints.arm('fill_applied@2')\n"
        "failpoints.reach('fill_applied')\n"
        "print('alive', flush=True)\n"
        "failpoints.reach('fill_applied')\n"
        "print('not reached')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == -9
    assert done.stdout == "alive\n"
    assert "failpoint_reached" in done.stderr


def test_run_refuses_a_bad_failpoint_spec(tmp_path: Path) -> None:
    config = write_config(tmp_path, "instance:\n  id: a\n")
    result = run_cli(
        ["run", "-c", str(config)], tmp_path, env={"QUANTMESH_FAILPOINTS": "nowhere@1"}
    )
    assert result.returncode == 2
    assert "QUANTMESH_FAILPOINTS: unknown failpoint 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr

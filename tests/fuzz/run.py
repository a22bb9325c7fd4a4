"""Coverage-guided fuzzing of one target with atheris (libFuzzer), for long runs by hand.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python -m tests.fuzz.run relay -max_total_time=600
    .venv/bin/python -m tests.fuzz.run --list

Arguments after the target name go to libFuzzer (``-max_len``, ``-runs``, a corpus
directory, ...). The target's seeds start the corpus. A finding stops the run with the
input saved as ``crash-*``; turn it into a regression test in tests/fuzz/test_fuzz.py.
"""

from __future__ import annotations

import sys

from tests.fuzz.targets import TARGETS, check


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help", "--list"):
        print("targets: " + " ".join(sorted(TARGETS)))
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in TARGETS:
        print(f"no target {name!r}; targets: {' '.join(sorted(TARGETS))}", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install -e '.[fuzz]'", file=sys.stderr)
        return 2
    target = TARGETS[name]
    seeds = target.seeds()

    def one_input(data: bytes) -> None:
        # Half the inputs start from a seed, so libFuzzer's mutations reach deep states.
        if data and data[0] & 1 and seeds:
            data = seeds[data[0] % len(seeds)] + data[1:]
        check(target, data)

    atheris.instrument_all()
    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

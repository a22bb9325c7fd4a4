"""Speech through the real system under random and bursty loss: a PESQ-WB table.

Runs the call of ``tests/integration/test_loss.py`` (alice -> router -> server, bob
records; real ``bangor`` processes in network namespaces, root only) once per cell:
random loss at 5 and 15 %, and Gilbert-Elliott loss (``tests/usernetem.py``) at 5 and
15 % with mean bursts of 3 and 5 packets, always with 40 +- 30 ms of delay on both
directions of alice's link. Each cell is the mean over ``--seeds`` loss patterns
(seeds 1..N, the test's is 1), with the loss bob measured in alice's stream.

Run::

    .venv/bin/python bench/bursty.py              # 1 seed: ~8 calls, about 4 min
    .venv/bin/python bench/bursty.py --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.test_loss import make_speech, open_lab, speak_through  # noqa: E402
from tests.netns import netns_available  # noqa: E402

# (loss %, mean burst in packets; 0 = random)
CELLS = ((0, 0), (5, 0), (15, 0), (5, 3), (15, 3), (5, 5), (15, 5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every call")
    args = parser.parse_args()
    reason = netns_available()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        speech = make_speech(tmp)
        with open_lab(tmp) as lab:
            for loss, burst in CELLS:
                scores, measured = [], []
                for seed in range(1, args.seeds + 1):
                    call_dir = tmp / f"call-{loss}-{burst}-{seed}"
                    call_dir.mkdir()
                    try:
                        result = speak_through(lab, speech, call_dir, loss, burst, seed)
                    except AssertionError as exc:  # a join that timed out, mostly
                        print(f"{loss} % x {burst}, seed {seed}: failed: {exc}"[:300], flush=True)
                        continue
                    if args.verbose:
                        print(result.report, flush=True)
                    scores.append(result.score)
                    measured.append(result.stats.get("loss", float("nan")))
                if not scores:
                    rows.append(f"| {loss} % x {burst} | failed | |")
                    continue
                kind = f"bursts of {burst}" if burst else "random"
                values = " ".join(f"{s:.2f}" for s in scores)
                rows.append(
                    f"| {loss} % {kind} | {statistics.mean(scores):.2f} ({values}) "
                    f"| {statistics.mean(measured):.1%} |"
                )
                print(rows[-1], flush=True)
    print(f"\nPESQ-WB through the real system, {DELAY_NOTE}, mean of {args.seeds} seed(s)\n")
    print("| Loss | PESQ-WB (each seed) | loss bob measured |")
    print("|---|---|---|")
    print("\n".join(rows))
    return 0


DELAY_NOTE = "40 +- 30 ms on both directions of alice's link"

if __name__ == "__main__":
    sys.exit(main())

"""`bangor join` options, parsed as the command line gives them."""

from __future__ import annotations

import pytest

from bangor.cli import EXIT_USAGE, build_parser, main
from bangor.settings import ClientSettings


@pytest.mark.parametrize("value", ["10", "20", "40"])
def test_frame_ms_choices(value: str) -> None:
    args = build_parser().parse_args(["join", "invite", "--frame-ms", value])
    assert args.frame_ms == int(value)
    assert ClientSettings(frame_ms=args.frame_ms).frame_samples == 48 * int(value)


def test_frame_ms_defaults_to_20() -> None:
    assert build_parser().parse_args(["join", "invite"]).frame_ms == 20


@pytest.mark.parametrize("value", ["30", "0", "2.5", "forty", "-10"])
def test_other_frame_durations_are_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["join", "invite", "--frame-ms", value])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--frame-ms" in err and "must be one of 10, 20, 40 ms" in err
    assert "Traceback" not in err

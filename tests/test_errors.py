"""Each error carries its exit code: the command-line contract of DESIGN.md, pinned."""

from __future__ import annotations

import pytest

from bangor import errors
from bangor.errors import BangorError, CloseCode, ExitCode, RefusedError


def test_the_exit_codes_are_the_contracts() -> None:
    """0 ok, 1 other error, 2 usage, 3 authentication, 4 invite or room, 5 unreachable."""
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 130]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.BangorError("x"), 1),
        (errors.UsageError("x"), 2),
        (errors.BadNameError("x"), 2),
        (errors.AuthError("x"), 3),
        (errors.PasswordRequiredError("x"), 3),
        (errors.ThrottledError("x", 5.0), 3),
        (errors.InviteError("x"), 4),
        (errors.KeyPinError("x"), 4),
        (errors.ConnectError("x"), 5),
        (errors.DroppedError("x"), 5),
        # A busy server is not a wrong password: the user did nothing wrong.
        (errors.BusyError("x", 1.0), 1),
        (errors.HandshakeError("x"), 1),
        (errors.DeviceError("x"), 1),
        (errors.NotFoundError("x"), 1),
    ],
)
def test_an_error_carries_its_exit_code(error: BangorError, code: int) -> None:
    assert error.exit_code == code


@pytest.mark.parametrize(
    ("close", "code"),
    [
        (CloseCode.ROOM_NOT_FOUND, 4),
        (CloseCode.ROOM_FULL, 4),
        (CloseCode.NOT_ALLOWED, 1),
        (CloseCode.LIMIT, 1),
        (CloseCode.PROTOCOL, 1),
        (99, 1),  # a close code this version does not know
    ],
)
def test_a_refusals_exit_code_follows_its_close_code(close: int, code: int) -> None:
    assert RefusedError(close, "no").exit_code == code

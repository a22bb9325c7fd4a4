"""Helpers for driving sans-I/O cores in tests."""

from __future__ import annotations

from typing import Protocol, TypeVar

E_co = TypeVar("E_co", covariant=True)


class EventSource(Protocol[E_co]):
    def next_event(self) -> E_co | None: ...


def drain(source: EventSource[E_co]) -> list[E_co]:
    """Every event the core holds now, in order."""
    events = []
    while (event := source.next_event()) is not None:
        events.append(event)
    return events

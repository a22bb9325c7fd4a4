"""Terminal UI: a Textual app over the client API (``bangor.client.app``)."""

from bangor.tui.app import BangorApp, Launch

__all__ = ["BangorApp", "Launch"]

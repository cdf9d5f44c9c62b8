"""Where a dashboard's long work runs: a worker thread when served, inline otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import panel as pn

__all__ = ["in_server_session", "server_loop", "start_when_loaded"]


def in_server_session() -> bool:
    """Whether this code runs inside a Bokeh server session (``panel serve``)."""
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


def start_when_loaded(start: Callable[[], None]) -> None:
    """Call ``start`` once the served page has loaded (so it renders first), or at once elsewhere."""
    if in_server_session():
        pn.state.onload(start)
    else:
        start()


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the Bokeh server session this view is served in, else ``None``.

    Dashboards hand long work to ``loop.run_in_executor`` when served, so the page stays live and
    shows progress; in plain Python, tests and notebooks they compute inline. The decision is made
    on the Panel session, not on ``asyncio.get_running_loop()`` alone: other libraries (e.g.
    Playwright's sync API, Jupyter kernels) leave a loop "running" in the main thread although no
    server would ever drive the tasks scheduled on it.
    """
    if not in_server_session():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

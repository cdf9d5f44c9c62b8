"""Where a dashboard's long work runs: a worker thread when served, inline otherwise."""

from __future__ import annotations

import asyncio

import panel as pn

__all__ = ["server_loop"]


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the Bokeh server session this view is served in, else ``None``.

    Dashboards hand long work to ``loop.run_in_executor`` when served, so the page stays live and
    shows progress; in plain Python, tests and notebooks they compute inline. The decision is made
    on the Panel session, not on ``asyncio.get_running_loop()`` alone: other libraries (e.g.
    Playwright's sync API, Jupyter kernels) leave a loop "running" in the main thread although no
    server would ever drive the tasks scheduled on it.
    """
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

"""Where a dashboard's long work runs: a worker thread when served, inline otherwise.

:class:`BackgroundWork` is the one way a dashboard starts long work (fits, training runs, data
generation). It holds the job's visible state as ``param`` parameters (``running``, ``progress``,
``message``, ``error``) that a view binds to, and it makes three promises:

- **newest wins**: each :meth:`~BackgroundWork.submit` supersedes the jobs before it; their
  progress and results are dropped and their ``report`` callback answers ``True`` ("stop early",
  the :mod:`workbench.progress` convention), so estimators that honour it stop at once;
- **nothing raises unobserved**: every exception of a job is caught, shown in ``error`` (newest job
  only), logged as one line, and handed to ``on_error``;
- **the page stays live**: when served (``panel serve``) the job runs in a worker thread and its
  results reach the page through ``Document.add_next_tick_callback``, Bokeh's public, thread-safe
  way to update a session; in plain Python, tests and notebooks it runs inline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import panel as pn
import param

from workbench.progress import Progress

__all__ = ["BackgroundWork", "in_server_session", "server_loop", "start_when_loaded"]

log = logging.getLogger("workbench.dashboards")

#: one pool for all sessions of a server: a few jobs at a time on a small machine
_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="workbench-dashboard")


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

    The decision is made on the Panel session, not on ``asyncio.get_running_loop()`` alone: other
    libraries (e.g. Playwright's sync API, Jupyter kernels) leave a loop "running" in the main
    thread although no server would ever drive the tasks scheduled on it.
    """
    if not in_server_session():
        return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Reporter:
    """The ``report`` callable a job receives: ``report(Progress | float, message="") -> bool``.

    Returns ``True`` once the job is superseded (the caller should stop); progress of a superseded
    job is dropped. Updates are throttled to one every ``interval`` seconds (the last one always
    goes through when the job ends, as the work sets ``progress`` to 1).
    """

    def __init__(self, work: BackgroundWork, generation: int, doc, interval: float = 0.1):
        self._work, self._generation, self._doc, self._interval = work, generation, doc, interval
        self._last = 0.0

    @property
    def superseded(self) -> bool:
        return self._generation != self._work._generation

    def __call__(self, progress: Progress | float, message: str = "") -> bool:
        if self.superseded:
            return True
        if isinstance(progress, Progress):
            fraction, message = progress.fraction, message or progress.message
        else:
            fraction = min(max(float(progress), 0.0), 1.0)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._work._dispatch(self._doc, partial(self._work._show_progress, self._generation,
                                                    fraction, message))
        return False


class BackgroundWork(param.Parameterized):
    """One dashboard's long-running job, newest submission wins (see the module docstring)."""

    running = param.Boolean(default=False, doc="A job is running")
    progress = param.Number(default=0.0, bounds=(0.0, 1.0), doc="Fraction done of the running job")
    message = param.String(default="", doc="One line on what is running or what happened")
    error = param.String(default="", doc="The newest job's error, empty when it succeeded")

    def __init__(self, **params):
        super().__init__(**params)
        self._generation = 0
        self._lock = threading.Lock()

    # -- public API --------------------------------------------------------------------------
    def submit(self, fn: Callable[[_Reporter], Any], on_done: Callable[[Any], None], *,
               on_error: Callable[[BaseException], None] | None = None,
               message: str = "Working ...") -> None:
        """Run ``fn(report)``; then ``on_done(result)`` or ``on_error(exc)`` for the newest job only."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self.param.update(running=True, progress=0.0, message=message, error="")
        doc = pn.state.curdoc if in_server_session() else None
        report = _Reporter(self, generation, doc)
        if doc is None:  # plain Python: inline, so tests and notebooks see the result at once
            future: Future = Future()
            try:
                future.set_result(fn(report))
            except Exception as err:  # noqa: BLE001  (every error is shown, none escapes)
                future.set_exception(err)
            self._settle(generation, future, on_done, on_error)
            return
        future = _EXECUTOR.submit(fn, report)
        future.add_done_callback(
            lambda f: self._dispatch(doc, partial(self._settle, generation, f, on_done, on_error)))

    def cancel(self, message: str = "Cancelled.") -> None:
        """Drop the running job (it is told to stop through its ``report`` callback)."""
        with self._lock:
            self._generation += 1
        self.param.update(running=False, progress=0.0, message=message)

    # -- internals -----------------------------------------------------------------------------
    def _dispatch(self, doc, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the session's event loop (inline when not served)."""
        if doc is None:
            callback()
            return
        try:
            doc.add_next_tick_callback(callback)
        except Exception as err:  # noqa: BLE001  (the session was closed: nobody to show it to)
            log.debug("dropped a dashboard update for a closed session: %s", err)

    def _show_progress(self, generation: int, fraction: float, message: str) -> None:
        if generation == self._generation:
            self.param.update(progress=fraction, **({"message": message} if message else {}))

    def _settle(self, generation: int, future: Future, on_done, on_error) -> None:
        err = future.exception()
        if generation != self._generation:  # superseded: observe and drop
            if err is not None:
                log.debug("a superseded dashboard job failed: %r", err)
            return
        if err is None:
            try:
                on_done(future.result())
            except Exception as show_err:  # noqa: BLE001
                err = show_err
            else:
                self.param.update(running=False, progress=1.0, error="")
                return
        log.warning("dashboard job failed: %s: %s", type(err).__name__, err)
        self.param.update(running=False, error=f"{type(err).__name__}: {err}")
        if on_error is not None:
            try:
                on_error(err)
            except Exception as handler_err:  # noqa: BLE001
                log.warning("dashboard error handler failed: %r", handler_err)

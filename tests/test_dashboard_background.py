"""BackgroundWork: newest job wins, every error is observed, served jobs run off the event loop."""

import threading

import pytest

pn = pytest.importorskip("panel")

from workbench.dashboards import _background  # noqa: E402
from workbench.dashboards._background import BackgroundWork  # noqa: E402
from workbench.progress import Progress  # noqa: E402


def test_inline_job_delivers_result_and_progress():
    work, seen = BackgroundWork(), []
    work.param.watch(lambda e: seen.append(e.new), "progress")

    def job(report):
        assert report(Progress(1, 4, message="a quarter")) is False
        return 42

    results = []
    work.submit(job, results.append)
    assert results == [42]
    assert not work.running and work.progress == 1.0 and work.error == ""
    assert 0.25 in seen


def test_inline_error_is_shown_and_handed_to_on_error():
    work, errors = BackgroundWork(), []

    def job(report):
        raise ValueError("n_epochs must be positive")

    work.submit(job, lambda r: pytest.fail("on_done must not run"), on_error=errors.append)
    assert isinstance(errors[0], ValueError)
    assert "n_epochs must be positive" in work.error and not work.running


def test_error_in_on_done_is_observed():
    work = BackgroundWork()
    work.submit(lambda report: 1, lambda r: 1 / 0)
    assert "ZeroDivisionError" in work.error


class FakeDoc:
    """Stands in for a Bokeh Document: queues next-tick callbacks like the server's loop does."""

    def __init__(self):
        self.queue, self.lock = [], threading.Lock()

    def add_next_tick_callback(self, cb):
        with self.lock:
            self.queue.append(cb)

    def run(self):
        with self.lock:
            todo, self.queue = self.queue, []
        for cb in todo:
            cb()


@pytest.fixture
def served(monkeypatch):
    doc = FakeDoc()
    monkeypatch.setattr(_background, "in_server_session", lambda: True)
    monkeypatch.setattr(_background.pn.state, "curdoc", doc, raising=False)
    return doc


def test_served_job_runs_in_a_worker_and_newest_wins(served):
    work, results = BackgroundWork(), []
    release, started = threading.Event(), threading.Event()
    stop_answers = []

    def slow(report):
        started.set()
        release.wait(10)
        stop_answers.append(report(0.5))  # superseded by then: asked to stop
        return "old"

    work.submit(slow, results.append)
    assert started.wait(10)
    assert work.running and results == []  # nothing ran on the caller's thread
    work.submit(lambda report: "new", results.append)
    release.set()
    _background._EXECUTOR.submit(lambda: None).result(10)  # let both jobs finish
    for _ in range(100):
        served.run()
        if results:
            break
        threading.Event().wait(0.05)
    served.run()
    assert results == ["new"] and stop_answers == [True]
    assert not work.running


def test_served_failure_is_observed(served):
    work, errors = BackgroundWork(), []

    def job(report):
        raise RuntimeError("diverged")

    work.submit(job, lambda r: None, on_error=errors.append)
    for _ in range(100):
        served.run()
        if errors:
            break
        threading.Event().wait(0.05)
    assert isinstance(errors[0], RuntimeError) and "diverged" in work.error


def test_cancel_drops_the_running_job(served):
    work, results = BackgroundWork(), []
    gate = threading.Event()
    work.submit(lambda report: gate.wait(10) or "late", results.append)
    work.cancel()
    gate.set()
    _background._EXECUTOR.submit(lambda: None).result(10)
    threading.Event().wait(0.1)
    served.run()
    assert results == [] and not work.running and work.message == "Cancelled."

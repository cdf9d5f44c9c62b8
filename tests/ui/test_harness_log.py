"""The harness's server-log check: app failures count, websocket teardown noise does not."""

from tests.ui.harness import PanelServer


def test_handler_errors_are_reported_and_teardown_noise_is_not(tmp_path):
    log = tmp_path / "server.log"
    server = PanelServer(log_path=log)
    log.write_text(
        "2026-11-23 16:00:00,000 WebSocket connection opened\n"
        "2026-11-23 16:00:01,000 Task exception was never retrieved\n"
        "Traceback (most recent call last):\n  File x\ntornado.websocket.WebSocketClosedError\n"
        "2026-11-23 16:00:02,000 WebSocket connection closed\n"
    )
    assert server.new_errors() == ""
    with open(log, "a") as f:
        f.write(
            "2026-11-23 16:00:03,000 Error running application handler\n"
            "Traceback (most recent call last):\nValueError: boom\n"
        )
    errors = server.new_errors()
    assert "boom" in errors and "WebSocketClosedError" not in errors
    assert server.new_errors() == ""  # each record is reported once

"""The visual-acceptance helper itself (no browser): empty frames and clipped titles are caught."""

import numpy as np

from tests.ui.visual import PlotBox, content_fraction, server_log_problems


def test_empty_frame_and_faint_grid_count_as_empty_a_line_does_not():
    frame = np.full((200, 300, 3), 255, np.uint8)
    assert content_fraction(frame) == 0.0
    frame[::40, :] = 229  # Bokeh's light grid lines (#e5e5e5)
    assert content_fraction(frame) == 0.0
    frame[100:102, :] = (31, 119, 180)  # one 2-px line across the frame
    assert 0.009 < content_fraction(frame) < 0.011


def _box(title_width, width=400, align="left"):
    return PlotBox("p1", "a title", title_width, align, 0, 0, width, 300, (60, 30, 390, 270))


def test_title_clipped_when_wider_than_the_room_right_of_the_frame():
    assert not _box(300).title_clipped
    assert _box(360).title_clipped  # 400 - 60 = 340 px of room
    assert not _box(380, align="center").title_clipped
    assert _box(300).frame_box(0.0) == (60, 30, 390, 270)


def test_log_problems_are_found(tmp_path):
    class Server:
        def log(self):
            return "ok\n2026 Task exception was never retrieved\nWARNING: responsive mode could not be enabled\n"

    assert len(server_log_problems(Server())) == 2
    assert server_log_problems(Server(), since=3) == server_log_problems(Server())[0:2]

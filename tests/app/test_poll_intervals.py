"""How often the live views reread a run: each second while it trains, every few seconds while it
waits (30 waiting students polling each second load the one server process), never once ended."""

from tl_ui.widgets import QUEUED_POLL_S, poll_every


def test_a_training_run_is_polled_at_the_views_own_pace():
    assert poll_every("running", 1.0) == 1.0
    assert poll_every("running", 2.0) == 2.0


def test_a_queued_run_is_polled_slowly_and_an_ended_one_not_at_all():
    assert poll_every("queued", 1.0) == QUEUED_POLL_S >= 5.0
    for state in ("finished", "cancelled", "failed", "unknown", None):
        assert poll_every(state, 1.0) is None

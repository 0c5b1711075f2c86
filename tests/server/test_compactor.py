"""The auto-compaction policy, with time passed in."""
from engine.server.compactor import REVISION_MODE_INTERVAL, Compactor


def test_periodic_keeps_one_retention_period_of_history():
    c = Compactor(period_seconds=100)
    done = []
    for t in range(0, 401):  # one revision per second
        rev = c.due(float(t), revision=t + 1, compact_revision=done[-1][1] if done else 0)
        if rev is not None:
            done.append((t, rev))
    assert done, "never compacted"
    for t, rev in done:
        # Compacted to a revision from at least 100 s (and at most 110 s) earlier.
        assert 100 <= (t + 1) - rev <= 110, (t, rev)
    assert [t for t, _ in done] == [100, 200, 300, 400]


def test_revision_mode_keeps_n_revisions_every_five_minutes():
    c = Compactor(revisions=1000)
    assert c.due(0.0, 5000, 0) is None               # first call arms the timer
    assert c.due(REVISION_MODE_INTERVAL - 1, 6000, 0) is None
    assert c.due(REVISION_MODE_INTERVAL, 6000, 0) == 5000
    assert c.due(2 * REVISION_MODE_INTERVAL, 5500, 5000) is None  # nothing new to drop


def test_disabled_and_reset():
    assert not Compactor().enabled
    c = Compactor(period_seconds=10)
    for t in range(30):
        c.due(float(t), t, 0)
    c.reset()
    assert c.due(30.0, 30, 0) is None

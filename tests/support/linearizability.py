"""The linearizability checker lives in the product now (raftui/lincheck/checker.py:
the console checks live histories with it); tests/jepsen import it from here."""
from raftui.lincheck.checker import *  # noqa: F401,F403
from raftui.lincheck.checker import (  # noqa: F401  (names the star leaves out)
    _ABSENT, _observed, _observes, _prefix, _prune, _sound_removal,
)

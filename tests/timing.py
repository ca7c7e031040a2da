"""How much a loaded 2-core machine may add to a deadline a test waits on. Tests use time only to show that a
command gives up at its deadline, or that it does not wait for one; never to measure speed (make bench does)."""

SLACK = 3.0  # seconds past a deadline before a test calls it missed

# A timeout long enough that a command which waited for it is told apart from one that did not, with SLACK to
# spare: such a test asserts the command came back within half of it.
LONG_TIMEOUT = 20.0

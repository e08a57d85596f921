"""``python -m ggufkit``: the signal handlers first, so a SIGTERM or Ctrl-C during the imports
exits 143 or 130 like one during the work, then ``ggufkit.cli.main``. Once the command has
finished (its output complete), a SIGTERM during the interpreter's teardown is ignored."""
import signal
import sys

from ggufkit.atomic import Terminated, handle_signals

handle_signals()
try:
    from ggufkit.cli import main
    try:
        main()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
except Terminated:
    sys.stderr.write("terminated\n")
    sys.exit(143)
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    sys.exit(130)

"""The program's entry (``python -m ggufkit`` and the ``ggufkit`` console script): the signal
handlers first, so a SIGTERM or Ctrl-C during the imports exits 143 or 130 like one during the
work, then ``ggufkit.cli.main``."""
import sys

from ggufkit.atomic import Terminated, handle_signals


def main() -> None:
    handle_signals()
    try:
        from ggufkit.cli import main as cli_main
        cli_main()
    except Terminated:
        sys.stderr.write("terminated\n")
        sys.exit(143)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()

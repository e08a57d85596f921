"""Outputs: checked before the work starts, written to a temporary file beside the target and
renamed on success. The one atomic writer of the project (every command that writes uses it).

Signals: SIGTERM raises ``Terminated`` and Ctrl-C ``KeyboardInterrupt`` in the main thread, so the
temp file is removed on the way out. The program's entry (``ggufkit.__main__``, before any heavy
import) and ``ggufkit.cli.main`` install the handlers with ``handle_signals``; ``atomic_path``
installs them too for as long as its temp file exists, when no one else did, and holds a SIGTERM
back while it creates the temp file, so no output ever exists unguarded."""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from ggufkit.errors import GGUFKitError

# errors of the output side (disk full, file too large, read-only, no permission): reported with
# the user's path, never the hidden temp file's
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so writers clean up as on Ctrl-C (atomic_path)."""


_held = {"hold": False, "pending": False}     # atomic_path's few lines between mkstemp and its try


def _on_sigterm(signum, frame):
    if _held["hold"]:
        _held["pending"] = True
        return
    raise Terminated()


def _hold_sigterm(hold: bool) -> None:
    """Hold a SIGTERM back (True), or let a held one go now as Terminated (False); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    _held["hold"] = hold
    if not hold and _held["pending"]:
        _held["pending"] = False
        raise Terminated()


def handle_signals() -> dict:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt (in the main thread; elsewhere a
    no-op). Returns the previous handlers for ``restore_signals``."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    return old


def restore_signals(old: dict) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


def ignore_late_sigterm() -> None:
    """For a program whose command has finished (its output complete): a SIGTERM during the
    interpreter's teardown is ignored rather than killing it by the default handler."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def _guarded() -> Iterator[None]:
    """The handlers of ``handle_signals`` for the duration, unless SIGTERM is handled already."""
    if signal.getsignal(signal.SIGTERM) is _on_sigterm or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = handle_signals()
    try:
        yield
    finally:
        restore_signals(old)


def check_output(target: str | os.PathLike) -> Path:
    """Refuse an output path that cannot be written, before any work is done.

    An existing directory, a parent that is a file, or a parent directory without write
    permission is a GGUFKitError naming ``target``. Missing parent directories are fine
    (``atomic_path`` creates them)."""
    target = Path(target)
    if target.is_dir():
        raise GGUFKitError(f"output {target} is a directory")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise GGUFKitError(f"cannot write {target}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GGUFKitError(f"cannot write {target}: permission denied")
    return target


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it to ``target`` on success.

    On any exception (KeyboardInterrupt and SIGTERM included, see ``ggufkit.cli.main``) the temp
    file is removed and the target is left untouched, so a crash never leaves a half-written file.
    A failure to write (disk full, no permission) is a GGUFKitError naming ``target``.
    """
    target = check_output(target)
    with _guarded():
        _hold_sigterm(True)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        except BaseException as e:
            _hold_sigterm(False)
            if isinstance(e, OSError):
                raise GGUFKitError(f"cannot write {target}: {e.strerror or e}") from None
            raise
        tmp_path = Path(tmp)
        try:
            _hold_sigterm(False)            # a SIGTERM that came meanwhile is raised here, and cleaned up
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
            yield tmp_path
            os.replace(tmp_path, target)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
            if isinstance(e, OSError) and (e.errno in _WRITE_ERRNOS or e.filename == str(tmp_path)):
                raise GGUFKitError(f"cannot write {target}: {e.strerror or e}") from None
            raise

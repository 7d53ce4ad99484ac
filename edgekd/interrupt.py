"""A Ctrl-C that is never lost.

Python turns SIGINT into a KeyboardInterrupt wherever the program happens to be. Some libraries
catch every exception around a model's forward pass (Torch-Pruning's graph tracer has a bare
`except:` and simply calls the model again), so a Ctrl-C that lands there would vanish and the
run would go on to the end.

The CLI installs `remember_interrupts()`: SIGINT still raises KeyboardInterrupt at once, and is
also remembered; the long loops (training batches, search trials, table blocks, pipeline stages)
call `check()`, which raises it again if it was swallowed on the way.

An ignored SIGINT is left ignored: a background job of a non-interactive shell inherits SIGINT
as ignored (so that Ctrl-C at the terminal spares it), and Python keeps it so; edgekd does too.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

_requested = False


def _on_sigint(_signum: int, _frame: Any) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def remember_interrupts() -> Callable[[], None]:
    """Install the handler; returns a function that restores the previous one. Off the main thread
    (edgekd's CLI called from a worker thread) signals cannot be handled, so nothing changes."""
    global _requested
    _requested = False
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return lambda: None
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # "signal only works in main thread of the main interpreter"
        return lambda: None
    return lambda: signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed since the handler was installed (once: the
    request is cleared, so the code that handles it can go on to clean up)."""
    global _requested
    if _requested:
        _requested = False
        raise KeyboardInterrupt

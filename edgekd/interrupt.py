"""A Ctrl-C that is never lost.

Python turns SIGINT into a KeyboardInterrupt wherever the program happens to be. Some libraries
catch every exception around a model's forward pass (Torch-Pruning's graph tracer has a bare
`except:` and simply calls the model again), so a Ctrl-C that lands there vanishes and the run
goes on to the end, which is how the Ctrl-C test once ended with exit 0 on a busy machine.

The CLI installs `remember_interrupts()`: SIGINT still raises KeyboardInterrupt at once, and is
also remembered; the long loops (training batches, search trials, table blocks, pipeline stages)
call `check()`, which raises it again if it was swallowed on the way.
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

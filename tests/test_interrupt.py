"""A Ctrl-C swallowed by a library (a bare `except:`) still stops the run at the next check."""

from __future__ import annotations

import os
import signal

import pytest

from edgekd import interrupt


def _swallowing_library_call() -> None:
    """What Torch-Pruning's tracer does: try the call, and on *any* exception try it another way."""
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands inside the library
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    except:  # noqa: E722 - the point of the test
        pass


@pytest.fixture(autouse=True)
def python_default_sigint():
    """A terminal's process: Python's own SIGINT handler (the suite may run as a background job,
    which inherits SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_swallowed_ctrl_c_is_raised_again_at_the_next_check():
    restore = interrupt.remember_interrupts()
    try:
        _swallowing_library_call()  # the KeyboardInterrupt is lost in there...
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()  # ...and comes back here
        interrupt.check()  # once: the code handling it may go on cleaning up
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sigint_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    restore = interrupt.remember_interrupts()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    restore()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_ctrl_c_still_interrupts_at_once():
    restore = interrupt.remember_interrupts()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    finally:
        restore()


def test_a_training_loop_stops_on_a_swallowed_ctrl_c():
    import torch

    from edgekd.data.datasets import Split
    from edgekd.training import fit

    restore = interrupt.remember_interrupts()
    try:
        _swallowing_library_call()
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        split = Split(torch.rand(8, 1, 2, 2), torch.randint(0, 2, (8,)))
        with pytest.raises(KeyboardInterrupt):
            fit(model, split, split, lambda logits, labels, *_: torch.nn.functional.cross_entropy(logits, labels),
                epochs=1, lr=0.01, batch_size=4, patience=1, seed=0)
    finally:
        restore()

"""Stop training on SIGTERM or SIGINT at the next step, with ``checkpoints/last`` saved.

Why: a preemptible VM, a batch scheduler (SLURM, Kubernetes) or a person at the keyboard ends a
long run with SIGTERM or Ctrl-C and, for the first two, waits a grace period before SIGKILL.
Killed at once, a run loses everything since its last checkpoint (an epoch: minutes to hours on
a large catalog). Here the first signal only asks: the loop finishes the step it is in, saves
``last`` with its batch position and training clock (as a time-budget stop does), and the
command exits with 128 + the signal's number and a line saying that ``--resume`` continues.
A second signal acts at once (the handler is removed after the first), so a stuck save can
still be interrupted; a save cut short that way is refused on restore like any partial one.

Installed only in the main thread of a single-process run: on several hosts every process must
stop at the same step, which one host's signal cannot arrange, so there a signal keeps its
default effect.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import jax


class TrainingStopped(Exception):
    """Training stopped by a signal after saving ``checkpoints/last``; ``--resume`` continues."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """Whether (and by which signal) a stop was asked for; false until one arrives."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, the first of ``signums`` sets the yielded ``StopRequest`` instead of
    ending the process; the handlers in place before are restored after it and at exit."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield request
        return
    previous = {}

    def ask(signum, frame):
        request.signum = signum
        signal.signal(signum, previous[signum])  # a second one acts at once

    for s in signums:
        previous[s] = signal.signal(s, ask)
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

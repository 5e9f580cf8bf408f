"""Validation of large inputs in worker processes, away from the API process's GIL.

Validating a 10,000-op members body takes tens of milliseconds of CPU, mostly in long C
calls (msgspec's decode, orjson's dumps) that hold the GIL throughout. While bulk
requests were validated in the API process, a 100-op update in the same process waited
for the GIL after each of its store round trips: 70-230 ms in all for 4-7 ms of its own
CPU (README, "The store's single thread"). Here inputs of at least ``min_bytes`` are
validated in a pool of processes; smaller ones inline, so a small request never queues
behind bulk work, and the pool's processes use the cores the API's one process could not.

The pool's processes are spawned (the API process has threads, which fork would copy
half-held) and started when the API starts. One that dies is replaced by a new pool; the
input it held is validated inline.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

from worker.settings import Settings

_P = ParamSpec("_P")
_R = TypeVar("_R")


def default_processes() -> int:
    """One per core this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


def _ready() -> None:
    """Runs in each new process once: importing the validation code happens at start."""
    import producer.submit  # noqa: F401


def _exit_with(parent: int) -> None:
    """Each pool process ends when the API process does, however that ends: a killed one
    cannot shut its pool down, and its processes hold their queue's pipe open themselves,
    so they would wait for work forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


class Offload:
    """Runs a validation function inline, or in the pool when its input is large."""

    def __init__(self, processes: int, min_bytes: int) -> None:
        self.processes = processes
        self.min_bytes = min_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Offload:
        processes = settings.validation_processes
        return cls(
            default_processes() if processes is None else processes,
            settings.validation_offload_bytes,
        )

    @classmethod
    def inline(cls) -> Offload:
        """Every input validated in the calling process (the library face's choice)."""
        return cls(0, 0)

    def start(self) -> None:
        """Start the processes now (they import the validation code in the background)."""
        if self.processes > 0:
            pool = self._executor()
            for _ in range(self.processes):
                pool.submit(_ready)

    def run(self, size: int, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``fn(*args)``, in the pool when ``size`` (the input's bytes) is large.

        Blocks the calling thread (not the event loop: callers run in a worker thread);
        its exceptions are raised here as they are.
        """
        if self.processes <= 0 or size < self.min_bytes:
            return fn(*args, **kwargs)
        pool = self._executor()
        try:
            future: Future[_R] = pool.submit(fn, *args, **kwargs)
            return future.result()
        except BrokenProcessPool:
            self._replace(pool)
            return fn(*args, **kwargs)

    def close(self) -> None:
        """Stop the processes and wait for them (an input in flight is finished first)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

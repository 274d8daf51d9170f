"""Where the points of a sweep run: a local process pool (the default) or a Dask cluster (``--cluster``).

Both take the same picklable task, run :func:`hw.explore.points.run_point` on it and hand back its row; the sweep
(:mod:`hw.explore.sweep`) keeps at most :attr:`slots` points in flight, so it knows which ones are running.
"""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any, Protocol

from hw.spec.cli import UsageError

from .points import run_point

__all__ = ["Engine", "LocalPool", "DaskCluster", "open_engine"]


class Engine(Protocol):
    """What the sweep needs of an engine."""

    slots: int
    name: str

    def submit(self, task: dict) -> Any: ...
    def done(self, handle: Any) -> bool: ...
    def result(self, handle: Any) -> dict: ...
    def stop(self) -> None: ...


def _worker_start() -> None:
    """In each pool worker: SIGTERM (the pool's terminate) unwinds like an interrupt, so a running point stops its
    child processes and removes its outputs in progress."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


class LocalPool:
    """``workers`` processes on this machine (spawned: they share nothing with the sweep's process)."""

    def __init__(self, workers: int):
        self.slots = workers
        self.name = f"a local pool of {workers} process{'es' if workers > 1 else ''}"
        self._pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_start,
                                                               maxtasksperchild=None)

    def submit(self, task: dict):
        return self._pool.apply_async(run_point, (task,))

    def done(self, handle) -> bool:
        return handle.ready()

    def result(self, handle) -> dict:
        return handle.get()

    def stop(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def close(self) -> None:
        self._pool.close()
        self._pool.join()


class DaskCluster:
    """The Dask scheduler at ``address`` (``tcp://HOST:PORT``); one slot per worker thread."""

    def __init__(self, address: str, timeout: float = 10.0):
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--cluster needs Dask: pip install -e '.[cluster]'") from None
        try:
            self._client = Client(address, timeout=f"{timeout}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise UsageError(f"--cluster {address}: cannot reach a Dask scheduler there "
                             f"({' '.join(str(e).split())[:160]})") from None
        threads = sum(self._client.nthreads().values())
        self.slots = max(threads, 1)
        self.name = f"the Dask cluster at {address} ({threads} worker thread{'s' if threads != 1 else ''})"
        self._futures: list = []

    def submit(self, task: dict):
        future = self._client.submit(run_point, task, pure=False, key=f"point-{task['point']}-{task['key'][:12]}")
        self._futures.append(future)
        return future

    def done(self, handle) -> bool:
        return handle.done()

    def result(self, handle) -> dict:
        return handle.result()

    def stop(self) -> None:
        self._client.cancel(self._futures, force=True)
        self._client.close()

    def close(self) -> None:
        self._client.close()


def open_engine(cluster: str | None, workers: int):
    """The engine for ``--cluster`` (a Dask address) or a local pool of ``workers``."""
    if cluster is None:
        return LocalPool(workers)
    if cluster.startswith("ray://"):
        raise UsageError(f"--cluster {cluster}: Ray is not supported; give a Dask scheduler address "
                         f"(tcp://HOST:PORT)")
    if not cluster.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        raise UsageError(f"--cluster {cluster[:80]}: not a Dask scheduler address; write tcp://HOST:PORT")
    return DaskCluster(cluster)

"""Worker threads that load a server for the length of a `with` block."""

from __future__ import annotations

import threading


class BackgroundLoad:
    """Calls `self._run(n)` in `threads` daemon threads between `__enter__` and `__exit__`;
    `_run` loops until `self.stop` is set and appends what went wrong to `self.failures`."""

    def __init__(self, threads: int) -> None:
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def _run(self, n: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

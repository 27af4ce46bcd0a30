"""Progress messages for long steps: what is being done and how long it took."""

from __future__ import annotations

import time
from contextlib import contextmanager

__all__ = ["step"]


@contextmanager
def step(what: str):
    """Print ``what``, run the block, then print how long it took."""
    print(f"[arresearch] {what} ...", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"[arresearch] {what}: done in {time.perf_counter() - t0:.1f}s", flush=True)

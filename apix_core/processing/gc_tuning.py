"""The garbage collector's young-generation threshold, raised while batches are processed.

A batch keeps every message's objects alive until it ends (models, dicts, invocations, rows:
thousands of containers per batch of 100). With CPython's default threshold (700 allocations)
the collector ran several times per batch, found nothing to free (refcounting frees a batch
when it ends), and promoted the batch's objects to the older generations, whose collections
then walked the whole heap: about a fifth of the CPU of the local SQLite pipeline. While at
least one batch is in flight (every thread and task counted) the threshold is
:data:`BATCH_GC_THRESHOLD`; the collector still runs when that many objects outlive their
batch, so cyclic garbage stays bounded. The previous threshold is restored when the last batch
ends, unless something else changed it meanwhile.
"""

from __future__ import annotations

import gc
import threading

#: Young-generation threshold while batches are processed (CPython's default: 700).
BATCH_GC_THRESHOLD = 20_000

#: Smaller batches keep fewer objects alive than the default threshold: the handler does not
#: switch for them (a Lambda's SQS batch of 10, one HTTP request).
MIN_GC_BATCH = 20

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None


class batch_gc:  # used like a function: `with batch_gc():`
    """Raise the young-generation threshold for the block (nested and concurrent blocks
    share one raise). A class, not ``@contextmanager``: it wraps every batch."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _active, _saved
        with _lock:
            if _active == 0:
                current = gc.get_threshold()
                # 0 disables automatic collection: leave a tuned or disabled collector alone.
                if 0 < current[0] < BATCH_GC_THRESHOLD:
                    _saved = current
                    gc.set_threshold(BATCH_GC_THRESHOLD, current[1], current[2])
            _active += 1

    def __exit__(self, *exc: object) -> None:
        global _active, _saved
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                if gc.get_threshold()[0] == BATCH_GC_THRESHOLD:  # nobody changed it since
                    gc.set_threshold(*_saved)
                _saved = None

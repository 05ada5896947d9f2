"""``ProcessorContext.for_call`` (the invoker's per-message constructor) sets what ``__init__``
sets: the fast path cannot drift from the public constructor."""

from __future__ import annotations

import logging

from apix_core.context import ProcessorContext
from apix_core.message import Message


def _slots(ctx: ProcessorContext) -> dict[str, object]:
    return {name: getattr(ctx, name) for name in ProcessorContext.__slots__}


def test_for_call_sets_every_slot_as_init_does() -> None:
    # GIVEN a message, a logger and a deadline
    message = Message(tenant_id="t1", payload={"a": 1})
    logger = logging.getLogger("apix.processor.p")

    # WHEN a context is built by each constructor with the same values
    public = ProcessorContext(
        message=message,
        processor_name="p",
        produces=("out",),
        store=None,
        logger=logger,
        access=None,
        deadline=12.5,
    )
    fast = ProcessorContext.for_call(message, "p", ("out",), None, logger, None, 12.5)

    # THEN every slot is set, to equal values, and the mutable ones are fresh per context
    assert _slots(fast) == _slots(public)
    assert fast.outputs is not public.outputs and fast.written is not public.written
    assert fast.time_remaining() is not None and not fast.has_writes

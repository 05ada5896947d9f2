"""Processors that run a pipeline inside their invocations and continue across them.

:func:`register_extract_processors` registers, for one pipeline, the processor of its trigger
(a schedule or a queue) and two continuation processors. Each invocation runs the pipeline
until the invocation's deadline (:meth:`PipelineManager.run_in_processor`); a run cut short
sends a continuation message to the next continuation queue, whose processor resumes at the
saved position. Two continuation queues alternate because a processor may not produce to the
queue it consumes (that would be a loop for every other processor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from apix_core.errors import ConfigurationError

if TYPE_CHECKING:
    from apix_core.app import App
    from apix_core.context import ProcessorContext
    from apix_core.extract.pipeline import PipelineManager
    from apix_core.message import Message
    from apix_core.processor import ProcessorSpec


def continuation_queues(name: str) -> tuple[str, str]:
    """The two continuation queues of the processors named ``name``."""
    return f"{name}.continue", f"{name}.continue-2"


def register_extract_processors(
    app: App,
    manager: PipelineManager,
    pipeline_id: str,
    *,
    name: str | None = None,
    consumes: str | None = None,
    schedule: str | None = None,
    produces: Sequence[str] = (),
    parameters: Mapping[str, Any] | None = None,
    **options: Any,
) -> list[ProcessorSpec]:
    """Register the processors that run ``pipeline_id`` (triggered by ``consumes`` or
    ``schedule``); ``produces`` lists the queues its output sends to (a queue output).

    The trigger message's payload, merged over ``parameters``, gives the pipeline's inputs
    (a continuation carries the inputs of the run it continues).
    """
    from apix_core.extract.pipeline import CONTINUATION_KEY

    if (consumes is None) == (schedule is None):
        raise ConfigurationError(
            "register_extract_processors needs exactly one trigger: consumes= or schedule="
        )
    manager.get_pipeline(pipeline_id)
    base = name or f"extract-{pipeline_id}"
    first, second = continuation_queues(base)
    defaults = dict(parameters or {})

    def runner(continue_on: str) -> Any:
        async def run(message: Message, ctx: ProcessorContext) -> None:
            payload = message.payload if isinstance(message.payload, dict) else {}
            carried = payload.get(CONTINUATION_KEY)
            if isinstance(carried, dict):
                inputs = carried.get("parameters") or {}
            else:
                inputs = {**defaults, **_inputs_of(payload)}
            await manager.run_in_processor(ctx, pipeline_id, inputs, continue_on=continue_on)

        return run

    trigger: dict[str, Any] = {"consumes": consumes} if consumes else {"schedule": schedule}
    return [
        app.register(runner(first), base, produces=[*produces, first], **trigger, **options),
        app.register(
            runner(second),
            f"{base}.continue",
            consumes=first,
            produces=[*produces, second],
            **options,
        ),
        app.register(
            runner(first),
            f"{base}.continue-2",
            consumes=second,
            produces=[*produces, first],
            **options,
        ),
    ]


def _inputs_of(payload: dict[str, Any]) -> dict[str, Any]:
    # A schedule tick's payload describes the tick, not inputs.
    return {k: v for k, v in payload.items() if k not in ("scheduled_time", "schedule")}


__all__ = ["continuation_queues", "register_extract_processors"]

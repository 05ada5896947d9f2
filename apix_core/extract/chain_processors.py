"""Chains as processors: the whole chain in one invocation, or one processor per step.

:func:`register_chain_processors` registers, for one chain:

- ``fan_out=False``: one processor consuming ``consumes``; each message runs the whole chain
  (the message's payload, over the chain's ``parameters``, is the initial state);
- ``fan_out=True``: one processor per step. The first consumes ``consumes``; each step's
  processor sends the new state to the next step's queue (``<name>.<step name>``). When the
  next step is ``parallel``, it sends one message per item instead, so the items run in separate
  invocations (across function instances); from there each item continues the chain on its own.

Either way the last step's records are sent to ``output_queue`` (one message per record) when
given. Every send goes through the processor's outbox, in the transaction that marks the
message processed: a redelivered message sends nothing twice (exactly-once effect).

A failed item under the ``fail`` / ``retry`` policies raises its error, so the core retries the
message and finally dead-letters it; under ``continue`` the failure is logged and the chain goes
on with the other items.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from apix_core.errors import PermanentError
from apix_core.extract.chain_state import ChainState
from apix_core.extract.chains import (
    ChainConfig,
    ChainStepFailed,
    StepResult,
    load_chain_yaml,
    run_step,
    step_items,
)

if TYPE_CHECKING:
    from pathlib import Path

    from apix_core.app import App
    from apix_core.context import ProcessorContext
    from apix_core.message import Message
    from apix_core.processor import ProcessorSpec

logger = logging.getLogger("apix_core.extract.chains")

#: Payload key of a message between two steps of a fanned-out chain.
CHAIN_KEY = "apix_chain"


class ChainMessageError(PermanentError):
    """A step message does not carry the chain state the step's processor expects."""

    code = "EXTRACT_CHAIN_MESSAGE"


def step_queue(name: str, step_name: str) -> str:
    """The queue the processor of ``step_name`` (not the first step) consumes."""
    return f"{name}.{step_name}"


def register_chain_processors(
    app: App,
    chain: ChainConfig | Mapping[str, Any] | str | Path,
    *,
    consumes: str,
    fan_out: bool = False,
    name: str | None = None,
    output_queue: str | None = None,
    **options: Any,
) -> list[ProcessorSpec]:
    """Register the processor(s) that run ``chain`` for each message on ``consumes``
    (see the module's docstring); ``options`` go to every :meth:`App.register`."""
    if isinstance(chain, Mapping):
        chain = ChainConfig.model_validate(dict(chain))
    elif not isinstance(chain, ChainConfig):
        chain = load_chain_yaml(chain)
    base = name or f"chain-{chain.chain_id}".replace(":", "-")
    outputs: list[str] = [output_queue] if output_queue else []
    if not fan_out:
        return [
            app.register(
                _whole_chain(chain, output_queue),
                base,
                consumes=consumes,
                produces=outputs,
                **options,
            )
        ]
    specs = []
    steps = chain.extractors
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        queue_in = consumes if i == 0 else step_queue(base, step.name or "")
        produces = outputs if last else [step_queue(base, steps[i + 1].name or "")]
        specs.append(
            app.register(
                _one_step(chain, i, None if last else produces[0], output_queue),
                f"{base}.{step.name}",
                consumes=queue_in,
                produces=produces,
                **options,
            )
        )
    return specs


def _initial_state(chain: ChainConfig, payload: Any) -> ChainState:
    inputs = payload if isinstance(payload, dict) else {}
    return ChainState({**chain.parameters, **inputs})


async def _run(
    step_index: int,
    chain: ChainConfig,
    state: ChainState,
    items: list[dict[str, Any]] | None = None,
) -> StepResult:
    step = chain.extractors[step_index]
    try:
        result = await run_step(step, state, items)
    except ChainStepFailed as failed:
        raise failed.error from None
    for failure in result.report.failures:
        logger.warning(
            "chain %s step %s: %s (policy continue: the chain goes on without it)",
            chain.chain_id,
            step.name,
            failure,
        )
    return result


def _send_records(ctx: ProcessorContext, queue: str | None, result: StepResult) -> None:
    if queue is None:
        return
    for record in result.records:
        ctx.send(queue, dict(record))


def _whole_chain(chain: ChainConfig, output_queue: str | None) -> Any:
    async def run_chain(message: Message, ctx: ProcessorContext) -> None:
        state = _initial_state(chain, message.payload)
        result: StepResult | None = None
        for i in range(len(chain.extractors)):
            result = await _run(i, chain, state)
            state = result.state
        assert result is not None
        _send_records(ctx, output_queue, result)

    return run_chain


def _one_step(
    chain: ChainConfig, index: int, next_queue: str | None, output_queue: str | None
) -> Any:
    async def run_chain_step(message: Message, ctx: ProcessorContext) -> None:
        payload = message.payload if isinstance(message.payload, dict) else {}
        items: list[dict[str, Any]] | None = None
        if index == 0:
            state = _initial_state(chain, payload)
        else:
            carried = payload.get(CHAIN_KEY)
            if not isinstance(carried, dict) or not isinstance(carried.get("state"), dict):
                raise ChainMessageError(
                    f"chain {chain.chain_id!r} step {chain.extractors[index].name!r}: the "
                    f"message has no {CHAIN_KEY!r} state; only the chain's first queue takes "
                    f"plain inputs"
                )
            state = ChainState(carried["state"])
            if isinstance(carried.get("item"), dict):
                items = [carried["item"]]
        result = await _run(index, chain, state, items)
        if next_queue is None:
            _send_records(ctx, output_queue, result)
            return
        nxt = chain.extractors[index + 1]
        data = result.state.to_dict()
        if nxt.processing_mode == "parallel":
            for item in step_items(nxt, result.state):
                ctx.send(
                    next_queue,
                    {CHAIN_KEY: {"chain_id": chain.chain_id, "state": data, "item": item}},
                )
        else:
            ctx.send(next_queue, {CHAIN_KEY: {"chain_id": chain.chain_id, "state": data}})

    return run_chain_step


__all__ = ["CHAIN_KEY", "ChainMessageError", "register_chain_processors", "step_queue"]

"""``async with`` for anything closed by an async ``close()``: stdlib only, so any module may
use it without making ``import apix_core`` heavier."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """``async with`` for anything with an async :meth:`close` (extractors, outputs, clients,
    test apps): ``__aexit__`` closes, whatever happened in the block."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

"""Built-in outputs of extraction, registered in ``OutputFactory`` on import: ``jsonl``
(partitioned, atomic files), ``queue`` (apix messages with ids derived from the records) and
``entity`` (entity metadata through the core's entity service)."""

from __future__ import annotations

from apix_core.extract.outputs.buffered import BufferedOutput
from apix_core.extract.outputs.entity import EntityOutput, EntityOutputConfig
from apix_core.extract.outputs.jsonl import JsonlOutput, JsonlOutputConfig, PartitionError
from apix_core.extract.outputs.queue import QueueOutput, QueueOutputConfig, RecordKeyError

__all__ = [
    "BufferedOutput",
    "EntityOutput",
    "EntityOutputConfig",
    "JsonlOutput",
    "JsonlOutputConfig",
    "PartitionError",
    "QueueOutput",
    "QueueOutputConfig",
    "RecordKeyError",
]

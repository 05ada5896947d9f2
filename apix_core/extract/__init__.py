"""API extraction: extractors, pagination, auth, rate limits, retries, outputs.

Names are exported lazily (``from apix_core.extract import HttpExtractor`` imports httpx then,
not before), so ``import apix_core`` and even ``import apix_core.extract`` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # interfaces and registries
    "BaseExtractor": "base",
    "BaseOutput": "base",
    "OutputResult": "base",
    "ExtractorFactory": "base",
    "OutputFactory": "base",
    # configs
    "ExtractorConfig": "config",
    "PaginationConfig": "config",
    "WatermarkConfig": "config",
    "RetryConfig": "config",
    "RateLimitConfig": "config",
    "BatchConfig": "config",
    "OutputBatchConfig": "config",
    "ApiKeyAuthConfig": "config",
    "BearerAuthConfig": "config",
    "BasicAuthConfig": "config",
    "OAuth2ClientCredentialsConfig": "config",
    "parse_config": "config",
    "parse_duration": "config",
    # errors
    "ExtractError": "exceptions",
    "ExtractConfigError": "exceptions",
    "ExtractDependencyError": "exceptions",
    "ExtractRequestError": "exceptions",
    "ExtractHTTPStatusError": "exceptions",
    "ExtractAuthError": "exceptions",
    "MalformedResponseError": "exceptions",
    "PaginationLoopError": "exceptions",
    "UnknownComponentError": "exceptions",
    # the HTTP engine (imports httpx)
    "HttpExtractor": "http",
    "ExtractClient": "client",
    "Paginator": "paginators",
    "TokenBucket": "ratelimit",
    "RequestBudget": "ratelimit",
    "select": "selectors",
    # incremental loads, outputs, pipelines
    "Incremental": "incremental",
    "IncrementalError": "incremental",
    "WatermarkStore": "watermarks",
    "WatermarkConflictError": "watermarks",
    "InvalidWatermarkError": "watermarks",
    "JsonlOutput": "outputs.jsonl",
    "QueueOutput": "outputs.queue",
    "EntityOutput": "outputs.entity",
    "PipelineManager": "pipeline",
    "PipelineConfig": "pipeline",
    "PipelineBusyError": "pipeline",
    "load_pipeline_yaml": "pipeline",
    "register_extract_processors": "processors",
    # windows, parallel fetching, chains, more sources
    "WindowConfig": "config",
    "ParallelConfig": "config",
    "plan_windows": "windows",
    "ParallelExtractor": "parallel",
    "ChainConfig": "chains",
    "ChainExecutor": "chains",
    "ChainReport": "chains",
    "load_chain_yaml": "chains",
    "register_chain_processors": "chain_processors",
    "SqlExtractor": "sql",
    "FileExtractor": "files",
}

if TYPE_CHECKING:
    from apix_core.extract.base import (
        BaseExtractor,
        BaseOutput,
        ExtractorFactory,
        OutputFactory,
        OutputResult,
    )
    from apix_core.extract.chain_processors import register_chain_processors
    from apix_core.extract.chains import ChainConfig, ChainExecutor, ChainReport, load_chain_yaml
    from apix_core.extract.client import ExtractClient
    from apix_core.extract.config import (
        ApiKeyAuthConfig,
        BasicAuthConfig,
        BatchConfig,
        BearerAuthConfig,
        ExtractorConfig,
        OAuth2ClientCredentialsConfig,
        OutputBatchConfig,
        PaginationConfig,
        ParallelConfig,
        RateLimitConfig,
        RetryConfig,
        WatermarkConfig,
        WindowConfig,
        parse_config,
        parse_duration,
    )
    from apix_core.extract.exceptions import (
        ExtractAuthError,
        ExtractConfigError,
        ExtractDependencyError,
        ExtractError,
        ExtractHTTPStatusError,
        ExtractRequestError,
        MalformedResponseError,
        PaginationLoopError,
        UnknownComponentError,
    )
    from apix_core.extract.files import FileExtractor
    from apix_core.extract.http import HttpExtractor
    from apix_core.extract.incremental import Incremental, IncrementalError
    from apix_core.extract.outputs.entity import EntityOutput
    from apix_core.extract.outputs.jsonl import JsonlOutput
    from apix_core.extract.outputs.queue import QueueOutput
    from apix_core.extract.paginators import Paginator
    from apix_core.extract.parallel import ParallelExtractor
    from apix_core.extract.pipeline import (
        PipelineBusyError,
        PipelineConfig,
        PipelineManager,
        load_pipeline_yaml,
    )
    from apix_core.extract.processors import register_extract_processors
    from apix_core.extract.ratelimit import RequestBudget, TokenBucket
    from apix_core.extract.selectors import select
    from apix_core.extract.sql import SqlExtractor
    from apix_core.extract.watermarks import (
        InvalidWatermarkError,
        WatermarkConflictError,
        WatermarkStore,
    )
    from apix_core.extract.windows import plan_windows


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'apix_core.extract' has no attribute {name!r}")
    try:
        imported = importlib.import_module(f"apix_core.extract.{module}")
    except ModuleNotFoundError as exc:
        from apix_core.extract.exceptions import missing_extra

        raise (missing_extra(exc) or exc) from None
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ApiKeyAuthConfig",
    "BaseExtractor",
    "BaseOutput",
    "BasicAuthConfig",
    "BatchConfig",
    "BearerAuthConfig",
    "ChainConfig",
    "ChainExecutor",
    "ChainReport",
    "EntityOutput",
    "ExtractAuthError",
    "ExtractClient",
    "ExtractConfigError",
    "ExtractDependencyError",
    "ExtractError",
    "ExtractHTTPStatusError",
    "ExtractRequestError",
    "ExtractorConfig",
    "ExtractorFactory",
    "FileExtractor",
    "HttpExtractor",
    "Incremental",
    "IncrementalError",
    "InvalidWatermarkError",
    "JsonlOutput",
    "MalformedResponseError",
    "OAuth2ClientCredentialsConfig",
    "OutputBatchConfig",
    "OutputFactory",
    "OutputResult",
    "PaginationConfig",
    "PaginationLoopError",
    "Paginator",
    "ParallelConfig",
    "ParallelExtractor",
    "PipelineBusyError",
    "PipelineConfig",
    "PipelineManager",
    "QueueOutput",
    "RateLimitConfig",
    "RequestBudget",
    "RetryConfig",
    "SqlExtractor",
    "TokenBucket",
    "UnknownComponentError",
    "WatermarkConfig",
    "WatermarkConflictError",
    "WatermarkStore",
    "WindowConfig",
    "load_chain_yaml",
    "load_pipeline_yaml",
    "parse_config",
    "parse_duration",
    "plan_windows",
    "register_chain_processors",
    "register_extract_processors",
    "select",
]

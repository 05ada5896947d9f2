"""Extraction configs and registries: typed, strict, and errors that name the key and value."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from apix_core.errors import ConfigurationError
from apix_core.extract import (
    BaseExtractor,
    BaseOutput,
    ExtractConfigError,
    ExtractorConfig,
    ExtractorFactory,
    OutputBatchConfig,
    OutputFactory,
    OutputResult,
    PaginationConfig,
    WatermarkConfig,
    parse_config,
    parse_duration,
)
from apix_core.extract.exceptions import UnknownComponentError


def test_config_error_names_the_bad_key_and_value() -> None:
    # GIVEN a pagination type nobody supports WHEN the extractor config is parsed
    with pytest.raises(ExtractConfigError) as info:
        parse_config(
            ExtractorConfig,
            {"base_url": "http://api", "pagination": {"type": "pagenumber"}},
        )
    # THEN the error says which key and which value, and is a ConfigurationError
    assert info.value.key == "pagination.type"
    assert info.value.value == "pagenumber"
    assert "pagination.type" in str(info.value) and "'pagenumber'" in str(info.value)
    assert isinstance(info.value, ConfigurationError)


def test_unknown_key_is_an_error_not_ignored() -> None:
    with pytest.raises(ExtractConfigError, match=r"retry\.max_attempt: unknown key"):
        parse_config(ExtractorConfig, {"base_url": "http://a", "retry": {"max_attempt": 3}})


@pytest.mark.parametrize(
    ("auth", "suggestion"),
    [
        ({"type": "bearer", "tokn": "SENTINEL-misspelt-4711"}, "token"),
        ({"type": "basic", "username": "u", "pasword": "SENTINEL-misspelt-4711"}, "password"),
        ({"type": "api_key", "key": "SENTINEL-misspelt-4711"}, None),
    ],
)
def test_a_misspelt_secret_key_never_prints_its_value(
    auth: dict[str, Any], suggestion: str | None
) -> None:
    # GIVEN a secret under a key the config does not know (so nothing marks it as secret)
    with pytest.raises(ExtractConfigError) as info:
        parse_config(ExtractorConfig, {"base_url": "http://a", "auth": auth})
    # THEN the error names the key, not its value, and suggests the key meant
    assert "SENTINEL-misspelt-4711" not in str(info.value)
    assert "SENTINEL-misspelt-4711" not in repr(info.value.value)
    if suggestion:
        assert f"(did you mean '{suggestion}'?)" in str(info.value)


def test_unknown_keys_suggest_the_key_meant() -> None:
    with pytest.raises(ExtractConfigError) as info:
        parse_config(
            ExtractorConfig,
            {"base_url": "http://a", "data_selecter": "x", "pagination": {"page_sise": 4}},
        )
    assert "data_selecter: unknown key (did you mean 'data_selector'?)" in str(info.value)
    assert "pagination.page_sise: unknown key (did you mean 'page_size'?)" in str(info.value)


def test_secret_values_never_appear_in_config_errors_or_reprs() -> None:
    sentinel = "SENTINEL-secret-4711"
    config = parse_config(
        ExtractorConfig,
        {"base_url": "http://a", "auth": {"type": "bearer", "token": sentinel}},
    )
    assert sentinel not in repr(config) and sentinel not in str(config.model_dump())
    with pytest.raises(ExtractConfigError) as info:
        parse_config(
            ExtractorConfig,
            {"base_url": "http://a", "auth": {"type": "basic", "password": sentinel}},
        )
    assert "auth.username: required and missing" in str(info.value)
    assert sentinel not in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("1d", 86400), (12, 12), ("250ms", 0.25)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_bad_duration_names_the_field() -> None:
    with pytest.raises(ExtractConfigError, match=r"max_lateness.*'an hour'"):
        parse_config(WatermarkConfig, {"field": "updated_at", "max_lateness": "an hour"})


def test_seed_defaults() -> None:
    assert OutputBatchConfig().max_batch_bytes == 5_000_000
    mark = parse_config(WatermarkConfig, {"field": "ts", "max_lateness": "2h"})
    assert mark.timestamp_field == "ts" and mark.max_lateness == timedelta(hours=2)
    assert PaginationConfig.model_validate({"type": "link"}).type == "link_header"


def test_factories_register_and_create() -> None:
    class Fixed(BaseExtractor):
        config_model = PaginationConfig

        def __init__(self, config: PaginationConfig) -> None:
            self.config = config

        async def extract_stream(self, inputs: Any = None) -> Any:
            yield [{"n": 1}]

    ExtractorFactory.register("fixed-test")(Fixed)
    made = ExtractorFactory.create("fixed-test", {"type": "page_number", "max_pages": 2})
    assert isinstance(made, Fixed) and made.config.max_pages == 2
    with pytest.raises(ExtractConfigError, match=r"extractor\.max_pages"):
        ExtractorFactory.create("fixed-test", {"max_pages": 0})
    with pytest.raises(UnknownComponentError, match="no output named 'nope'"):
        OutputFactory.create("nope", {})
    with pytest.raises(TypeError):
        OutputFactory.register("bad")(Fixed)  # type: ignore[arg-type]


async def test_base_output_write_stream_merges_results() -> None:
    class Counting(BaseOutput):
        async def write(self, records: list[dict[str, Any]]) -> OutputResult:
            return OutputResult(len(records), 1, 0, ["mem"])

    async def batches() -> Any:
        for n in (2, 0, 3):
            yield [{}] * n

    result = await Counting().write_stream(batches())
    assert (result.records_written, result.batches_written, result.locations) == (5, 2, ["mem"])

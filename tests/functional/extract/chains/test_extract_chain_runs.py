"""Chains run against the real loopback API: state passed between steps, the three processing
modes, the error policies, partial-success reports and parallel chains under one cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from extract_api_server import ApiServer

from apix_core.extract.base import BaseExtractor, ExtractorFactory, Inputs, Record
from apix_core.extract.chain_state import ChainState
from apix_core.extract.chains import ChainConfig, ChainExecutor

NO_RETRY = {"max_attempts": 1}


def _chain(api: ApiServer, mode: str = "parallel", **step2: Any) -> ChainConfig:
    return ChainConfig.model_validate(
        {
            "chain_id": "users_repos",
            "extractors": [
                {
                    "name": "users",
                    "extractor": "http",
                    "config": {
                        "base_url": api.url,
                        "path": "/pages",
                        "params": {"total": "{total}"},
                        "data_selector": "data",
                        "pagination": {
                            "type": "page_number",
                            "page_param": "page",
                            "page_size_param": "per_page",
                            "page_size": 2,
                            "total_pages_path": "meta.total_pages",
                        },
                    },
                    "input_mapping": {"total": "total"},
                    "output_mapping": {"name": "user_names"},
                },
                {
                    "name": "repos",
                    "extractor": "http",
                    "config": {
                        "base_url": api.url,
                        "path": "/users/{user}/repos",
                        "data_selector": "data",
                    },
                    "processing_mode": mode,
                    "input_mapping": {"user": "user_names"},
                    "output_mapping": {"repo": "repos", "*": "repo_records"},
                    **step2,
                },
            ],
        }
    )


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
async def test_each_step_reads_the_state_the_previous_one_left(api: ApiServer, mode: str) -> None:
    # GIVEN a chain: list 5 users (3 pages), then each user's repos
    chain = _chain(api, mode)
    # WHEN run with the chain's input
    report = await ChainExecutor().execute_single_chain(chain, {"total": 5})
    # THEN step 2 ran once per user, in the users' order, and the state holds both outputs
    assert report.status == "succeeded", report.summary()
    users = [f"item-{i}" for i in range(5)]
    assert list(report.state["user_names"]) == users
    assert [r["user"] for r in report.records] == [u for u in users for _ in range(2)]
    assert list(report.state["repos"]) == ["r0", "r1"] * 5
    assert [(s.name, s.status, s.items_total, s.records) for s in report.steps] == [
        ("users", "succeeded", 1, 5),
        ("repos", "succeeded", 5, 10),
    ]
    assert len(api.requests_to("/pages")) == 3


async def test_single_mode_passes_a_list_as_it_is(api: ApiServer) -> None:
    # GIVEN the same chain with step 2 in single mode, fed one literal user
    chain = _chain(api, "single")
    chain.extractors[1].input_mapping = {"user": "who"}
    report = await ChainExecutor().execute_single_chain(chain, {"total": 2, "who": "ada"})
    # THEN step 2 ran once
    assert report.steps[1].items_total == 1
    assert {r["user"] for r in report.records} == {"ada"}


async def test_the_state_is_immutable_and_each_step_makes_a_new_one() -> None:
    first = ChainState({"ids": [1, 2], "cfg": {"a": 1}})
    second = first.updated({"more": [3]})
    with pytest.raises(TypeError):
        first["cfg"]["a"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        first["ids"].append(3)
    assert "more" not in first and list(second["more"]) == [3]
    assert second.to_dict() == {"ids": [1, 2], "cfg": {"a": 1}, "more": [3]}


async def test_a_failing_item_under_fail_stops_the_chain_and_the_report_says_why(
    api: ApiServer,
) -> None:
    # GIVEN step 2 hits a path that answers 404 for every user (the extractor does not retry it)
    chain = _chain(api, "sequential")
    chain.extractors[1].config = {
        "base_url": api.url,
        "path": "/status/404",
        "params": {"u": "{user}"},
    }
    chain.extractors.append(chain.extractors[0].model_copy(update={"name": "never"}))
    # WHEN run
    report = await ChainExecutor().execute_single_chain(chain, {"total": 3})
    # THEN the chain failed at its first failing item; the step after is skipped
    assert report.status == "failed"
    assert [s.status for s in report.steps] == ["succeeded", "failed", "skipped"]
    ((step, failure),) = report.failures
    assert step == "repos" and failure.index == 0 and failure.inputs == {"user": "item-0"}
    assert failure.error_type == "ExtractHTTPStatusError" and "404" in failure.message
    assert len(api.requests_to("/status/404")) == 1
    assert "failed item 0" in report.summary()


async def test_continue_reports_the_failed_items_and_keeps_the_rest(api: ApiServer) -> None:
    # GIVEN users whose repos come from a path that fails for exactly one of them
    @ExtractorFactory.register("test.picky")
    class Picky(BaseExtractor):
        async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
            assert isinstance(inputs, dict)
            if inputs["user"] == "item-1":
                raise LookupError("item-1 has no repos")
            yield [{"user": inputs["user"]}]

    chain = _chain(api, "parallel", error_policy={"mode": "continue"})
    chain.extractors[1].extractor, chain.extractors[1].config = "test.picky", None
    chain.extractors[1].output_mapping = {"user": "done"}
    # WHEN run
    report = await ChainExecutor().execute_single_chain(chain, {"total": 3})
    # THEN a partial success: two items through, one reported with its inputs and error
    assert report.status == "partial"
    step = report.steps[1]
    assert (step.status, step.items_total, step.items_failed) == ("partial", 3, 1)
    assert [(f.index, f.inputs, f.error_type, f.message) for f in step.failures] == [
        (1, {"user": "item-1"}, "LookupError", "item-1 has no repos")
    ]
    assert list(report.state["done"]) == ["item-0", "item-2"]


async def test_retry_retries_an_item_alone_with_backoff_then_succeeds(api: ApiServer) -> None:
    # GIVEN step 2 calls an endpoint that fails twice (503) per user before answering
    chain = _chain(
        api,
        "parallel",
        error_policy={"mode": "retry", "max_retries": 2, "backoff_seconds": 0.05},
    )
    chain.extractors[1].config = {
        "base_url": api.url,
        "path": "/flaky",
        "params": {"key": "{user}", "fail": 2},
        "data_selector": "data",
        "retry": NO_RETRY,
    }
    # WHEN run
    started = asyncio.get_running_loop().time()
    report = await ChainExecutor().execute_single_chain(chain, {"total": 2})
    # THEN each user's extraction was tried three times; the waits grew (0.05 + 0.1)
    assert report.status == "succeeded", report.summary()
    assert report.steps[1].retries == 4
    assert len(api.requests_to("/flaky")) == 6
    assert asyncio.get_running_loop().time() - started >= 0.15


async def test_retry_gives_up_after_max_retries_and_fails(api: ApiServer) -> None:
    chain = _chain(
        api, "sequential", error_policy={"mode": "retry", "max_retries": 1, "backoff_seconds": 0}
    )
    chain.extractors[1].config = {
        "base_url": api.url,
        "path": "/flaky",
        "params": {"key": "z{user}", "fail": 5},
        "data_selector": "data",
        "retry": NO_RETRY,
    }
    report = await ChainExecutor().execute_single_chain(chain, {"total": 2})
    assert report.status == "failed"
    ((_, failure),) = report.failures
    assert failure.attempts == 2 and failure.error_type == "ExtractRequestError"


async def test_a_missing_state_key_fails_the_step_with_a_clear_message(api: ApiServer) -> None:
    chain = _chain(api)
    chain.extractors[1].input_mapping = {"user": "nobody_set_this"}
    report = await ChainExecutor().execute_single_chain(chain, {"total": 1})
    assert report.status == "failed"
    assert "reads state key 'nobody_set_this'" in (report.steps[1].error or "")


async def test_parallel_chains_run_under_max_parallel_chains(api: ApiServer) -> None:
    # GIVEN one chain to run for 6 inputs, at most 2 at a time, on a slow endpoint
    running = 0
    peak = 0

    @ExtractorFactory.register("test.slow")
    class Slow(BaseExtractor):
        async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            assert isinstance(inputs, dict)
            yield [{"n": inputs["n"]}]

    chain = ChainConfig.model_validate(
        {
            "chain_id": "slow",
            "extractors": [
                {
                    "extractor": "test.slow",
                    "input_mapping": {"n": "n"},
                    "output_mapping": {"n": "n"},
                }
            ],
        }
    )
    # WHEN run in parallel
    reports = await ChainExecutor().execute_parallel_chains(
        chain, [{"n": i} for i in range(6)], max_parallel_chains=2
    )
    # THEN reports come back in input order and never more than 2 ran at once
    assert [list(r.state["n"]) for r in reports] == [[i] for i in range(6)]
    assert peak == 2
    # AND a list of (chain, inputs) pairs works too, limited by the chain's own setting
    chain.max_parallel_chains = 1
    peak = 0
    reports = await ChainExecutor().execute_parallel_chains([(chain, {"n": 1}), (chain, {"n": 2})])
    assert peak == 1 and all(r.ok for r in reports)


async def test_several_iterated_lists_are_zipped_and_must_be_equal_in_length() -> None:
    # GIVEN a step iterating two state lists, pairwise
    @ExtractorFactory.register("test.pair")
    class Pair(BaseExtractor):
        async def extract_stream(self, inputs: Inputs = None) -> AsyncIterator[list[Record]]:
            assert isinstance(inputs, dict)
            yield [{"pair": f"{inputs['a']}{inputs['b']}", "tag": inputs["tag"]}]

    chain = ChainConfig.model_validate(
        {
            "chain_id": "pairs",
            "extractors": [
                {
                    "extractor": "test.pair",
                    "processing_mode": "sequential",
                    "input_mapping": {"a": "letters", "b": "digits", "tag": "cfg.tag"},
                    "output_mapping": {"pair": "pairs"},
                }
            ],
        }
    )
    inputs = {"letters": ["x", "y"], "digits": [1, 2], "cfg": {"tag": "t"}}
    report = await ChainExecutor().execute_single_chain(chain, inputs)
    # THEN one extraction per pair; a non-list value (a dotted path here) is passed to each
    assert list(report.state["pairs"]) == ["x1", "y2"]
    assert {r["tag"] for r in report.records} == {"t"}
    # AND lists of different lengths fail the step with both lengths named
    bad = await ChainExecutor().execute_single_chain(chain, {**inputs, "digits": [1]})
    assert bad.status == "failed"
    assert "different lengths {'a': 2, 'b': 1}" in (bad.steps[0].error or "")


def test_the_backoff_grows_and_is_capped() -> None:
    from apix_core.extract.chains import ErrorPolicy

    policy = ErrorPolicy(mode="retry", backoff_seconds=1, max_backoff_seconds=5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert ErrorPolicy(mode="retry", backoff="fixed").delay(4) == 0.5
    assert ErrorPolicy(mode="continue").retries() == 0

"""Chain YAML: the keys of a chain, and validation errors that point at the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from apix_core.extract.chains import ChainConfig, load_chain_yaml
from apix_core.extract.exceptions import ExtractConfigError

GOOD = """\
chain_id: users_and_repos
parameters:
  total: 3
extractors:
  - extractor: http
    config: {base_url: "http://127.0.0.1:1", path: /pages, data_selector: data}
    input_mapping: {total: total}
    output_mapping: {id: user_ids}
  - extractor_class: http
    name: repos
    processing_mode: parallel
    input_mapping: {user_id: user_ids}
    error_handling: {mode: continue, max_retries: 2, backoff: fixed}
"""


def test_a_chain_file_loads_with_its_steps_modes_and_policies(tmp_path: Path) -> None:
    # GIVEN a chain file using both spellings the seed design uses (extractor_class, error_handling)
    path = tmp_path / "chain.yaml"
    path.write_text(GOOD)
    # WHEN loaded
    chain = load_chain_yaml(path)
    # THEN steps keep their order, get names, modes and policies
    assert isinstance(chain, ChainConfig)
    assert chain.chain_id == "users_and_repos"
    assert [s.name for s in chain.extractors] == ["step1", "repos"]
    assert [s.processing_mode for s in chain.extractors] == ["single", "parallel"]
    policy = chain.extractors[1].error_policy
    assert (policy.mode, policy.retries(), policy.delay(3)) == ("continue", 2, 0.5)
    assert chain.extractors[0].error_policy.retries() == 0


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            GOOD.replace("processing_mode: parallel", "processing_mode: sideways"),
            r"extractors\.1\.processing_mode \(line 11\): .*'single', 'sequential' or 'parallel'",
        ),
        (
            GOOD.replace("chain_id: users_and_repos", "chain_id: users and repos"),
            r"chain_id \(line 1\)",
        ),
        (
            GOOD.replace("    input_mapping: {total: total}", "    input_maping: {total: total}"),
            r"extractors\.0\.input_maping \(line 7\): unknown key",
        ),
        (
            GOOD.replace("mode: continue", "mode: ignore"),
            r"extractors\.1\.error_handling\.mode \(line 13\)",
        ),
        (
            GOOD.replace("extractors:", "steps:"),
            r"extractors \(line 1\): required and missing; steps \(line 4\): unknown key",
        ),
        ("chain_id: x\nextractors: [\n", r"chain line \d+: not valid YAML"),
    ],
)
def test_an_invalid_chain_names_the_key_and_its_line(text: str, pattern: str) -> None:
    with pytest.raises(ExtractConfigError, match=pattern):
        load_chain_yaml(text)


def test_an_unknown_extractor_names_the_step_and_its_line() -> None:
    # GIVEN a step whose extractor is neither registered nor importable
    text = GOOD.replace("extractor_class: http", "extractor_class: githubb")
    # THEN the error points at that key and says how to register one
    with pytest.raises(ExtractConfigError) as info:
        load_chain_yaml(text)
    assert "extractors.1.extractor_class (line 9)" in str(info.value)
    assert "register" in str(info.value)
    assert info.value.key == "extractors.1.extractor_class"


def test_a_class_path_names_an_extractor() -> None:
    text = GOOD.replace(
        "extractor_class: http", "extractor_class: apix_core.extract.http:HttpExtractor"
    )
    assert load_chain_yaml(text).extractors[1].extractor.endswith(":HttpExtractor")
    bad = GOOD.replace("extractor_class: http", "extractor_class: apix_core.extract.http:Nope")
    with pytest.raises(ExtractConfigError, match="no BaseExtractor subclass named 'Nope'"):
        load_chain_yaml(bad)


def test_duplicate_step_names_are_refused() -> None:
    text = GOOD.replace("name: repos", "name: step1")
    with pytest.raises(ExtractConfigError, match="two steps are named 'step1'"):
        load_chain_yaml(text)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ExtractConfigError, match="cannot read the chain file"):
        load_chain_yaml(tmp_path / "absent.yaml")


def test_a_step_config_error_names_the_file_and_its_line(tmp_path: Path) -> None:
    # GIVEN a chain file whose first step has a nested config error (a cursor path that is
    # a number) and a misspelt key
    path = tmp_path / "chain.yaml"
    path.write_text(
        GOOD.replace(
            '    config: {base_url: "http://127.0.0.1:1", path: /pages, data_selector: data}\n',
            "    config:\n"
            "      base_url: http://127.0.0.1:1\n"
            "      path: /pages\n"
            "      pagination: {type: cursor, cursor_path: 5}\n"
            "      data_selecter: data\n",
        )
    )

    # WHEN it is loaded
    with pytest.raises(ExtractConfigError) as info:
        load_chain_yaml(path)

    # THEN each problem is named with its key and line, after the file, as top-level ones are
    message = str(info.value)
    assert message.startswith(f"{path}: invalid ExtractorConfig: ")
    assert "extractors.0.config.pagination.cursor_path (line 9): " in message
    assert "extractors.0.config.data_selecter (line 10): unknown key" in message

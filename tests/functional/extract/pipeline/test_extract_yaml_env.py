"""``${NAME}`` in pipeline and chain YAML: secrets and addresses from the environment."""

from __future__ import annotations

import pytest

from apix_core.extract import ExtractConfigError
from apix_core.extract.chains import load_chain_yaml
from apix_core.extract.pipeline import load_pipeline_yaml

PIPELINE = """\
pipeline_id: orders
extractor:
  base_url: ${SHOP_URL}
  path: /orders
  auth:
    type: bearer
    token: ${SHOP_TOKEN}
  headers:
    X-Region: ${SHOP_REGION:-eu}
    X-Literal: $${NOT_EXPANDED}
output: {type: jsonl, config: {path: /tmp/out}}
"""


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a pipeline whose address and token are environment variables
    monkeypatch.setenv("SHOP_URL", "https://shop.example.com")
    monkeypatch.setenv("SHOP_TOKEN", "tok-from-env")
    monkeypatch.delenv("SHOP_REGION", raising=False)

    # WHEN it is loaded
    config = load_pipeline_yaml(PIPELINE)

    # THEN the values are substituted, a default applies, and $${ stays a literal ${
    settings = config.extractor.settings()
    assert settings["base_url"] == "https://shop.example.com"
    assert settings["auth"]["token"] == "tok-from-env"
    assert settings["headers"] == {"X-Region": "eu", "X-Literal": "${NOT_EXPANDED}"}


def test_a_missing_variable_names_itself_its_key_and_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a pipeline whose token variable is not set
    monkeypatch.setenv("SHOP_URL", "https://shop.example.com")
    monkeypatch.delenv("SHOP_TOKEN", raising=False)

    # WHEN it is loaded
    with pytest.raises(ExtractConfigError) as error:
        load_pipeline_yaml(PIPELINE)

    # THEN the error says which variable, where, and how to give a default
    assert str(error.value) == (
        "pipeline: extractor.auth.token (line 7): environment variable SHOP_TOKEN is not set "
        "(set it, or give a default: ${SHOP_TOKEN:-value})"
    )
    assert error.value.key == "extractor.auth.token"


def test_chains_expand_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a chain whose parameter comes from the environment
    monkeypatch.setenv("CHAIN_ORG", "acme")
    text = (
        "chain_id: c\nparameters: {org: '${CHAIN_ORG}'}\nextractors:\n"
        "  - extractor: http\n    config: {base_url: 'https://x.example.com'}\n"
    )

    # WHEN it is loaded
    chain = load_chain_yaml(text)

    # THEN the parameter holds the variable's value
    assert chain.parameters == {"org": "acme"}

"""Scalars in a source's params and headers: the text the vendor receives (apilake.param_text)."""

from __future__ import annotations

import pytest
import yaml

from apilake.config import parse_sources
from tests.unit.test_config import doc


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("all", "all"),
        ("'200'", "200"),
        ("200", "200"),
        ("-3", "-3"),
        ("1_000", "1000"),
        ("2.5", "2.5"),
        ("1.0", "1.0"),
        ("0.0000001", "0.0000001"),
        ("1.5e+20", "150000000000000000000"),
        ("true", "true"),
        ("False", "false"),
        ("'true'", "true"),
        ("''", ""),
    ],
)
def test_a_scalar_in_params_and_headers_is_sent_as_text(written: str, sent: str) -> None:
    # given a value written in the sources file, unquoted or quoted
    raw = yaml.safe_load(f"{{params: {{v: {written}}}, headers: {{X-V: {written}}}}}")
    # when the file is validated
    source = parse_sources(doc(**raw), "sources.yaml").get("api-x")
    # then both carry the text the vendor receives; a string is kept as written
    assert source.params == {"v": sent}
    assert source.headers == {"X-V": sent}

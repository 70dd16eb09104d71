"""Every YAML example of docs/configuration.md loads, and each sample `apilake sources validate` output is the
loader's own for the file shown above it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.config import load_sources, parse_sources
from apilake.exceptions import ConfigError
from apilake_dev import paths

DOC = paths.ROOT / "docs" / "configuration.md"
# A fenced block: its language (yaml, json, none...) and its text, indentation of a list item removed.
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL)
VALIDATE = "$ apilake sources validate sources.yaml\n"
# What a fragment (some fields of a source, or sources without them) lacks to be a whole file.
REQUIRED = {
    "base_url": "https://api.example.com",
    "path": "/v1/x",
    "records_path": "data",
    "pagination": {"type": "single"},
}


def blocks() -> list[tuple[str, str]]:
    found = []
    for match in FENCE.finditer(DOC.read_text(encoding="utf-8")):
        indent = len(match.group("indent"))
        body = "".join(line[indent:] for line in match.group("body").splitlines(keepends=True))
        found.append((match.group("lang"), body))
    return found


def comment_only(body: str) -> bool:
    try:
        return yaml.safe_load(body) is None
    except yaml.YAMLError:
        return False  # the test says why


def examples() -> list[Any]:
    """Each YAML block, as a whole file or a fragment; those with a sample output after them are in refusals()."""
    found = []
    all_blocks = blocks()
    for index, (lang, body) in enumerate(all_blocks):
        refused = index + 1 < len(all_blocks) and all_blocks[index + 1][1].startswith(VALIDATE)
        if lang == "yaml" and not comment_only(body) and not refused:
            found.append(pytest.param(body, id=f"block{index}-line1:{body.splitlines()[0].strip()[:40]}"))
    return found


def refusals() -> list[Any]:
    """A YAML file followed by the output of `apilake sources validate` on it."""
    all_blocks = blocks()
    return [
        pytest.param(body, all_blocks[index + 1][1], id=f"block{index}")
        for index, (lang, body) in enumerate(all_blocks[:-1])
        if lang == "yaml" and all_blocks[index + 1][1].startswith(VALIDATE)
    ]


def whole_file(document: Any) -> dict[str, Any]:
    """A fragment made a sources file: a source's fields become one source, a list the sources; each source's
    missing required fields filled with placeholders."""
    if isinstance(document, dict) and "sources" in document:
        whole = dict(document)
    elif isinstance(document, list):
        whole = {"sources": document}
    else:
        whole = {"sources": [{"name": "doc-example", **document}]}
    whole.setdefault("version", 1)
    whole["sources"] = [{**REQUIRED, **source} for source in whole["sources"]]
    return whole


@pytest.mark.parametrize("body", examples())
def test_each_yaml_example_loads(body: str, tmp_path: Path) -> None:
    # given a YAML example of the sources docs
    document = yaml.safe_load(body)
    # when it is loaded: a whole file as a file (so as the CLI reads it), a fragment inside a placeholder source
    if isinstance(document, dict) and "version" in document:
        path = tmp_path / "sources.yaml"
        path.write_text(body, encoding="utf-8")
        loaded = load_sources(path)
    else:
        loaded = parse_sources(whole_file(document), "sources.yaml")
    # then it is valid, with every source it names
    named = [item["name"] for item in (document if isinstance(document, list) else document.get("sources", []))]
    assert [source.name for source in loaded.sources] == (named or ["doc-example"])


@pytest.mark.parametrize(("body", "output"), refusals())
def test_each_sample_refusal_is_what_the_loader_says(body: str, output: str, tmp_path: Path) -> None:
    # given a file the docs show refused, and the output they show for it
    path = tmp_path / "sources.yaml"
    path.write_text(body, encoding="utf-8")
    expected = output.removeprefix(VALIDATE).removesuffix("[exit 2]\n").removeprefix("apilake: ").rstrip("\n")
    # when it is loaded, then the error is the one shown, line for line
    with pytest.raises(ConfigError) as refused:
        load_sources(path)
    assert str(refused.value) == expected


def test_the_docs_have_examples_and_refusals() -> None:
    # given the sources docs, then they hold worked examples and sample refusals for the tests above to check
    assert len(examples()) >= 12
    assert len(refusals()) >= 2

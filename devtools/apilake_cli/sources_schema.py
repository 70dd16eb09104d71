"""`apilake sources schema`: the JSON Schema of the sources file, for editors (completion and checks as you type).

Made from the models of :mod:`apilake.config` (draft 2020-12): each model's docstring is its description, every
mapping refuses keys it does not know (``additionalProperties: false``, as the models do), and each tagged union
(``pagination``, ``sharding``, ``auth``) is a ``oneOf`` whose members fix ``type`` with ``const``, so that an
editor completes ``type:`` and then the fields of that type. The checkout keeps a copy in
``schema/sources.schema.json`` (a test holds it equal to what this command writes). The schema helps to write the
file; ``apilake sources validate`` remains the judge (it also checks what a schema cannot say: URLs, cron
expressions, one field given with another).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from apilake.config import SourcesFile
from apilake_cli.exits import Exit

DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Generator(GenerateJsonSchema):
    """pydantic's generator without the titles it makes up for every field (``Page Size``): an editor shows them
    above the model's description, and they say nothing the key does not."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def sources_schema() -> dict[str, Any]:
    """The JSON Schema of a sources file."""
    schema = SourcesFile.model_json_schema(mode="validation", schema_generator=_Generator)
    head = {
        "$schema": DIALECT,
        "title": "apilake sources file",
        "description": "Every source apilake ingests (layers/common/sources.yaml); reference: docs/configuration.md. "
        "Check it with `apilake sources validate`.",
    }
    return {**head, **{key: value for key, value in schema.items() if key not in head}}


def schema_text() -> str:
    """The schema as the file holds it: indented JSON, keys in the models' order, one newline at the end."""
    return json.dumps(sources_schema(), indent=2, ensure_ascii=False) + "\n"


def cmd_sources_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    output: Path | None = args.output
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        print(f"{output}: the JSON Schema of the sources file", file=sys.stderr)
    return Exit.DONE

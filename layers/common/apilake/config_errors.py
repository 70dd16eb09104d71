"""Where in the sources file a problem is, and how to say it.

The YAML is read once, keeping each node's place in the text (:func:`read_yaml`); pydantic's error location
(``sources, 1, pagination, cursor, cursor_path``) is turned into the path of the document (the tag pydantic
inserts for a tagged union dropped, by walking the models: :func:`document_path`) and that into the line and
column of the nearest node that exists: the key itself for an unknown key, the value for a wrong value, the
mapping that lacks it for a missing field::

    sources.yaml:12:5: source 'api-b': pagination.page_size: Input should be greater than or equal to 1

Without the text (``parse_sources(raw, origin)``) the same message, without the line and column.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from apilake.exceptions import ConfigError, Location, describe_validation_error

Path = tuple[int | str, ...]


@dataclass(frozen=True)
class Place:
    """Where a node of the document is: its key's mark (None for list items and the root) and its own."""

    key: yaml.Mark | None
    value: yaml.Mark
    scalar: bool


Places = dict[Path, Place]


def read_yaml(text: str, origin: str) -> tuple[Any, Places]:
    """The document (as ``yaml.safe_load`` reads it) and the place of each of its nodes; ConfigError with the
    line and column when the text is not YAML."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _refuse_duplicate_keys(loader, node, origin)
        data = loader.construct_document(node) if node is not None else None
        places: Places = {}
        if node is not None:
            _record(loader, node, (), None, places, set())
        return data, places
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{origin}{at}: not valid YAML: {what}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()


def _refuse_duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node, origin: str) -> None:
    """ConfigError at the second of two equal keys of one mapping (``yaml.safe_load`` would keep the last one
    silently). A key merged in (``<<: *defaults``) may be given again: that is what a merge is for."""
    walked: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in walked:
            continue
        walked.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[object, yaml.Mark] = {}
            for key_node, value_node in node.value:
                pending.extend((key_node, value_node))
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = loader.construct_object(key_node)
                mark = key_node.start_mark
                if key in seen:
                    first = seen[key]
                    raise ConfigError(
                        f"{origin}:{mark.line + 1}:{mark.column + 1}: the key {key!r} is given twice in one mapping "
                        f"(first at {first.line + 1}:{first.column + 1}): give it once"
                    )
                seen[key] = mark


def _record(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, key: yaml.Mark | None, places: Places, seen: set[int]
) -> None:
    places[path] = Place(key, node.start_mark, isinstance(node, yaml.ScalarNode))
    if id(node) in seen:  # an alias of a node being walked (a recursive document)
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(loader, item, (*path, index), None, places, seen)
    elif isinstance(node, yaml.MappingNode):  # merge keys (<<) are already flattened into node.value
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                name = loader.construct_object(key_node)
                if isinstance(name, str | int):
                    _record(loader, value_node, (*path, name), key_node.start_mark, places, seen)


# -- pydantic's location -> the document's path ----------------------------------------------------------------
KEY = "[key]"  # pydantic's last location part for an error in a mapping's key


def document_path(root: type[BaseModel], loc: Location) -> Path:
    """``loc`` as a path of the document: without the tags pydantic inserts for tagged unions
    (``pagination, cursor, cursor_path`` -> ``pagination, cursor_path``), the member names of plain unions
    (``initial_value, str``) and the ``[key]`` of a mapping's key."""
    return tuple(part for part, _ in _steps(root, loc) if part is not None)


def model_at(root: type[BaseModel], loc: Location) -> type[BaseModel] | None:
    """The model whose field ``loc`` names (the one holding ``loc[-1]``), if the walk finds one."""
    kinds = [kind for _, kind in _steps(root, loc[:-1])]
    kind = _unwrapped(kinds[-1] if kinds else root)[0]
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def tags_at(root: type[BaseModel], loc: Location) -> list[str]:
    """The tags of the tagged union ``loc`` names (``pagination`` -> page_number, offset, ...); [] if it is not one."""
    kinds = [kind for _, kind in _steps(root, loc)] if loc else [root]
    tags = _unwrapped(kinds[-1])[1] if kinds else None
    return [str(tag) for tag in tags or ()]


def _steps(root: type[BaseModel], loc: Location) -> Iterator[tuple[int | str | None, Any]]:
    """Each part of ``loc``: the part as the document has it (None: one pydantic inserts), and the type there."""
    kind: Any = root
    for part in loc:
        kind, tags = _unwrapped(kind)
        if tags is not None and part in tags:  # a tagged union: this part is the tag
            kind = tags[part]
            yield None, kind
            continue
        members = [m for m in _members(kind) if m is not type(None)]
        if len(members) > 1 and tags is None:  # a plain union: pydantic names the member it tried
            kind = next((m for m in members if getattr(m, "__name__", None) == part), None)
            yield None, kind
            continue
        if part == KEY:
            yield None, None
            continue
        kind = _inside(kind, part)
        yield part, kind


def _inside(kind: Any, part: int | str) -> Any:
    """The type of ``part`` inside a value of type ``kind`` (None when unknown)."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        field = kind.model_fields.get(str(part))
        return None if field is None else _field_type(field)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (list, tuple) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _field_type(field: FieldInfo) -> Any:
    if field.discriminator is not None:
        return Annotated[field.annotation, field]
    return field.annotation


def _unwrapped(kind: Any) -> tuple[Any, dict[Any, Any] | None]:
    """``kind`` without Annotated and None, and for a tagged union its members by tag."""
    discriminator = None
    while typing.get_origin(kind) is Annotated:
        kind, *metadata = typing.get_args(kind)
        discriminator = next(
            (m.discriminator for m in metadata if isinstance(m, FieldInfo) and m.discriminator), discriminator
        )
    members = [m for m in _members(kind) if m is not type(None)]
    if len(members) == 1 and members[0] is not kind:  # X | None
        return _unwrapped(members[0])
    if not isinstance(discriminator, str):
        return kind, None
    tags: dict[Any, Any] = {}
    for member in members:
        is_model = isinstance(member, type) and issubclass(member, BaseModel)
        field = member.model_fields.get(discriminator) if is_model else None
        if field is not None and typing.get_origin(field.annotation) is Literal:
            tags.update(dict.fromkeys(typing.get_args(field.annotation), member))
    return kind, tags


def _members(kind: Any) -> tuple[Any, ...]:
    if typing.get_origin(kind) in (Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


# -- the message -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourcesErrors:
    """Says a validation error of the sources file: origin (with line and column when the text was read),
    source, field, message and a suggestion for a misspelt name."""

    root: type[BaseModel]
    raw: Any
    places: Places | None = None

    def describe(self, origin: str, error: ValidationError) -> str:
        return describe_validation_error(
            origin,
            error,
            locate=self.locate,
            whole="(file)",
            position=self.position if self.places else None,
            fields=self.fields,
            tags=lambda loc: tags_at(self.root, loc),
        )

    def locate(self, loc: Location) -> str:
        """``source 'api-b': pagination.cursor_path`` (the source by name, else by number) or the dotted path."""
        path = document_path(self.root, loc)
        if len(path) >= 2 and path[0] == "sources" and isinstance(path[1], int):
            name: object = f"#{path[1] + 1}"
            sources = self.raw.get("sources") if isinstance(self.raw, dict) else None
            if isinstance(sources, list) and path[1] < len(sources) and isinstance(sources[path[1]], dict):
                name = sources[path[1]].get("name", name)
            field = ".".join(str(part) for part in path[2:]) or "(source)"
            return f"source '{name}': {field}"
        return ".".join(str(part) for part in path)

    def position(self, loc: Location, kind: str) -> str:
        """``line:column`` of the node nearest the error: the key of an unknown key (or of a key in error), the
        value of a wrong value (a mapping or list: its key), the mapping that lacks a missing field."""
        if not self.places:
            return ""
        path = document_path(self.root, loc)
        exact = path in self.places
        while path not in self.places:
            path = path[:-1]
        place = self.places[path]
        on_key = exact and (kind == "extra_forbidden" or (bool(loc) and loc[-1] == KEY) or not place.scalar)
        mark = place.key if on_key and place.key is not None else place.value
        return f"{mark.line + 1}:{mark.column + 1}"

    def fields(self, loc: Location) -> Collection[str]:
        """The fields of the model an unknown field is in."""
        model = model_at(self.root, loc)
        return () if model is None else list(model.model_fields)


def validate(root: type[BaseModel], raw: Any, origin: str, places: Places | None = None) -> Any:
    """``root.model_validate(raw)``; ConfigError with one line per problem."""
    try:
        return root.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(SourcesErrors(root, raw, places).describe(origin, exc)) from exc

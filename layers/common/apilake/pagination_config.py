"""The models of a source's ``pagination:`` (one per style, told apart by ``type``), and the types they share
with the rest of the sources file. :mod:`apilake.config` re-exports them; :mod:`apilake.pagination` runs them."""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate each field's annotation
# from its text when it creates the class, a part of every cold start (the Lambdas import these models).

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from apilake.exceptions import field_error

# A dotted path into a JSON document ("data.items"); "" is the document itself.
JsonPath = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*)?$")]
ParamName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
# Where a paginator puts the page's values: the query string, or (a POST source) its JSON body, where each
# *_param name is a dotted path into the body ("variables.after", "page.cursor").
Placement = Literal["query", "body"]


class _Model(BaseModel):
    # defer_build: the sources file's models are built when a file is first validated. The Lambdas never validate
    # one: they read the validated copy the layer's build made (apilake.config.load_sources).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def body_paths(model: BaseModel) -> dict[str, str]:
    """A paginator with ``placement: body``: each *_param field it uses -> its dotted path into the body."""
    if getattr(model, "placement", "query") != "body":
        return {}
    names = [name for name in type(model).model_fields if name.endswith("_param")]
    return {name: getattr(model, name) for name in names if getattr(model, name) is not None}


def _check_body_paths(model: BaseModel) -> None:
    """With ``placement: body``: each path has no empty part, and no path is inside another (or the same)."""
    paths = body_paths(model)
    for name, path in paths.items():
        if "" in path.split("."):
            raise field_error(
                model,
                name,
                f"{path!r}: with placement: body, {name} is a dotted path into the JSON body "
                "(e.g. variables.after), with no empty part",
            )
    seen: list[tuple[str, str]] = []
    for name, path in paths.items():
        for other, other_path in seen:
            if path == other_path or path.startswith(other_path + ".") or other_path.startswith(path + "."):
                raise field_error(
                    model,
                    name,
                    f"{other} {other_path!r} and {name} {path!r} overlap in the body: give each its own path",
                )
        seen.append((name, path))


class PageNumberPagination(_Model):
    """``?page=N&per_page=S`` (or, ``placement: body``, ``{"page": N, "hitsPerPage": S}``); fans out when the
    response says how many records or pages there are."""

    type: Literal["page_number"]
    page_param: ParamName = "page"
    size_param: ParamName | None = "per_page"
    page_size: int = Field(default=100, ge=1, le=10_000)
    first_page: int = Field(default=1, ge=0, le=1)
    total_path: JsonPath | None = None
    total_pages_path: JsonPath | None = None
    stop_on_short_page: bool = True
    placement: Placement = "query"

    @model_validator(mode="after")
    def _one_total(self) -> Self:
        if self.total_path is not None and self.total_pages_path is not None:
            raise field_error(self, "total_pages_path", "give total_path or total_pages_path, not both")
        _check_body_paths(self)
        return self


class OffsetPagination(_Model):
    """``?offset=O&limit=L`` (or, ``placement: body``, ``{"from": O, "size": L}``) with the total number of
    records in the response."""

    type: Literal["offset"]
    offset_param: ParamName = "offset"
    limit_param: ParamName = "limit"
    limit: int = Field(default=100, ge=1, le=10_000)
    total_path: JsonPath
    placement: Placement = "query"

    @model_validator(mode="after")
    def _paths(self) -> Self:
        _check_body_paths(self)
        return self


class CursorPagination(_Model):
    """A cursor sent back as a query parameter (or, ``placement: body``, set at a path of the JSON body, as it
    came: a string, a number, a list such as Elasticsearch's ``search_after``), taken from one of two places
    (``cursor_from``):

    - ``body`` (the default): the response's ``cursor_path``; stops on a null cursor or has_more false;
    - ``last_record`` / ``first_record``: the ``cursor_field`` of the page's last (first) record, as Stripe's
      ``starting_after=<id of the last record>``; stops on has_more false or an empty page.
    """

    type: Literal["cursor"]
    cursor_param: ParamName = "cursor"
    cursor_from: Literal["body", "last_record", "first_record"] = "body"
    cursor_path: JsonPath | None = None
    cursor_field: Annotated[JsonPath, StringConstraints(min_length=1)] | None = None
    has_more_path: JsonPath | None = None
    placement: Placement = "query"

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        _check_body_paths(self)
        if self.cursor_from == "body":
            if self.cursor_field is not None:
                raise field_error(
                    self,
                    "cursor_field",
                    "cursor_field is the record's field for cursor_from: last_record (or first_record); "
                    "with the cursor in the body (cursor_from: body, the default) give cursor_path only",
                )
            if self.cursor_path is None:
                raise field_error(
                    self,
                    "cursor_path",
                    "give cursor_path (where the body holds the next cursor), "
                    "or cursor_from: last_record with cursor_field (the record's field that is the cursor)",
                )
        elif self.cursor_path is not None:
            raise field_error(
                self,
                "cursor_path",
                f"cursor_from: {self.cursor_from} takes the cursor from a record's cursor_field: "
                "drop cursor_path (a cursor in the body), give one or the other",
            )
        elif self.cursor_field is None:
            raise field_error(
                self,
                "cursor_field",
                f"cursor_from: {self.cursor_from} needs cursor_field (the record's field, e.g. id)",
            )
        return self


class NextUrlPagination(_Model):
    """The body holds the URL of the next page (on the same host)."""

    type: Literal["next_url"]
    next_url_path: JsonPath


class LinkHeaderPagination(_Model):
    """``Link: <https://...>; rel="next"`` (RFC 8288), as GitHub and many others do."""

    type: Literal["link_header"]


class SinglePagePagination(_Model):
    """The whole result in one response."""

    type: Literal["single"]


Pagination = Annotated[
    PageNumberPagination
    | OffsetPagination
    | CursorPagination
    | NextUrlPagination
    | LinkHeaderPagination
    | SinglePagePagination,
    Field(discriminator="type"),
]

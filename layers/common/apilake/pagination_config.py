"""The models of a source's ``pagination:`` (one per style, told apart by ``type``), and the types they share
with the rest of the sources file. :mod:`apilake.config` re-exports them; :mod:`apilake.pagination` runs them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# A dotted path into a JSON document ("data.items"); "" is the document itself.
JsonPath = Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*)?$")]
ParamName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PageNumberPagination(_Model):
    """``?page=N&per_page=S``; fans out when the response says how many records or pages there are."""

    type: Literal["page_number"]
    page_param: ParamName = "page"
    size_param: ParamName | None = "per_page"
    page_size: int = Field(default=100, ge=1, le=10_000)
    first_page: int = Field(default=1, ge=0, le=1)
    total_path: JsonPath | None = None
    total_pages_path: JsonPath | None = None
    stop_on_short_page: bool = True

    @model_validator(mode="after")
    def _one_total(self) -> PageNumberPagination:
        if self.total_path is not None and self.total_pages_path is not None:
            raise ValueError("give total_path or total_pages_path, not both")
        return self


class OffsetPagination(_Model):
    """``?offset=O&limit=L`` with the total number of records in the response."""

    type: Literal["offset"]
    offset_param: ParamName = "offset"
    limit_param: ParamName = "limit"
    limit: int = Field(default=100, ge=1, le=10_000)
    total_path: JsonPath


class CursorPagination(_Model):
    """A cursor sent back as a query parameter, taken from one of two places (``cursor_from``):

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

    @model_validator(mode="after")
    def _one_place(self) -> CursorPagination:
        if self.cursor_from == "body":
            if self.cursor_field is not None:
                raise ValueError(
                    "cursor_field is the record's field for cursor_from: last_record (or first_record); "
                    "with the cursor in the body (cursor_from: body, the default) give cursor_path only"
                )
            if self.cursor_path is None:
                raise ValueError(
                    "give cursor_path (where the body holds the next cursor), "
                    "or cursor_from: last_record with cursor_field (the record's field that is the cursor)"
                )
        elif self.cursor_path is not None:
            raise ValueError(
                f"cursor_from: {self.cursor_from} takes the cursor from a record's cursor_field: "
                "drop cursor_path (a cursor in the body), give one or the other"
            )
        elif self.cursor_field is None:
            raise ValueError(f"cursor_from: {self.cursor_from} needs cursor_field (the record's field, e.g. id)")
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

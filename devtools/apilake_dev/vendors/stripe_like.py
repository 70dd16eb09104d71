"""A fake vendor that lists as Stripe does (``GET /v1/customers?limit=100&starting_after=cus_...`` answers
``{"object": "list", "url": ..., "data": [...], "has_more": true}``): the next page starts after the id of
the last record of this one. Served at the fake vendor's ``/cursor/<dataset>`` (``limit`` caps the page)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apilake_dev.vendors import fake
from apilake_dev.vendors.fake import Dataset, FakeVendor


@dataclass
class StripeLikeDataset(Dataset):
    """``?starting_after=<id>`` keeps the records after the one with that id (an unknown id: none), so the
    fake vendor's page 1 of what is left is the next page."""

    def serve(self, query: dict[str, str]) -> list[dict[str, Any]]:
        records = super().serve(query)
        after = query.get("starting_after")
        if after is None:
            return records
        ids = [record["id"] for record in records]
        return records[ids.index(after) + 1 :] if after in ids else []


class _Handler(fake._Handler):
    def _respond(
        self,
        style: str,
        name: str,
        query: dict[str, str],
        page: int,
        next_page: int,
        size: int,
        chunk: list[Any],
        total: int,
        has_next: bool,
    ) -> None:
        if style != "cursor" or not isinstance(self.server.state.datasets[name], StripeLikeDataset):
            return super()._respond(style, name, query, page, next_page, size, chunk, total, has_next)
        return self._json(200, {"object": "list", "url": f"/cursor/{name}", "data": chunk, "has_more": has_next})


class StripeLikeVendor(FakeVendor):
    """The fake vendor, with its Stripe-like datasets listed as Stripe lists."""

    def __init__(self, datasets: list[Dataset], **options: Any) -> None:
        super().__init__(datasets, **options)
        self._server.RequestHandlerClass = _Handler

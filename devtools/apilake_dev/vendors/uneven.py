"""A fake vendor's dataset whose pages are not what was asked for: the vendor caps the page size below the
one requested (and says nothing), or one page comes back with fewer records than it should, while the
stated total stays the same. What reconciliation (decision 28) is there to catch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apilake_dev.vendors.fake import Dataset


@dataclass
class UnevenDataset(Dataset):
    """``cap``: the most records a page holds, whatever the request asks (an offset stays an offset: the page
    starts where it was asked to); ``short``: page index -> records left out of that page."""

    cap: int | None = None
    short: dict[int, int] = field(default_factory=dict)

    def chunk(self, records: list[dict[str, Any]], style: str, page: int, size: int) -> list[dict[str, Any]]:
        start = (page - 1) * size
        held = size if self.cap is None else min(size, self.cap)
        if style != "offset":  # page N of the size the vendor really uses
            start = (page - 1) * held
        served = records[start : start + held]
        return served[: max(0, len(served) - self.short.get(page, 0))]

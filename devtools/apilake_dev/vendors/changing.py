"""A fake vendor's dataset whose records change between runs, and that serves the records updated after a
value: what an incremental source (``incremental:`` in the sources file) asks its vendor for."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apilake_dev.vendors.fake import Dataset


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@dataclass
class ChangingDataset(Dataset):
    """Records in ``updated_at`` order (then id); ``?<after_param>=<timestamp>`` keeps those updated strictly
    after it. :meth:`touch` updates records, as a vendor's users do between two of our runs."""

    after_param: str = "updated_since"
    _updates: dict[int, tuple[str, int]] = field(default_factory=dict, repr=False, compare=False)

    def record(self, index: int) -> dict[str, Any]:
        record = super().record(index)
        if index in self._updates:
            record["updated_at"], record["revision"] = self._updates[index]
        return record

    def touch(self, count: int, at: datetime) -> list[str]:
        """Update ``count`` records spread over the dataset, the n-th at ``at`` + n seconds; their ids."""
        count = min(count, self.total)
        step = self.total // count if count else 1
        touched, offset = [], len(self._updates)
        for n in range(count):
            index = (n * step + offset) % self.total
            revision = self._updates.get(index, ("", 1))[1] + 1
            self._updates[index] = ((at + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"), revision)
            touched.append(f"{self.name}-{index:07d}")
        self._windows.clear()
        return touched

    def serve(self, query: dict[str, str]) -> list[dict[str, Any]]:
        after = query.get(self.after_param)
        key = (f"after:{after}", None)
        if key not in self._windows:
            ordered = sorted(self.records(None, None), key=lambda r: (r["updated_at"], r["id"]))
            if after:
                threshold = _instant(after)
                ordered = [r for r in ordered if _instant(r["updated_at"]) > threshold]
            self._windows[key] = ordered
        return self._windows[key]

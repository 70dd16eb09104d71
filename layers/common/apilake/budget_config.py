"""A source's ``budget:`` and the file's ``budget_groups:``: how hard its workers may call the vendor.

A source's own ``requests_per_second`` is split over its workers (MaximumConcurrency); a ``group`` (one vendor's
endpoints behind one limit) is split over the workers of every source in the group. Either way each worker's
pacer reads one number, :attr:`Budget.per_worker_rps` (apilake.http)::

    budget_groups:
      stripe: {requests_per_second: 25}
    sources:
      - name: charges
        budget: {group: stripe, max_concurrency: 3}   # 25 / (3 + 2) = 5 req/s a worker
      - name: refunds
        budget: {group: stripe, max_concurrency: 2}
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate each field's annotation
# from its text when it creates the class, a part of every cold start (the Lambdas import these models).

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Self

from pydantic import AfterValidator, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from apilake.exceptions import ConfigError, field_error
from apilake.pagination_config import _Model

BUDGET_GROUP_NAME = r"[a-z0-9][a-z0-9_-]{0,63}"  # compiled (and cached by re) when a file is validated


def _budget_group_name(value: str) -> str:
    if not re.fullmatch(BUDGET_GROUP_NAME, value):
        raise ValueError(
            f"budget group name {value!r}: lowercase letters, digits, '-' and '_', starting with a letter or a digit, "
            "at most 64 characters"
        )
    return value


BudgetGroupName = Annotated[str, AfterValidator(_budget_group_name)]


class BudgetGroup(_Model):
    """One requests-per-second limit shared by several sources (``budget_groups:``): one vendor's endpoints."""

    requests_per_second: float = Field(gt=0, le=10_000)


class Budget(_Model):
    """How hard we may call the vendor: requests per second for the whole source (or its ``group``'s,
    shared with the group's other sources), and how many workers may run at once (the event source
    mapping's MaximumConcurrency, at least 2)."""

    requests_per_second: float | None = Field(default=None, gt=0, le=10_000)
    max_concurrency: int = Field(default=2, ge=2, le=1000)
    group: BudgetGroupName | None = None  # a name of the file's budget_groups
    # A grouped source's share of one worker, set when the sources file is validated (share_groups): not in the file.
    _group_share: float | None = PrivateAttr(default=None)
    _group_workers: int | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_limit(self) -> Self:
        if self.group is not None and self.requests_per_second is not None:
            raise field_error(
                self,
                "requests_per_second",
                f"a source in budget group {self.group!r} shares the group's requests_per_second "
                "(budget_groups): drop requests_per_second here, or the group",
            )
        return self

    def in_group(self, requests_per_second: float, workers: int) -> Self:
        """This budget with its worker's share of a group: the group's rate over all the group's workers."""
        budget = self.model_copy()
        budget._group_share = requests_per_second / workers
        budget._group_workers = workers
        return budget

    @property
    def sharing_workers(self) -> int:
        """The workers that may call the vendor at once under this budget's limit (a vendor's quota headers are
        shared by them, apilake.ratelimit): the source's MaximumConcurrency, or its whole group's."""
        return self._group_workers if self.group is not None and self._group_workers else self.max_concurrency

    @property
    def per_worker_rps(self) -> float | None:
        """Each worker keeps to its share, so that all of them together stay under the limit: the source's
        rate over its workers, or its group's rate over the workers of every source in the group."""
        if self.group is not None:
            if self._group_share is None:
                raise ConfigError(f"budget group {self.group!r}: its share is known once the sources file is loaded")
            return self._group_share
        if self.requests_per_second is None:
            return None
        return self.requests_per_second / self.max_concurrency


def share_groups(groups: Mapping[str, BudgetGroup], budgets: Sequence[Budget]) -> list[Budget]:
    """The sources' budgets (in the file's order), each grouped one with its worker's share: the group's rate over
    the MaximumConcurrency of every source in the group (all the workers that may call the vendor at once).
    A group no one declared is an error at that source's ``budget.group``."""
    workers: dict[str, int] = {}
    for index, budget in enumerate(budgets):
        if budget.group is None:
            continue
        if budget.group not in groups:
            declared = ", ".join(groups) or "none"
            detail = InitErrorDetails(
                type="value_error",
                loc=("sources", index, "budget", "group"),
                input=budget.group,
                ctx={"error": f"{budget.group!r} is not in budget_groups (declared: {declared})"},
            )
            raise ValidationError.from_exception_data("SourcesFile", [detail])
        workers[budget.group] = workers.get(budget.group, 0) + budget.max_concurrency
    return [
        budget
        if budget.group is None
        else budget.in_group(groups[budget.group].requests_per_second, workers[budget.group])
        for budget in budgets
    ]


def unused_groups(groups: Mapping[str, BudgetGroup], budgets: Sequence[Budget]) -> list[str]:
    """The declared groups no source names (a warning, not an error: harmless, but likely left over)."""
    used = {budget.group for budget in budgets}
    return [name for name in groups if name not in used]

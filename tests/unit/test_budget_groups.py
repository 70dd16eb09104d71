"""budget.group: sources that share one vendor's requests-per-second limit, split over all their workers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from apilake.auth import CredentialStore
from apilake.config import Budget, Source, load_sources, parse_sources
from apilake.exceptions import ConfigError
from apilake.http import VendorClients
from apilake_cli.main import main


def source(name: str, **budget: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "base_url": "https://api.example.com",
        "path": f"/v1/{name}",
        "records_path": "data",
        "pagination": {"type": "single"},
    }
    if budget:
        raw["budget"] = budget
    return raw


def doc(*sources: dict[str, Any], groups: dict[str, Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"version": 1, "sources": [copy.deepcopy(s) for s in sources]}
    if groups is not None:
        document["budget_groups"] = groups
    return document


STRIPE = {"stripe": {"requests_per_second": 25}}


@pytest.mark.parametrize(
    ("document", "shares"),
    [
        pytest.param(
            doc(source("charges", group="stripe", max_concurrency=3), source("refunds", group="stripe"), groups=STRIPE),
            {"charges": 5.0, "refunds": 5.0},
            id="two sources: 25 req/s over 3 + 2 workers",
        ),
        pytest.param(
            doc(
                source("charges", group="stripe", max_concurrency=4),
                source("alone", requests_per_second=10, max_concurrency=2),
                groups=STRIPE,
            ),
            {"charges": 6.25, "alone": 5.0},
            id="a group of one beside a source with its own rate",
        ),
        pytest.param(
            doc(
                source("a", group="g-1", max_concurrency=2),
                source("b", group="g_2", max_concurrency=2),
                source("c", group="g-1", max_concurrency=6),
                source("d"),
                groups={"g-1": {"requests_per_second": 4}, "g_2": {"requests_per_second": 0.5}},
            ),
            {"a": 0.5, "b": 0.25, "c": 0.5, "d": None},
            id="two groups, and a source without a limit",
        ),
        pytest.param(doc(source("a", max_concurrency=5)), {"a": None}, id="no groups at all"),
    ],
)
def test_each_worker_of_a_group_keeps_to_the_group_rate_over_all_its_workers(
    document: dict[str, Any], shares: dict[str, float | None]
) -> None:
    # Given a sources file whose sources share budget groups
    sources = parse_sources(document, "sources.yaml")
    # Then each source's workers keep to the group's rate over the workers of every source in the group
    assert {s.name: s.budget.per_worker_rps for s in sources.sources} == shares


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            doc(source("charges", group="strpe"), groups=STRIPE),
            "sources.yaml: source 'charges': budget.group: Value error, 'strpe' is not in budget_groups "
            "(declared: stripe)",
            id="unknown group, the declared ones listed",
        ),
        pytest.param(
            doc(source("charges", group="stripe")),
            "source 'charges': budget.group: Value error, 'stripe' is not in budget_groups (declared: none)",
            id="no budget_groups at all",
        ),
        pytest.param(
            doc(source("charges", group="stripe", requests_per_second=5), groups=STRIPE),
            "sources.yaml: source 'charges': budget.requests_per_second: Value error, a source in budget group "
            "'stripe' shares the "
            "group's requests_per_second (budget_groups): drop requests_per_second here, or the group",
            id="a grouped source with a rate of its own",
        ),
        pytest.param(
            doc(source("charges", group="Stripe"), groups=STRIPE),
            "sources.yaml: source 'charges': budget.group: Value error, budget group name 'Stripe': lowercase "
            "letters, digits, '-' and '_', starting with a letter or a digit, at most 64 characters",
            id="group name with a capital, in the source",
        ),
        pytest.param(
            doc(source("charges"), groups={"-stripe": {"requests_per_second": 5}}),
            "budget group name '-stripe': lowercase letters, digits, '-' and '_', starting with a letter or a digit",
            id="group name starting with '-', in budget_groups",
        ),
        pytest.param(
            doc(source("charges"), groups={"x" * 65: {"requests_per_second": 5}}),
            "at most 64 characters",
            id="group name too long",
        ),
        pytest.param(
            doc(source("charges"), groups={"stripe": {}}),
            "sources.yaml: budget_groups.stripe.requests_per_second: Field required",
            id="group without a rate",
        ),
        pytest.param(
            doc(source("charges"), groups={"stripe": {"requests_per_second": 0}}),
            "sources.yaml: budget_groups.stripe.requests_per_second: Input should be greater than 0",
            id="group rate zero",
        ),
        pytest.param(
            doc(source("charges"), groups={"stripe": {"requests_per_second": 5, "burst": 2}}),
            "sources.yaml: budget_groups.stripe.burst: Extra inputs are not permitted",
            id="unknown group field",
        ),
        pytest.param(
            doc(source("charges", group="stripe", max_concurrency=1), groups=STRIPE),
            "sources.yaml: source 'charges': budget.max_concurrency: Input should be greater than or equal to 2",
            id="a grouped source's concurrency below 2",
        ),
    ],
)
def test_an_invalid_budget_group_is_refused_naming_the_source_and_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_sources(document, "sources.yaml")
    assert message in str(raised.value)


def test_a_declared_group_no_source_uses_is_valid_and_listed_as_unused() -> None:
    # Given a group left over after its sources were removed, beside one in use
    groups = {**STRIPE, "github": {"requests_per_second": 1}}
    sources = parse_sources(doc(source("charges", group="stripe"), groups=groups), "sources.yaml")
    # Then the file loads, and the unused group is named
    assert sources.unused_budget_groups == ["github"]


def test_validate_warns_of_an_unused_group_and_describes_the_shares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = {**STRIPE, "github": {"requests_per_second": 1}}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(doc(source("charges", group="stripe", max_concurrency=3), groups=groups)))
    assert main(["sources", "validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "charges: single pagination, none sharding, auth none, budget group stripe (25 req/s shared), " in out
    assert "8.33 req/s each of 3 workers" in out
    assert f"{path}: warning: budget group 'github' is declared but no source uses it" in err


def test_a_grouped_budget_outside_a_sources_file_does_not_pretend_to_know_its_share() -> None:
    # Given a source built alone (no file, so no budget_groups to resolve its group)
    alone = Source.model_validate(source("charges", group="stripe"))
    # Then asking for its share is an error, not an unlimited pace
    with pytest.raises(ConfigError, match="budget group 'stripe': its share is known once the sources file is loaded"):
        _ = alone.budget.per_worker_rps


def test_the_share_is_kept_when_a_budget_is_copied_and_compared() -> None:
    budget = Budget(group="stripe", max_concurrency=2).in_group(10, 4)
    assert budget.model_copy().per_worker_rps == 2.5
    assert budget.model_copy(update={"max_concurrency": 3}).per_worker_rps == 2.5
    assert budget != Budget(group="stripe", max_concurrency=2).in_group(10, 5)


def test_the_worker_pacer_reads_the_group_share() -> None:
    # Given two sources of one group (12 req/s over 2 + 4 workers)
    sources = parse_sources(
        doc(
            source("a", group="stripe", max_concurrency=2),
            source("b", group="stripe", max_concurrency=4),
            groups={"stripe": {"requests_per_second": 12}},
        ),
        "sources.yaml",
    )
    # When a container makes its client for each
    clients = VendorClients(requests.Session(), CredentialStore(None))
    pacers = [clients.for_source(s).pacer for s in sources.sources]
    # Then each paces at 2 req/s: half a second apart, and spends a sixth of what the vendor says is left
    assert [(p.interval, p.shared_by) if p else None for p in pacers] == [(0.5, 6), (0.5, 6)]
    assert [s.budget.sharing_workers for s in parse_sources(doc(source("c", max_concurrency=3)), "f").sources] == [3]


def test_an_unknown_group_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(doc(source("charges", group="strpe"), groups=STRIPE), sort_keys=False))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "group: strpe" in text)
    with pytest.raises(ConfigError, match=rf"^sources.yaml:{line}:\d+: source 'charges': budget.group: .*'strpe'"):
        load_sources(path)

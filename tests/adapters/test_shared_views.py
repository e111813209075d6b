"""Equal RunSpecs and task resources read from many failed runs share one view object (the
seen-cache holds the facts of up to 20,000 failures); different ones never do."""

from __future__ import annotations

from flyteidl2.core import tasks_pb2
from flyteidl2.task import run_pb2

from rerund.adapters.flyte.convert import SPEC_VIEWS, resources_view, shared_spec_view, spec_view


def _spec(queue: str, **labels: str) -> run_pb2.RunSpec:
    spec = run_pb2.RunSpec(queue=queue)
    for k, v in labels.items():
        spec.labels.values[k] = v
    return spec


def _template(memory: str) -> tasks_pb2.TaskTemplate:
    t = tasks_pb2.TaskTemplate()
    t.container.image = "img"
    t.container.resources.requests.add(name=tasks_pb2.Resources.MEMORY, value=memory)
    t.container.resources.limits.add(name=tasks_pb2.Resources.MEMORY, value=memory)
    return t


def test_equal_specs_share_one_view_equal_to_the_plain_one() -> None:
    a, b = _spec("gpu", team="ml", tier="1"), _spec("gpu", tier="1", team="ml")
    shared = shared_spec_view(a)
    assert shared is shared_spec_view(b)
    assert shared == spec_view(a) and shared.queue == "gpu" and shared.labels == {"team": "ml", "tier": "1"}


def test_different_specs_get_different_views() -> None:
    one, other = shared_spec_view(_spec("gpu", team="ml")), shared_spec_view(_spec("gpu", team="web"))
    assert one is not other and other.labels == {"team": "web"}
    assert shared_spec_view(_spec("cpu", team="ml")).queue == "cpu"


def test_equal_task_resources_share_one_view() -> None:
    first, again = resources_view(_template("4Gi")), resources_view(_template("4Gi"))
    assert first is not None and first is again
    assert first.requests == {"memory": "4Gi"} and first.limits == {"memory": "4Gi"}
    bigger = resources_view(_template("8Gi"))
    assert bigger is not None and bigger.requests == {"memory": "8Gi"} and bigger is not first
    assert resources_view(tasks_pb2.TaskTemplate()) is None  # no container: unknown


def test_the_shared_views_stay_within_their_byte_budget_however_large_the_specs() -> None:
    for i in range(400):
        shared_spec_view(_spec("gpu", team="ml", blob="x" * 60, n=f"{i:04d}", env_like="y" * 2000))

    assert 0 < SPEC_VIEWS.held <= SPEC_VIEWS.budget
    assert len(SPEC_VIEWS) < 400  # the oldest views were dropped: an equal spec builds a new one
    assert (
        shared_spec_view(_spec("gpu", team="ml", blob="x" * 60, n="0000", env_like="y" * 2000)).queue == "gpu"
    )

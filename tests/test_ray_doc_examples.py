"""Behaviour that Ray's Ray Core documentation examples rely on, checked on rayfast (our own tests,
written from what the docs say; the examples themselves are not part of this repository)."""
import pytest

import rayfast
from rayfast.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@rayfast.remote
def _node_of_task():
    return rayfast.get_runtime_context().node_id


def test_node_affinity_takes_a_node_id_object(cluster):
    # The scheduling guide pins tasks with the NodeID object that runtime_context().node_id gives,
    # from the driver or from a task, not only with its hex string.
    here = rayfast.get_runtime_context().node_id
    strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
    assert strategy.node_id == here.hex() == rayfast.get_runtime_context().get_node_id()
    pinned = _node_of_task.options(scheduling_strategy=strategy)
    assert rayfast.get(pinned.remote()) == here
    from_task = rayfast.get(_node_of_task.remote())
    soft = _node_of_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=from_task, soft=True))
    assert rayfast.get(soft.remote()) == here
    with pytest.raises(TypeError):
        NodeAffinitySchedulingStrategy(node_id=42, soft=False)

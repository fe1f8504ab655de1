"""Ray's DAG API (rayfast.dag): .bind() builds a lazy graph, .execute() runs it, as the Ray docs'
"Lazy Computation Graphs with the Ray DAG API" page shows."""
import pytest

import rayfast
from rayfast.dag import DAGNode, InputNode, MultiOutputNode
from rayfast.dag.input_node import InputNode as InputNodeByPath
from rayfast.dag.output_node import MultiOutputNode as MultiOutputNodeByPath


@rayfast.remote
def func(src, inc=1):
    return src + inc


@rayfast.remote
def combine(a, b):
    return a + b


@rayfast.remote
class Actor:
    def __init__(self, init_value):
        self.i = init_value

    def inc(self, x):
        self.i += x

    def get(self):
        return self.i

    def forward(self, x):
        return self.i * x

    def pair(self):
        return self.i, -self.i


def test_a_chain_of_functions(cluster):
    a_ref = func.bind(1, inc=2)
    assert isinstance(a_ref, DAGNode)
    assert rayfast.get(a_ref.execute()) == 3
    b_ref = func.bind(a_ref, 3)
    assert rayfast.get(b_ref.execute()) == 6
    c_ref = func.bind(b_ref, inc=a_ref)   # a node used twice runs once per execute
    assert rayfast.get(c_ref.execute()) == 9
    assert rayfast.get(func.options(num_cpus=0.5).bind(1).execute()) == 2
    assert b_ref.get_args()[0] is a_ref and a_ref.get_kwargs() == {"inc": 2}


def test_actors_and_methods(cluster):
    a1 = Actor.bind(10)
    res = a1.get.bind()
    assert rayfast.get(res.execute()) == 10
    a2 = Actor.bind(10)
    a1.inc.bind(2)
    a1.inc.bind(4)
    a2.inc.bind(6)
    dag = MultiOutputNode([a1.get.bind(), a2.get.bind()])
    # each execute() makes its actors anew and runs the calls bound on them in order (as Ray)
    assert rayfast.get(dag.execute()) == [16, 16]
    assert rayfast.get(dag.execute()) == [16, 16]
    made = Actor.options(name=None).bind(3)
    assert isinstance(made.execute(), rayfast.actor.ActorHandle)
    assert rayfast.get(made.pair.options(num_returns=2).bind().execute()) == [3, -3]


def test_input_node_and_a_shared_input(cluster):
    with InputNode() as dag_input:
        m1 = Actor.bind(1)
        m2 = Actor.bind(2)
        m1_output = m1.forward.bind(dag_input[0])
        m2_output = m2.forward.bind(dag_input.x)
        dag = combine.bind(m1_output, m2_output)
    assert rayfast.get(dag.execute(1, x=2)) == 1 * 1 + 2 * 2
    with InputNode() as inp:
        one = func.bind(inp)
    assert rayfast.get(one.execute(5)) == 6
    assert rayfast.get(one.execute(7)) == 8   # the same DAG, run again with another input
    with InputNode() as inp:
        both = MultiOutputNode([func.bind(inp[0]), func.bind(inp[1]), func.bind(inp["k"]["n"])])
    assert rayfast.get(both.execute({0: 1, 1: 2, "k": {"n": 3}})) == [2, 3, 4]
    with pytest.raises(ValueError, match="input"):
        one.execute()
    assert InputNodeByPath is InputNode and MultiOutputNodeByPath is MultiOutputNode


def test_an_existing_actor_and_compile(cluster):
    a = Actor.remote(4)
    with InputNode() as inp:
        dag = a.forward.bind(inp)
    assert rayfast.get(dag.execute(2)) == 8
    compiled = dag.experimental_compile()
    assert rayfast.get([compiled.execute(i) for i in range(3)]) == [0, 4, 8]
    compiled.teardown()
    with pytest.raises(RuntimeError, match="torn down"):
        compiled.execute(1)
    a.inc.bind(1).execute()
    assert rayfast.get(a.get.remote()) == 5   # the calls reached the actor that exists


def test_nodes_are_not_values(cluster):
    node = func.bind(1)
    with pytest.raises(TypeError, match="DAG"):
        func.remote(node)
    with pytest.raises(ValueError):
        MultiOutputNode(node)

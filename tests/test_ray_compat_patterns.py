"""Ray core's design patterns and anti-patterns pages, run with `import rayfast as ray`.

Each test is the pattern's example (sizes shrunk) checked for the result the page shows.
"""
import asyncio
import time

import numpy as np
import pytest

import rayfast as ray


pytestmark = pytest.mark.usefixtures("cluster")   # conftest: init(num_cpus=2), leak check after


def test_nested_tasks_quicksort():
    def partition(collection):
        pivot = collection.pop()
        greater, lesser = [], []
        for element in collection:
            (greater if element > pivot else lesser).append(element)
        return lesser, pivot, greater

    @ray.remote
    def quick_sort_distributed(collection):
        if len(collection) <= 20:
            return sorted(collection)
        lesser, pivot, greater = partition(collection)
        lesser = quick_sort_distributed.remote(lesser)
        greater = quick_sort_distributed.remote(greater)
        return ray.get(lesser) + [pivot] + ray.get(greater)

    data = list(np.random.RandomState(0).randint(0, 1000, 300))
    assert ray.get(quick_sort_distributed.remote(data)) == sorted(data)


def test_tree_of_actors_supervisor():
    @ray.remote(num_cpus=0)
    class Trainer:
        def __init__(self, hyperparameter, data):
            self.hyperparameter = hyperparameter
            self.data = data

        def fit(self):
            return self.data * self.hyperparameter

    @ray.remote(num_cpus=0)
    class Supervisor:
        def __init__(self, hyperparameter, data):
            self.trainers = [Trainer.remote(hyperparameter, d) for d in data]

        def fit(self):
            return ray.get([trainer.fit.remote() for trainer in self.trainers])

    data = [1, 2, 3]
    supervisor1 = Supervisor.remote(1, data)
    supervisor2 = Supervisor.remote(2, data)
    assert ray.get(supervisor1.fit.remote()) == [1, 2, 3]
    assert ray.get(supervisor2.fit.remote()) == [2, 4, 6]


def test_pipelining_with_work_queue():
    @ray.remote
    class WorkQueue:
        def __init__(self):
            self.queue = list(range(6))

        def get_work_item(self):
            return self.queue.pop(0) if self.queue else None

    @ray.remote
    class WorkerWithPipelining:
        def __init__(self, work_queue):
            self.work_queue = work_queue
            self.done = []

        def process(self, work_item):
            self.done.append(work_item)

        def run(self):
            self.work_item_ref = self.work_queue.get_work_item.remote()
            while True:
                work_item = ray.get(self.work_item_ref)
                if work_item is None:
                    break
                self.work_item_ref = self.work_queue.get_work_item.remote()
                self.process(work_item)
            return self.done

    work_queue = WorkQueue.remote()
    worker = WorkerWithPipelining.remote(work_queue)
    assert ray.get(worker.run.remote()) == list(range(6))


def test_limit_pending_tasks_with_wait():
    @ray.remote
    class Actor:
        async def heavy_compute(self):
            await asyncio.sleep(0.01)
            return 1

    actor = Actor.remote()
    NUM_TASKS, MAX_IN_FLIGHT = 40, 10
    result_refs, total, max_seen = [], 0, 0
    for _ in range(NUM_TASKS):
        if len(result_refs) > MAX_IN_FLIGHT:
            num_ready = len(result_refs) - MAX_IN_FLIGHT
            newly_completed, result_refs = ray.wait(result_refs, num_returns=num_ready)
            total += sum(ray.get(newly_completed))
        result_refs.append(actor.heavy_compute.remote())
        max_seen = max(max_seen, len(result_refs))
    total += sum(ray.get(result_refs))
    assert total == NUM_TASKS
    assert max_seen <= MAX_IN_FLIGHT + 1


def test_process_results_in_completion_order_with_wait():
    @ray.remote
    def f(i):
        time.sleep(0.05 * (3 - i))
        return i

    refs = [f.remote(i) for i in range(3)]
    seen = []
    unfinished = refs
    while unfinished:
        finished, unfinished = ray.wait(unfinished, num_returns=1)
        seen.append(ray.get(finished[0]))
    assert sorted(seen) == [0, 1, 2]


def test_pass_large_arg_by_put():
    @ray.remote
    def func(large_arg, i):
        return len(large_arg) + i

    large_arg = np.zeros(1024 * 1024)
    large_arg_ref = ray.put(large_arg)
    outputs = ray.get([func.remote(large_arg_ref, i) for i in range(4)])
    assert outputs == [1024 * 1024 + i for i in range(4)]


def test_batch_get_instead_of_loop():
    @ray.remote
    def f(i):
        return i

    assert ray.get([f.remote(i) for i in range(20)]) == list(range(20))


def test_global_variables_not_shared():
    global_var = 3

    @ray.remote
    class Actor:
        def f(self):
            return global_var + 3

    actor = Actor.remote()
    global_var = 4
    # The actor captured the value when it was defined/exported: 3 + 3 (Ray's page shows 6).
    assert ray.get(actor.f.remote()) == 6

    @ray.remote
    class GlobalVarActor:
        def __init__(self):
            self.global_var = 3

        def set_global_var(self, var):
            self.global_var = var

        def get_global_var(self):
            return self.global_var

    @ray.remote
    class Actor2:
        def __init__(self, global_var_actor):
            self.global_var_actor = global_var_actor

        def f(self):
            return ray.get(self.global_var_actor.get_global_var.remote()) + 3

    gva = GlobalVarActor.remote()
    actor2 = Actor2.remote(gva)
    ray.get(gva.set_global_var.remote(4))
    assert ray.get(actor2.f.remote()) == 7


def test_synchronize_with_signal_actor():
    @ray.remote(num_cpus=0)
    class SignalActor:
        def __init__(self):
            self.ready_event = asyncio.Event()

        def send(self, clear=False):
            self.ready_event.set()
            if clear:
                self.ready_event.clear()

        async def wait(self, should_wait=True):
            if should_wait:
                await self.ready_event.wait()

    @ray.remote
    def wait_and_go(signal):
        ray.get(signal.wait.remote())
        return "go"

    signal = SignalActor.remote()
    tasks = [wait_and_go.remote(signal) for _ in range(2)]
    ready, _ = ray.wait(tasks, timeout=0.3)
    assert ready == []
    ray.get(signal.send.remote())
    assert ray.get(tasks, timeout=10) == ["go", "go"]


def test_generators_reduce_heap_memory():
    @ray.remote
    def large_values_generator(num_returns):
        for i in range(num_returns):
            yield np.full(1000, i, dtype=np.uint8)

    refs = list(large_values_generator.remote(3))
    assert [int(ray.get(r)[0]) for r in refs] == [0, 1, 2]
    a, b, c = large_values_generator.options(num_returns=3).remote(3)
    assert int(ray.get(c)[0]) == 2


def test_resources_limit_concurrency():
    @ray.remote(num_cpus=2)
    def heavy(i):
        time.sleep(0.2)
        return i

    t = time.monotonic()
    assert ray.get([heavy.remote(i) for i in range(2)]) == [0, 1]
    assert time.monotonic() - t >= 0.38   # only one fits on 2 CPUs at a time


def test_return_refs_from_nested_task_and_get_them():
    @ray.remote
    def inner():
        return "value"

    @ray.remote
    def outer():
        return inner.remote()

    inner_ref = ray.get(outer.remote())
    assert ray.get(inner_ref) == "value"


def test_ref_in_closure_is_not_resolved():
    ref = ray.put(10)

    @ray.remote
    def uses_closure():
        return ray.get(ref) + 1

    assert ray.get(uses_closure.remote()) == 11

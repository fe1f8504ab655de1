"""Ray Core behaviour as Ray's documentation describes it, checked where the other compat
tests do not look: error messages of cancelled tasks, generator and option validation,
runtime context and util helpers. Written as a Ray user would (`import rayfast as ray`)."""
import pickle
import time

import pytest

import rayfast as ray
from rayfast import exceptions


@ray.remote
def sleeper(s):
    time.sleep(s)
    return s


def test_cancelled_task_error_names_the_task_once(cluster):
    ref = sleeper.remote(30)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError) as info:
        ray.get(ref, timeout=20)
    text = str(info.value)
    assert text.count("was cancelled") == 1 and text.count("Task") == 1, text
    # errors that travel between processes keep their fields, not their message as a field
    for e in (exceptions.TaskCancelledError("ab"), exceptions.TaskCancelledWorkerCrashedError("ab"),
              exceptions.ObjectLostError("cd"), exceptions.OwnerDiedError("cd", "gone")):
        copy = pickle.loads(pickle.dumps(e))
        assert type(copy) is type(e) and str(copy) == str(e)


def test_cancel_right_after_submit_never_lets_the_task_run_on(cluster):
    # Ray's documented example: cancel at once, get raises TaskCancelledError. The interrupt
    # can reach the worker before it has started the task; it is repeated until it lands.
    for _ in range(20):
        ref = sleeper.remote(10 ** 6)
        ray.cancel(ref)
        with pytest.raises(exceptions.TaskCancelledError):
            ray.get(ref, timeout=10)

"""Ray's LoggingConfig: init(logging_config=...) sets up the root logger of the driver and of the
job's task and actor processes, TEXT or JSON, with the rayfast context of each record."""
import json

import pytest

import rayfast
from rayfast.logging_config import LoggingConfig

from conftest import run_driver

CODE = """
    import logging
    import rayfast
    rayfast.init(num_cpus=1, logging_config=rayfast.LoggingConfig(encoding={enc!r}, log_level="INFO",
                                                                  additional_log_standard_attrs=["name"]))

    @rayfast.remote
    def f():
        logger = logging.getLogger("in_task")
        logger.info("This is a task")
        logger.debug("not shown at INFO")
        return rayfast.get_runtime_context().runtime_env

    @rayfast.remote
    class A:
        def log(self):
            logging.getLogger("in_actor").warning("This is an actor")
            return rayfast.get_runtime_context().get_actor_id()

    assert rayfast.get(f.remote()) == {{}}   # the config is not one of the user's runtime_env fields
    print("ACTOR", rayfast.get(A.remote().log.remote()), flush=True)
    logging.getLogger("drv").info("from the driver")
    import time; time.sleep(0.5)   # the workers' output reaches the driver
    rayfast.shutdown()
"""


def _lines(out, needle):
    return [line for line in out.splitlines() if needle in line]


def test_text_encoding_in_driver_tasks_and_actors():
    p = run_driver(CODE.format(enc="TEXT"))
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    task = _lines(out, "This is a task")
    assert task and "INFO" in task[0] and "name=in_task" in task[0] and "task_name=f" in task[0], out
    assert "job_id=01000000" in task[0] and "worker_id=" in task[0] and "task_func_name=" in task[0]
    assert not _lines(out, "not shown at INFO")
    actor_id = _lines(out, "ACTOR ")[0].split()[-1]
    actor = _lines(out, "This is an actor")
    assert actor and f"actor_id={actor_id}" in actor[0] and "WARNING" in actor[0], out
    driver = _lines(out, "from the driver")
    assert driver and "name=drv" in driver[0] and "task_id=" not in driver[0]


def test_json_encoding():
    p = run_driver(CODE.format(enc="JSON"))
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    line = _lines(out, "This is a task")[0]
    record = json.loads(line[line.index("{"):])
    assert record["message"] == "This is a task" and record["levelname"] == "INFO"
    assert record["name"] == "in_task" and record["task_name"] == "f" and "timestamp_ns" in record


def test_bad_logging_config_is_refused_at_the_call():
    with pytest.raises(ValueError, match="Invalid encoding type"):
        LoggingConfig(encoding="XML")
    with pytest.raises(ValueError, match="standard attribute"):
        LoggingConfig(additional_log_standard_attrs=["bogus"])
    assert rayfast.LoggingConfig is LoggingConfig

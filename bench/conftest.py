"""pytest-benchmark microbenchmarks of rayfast alone: `pytest bench/ --benchmark-only`.

One local cluster for the whole session (`cluster`), and the workloads' remote
functions defined once on it (`cx`). `--bench-quick` uses the small sizes of
`python -m bench.compare --quick`. The side-by-side comparison with Ray is
`python -m bench.compare`; these are for tracking rayfast over time
(`--benchmark-autosave`, `--benchmark-compare`).

`pytest -q` at the repository root does not collect this directory
(pyproject.toml: testpaths = ["tests"]).
"""
import os

import pytest

from bench import workloads as W


def pytest_addoption(parser):
    parser.addoption("--bench-quick", action="store_true", help="small benchmark sizes (bench.compare --quick)")


@pytest.fixture(scope="session")
def quick(request):
    return request.config.getoption("--bench-quick")


@pytest.fixture(scope="session")
def sizes(quick):
    return W.sizes(quick)


@pytest.fixture(scope="session")
def cluster():
    import rayfast
    rayfast.init(num_cpus=os.cpu_count())
    yield rayfast
    rayfast.shutdown()


@pytest.fixture(scope="session")
def cx(cluster, quick):
    return W.Context(cluster, quick)

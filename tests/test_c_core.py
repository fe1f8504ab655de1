"""The C core's own unit tests (ctest), built with ASan/UBSan, as part of the pytest run."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.timeout(600)
def test_c_unit_tests_under_sanitizers(tmp_path):
    build = tmp_path / "build"
    env = dict(os.environ, RAYFAST_SANITIZE="1")
    subprocess.run(["cmake", "-S", ROOT, "-B", str(build)], check=True, env=env, capture_output=True)
    r = subprocess.run(["cmake", "--build", str(build), "-j2"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    r = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "100% tests passed" in r.stdout

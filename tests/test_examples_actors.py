"""The actor examples run (small) and check their own results."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "parameter_server.py")


def test_parameter_server_small():
    out = subprocess.run([sys.executable, EXAMPLE, "--dim", "200000", "--workers", "2", "--iterations", "20"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "40 updates" in out.stdout and "updates/s" in out.stdout
    assert "final weights: OK" in out.stdout


def test_parameter_server_help():
    out = subprocess.run([sys.executable, EXAMPLE, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0
    assert "--dim" in out.stdout and "--workers" in out.stdout and "--iterations" in out.stdout

"""The example, the offline pip install and the overhead benchmark still work."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SERVER_BIN

PACKAGE = os.path.join(REPO, "client", "python")


def run(args, **kwargs):
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          **kwargs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mmrec_example_gives_the_same_output_both_ways(server, dtype):
    pytest.importorskip("torch")
    out = run([os.path.join(PACKAGE, "examples", "mmrec_decay.py"), "--target", server.target,
               "--dtype", dtype, "--seq-len", "128"])
    assert "same output" in out, out


def test_pip_install_offline(tmp_path):
    pytest.importorskip("pip")
    source = tmp_path / "src"
    # A copy, so that the build's egg-info and build/ do not land in the checkout.
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                   "*.egg-info"))
    target = tmp_path / "site"
    # --no-deps: grpcio, protobuf and numpy come from Debian, which pip's --target cannot see.
    run(["-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps",
         "--target", str(target), str(source)])
    assert (target / "scan_service" / "_proto" / "scan_pb2.py").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    out = run(["-c", "import scan_service; print(scan_service.__file__)"], env=env, cwd=tmp_path)
    assert out.startswith(str(target))


def test_overhead_benchmark_runs(tmp_path):
    report = tmp_path / "overhead.json"
    run([os.path.join(PACKAGE, "bench", "overhead.py"), "--server", SERVER_BIN, "--mib", "1",
         "--repeats", "2", "--warmup", "1", "--json", str(report)])
    import json
    result = json.loads(report.read_text())
    assert result["client_ms"] > 0 and result["plain_ms"] > 0 and result["client_unary_ms"] > 0

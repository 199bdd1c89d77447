"""The scripts in examples/ run on a tiny budget (--quick) and do what they say."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, tmp_path: Path) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--quick", "--run-dir", "run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_own_env_trains_loads_and_acts(tmp_path):
    out = run_example("own_env.py", tmp_path)
    assert "trained 1024 steps into run" in out
    assert re.search(r"greedy episode return: -?\d+\.\d\d", out)
    assert (tmp_path / "run" / "checkpoints" / "update_0000002.pt").is_file()


def test_early_stop_callback_stops_with_a_checkpoint(tmp_path):
    out = run_example("early_stop.py", tmp_path)
    stopped = re.search(r"stopped early at update (\d+) of 976", out)
    assert stopped, out
    update = int(stopped.group(1))
    assert (tmp_path / "run" / "checkpoints" / f"update_{update:07d}.pt").is_file()


def test_export_onnx_plays_with_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    out = run_example("export_onnx.py", tmp_path)
    assert "inputs: ['obs'] outputs: ['action', 'value', 'mean', 'log_std']" in out
    largest = float(re.search(r"largest difference from the torch agent: (\S+)", out).group(1))
    assert largest <= 1e-5
    assert (tmp_path / "run" / "policy.onnx").is_file()

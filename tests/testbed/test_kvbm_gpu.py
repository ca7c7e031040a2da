"""The real KVBM on a GPU, driven by the chart's worker environment (testbed/kvbm_gpu.py): runs only where a CUDA
GPU, PyTorch and the packed wheels are (make kvbm-bundle here, make kvbm-gpu there)."""

import os
import subprocess
import sys

import pytest

from testbed import kvbm_gpu


def gpu_missing():
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if not (kvbm_gpu.BUNDLE / "cases.json").exists():
        return f"{kvbm_gpu.BUNDLE} is missing (make kvbm-bundle)"
    return None


@pytest.mark.skipif(gpu_missing() is not None,
                    reason=f"{gpu_missing()}: the KVBM GPU run is `make kvbm-gpu` on a GPU machine")
def test_kvbm_on_the_gpu_with_the_chart_s_worker_environment(tmp_path):
    result = subprocess.run([sys.executable, "-m", "testbed.kvbm_gpu", "--out", str(tmp_path)],
                            cwd=kvbm_gpu.ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=3600)
    report = tmp_path / "kvbm-gpu.md"
    assert result.returncode == 0, report.read_text() if report.exists() else "the run ended before its report"

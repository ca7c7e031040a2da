import subprocess
import sys

from testbed.engine_shim import python_shims


def test_dynamo_trtllm_runs_the_stand_in_with_its_arguments_and_anything_else_the_interpreter(tmp_path):
    standin = tmp_path / "standin.py"
    standin.write_text("import sys; print('stand-in', *sys.argv[1:])\n")
    shims = python_shims(tmp_path / "bin", sys.executable, standin)
    for name in ("python3", "python"):
        engine = subprocess.run([shims / name, "-m", "dynamo.trtllm", "--model-path=/m", "--connector", "kvbm"],
                                capture_output=True, text=True, check=True)
        assert engine.stdout.split() == ["stand-in", "--model-path=/m", "--connector", "kvbm"]
        other = subprocess.run([shims / name, "-c", "import sys; print(sys.executable)"],
                               capture_output=True, text=True, check=True)
        assert other.stdout.strip() == sys.executable

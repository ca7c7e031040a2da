"""Paths of the image build, and running one of its steps: a failure names the step."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE = "dynamo-offloading-hooks"
CONTAINERFILE = ROOT / "hooks" / "Containerfile"
WORK = ROOT / "build" / "image"
CONTEXT = WORK / "context"
DIST = ROOT / "dist"


class StepError(Exception):
    pass


def log(message):
    print(f"==> {message}", flush=True)


def run(step, cmd, quiet=False, **kwargs):
    """Run cmd; on failure raise StepError naming the step. quiet: show the output only on failure."""
    kwargs.setdefault("check", True)
    if quiet:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        return subprocess.run([str(c) for c in cmd], **kwargs)
    except subprocess.CalledProcessError as e:
        if quiet and e.stdout:
            print(e.stdout[-8000:], file=sys.stderr)
        raise StepError(f"{step}: `{' '.join(map(str, cmd))}` exited with {e.returncode}") from None
    except FileNotFoundError as e:
        raise StepError(f"{step}: {e.filename} not found (make deps installs the Debian tools)") from None


def output(step, cmd, **kwargs):
    return run(step, cmd, capture_output=True, text=True, **kwargs).stdout.strip()

"""The build context's wheels: the hooks package and its dependency closure, pinned to the venv's versions."""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from hack.image.steps import CONTEXT, ROOT, WORK, StepError, log, output, run

WHEEL_CACHE = WORK / "wheel-cache"


def constraints(python):
    """Pins for the wheel set: every distribution installed next to the hooks in the venv."""
    frozen = output("wheels: pip freeze", [python, "-m", "pip", "freeze", "--exclude-editable",
                                           "--disable-pip-version-check"])
    pins = [line for line in frozen.splitlines() if "==" in line and not line.startswith("-")]
    path = WORK / "constraints.txt"
    path.write_text("\n".join(pins) + "\n")
    return path, {canonical(name): version for name, version in (line.split("==", 1) for line in pins)}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def build_wheels(python):
    """Fill CONTEXT/wheels with the hooks wheel, its dependency closure and pip (to install them)."""
    log("wheels: the hooks package and its dependencies, pinned to the venv's versions")
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = CONTEXT / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    constraint_file, pins = constraints(python)
    pip_version = output("wheels: pip version", [python, "-c", "import pip; print(pip.__version__)"])
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "hooks"
        shutil.copytree(ROOT / "hooks", src, ignore=shutil.ignore_patterns(
            "*.egg-info", "build", "__pycache__", "Containerfile"))
        pip = [python, "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet",
               "--only-binary", ":all:", "--no-binary", "dynamo-offloading-hooks",
               "--find-links", WHEEL_CACHE, "--wheel-dir", WHEEL_CACHE, "-c", constraint_file]
        wanted = [src, f"pip=={pip_version}"]
        # Offline first (warm cache); online when something is missing.
        offline = subprocess.run([str(c) for c in pip + ["--no-index", *wanted]], capture_output=True)
        if offline.returncode != 0:
            run("wheels: download the build backend", [
                python, "-m", "pip", "--disable-pip-version-check", "download", "--quiet", "--only-binary",
                ":all:", "--dest", WHEEL_CACHE, "setuptools>=61", "wheel"])
            run("wheels: pip wheel (online)", pip + wanted)
        # The exact set the resolver picks for the hooks, from the cache only.
        report = Path(tmp) / "report.json"
        run("wheels: resolve the closure", [
            python, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--dry-run",
            "--ignore-installed", "--no-index", "--only-binary", ":all:", "--no-binary",
            "dynamo-offloading-hooks", "--find-links", WHEEL_CACHE, "-c", constraint_file,
            "--report", report, src], capture_output=True)
        resolved = json.loads(report.read_text())["install"]
    names = []
    for item in resolved:
        url = item["download_info"]["url"]
        name = item["metadata"]["name"]
        if name == "dynamo-offloading-hooks":  # the local build, not a cached file
            hooks = sorted(WHEEL_CACHE.glob("dynamo_offloading_hooks-*.whl"), key=lambda p: p.stat().st_mtime)
            shutil.copy2(hooks[-1], wheels)
            names.append(hooks[-1].name)
            continue
        path = Path(url.removeprefix("file://"))
        shutil.copy2(path, wheels)
        names.append(path.name)
    pip_wheel = f"pip-{pip_version}-py3-none-any.whl"
    shutil.copy2(WHEEL_CACHE / pip_wheel, wheels)
    for name in sorted(names):
        print(f"    {name}")
    print(f"    {pip_wheel} (runs the install; not installed)")
    versions = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in resolved}
    mismatched = [f"{name} {version} (venv {pins[name]})" for name, version in versions.items()
                  if pins.get(name, version) != version]
    if mismatched:
        raise StepError(f"wheels: versions differ from the venv: {', '.join(mismatched)}")
    return names

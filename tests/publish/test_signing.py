"""`make package SIGN_KEY=...` signs the chart with a real GnuPG key, and Helm 3 and Helm 4 verify it."""

import os
import subprocess

import pytest

from tests.helm import ROOT, helm

KEY = "dynamo-offloading test signing key"


@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    """(secret keyring, public keyring) in the legacy format Helm reads, from a fresh key without passphrase."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args):
        return subprocess.run(["gpg", "--batch", "--yes", *args], env=env, check=True, capture_output=True,
                              timeout=120).stdout

    gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-generate-key", KEY, "rsa2048", "sign", "never")
    (home / "secring.gpg").write_bytes(gpg("--export-secret-keys"))
    (home / "pubring.gpg").write_bytes(gpg("--export"))
    return home / "secring.gpg", home / "pubring.gpg"


def test_signed_package_verifies(keyring, tmp_path, helm_major):
    secret, public = keyring
    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "package", f"SIGN_KEY={KEY}", f"KEYRING={secret}", f"DIST={dist}"], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    [package] = dist.glob("dynamo-offloading-*.tgz")
    assert (dist / f"{package.name}.prov").read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    out = helm(helm_major, "verify", str(package), "--keyring", str(public))
    assert KEY in out.stdout + out.stderr


def test_tampered_package_fails_verification(keyring, tmp_path):
    secret, public = keyring
    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "package", f"SIGN_KEY={KEY}", f"KEYRING={secret}", f"DIST={dist}"], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    [package] = dist.glob("dynamo-offloading-*.tgz")
    package.write_bytes(package.read_bytes() + b"\0")
    assert helm(4, "verify", str(package), "--keyring", str(public), check=False).returncode != 0

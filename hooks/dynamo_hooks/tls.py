"""Client TLS contexts from PEM content (as Dynamo reads ETCD_AUTH_*) or from files."""

import os
import ssl
import tempfile


def read_pem(value):
    """PEM content as given, or the content of the file it names."""
    if not value:
        return None
    if "-----BEGIN" in value:
        return value
    with open(value) as f:
        return f.read()


def client_context(ca=None, cert=None, key=None):
    """A verifying client context; `ca`, `cert` and `key` are PEM content or file paths (None: system CAs,
    no client certificate). The address connected to must be one of the certificate's names, IP addresses
    included, as Dynamo's etcd client (tonic with rustls) requires: a hostNetwork worker reaches etcd by pod IP."""
    context = ssl.create_default_context(cadata=read_pem(ca)) if ca else ssl.create_default_context()
    if cert and key:
        # load_cert_chain reads files only; the PEM content lives in a private temp dir for the call.
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for name, value in (("cert.pem", cert), ("key.pem", key)):
                path = os.path.join(tmp, name)
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                    f.write(read_pem(value))
                paths.append(path)
            context.load_cert_chain(*paths)
    return context

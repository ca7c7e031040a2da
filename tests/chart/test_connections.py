"""Where the frontend and the worker find etcd and NATS, with credentials and certificates from Secrets."""

from tests.helm import container, env_of, environment_values, find, one, peers_of, pod_spec, render

IPOIB = environment_values("ipoib")
STANDALONE = environment_values("standalone")
# Dynamo 0.9.0's etcd client takes a password or a client certificate, not both (a rule refuses both).
ETCD_PASSWORD = {"etcd": {"auth": {"existingSecret": "etcd-creds"}}}
ETCD_TLS = {"etcd": {"tls": {"enabled": True, "existingSecret": "etcd-certs"}}}
NATS_SECURED = {"nats": {"auth": {"existingSecret": "nats-creds"},
                         "tls": {"enabled": True, "existingSecret": "nats-certs"}}}


def workload_env(objects, kind, component, name):
    return env_of(container(one(objects, kind, component), name))


def test_embedded_servers_by_dns():
    objects = render(STANDALONE)
    for kind, component, name in (("Deployment", "frontend", "frontend"), ("StatefulSet", "worker", "worker")):
        env = workload_env(objects, kind, component, name)
        assert env["ETCD_ENDPOINTS"] == "http://dynamo-dynamo-offloading-etcd.dynamo-test.svc:2379"
        assert env["NATS_SERVER"] == "nats://dynamo-dynamo-offloading-nats.dynamo-test.svc:4222"


def test_embedded_etcd_members_know_each_other():
    etcd = one(render(STANDALONE, {"etcd": {"embedded": {"replicas": 3}}}), "StatefulSet", "etcd")
    args = container(etcd, "etcd")["args"]
    cluster = next(a for a in args if a.startswith("--initial-cluster="))
    assert cluster.count("=http://") == 3
    assert "dynamo-dynamo-offloading-etcd-2=http://dynamo-dynamo-offloading-etcd-2." in cluster


def test_embedded_nats_runs_jetstream():
    objects = render(STANDALONE)
    conf = one(objects, "ConfigMap", "nats")["data"]["nats.conf"]
    assert "jetstream {" in conf and "store_dir: /data" in conf
    assert one(objects, "StatefulSet", "nats")["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_credentials_and_certificates_come_from_secrets():
    with_password = render(IPOIB, ETCD_PASSWORD, NATS_SECURED)
    with_certificate = render(IPOIB, ETCD_TLS)
    for kind, component, name in (("Deployment", "frontend", "frontend"), ("StatefulSet", "worker", "worker")):
        env = workload_env(with_password, kind, component, name)
        assert env["ETCD_AUTH_USERNAME"] == {"secretKeyRef": {"name": "etcd-creds", "key": "username"}}
        assert env["ETCD_AUTH_PASSWORD"] == {"secretKeyRef": {"name": "etcd-creds", "key": "password"}}
        assert env["NATS_AUTH_USERNAME"] == {"secretKeyRef": {"name": "nats-creds", "key": "username"}}
        assert env["NATS_TLS_CA_CERT_PATH"] == "/etc/dynamo/nats-tls/ca.crt"
        volumes = {v["name"]: v for v in pod_spec(one(with_password, kind, component))["volumes"]}
        assert volumes["nats-tls"]["secret"]["secretName"] == "nats-certs"
        env = workload_env(with_certificate, kind, component, name)
        # PEM content, as Dynamo's etcd client reads it, not file paths.
        assert env["ETCD_AUTH_CA"] == {"secretKeyRef": {"name": "etcd-certs", "key": "ca.crt"}}
        assert env["ETCD_AUTH_CLIENT_CERT"] == {"secretKeyRef": {"name": "etcd-certs", "key": "tls.crt"}}
        assert env["ETCD_AUTH_CLIENT_KEY"] == {"secretKeyRef": {"name": "etcd-certs", "key": "tls.key"}}
    assert workload_env(with_certificate, "Deployment", "frontend", "frontend")["ETCD_ENDPOINTS"] == \
        "https://etcd-headless.baseten.svc:2379"
    frontend = workload_env(with_password, "Deployment", "frontend", "frontend")
    assert frontend["ETCD_ENDPOINTS"] == "http://etcd-headless.baseten.svc:2379"
    assert frontend["NATS_SERVER"] == "nats://nats-headless.baseten.svc:4222"  # Dynamo rejects other schemes
    assert "etcd-creds" not in str([s for s in find(with_password, "Secret")])


def test_embedded_servers_use_the_secrets_too():
    objects = render(STANDALONE, ETCD_TLS, {"nats": {"auth": {"existingSecret": "nats-creds"}}})
    etcd_args = container(one(objects, "StatefulSet", "etcd"), "etcd")["args"]
    assert "--client-cert-auth" in etcd_args and "--cert-file=/etc/etcd/tls/tls.crt" in etcd_args
    conf = one(objects, "ConfigMap", "nats")["data"]["nats.conf"]
    assert "user: $NATS_USER" in conf
    nats_env = env_of(container(one(objects, "StatefulSet", "nats"), "nats"))
    assert nats_env["NATS_PASSWORD"] == {"secretKeyRef": {"name": "nats-creds", "key": "password"}}


def test_frontend_falls_back_to_explicit_endpoints_without_a_service():
    values = {"etcd": {"service": {"name": "", "namespace": ""},
                       "endpoints": ["172.29.22.14:2379", "172.29.202.242:2379"]}}
    env = workload_env(render(IPOIB, values), "Deployment", "frontend", "frontend")
    assert env["ETCD_ENDPOINTS"] == "172.29.22.14:2379,172.29.202.242:2379"


# --- explicit addresses: etcd.endpoints and nats.url ------------------------------------------------------------

def test_explicit_addresses_skip_resolution():
    values = {"etcd": {"endpoints": ["10.0.0.1:2379", "10.0.0.2:2379"]}, "nats": {"url": "nats://10.0.0.3:4222"}}
    objects = render(IPOIB, values)
    args = container(one(objects, "Job", "pre-install"), "pre-install")["args"]
    assert peers_of(args) == {"etcd": (("explicit", "10.0.0.1:2379", "10.0.0.2:2379"), "required"),
                              "nats": (("explicit", "nats://10.0.0.3:4222"), "required")}
    assert not [a for a in args if a.startswith("--record-name")]
    assert not find(objects, "Role", "pre-install") and not find(objects, "Role", "worker")
    assert not find(objects, "ConfigMap", "endpoints")
    assert pod_spec(one(objects, "Job", "pre-install"))["automountServiceAccountToken"] is False
    worker = pod_spec(one(objects, "StatefulSet", "worker"))
    assert "kube-api-access" not in {v["name"] for v in worker["volumes"]}


def test_explicit_endpoints_roll_the_hostnetwork_worker_only():
    """The frontend keeps the Service's DNS name; the worker's connections, and so its checksum, change."""
    def annotations(*values):
        objects = render(IPOIB, *values)
        return [one(objects, kind, component)["spec"]["template"]["metadata"]["annotations"]["checksum/connections"]
                for kind, component in (("StatefulSet", "worker"), ("Deployment", "frontend"))]
    (worker, frontend), (worker_after, frontend_after) = annotations(), annotations(
        {"etcd": {"endpoints": ["10.0.0.1:2379"]}})
    assert worker != worker_after and frontend == frontend_after

"""dynamo.release: each line's runtime image, worker flags and environment, as the chart's one table of them
(_dynamo.tpl dynamo.lines) says; the etcd and NATS a line and its planes do not use are left out everywhere."""

import pytest

from tests.helm import container, env_of, environment_values, find, one, peers_of, render, render_error

IPOIB, STANDALONE, SCALE_OUT = (environment_values(env) for env in ("ipoib", "standalone", "scale-out"))


def dynamo_containers(objects):
    return [container(one(objects, "Deployment", "frontend"), "frontend"),
            *(container(sts, "worker") for sts in find(objects, "StatefulSet", "worker"))]


@pytest.mark.parametrize("release,tag,model_flag,kv_flags,discovery_env", [
    ("0.9", "0.9.0", "--model-path", ["--publish-events-and-metrics"], "DYN_STORE_KV"),
    ("1.6", "1.6.0", "--model", ["--publish-kv-events", "--publish-metrics"], "DYN_DISCOVERY_BACKEND"),
])
def test_each_line_runs_its_image_with_its_flags(release, tag, model_flag, kv_flags, discovery_env):
    objects = render(SCALE_OUT, {"dynamo": {"release": release}})
    for c in dynamo_containers(objects):
        assert c["image"] == f"nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime:{tag}"
        env = env_of(c)
        assert (env[discovery_env], env["DYN_EVENT_PLANE"]) == ("etcd", "nats")
    for sts in find(objects, "StatefulSet", "worker"):
        worker = container(sts, "worker")
        assert f'exec python3 -m dynamo.trtllm {model_flag}="$MODEL_PATH" "$@"' in worker["command"][2]
        assert [a for a in worker["args"] if a.startswith("--publish")] == kv_flags  # the pool routes by KV events
    # The hooks check etcd and NATS; they are not Dynamo processes.
    assert "DYN_EVENT_PLANE" not in env_of(container(one(objects, "Job", "pre-install"), "pre-install"))


def test_an_image_tag_given_wins_over_the_lines():
    c = dynamo_containers(render(IPOIB, {"dynamo": {"release": "1.6"}, "image": {"tag": "1.6.0-custom"}}))[0]
    assert c["image"].endswith(":1.6.0-custom")


@pytest.mark.parametrize("release,copies", [("0.9", True), ("1.6", False)])
def test_only_0_9_needs_the_model_files_on_the_frontend(release, copies):
    """From 1.4 the worker serves its model's files on its system port (DYN_SELF_HOST_METADATA)."""
    for source in ("download", "hostPath"):
        frontend = one(render(IPOIB, {"dynamo": {"release": release}, "frontend": {"modelFiles": {"source": source}}}),
                       "Deployment", "frontend")
        spec = frontend["spec"]["template"]["spec"]
        has_copy = any(v["name"].startswith("hf-cache") for v in spec["volumes"])
        assert has_copy is copies
        assert bool(spec.get("initContainers")) is (copies and source == "download")


def test_the_zmq_event_plane_on_1_6_leaves_nats_out():
    """NATS is used on 1.6 only by the NATS event plane: with zmq nothing runs, sets or checks it (a 1.x process
    connects to NATS whenever NATS_SERVER is set)."""
    objects = render(STANDALONE, {"dynamo": {"release": "1.6", "eventPlane": "zmq"}})
    assert not [o for o in objects if o["metadata"]["name"].endswith("-nats")]
    for c in dynamo_containers(objects):
        env = env_of(c)
        assert env["DYN_EVENT_PLANE"] == "zmq" and "NATS_SERVER" not in env and "ETCD_ENDPOINTS" in env
    hook = container(one(objects, "Job", "pre-install"), "pre-install")
    assert set(peers_of(hook["args"])) == {"etcd"}
    worker = one(objects, "StatefulSet", "worker")
    assert set(peers_of(container(worker, "resolve")["args"])) == {"etcd"}


def test_0_9_uses_nats_whatever_the_plane_and_1_6_with_the_nats_plane():
    for release in ("0.9", "1.6"):
        objects = render(STANDALONE, {"dynamo": {"release": release}})
        assert one(objects, "StatefulSet", "nats")
        assert all("NATS_SERVER" in env_of(c) for c in dynamo_containers(objects))


@pytest.mark.parametrize("release,setting,value,fixes", [
    ("0.9", "eventPlane", "zmq", "which has nats; --set dynamo.release=1.6, or --set dynamo.eventPlane=nats"),
    ("0.9", "discovery", "kubernetes", "which has etcd; --set dynamo.discovery=etcd"),
    ("1.6", "discovery", "kubernetes", "which has etcd; --set dynamo.discovery=etcd"),
])
def test_a_line_refuses_what_it_has_not(release, setting, value, fixes):
    message = render_error(IPOIB, {"dynamo": {"release": release, setting: value}})
    assert f"dynamo.{setting}: {value} is not available with dynamo.release {release}, {fixes}" in message


def test_nats_tls_to_an_embedded_nats_needs_1_6():
    tls = {"nats": {"tls": {"enabled": True, "existingSecret": "nats-tls"}}}
    assert "Dynamo 0.9 has no NATS TLS client settings" in render_error(STANDALONE, tls)
    objects = render(STANDALONE, tls, {"dynamo": {"release": "1.6"}})
    assert all(env_of(c)["NATS_TLS_CA_CERT_PATH"] == "/etc/dynamo/nats-tls/ca.crt" for c in dynamo_containers(objects))

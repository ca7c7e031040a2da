"""Every probe budget the chart derives from a value allows at least that value: periodSeconds x
failureThreshold rounds up, never down (Helm's div truncates: 7 s of mount time once gave 5)."""

import math

import pytest

from tests.helm import container, environment_values, one, render

IPOIB = environment_values("ipoib")


def allowed(probe):
    return probe["periodSeconds"] * probe["failureThreshold"]


def worker_pod(*values):
    return one(render(IPOIB, *values), "StatefulSet", "worker")


@pytest.mark.parametrize("seconds", [5, 6, 7, 9, 11, 300, 301])
def test_fuse_sidecar_may_take_its_mount_timeout(seconds):
    probe = container(worker_pod({"threefs": {"fuse": {"mountTimeoutSeconds": seconds}}}), "fuse-sidecar")[
        "startupProbe"]
    assert seconds <= allowed(probe) < seconds + probe["periodSeconds"]


@pytest.mark.parametrize("wait,timeout", [(0, 1), (1, 1), (7, 3), (600, 5), (601, 60)])
def test_resolve_sidecar_may_take_its_wait_and_the_calls_past_it(wait, timeout):
    """Past the wait, each of etcd and NATS may still take two API calls and two protocol exchanges."""
    worker = worker_pod({"hooks": {"timeoutSeconds": timeout, "workerInit": {"waitSeconds": wait}}})
    probe = container(worker, "resolve")["startupProbe"]
    budget = wait + 2 * (2 + 2) * timeout
    assert budget <= allowed(probe) < budget + probe["periodSeconds"]
    # The worker's start waits as long for the sidecar's answer.
    script = container(worker, "worker")["command"][2]
    assert f'[ "$waited" -ge {budget} ]' in script


@pytest.mark.parametrize("load,gb,rate,margin,period", [
    (600, 50, 4, 300, 10), (601, 50, 4, 300, 10), (0, 7, 3, 0, 7), (30, 0.5, 4.5, 1, 60), (600, 500, 4, 300, 13)])
def test_worker_may_take_its_startup_budget(load, gb, rate, margin, period):
    values = {"kvbm": {"cpuCacheGB": min(20, gb), "diskCacheGB": gb},
              "worker": {"startup": {"modelLoadSeconds": load, "diskWriteGBPerMinute": rate, "marginSeconds": margin,
                                     "periodSeconds": period}}}
    probe = container(worker_pod(values), "worker")["startupProbe"]
    budget = load + math.ceil(gb * 60 / rate) + margin
    assert probe["periodSeconds"] == period
    assert budget <= allowed(probe) < budget + period

"""The chart's worker container, rendered for the GPU run of KVBM (testbed/kvbm_gpu.py), as plain data: the GPU
machine has no Helm and no chart tooling, so its cases are rendered here, with real Helm, into one JSON file.

Each case is an environment of values/ (the seed's cluster on each release line) with a few values layered on
top (smaller tiers, where a case needs the host tier to fill up within seconds). Of the rendered worker it keeps
what the kubelet would hand the container: the environment with `valueFrom` fields filled as for the
StatefulSet's first pod and `$(VAR)` expanded, the start script from the point where the resolve step's answer
is read (the steps before it wait for the resolve sidecar, which the GPU machine does not run), the arguments,
the words after it (the script's $0 and arguments), the engine config file, and the paths the script uses."""

import json
import logging
import sys
import tomllib

import pyhelm3.errors

from testbed.helm import NAMESPACE, chart_defaults, environment_values, one, render
from testbed.runner import expand

ENVIRONMENTS = {"0.9.0": "ipoib", "1.6.1": "ipoib-kubernetes"}  # KVBM release line: the seed's cluster on it
SMALL_TIERS = {"cpuCacheGB": 1, "diskCacheGB": 2}
CASES = {
    "start-sparse": {"kvbm": {"diskAllocation": "sparse"}},
    "start-zerofill": {"kvbm": {"cpuCacheGB": 4, "diskCacheGB": 4}},
    "tiers": {"kvbm": {**SMALL_TIERS, "diskOffloadFilter": False}},
    "filter": {"kvbm": SMALL_TIERS},
}
HANDOFF_LINE = ". /run/dynamo-offloading/worker.env"
POD_UID = "00000000-0000-4000-8000-000000000001"
POD_IP = "127.0.0.1"


def field_values(pod_name):
    return {"metadata.name": pod_name, "metadata.namespace": NAMESPACE, "metadata.uid": POD_UID,
            "status.podIP": POD_IP, "status.hostIP": POD_IP, "spec.nodeName": "gpu"}


def container_env(container, pod_name):
    """The container's environment as the kubelet builds it: in order, each value's $(VAR) expanded against the
    variables before it."""
    fields = field_values(pod_name)
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            raise ValueError(f"worker env {item['name']}: {item.get('valueFrom')} has no value on the GPU machine")
    return env


def config_file(objects, component, key):
    return one(objects, "ConfigMap", component)["data"][key]


def case(line, overrides):
    values = environment_values(ENVIRONMENTS[line])
    objects = render(values, overrides)
    workers = one(objects, "StatefulSet", "worker")
    worker = next(c for c in workers["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")
    script = worker["command"][2]
    if HANDOFF_LINE not in script:
        raise ValueError(f"the worker's start script no longer reads the resolve step's answer with {HANDOFF_LINE!r}")
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    launcher = tomllib.loads(config_file(objects, "fuse-launcher", "launcher.toml"))
    probe = worker["startupProbe"]
    return {"environment": ENVIRONMENTS[line], "overrides": overrides,
            "env": container_env(worker, f"{workers['metadata']['name']}-0"),
            "shell": worker["command"][:2], "script": script[script.index(HANDOFF_LINE):],
            "argv": worker["command"][3:] + worker["args"],
            "engine_dir": mounts["engine-config"], "handoff_dir": mounts["handoff"],
            "engine_yaml": config_file(objects, "engine-config", "engine.yaml"),
            "mountpoint": launcher["mountpoint"], "fsname": f"hf3fs.{launcher['cluster_id']}",
            "startup_budget_s": probe["periodSeconds"] * probe["failureThreshold"]}


# Where the run puts the disk tier: the rendered 3FS mount, and for comparison the same worker with its disk tier
# on a host directory instead.
BACKINGS = {"3fs": {}, "local": {"threefs": {"enabled": False}, "kvbm": {"diskCacheDir": "/var/cache/kvbm"}}}


def refuses_disk_without_gds(line, backing="3fs"):
    """Whether the chart refuses the line's disk tier on that backing unless kvbm.allowDiskTierWithoutGDS is set."""
    try:
        render(environment_values(ENVIRONMENTS[line]), BACKINGS[backing],
               {"kvbm": {"allowDiskTierWithoutGDS": False}})
    except pyhelm3.errors.Error as err:
        if "kvbm.allowDiskTierWithoutGDS" not in str(err):
            raise
        return True
    return False


def build(lines=ENVIRONMENTS):
    """{line: {case name: case}}, with each line's chart values that the report compares with."""
    built = {}
    for line in lines:
        values = environment_values(ENVIRONMENTS[line])
        startup = {**chart_defaults()["worker"]["startup"], **values.get("worker", {}).get("startup", {})}
        built[line] = {"cases": {name: case(line, overrides) for name, overrides in CASES.items()},
                       "rendered": case(line, {}), "startup": startup,
                       "refuses_disk_without_gds": {backing: refuses_disk_without_gds(line, backing)
                                                    for backing in BACKINGS}}
    return built


if __name__ == "__main__":
    # refuses_disk_without_gds expects a failing render; any other failure raises
    logging.getLogger("pyhelm3").setLevel(logging.ERROR)
    json.dump(build(sys.argv[1:] or ENVIRONMENTS), sys.stdout, indent=1)

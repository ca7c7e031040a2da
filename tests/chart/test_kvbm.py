"""KVBM: presence-tested switches, the startup budget, the init timeout and the memory limit."""

import math

import pytest

from tests.helm import container, env_of, environment_values, one, pod_spec, render, render_error

ON_3FS = environment_values("ipoib")
LOCAL = environment_values("standalone")


def worker_container(*values):
    return container(one(render(*values), "StatefulSet", "worker"), "worker")


def kvbm_env(*values):
    return env_of(worker_container(*values))


O_DIRECT = "DYN_KVBM_DISK_DISABLE_O_DIRECT"
ZEROFILL = "DYN_KVBM_DISK_ZEROFILL_FALLBACK"


def test_o_direct_switch_defaults_on_when_the_disk_tier_is_on_3fs():
    assert kvbm_env(ON_3FS, {"kvbm": {"diskDisableODirect": None}})[O_DIRECT] == "true"


def test_switches_absent_when_the_disk_tier_is_local():
    """fallocate works on a local disk, so zerofill asks nothing of KVBM there."""
    for mode in ("zerofill", "sparse"):
        env = kvbm_env(LOCAL, {"kvbm": {"diskAllocation": mode}})
        assert O_DIRECT not in env and ZEROFILL not in env


def test_o_direct_switch_turned_off_is_absent_never_false():
    """KVBM tests these variables for presence: "false" would turn them on."""
    env = kvbm_env(ON_3FS, {"kvbm": {"diskDisableODirect": False}})
    assert O_DIRECT not in env
    assert env[ZEROFILL] == "true"


def test_o_direct_switch_can_be_forced_on_for_a_local_disk():
    assert kvbm_env(LOCAL, {"kvbm": {"diskDisableODirect": True}})[O_DIRECT] == "true"


@pytest.mark.parametrize("mode,zerofill", [("zerofill", True), ("sparse", False)])
def test_allocation_mode_sets_the_zerofill_switch_and_the_budget(mode, zerofill):
    """KVBM zero-fills only when the variable is present; absent, it truncates to a sparse file at once."""
    startup = {"modelLoadSeconds": 600, "diskWriteGBPerMinute": 4, "marginSeconds": 300, "periodSeconds": 10}
    c = worker_container(ON_3FS, {"kvbm": {"diskAllocation": mode, "diskCacheGB": 120},
                                  "worker": {"startup": startup}})
    env = env_of(c)
    assert (ZEROFILL in env) is zerofill
    allocation = 120 * 60 // 4 if zerofill else 0
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600 + allocation + 300
    assert probe["periodSeconds"] * (probe["failureThreshold"] - 1) < 600 + allocation + 300
    assert int(env["DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS"]) == max(1800, allocation + 300)
    script = c["command"][2]
    assert ("stat -f" in script) is not zerofill, "only a sparse tier checks the room on its filesystem"


def test_no_rendered_env_is_false():
    for values in (ON_3FS, LOCAL, {**ON_3FS, "kvbm": {**ON_3FS["kvbm"], "diskDisableODirect": False}},
                   {**ON_3FS, "kvbm": {**ON_3FS["kvbm"], "diskAllocation": "sparse"}}):
        for e in worker_container(values)["env"]:
            if e["name"].startswith("DYN_KVBM_DISK_"):
                assert e.get("value") != "false", e


def test_cpu_tier_only_renders_no_disk_env():
    env = kvbm_env(LOCAL, {"kvbm": {"diskCacheGB": 0}})
    assert env["DYN_KVBM_CPU_CACHE_GB"] == "20"
    assert "DYN_KVBM_DISK_CACHE_GB" not in env and "DYN_KVBM_DISK_CACHE_DIR" not in env


def test_metrics_port_is_kvbms_own():
    c = worker_container(ON_3FS)
    assert env_of(c)["DYN_KVBM_METRICS_PORT"] == "6880"
    assert {"name": "kvbm-metrics", "containerPort": 6880, "protocol": "TCP"} in c["ports"]
    off = kvbm_env(ON_3FS, {"kvbm": {"metrics": {"enabled": False}}})
    assert "DYN_KVBM_METRICS" not in off and "DYN_KVBM_METRICS_PORT" not in off


@pytest.mark.parametrize("disk_gb,rate", [(50, 4), (120, 4), (500, 4), (200, 10), (12.5, 4), (0, 4)])
def test_startup_budget_and_init_timeout(disk_gb, rate):
    startup = {"modelLoadSeconds": 600, "diskWriteGBPerMinute": rate, "marginSeconds": 300, "periodSeconds": 10}
    c = worker_container(ON_3FS, {"kvbm": {"cpuCacheGB": 10, "diskCacheGB": disk_gb}, "worker": {"startup": startup}})
    allocation = math.ceil(disk_gb * 60 / rate)
    budget = 600 + allocation + 300
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= budget
    assert probe["periodSeconds"] * (probe["failureThreshold"] - 1) < budget
    init_timeout = int(env_of(c)["DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS"])
    assert init_timeout >= allocation + 300
    assert init_timeout >= 1800  # never below KVBM's own default


def test_a_large_disk_tier_raises_the_init_timeout_past_1800():
    """At 4 GB/min, 500 GB take 125 min: KVBM's 1800 s default would kill the start."""
    env = kvbm_env(ON_3FS, {"kvbm": {"diskCacheGB": 500}})
    assert int(env["DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS"]) == 7500 + 300


def test_init_timeout_can_be_set():
    env = kvbm_env(ON_3FS, {"kvbm": {"leaderWorkerInitTimeoutSeconds": 4000}})
    assert env["DYN_KVBM_LEADER_WORKER_INIT_TIMEOUT_SECS"] == "4000"


@pytest.mark.parametrize("cpu_gb,shm,expected_gi", [(20, "8Gi", 19 + 8 + 32), (100, "8Gi", 94 + 8 + 32),
                                                    (0, "8Gi", 8 + 32), (1.5, "8Gi", 2 + 8 + 32),
                                                    (20, "", 19 + 32), (20, "20G", 19 + 19 + 32)])
def test_memory_limit_leaves_room_for_the_pinned_cpu_tier_and_shm(cpu_gb, shm, expected_gi):
    """/dev/shm is a memory volume: its pages are charged to the pod, like the pinned CPU tier."""
    resources = worker_container(ON_3FS, {"kvbm": {"cpuCacheGB": cpu_gb, "diskCacheGB": 200},
                                          "worker": {"shmSize": shm}})["resources"]
    assert resources["limits"]["memory"] == f"{expected_gi}Gi"
    shm_bytes = {"8Gi": 8 * 2**30, "": 0, "20G": 20 * 10**9}[shm]
    assert expected_gi * 2**30 >= cpu_gb * 10**9 + shm_bytes + 32 * 2**30


@pytest.mark.parametrize("shm", ["8Gi", "16Gi", ""])
def test_dev_shm_is_a_sized_memory_volume(shm):
    objects = render(ON_3FS, {"worker": {"shmSize": shm}})
    worker = one(objects, "StatefulSet", "worker")
    mounts = {m["name"]: m["mountPath"] for m in container(worker, "worker")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(worker)["volumes"]}
    if shm:
        assert mounts["shm"] == "/dev/shm"
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}
    else:  # the runtime's own 64Mi
        assert "shm" not in mounts and "shm" not in volumes


def test_an_explicit_memory_limit_wins():
    resources = worker_container(ON_3FS, {"worker": {"resources": {"limits": {"memory": "200Gi"}}}})["resources"]
    assert resources["limits"]["memory"] == "200Gi"


def test_worker_liveness_watches_the_3fs_mount():
    c = worker_container(ON_3FS)
    script = " ".join(c["livenessProbe"]["exec"]["command"])
    assert "stat -c %d '/mnt/3fs-root/3fs'" in script and "/live" in script
    assert "stat -c %d" in c["command"][2]


def test_worker_liveness_is_plain_http_off_3fs():
    assert worker_container(LOCAL)["livenessProbe"]["httpGet"] == {"path": "/live", "port": "system"}


def test_notes_show_the_allocation_estimate():
    """NOTES.txt is rendered only by install; Helm 3's --dry-run=client still asks the API server for
    its version, so this runs on Helm 4, whose client dry run needs no cluster."""
    from tests.helm import CHART, ROOT, helm

    args = ["install", "dynamo", str(CHART), "--dry-run=client", "-f", str(ROOT / "values/ipoib.yaml")]
    notes = helm(4, *args).stdout.split("NOTES:")[1]
    assert "750 s to zero-fill the 50 GB disk tier at 4 GB/min" in notes
    assert "threefs.fuse.image.tag=PLACEHOLDER" in notes


# The ipoib worker needs 20 GB (CPU tier) + 8 GiB (/dev/shm) + 32 GiB (headroom) = 62949672960 bytes.
NEEDED_BYTES = 20 * 10**9 + 8 * 2**30 + 32 * 2**30


@pytest.mark.parametrize("limit,enough", [
    (f"{NEEDED_BYTES // 1024}Ki", True), (f"{NEEDED_BYTES // 1024 - 1}Ki", False),
    (str(NEEDED_BYTES), True), (str(NEEDED_BYTES - 1), False),
    ("62949672960e0", True), ("6294967295E1", False), ("6294967296E1", True),
    ("59Gi", True), ("58Gi", False), ("63G", True), ("62G", False)])
def test_memory_limit_rule_at_its_boundary(limit, enough):
    """Binary and decimal units read exactly."""
    values = {"worker": {"resources": {"limits": {"memory": limit}}}}
    if enough:
        assert worker_container(ON_3FS, values)["resources"]["limits"]["memory"] == limit
    else:
        assert "worker.resources.limits.memory" in render_error(ON_3FS, values)


FILTER_OFF = "DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER"


def test_disk_offload_filter_on_by_default_renders_nothing():
    """On, KVBM's own default (make kvbm-gpu: a prefix computed and reused once never reached disk)."""
    assert FILTER_OFF not in kvbm_env(ON_3FS)


@pytest.mark.parametrize("env", [ON_3FS, LOCAL])
def test_disk_offload_filter_off_is_rendered_true_never_false(env):
    """Rendered only when off, as the presence-tested switches are (KVBM 0.9.0 reads this one as a boolean:
    "false" kept the filter on in make kvbm-gpu)."""
    assert kvbm_env(env, {"kvbm": {"diskOffloadFilter": False}})[FILTER_OFF] == "true"


def test_disk_offload_filter_irrelevant_without_a_disk_tier():
    assert FILTER_OFF not in kvbm_env(ON_3FS, {"kvbm": {"diskCacheGB": 0, "diskOffloadFilter": False}})


ON_1_6 = ["--set", "dynamo.release=1.6"]


@pytest.mark.parametrize("env,extra,warning", [
    ("ipoib", [], "KVBM 0.9.0 reads its disk tier back into the GPU only through GPUDirect Storage"),  # on 3FS
    ("ipoib", ["--set", "kvbm.diskCacheGB=0"], None),
    ("ipoib-kubernetes", [], None),  # 1.6 on 3FS: read right
    ("standalone", ON_1_6, "the disk tier is on a local filesystem, from which KVBM 1.6.1"),
    ("standalone", [], "KVBM 0.9.0 reads its disk tier back")])
def test_notes_warn_of_a_disk_tier_read_back_stale_without_gpudirect_storage(env, extra, warning):
    """make kvbm-gpu: without GPUDirect Storage KVBM's disk-to-GPU transfer failed, on 0.9.0 everywhere and on
    1.6.1 from a local filesystem, and the request was reported loaded with the GPU blocks unwritten. Helm 4's
    client dry run renders NOTES.txt without a cluster."""
    from tests.helm import CHART, ROOT, helm

    args = ["install", "dynamo", str(CHART), "--dry-run=client", "-f", str(ROOT / f"values/{env}.yaml"), *extra]
    notes = " ".join(helm(4, *args).stdout.split("NOTES:")[1].split())
    assert ("kvbm.allowDiskTierWithoutGDS is true" in notes) == bool(warning)
    if warning:
        assert f"WARNING: {warning}" in notes


def test_a_disk_tier_on_0_9_without_gpudirect_storage_is_refused_unless_allowed():
    """The refusal names the value that allows it and the one that turns the tier off; the CPU tier alone, and
    1.6 on 3FS, pass."""
    refused = {"kvbm": {"allowDiskTierWithoutGDS": False}}
    error = render_error(environment_values("ipoib"), refused)
    assert "kvbm.allowDiskTierWithoutGDS=true" in error and "kvbm.diskCacheGB=0" in error
    assert render(environment_values("ipoib"), refused, {"kvbm": {"diskCacheGB": 0}})
    assert render(environment_values("ipoib-kubernetes"), refused)


def test_a_local_disk_tier_on_1_6_without_gpudirect_storage_is_refused_unless_allowed():
    """KVBM 1.6.1 read a local filesystem's disk tier back stale: the refusal names the directory and the ways out,
    3FS among them."""
    refused = {"dynamo": {"release": "1.6"}, "kvbm": {"allowDiskTierWithoutGDS": False}}
    error = render_error(environment_values("standalone"), refused)
    assert "kvbm.diskCacheDir: /var/cache/kvbm is a local disk tier" in error
    assert "threefs.enabled" in error and "kvbm.allowDiskTierWithoutGDS=true" in error \
        and "kvbm.diskCacheGB=0" in error
    assert render(environment_values("standalone"), refused, {"kvbm": {"diskCacheGB": 0}})
    assert render(environment_values("standalone"), refused, {"kvbm": {"allowDiskTierWithoutGDS": True}})

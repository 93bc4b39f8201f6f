"""Unit tests of a fleet (several VMs from one plan): gce_preflight's options `fleet` and `only`, the GPU quota
check, and the local Compute API's quotas (regions.get, projects.get, an insert over quota).

The module runs in-process against the local Compute API (tests/compute_api); its request log shows that a
refused plan makes no API request at all.
"""
import copy
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.testing import ComputeApiServer, auth_args, run_module  # noqa: E402

from ansible_collections.llmops.gce_vllm.plugins.modules import gce_instance, gce_preflight  # noqa: E402

FAMILY = "ubuntu-accelerator-2204-amd64-with-nvidia-580"
TEMPLATE = {
    "machine_type": "g2-standard-4",
    "boot_disk": {"image_family": FAMILY, "image_project": "ubuntu-os-accelerator-images", "size_gb": 200,
                  "type": "pd-ssd"},
    "scheduling": {"on_host_maintenance": "TERMINATE", "automatic_restart": True},
    "tags": ["ai-server", "monitoring"],
}
FLEET = [
    {"name": "ai-server-l4-1", "zone": "asia-northeast3-a"},
    {"name": "ai-server-l4-2", "zone": "asia-northeast3-b"},
    {"name": "ai-server-l4-3", "zone": "asia-northeast3-a"},
]
# what the role passes (roles/gce_vllm/vars/main.yml) when gce_vllm_instances is set
NAMES = {
    "project": "gce_vllm_project",
    "fleet": "gce_vllm_instances",
    "fleet.N.name": "gce_vllm_instances[N].name",
    "fleet.N.zone": "gce_vllm_instances[N].zone",
    "only": "gce_vllm_target_instances",
    "instance.machine_type": "gce_vllm_machine_type",
}


@pytest.fixture
def server():
    srv = ComputeApiServer(op_polls=0).start()
    yield srv
    srv.stop()


def plan(server, fleet=None, state="present", **kw):
    instance = dict(copy.deepcopy(TEMPLATE), state=state)
    args = auth_args(server, instance=instance, fleet=copy.deepcopy(FLEET if fleet is None else fleet),
                     names=dict(NAMES))
    args.update(kw)
    return args


def create(server, name, zone):
    args = auth_args(server, name=name, zone=zone, state="present", **copy.deepcopy(TEMPLATE))
    r = run_module(gce_instance.main, args)
    assert not r.get("failed"), r
    return r


def test_fleet_plan_checks_each_zone_once_and_only_reads(server):
    r = run_module(gce_preflight.main, plan(server))
    assert not r.get("failed") and not r["changed"], r
    assert [m["name"] for m in r["fleet"]] == ["ai-server-l4-1", "ai-server-l4-2", "ai-server-l4-3"]
    assert all(m["exists"] is False for m in r["fleet"])
    paths = [q["path"] for q in server.requests()]
    assert sum(p.endswith("/machineTypes/g2-standard-4") for p in paths) == 2  # two zones, asked once each
    assert [q for q in server.requests() if q["method"] != "GET"] == []
    quota = dict(((q["scope"], q["metric"]), q) for q in r["quota"])
    assert quota[("asia-northeast3", "NVIDIA_L4_GPUS")]["needed"] == 3
    assert quota[("global", "GPUS_ALL_REGIONS")]["needed"] == 3


def test_duplicate_names_bad_zone_and_unknown_target_fail_before_any_api_call(server):
    fleet = [{"name": "ai-server-l4-1", "zone": "asia-northeast3-a"},
             {"name": "ai-server-l4-1", "zone": "asia-northeast3-b"},
             {"name": "ai-server-l4-3", "zone": "asia-northeast3"}]
    r = run_module(gce_preflight.main, plan(server, fleet=fleet, only=["ai-server-l4-9"]))
    assert r.get("failed"), r
    assert "gce_vllm_instances[1].name 'ai-server-l4-1' is also the name of gce_vllm_instances[0].name" in r["msg"]
    assert "gce_vllm_instances[2].zone 'asia-northeast3' is not a zone name" in r["msg"]
    assert "gce_vllm_target_instances names 'ai-server-l4-9', which is not in the fleet" in r["msg"]
    assert len(r["errors"]) == 3, r["errors"]
    assert server.requests() == []


def test_a_zone_without_the_gpu_is_named_by_its_fleet_entry(server):
    fleet = FLEET[:2] + [{"name": "ai-server-l4-3", "zone": "us-east1-d"}]  # no L4 there (stand-in catalogue)
    r = run_module(gce_preflight.main, plan(server, fleet=fleet))
    assert r.get("failed"), r
    assert "gce_vllm_instances[2].zone" in r["msg"] and "us-east1-d" in r["msg"], r["msg"]
    assert [q for q in server.requests() if q["method"] != "GET"] == []


def test_quota_counts_only_the_vms_still_to_create(server):
    server.api.quotas[("llmops-demo", "asia-northeast3", "NVIDIA_L4_GPUS")] = 2.0
    create(server, "ai-server-l4-1", "asia-northeast3-a")      # holds 1 of the 2
    r = run_module(gce_preflight.main, plan(server, fleet=FLEET[:2]))
    assert not r.get("failed"), r                                # 1 more needed, 1 free
    assert [m["exists"] for m in r["fleet"]] == [True, False]
    r = run_module(gce_preflight.main, plan(server))             # 2 more needed, 1 free
    assert r.get("failed"), r
    assert ("quota NVIDIA_L4_GPUS in region asia-northeast3: the VMs to create need 2 GPU(s), but only 1 of its "
            "limit 2 are free (1 in use)") in r["msg"], r["msg"]
    assert "gce_vllm_instances" in r["msg"]


def test_global_gpu_quota(server):
    server.api.quotas[("llmops-demo", "global", "GPUS_ALL_REGIONS")] = 1.0
    r = run_module(gce_preflight.main, plan(server, fleet=FLEET[:2]))
    assert r.get("failed") and "quota GPUS_ALL_REGIONS of project llmops-demo" in r["msg"], r


def test_only_selects_members_and_stopped_state_needs_no_api(server):
    r = run_module(gce_preflight.main, plan(server, only=["ai-server-l4-2"]))
    assert not r.get("failed"), r
    assert [m["name"] for m in r["fleet"]] == ["ai-server-l4-2"]
    paths = [q["path"] for q in server.requests()]
    assert not any("asia-northeast3-a" in p for p in paths), paths   # the unselected zone is not asked
    server.clear_requests()
    r = run_module(gce_preflight.main, plan(server, state="stopped", only=["ai-server-l4-3"]))
    assert not r.get("failed") and r["fleet"] == [{"name": "ai-server-l4-3", "zone": "asia-northeast3-a",
                                                   "exists": None}], r
    assert server.requests() == []


def test_instance_without_fleet_still_needs_name_and_zone(server):
    args = auth_args(server, instance=dict(copy.deepcopy(TEMPLATE)))
    r = run_module(gce_preflight.main, args)
    assert r.get("failed") and "name, zone" in r["msg"], r


def test_standin_refuses_an_insert_over_quota_and_reports_usage(server):
    server.api.quotas[("llmops-demo", "asia-northeast3", "NVIDIA_L4_GPUS")] = 1.0
    create(server, "ai-server-l4-1", "asia-northeast3-a")
    args = auth_args(server, name="ai-server-l4-2", zone="asia-northeast3-b", state="present",
                     **copy.deepcopy(TEMPLATE))
    r = run_module(gce_instance.main, args)
    assert r.get("failed") and "QUOTA_EXCEEDED" in r["msg"] and "NVIDIA_L4_GPUS" in r["msg"], r
    assert "asia-northeast3-b/ai-server-l4-2" not in server.api.summary()["llmops-demo"]["instances"]
    with server.api.lock:
        region = server.api.m_regions_get({"project": "llmops-demo", "region": "asia-northeast3"}, {}, {})
    l4 = [q for q in region["quotas"] if q["metric"] == "NVIDIA_L4_GPUS"][0]
    assert l4 == {"metric": "NVIDIA_L4_GPUS", "limit": 1.0, "usage": 1.0}


# ---------------------------------------------------------------------------------------------- the filter
from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmops.gce_vllm.plugins.filter.gce_fleet import gce_fleet  # noqa: E402


def test_fleet_filter_single_vm_is_the_old_default():
    assert gce_fleet([], zone="asia-northeast3-a", name="ai-server-l4") == [
        {"name": "ai-server-l4", "zone": "asia-northeast3-a"}]


def test_fleet_filter_count_and_list():
    assert gce_fleet([], zone="z-a", name="vm", count=3) == [
        {"name": "vm-1", "zone": "z-a"}, {"name": "vm-2", "zone": "z-a"}, {"name": "vm-3", "zone": "z-a"}]
    assert gce_fleet([{"name": "a"}, {"name": "b", "zone": "z-b"}], zone="z-a", name="vm") == [
        {"name": "a", "zone": "z-a"}, {"name": "b", "zone": "z-b"}]


@pytest.mark.parametrize("instances, count, words", [
    ([{"name": "a"}], 2, "set either gce_vllm_instances"),
    ([{"zone": "z-a"}], 1, "gce_vllm_instances[0] must be a dict with a name"),
    ([{"name": "a", "zones": "z-a"}], 1, "gce_vllm_instances[0] has unknown keys zones"),
    ([], 0, "gce_vllm_instance_count must be at least 1"),
    ("a,b", 1, "gce_vllm_instances must be a list"),
])
def test_fleet_filter_refuses_bad_input_naming_the_variable(instances, count, words):
    with pytest.raises(AnsibleFilterError) as e:
        gce_fleet(instances, zone="z-a", name="vm", count=count)
    assert words in str(e.value)

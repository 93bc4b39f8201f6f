"""Unit tests of gce_preflight's whole-plan check: options `instance`, `firewalls` and `names`.

The module runs in-process against the local Compute API (tests/compute_api); its request log shows that a
refused plan makes no API request at all, and that a good plan only reads.
"""
import copy
import json
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.testing import (  # noqa: E402
    ComputeApiServer,
    auth_args,
    run_module,
)

from ansible_collections.llmops.gce_vllm.plugins.modules import gce_firewall, gce_instance, gce_preflight  # noqa: E402

FAMILY = "ubuntu-accelerator-2204-amd64-with-nvidia-580"
NEWEST = FAMILY + "-v20260210"  # the stand-in's newest non-deprecated image of the family

INSTANCE = {
    "name": "ai-server-l4", "zone": "asia-northeast3-a", "machine_type": "g2-standard-4",
    "accelerators": [{"type": "nvidia-l4", "count": 1}],
    "boot_disk": {"image_family": FAMILY, "image_project": "ubuntu-os-accelerator-images", "size_gb": 200,
                  "type": "pd-ssd"},
    "scheduling": {"on_host_maintenance": "TERMINATE", "automatic_restart": True},
    "network": "default", "external_ip": True, "tags": ["ai-server", "monitoring"], "labels": {"app": "vllm"},
    "metadata": {"enable-oslogin": "FALSE"},
}
FIREWALLS = [
    {"name": "allow-ai-server-ports", "allowed": [{"ip_protocol": "tcp", "ports": [8000, 8001]}],
     "source_ranges": ["203.0.113.0/24"], "target_tags": ["ai-server"]},
    {"name": "allow-monitoring", "allowed": [{"ip_protocol": "tcp", "ports": ["9100", "9400"]}],
     "source_ranges": ["10.128.0.0/9"], "target_tags": ["monitoring"]},
]
# the role's variable names, as the provisioning role passes them
NAMES = {
    "project": "gce_vllm_project",
    "auth_kind": "gce_vllm_auth_kind",
    "service_account_file": "gce_vllm_service_account_file",
    "access_token": "gce_vllm_access_token",
    "instance.name": "gce_vllm_instance_name",
    "instance.zone": "gce_vllm_zone",
    "instance.machine_type": "gce_vllm_machine_type",
    "instance.accelerators.0.type": "gce_vllm_accelerator_type",
    "instance.scheduling.on_host_maintenance": "gce_vllm_on_host_maintenance",
    "instance.scheduling.automatic_restart": "gce_vllm_automatic_restart",
    "instance.boot_disk.image_project": "gce_vllm_image_project",
    "instance.boot_disk.image_family": "gce_vllm_image_family",
    "instance.boot_disk.size_gb": "gce_vllm_disk_size_gb",
    "firewalls.0.name": "gce_vllm_ai_firewall_name",
    "firewalls.0.allowed.0.ports": "gce_vllm_ai_ports",
    "firewalls.0.source_ranges": "gce_vllm_ai_source_ranges",
    "firewalls.1.name": "gce_vllm_monitoring_firewall_name",
    "firewalls.1.allowed.0.ports": "gce_vllm_monitoring_ports",
    "firewalls.1.source_ranges": "gce_vllm_monitoring_source_ranges",
}


@pytest.fixture
def server():
    srv = ComputeApiServer(op_polls=2).start()
    yield srv
    srv.stop()


def plan(server, instance=None, firewalls=None, **kw):
    args = auth_args(server, instance=copy.deepcopy(instance or INSTANCE),
                     firewalls=copy.deepcopy(FIREWALLS if firewalls is None else firewalls), names=dict(NAMES))
    args.update(kw)
    return args


def merged(base, **changes):
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("check_mode", [False, True])
def test_good_plan_passes_and_only_reads(server, check_mode):
    fws = copy.deepcopy(FIREWALLS)
    fws[0]["source_ranges"] = ["0.0.0.0/0"]
    r = run_module(gce_preflight.main, plan(server, firewalls=fws), check_mode=check_mode)
    assert not r.get("failed") and not r["changed"], r
    assert r["image"]["name"] == NEWEST and r["zone"] == "asia-northeast3-a"
    assert r["accelerator"]["name"] == "nvidia-l4"
    assert any("gce_vllm_ai_source_ranges contains 0.0.0.0/0" in w and "8000" in w for w in r["warning_msgs"]), r
    assert [q for q in server.requests() if q["method"] != "GET"] == []
    paths = [q["path"] for q in server.requests()]
    assert any(p.endswith("/machineTypes/g2-standard-4") for p in paths)
    assert any(p.endswith("/global/images/family/" + FAMILY) for p in paths)


def test_bad_plan_lists_every_problem_and_calls_no_api(server, tmp_path):
    instance = merged(INSTANCE, zone="asia-northeast3", machine_type="n1-standard-8",
                      scheduling={"on_host_maintenance": "MIGRATE"},
                      boot_disk={"image_project": "deeplearning-platform-release", "size_gb": 5})
    fws = copy.deepcopy(FIREWALLS)
    fws[0]["source_ranges"] = []
    fws[0]["allowed"][0]["ports"] = "8000,8001"
    fws[1]["name"] = fws[0]["name"]
    args = plan(server, instance=instance, firewalls=fws, auth_kind="serviceaccount",
                service_account_file=str(tmp_path / "nope.json"))
    r = run_module(gce_preflight.main, args)
    assert r.get("failed"), r
    expected = [
        "gce_vllm_zone 'asia-northeast3' is not a zone name",
        "asia-northeast3-a",
        "gce_vllm_machine_type 'n1-standard-8' cannot carry",
        "g2-standard",
        "gce_vllm_on_host_maintenance MIGRATE is refused",
        "Set gce_vllm_on_host_maintenance to TERMINATE",
        "gce_vllm_disk_size_gb 5 is too small",
        "gce_vllm_ai_source_ranges (unset)",
        "gce_vllm_ai_ports \"8000,8001\" is not a port list",
        "[8000, 8001]",
        "gce_vllm_monitoring_firewall_name 'allow-ai-server-ports' is also the name of gce_vllm_ai_firewall_name",
        "gce_vllm_service_account_file %s does not exist" % (tmp_path / "nope.json"),
    ]
    missing = [e for e in expected if e not in r["msg"]]
    assert not missing, r["msg"]
    # the Deep Learning image rule needs a G2 type: a second plan, G2 again
    assert len(r["errors"]) >= 7 and r["msg"].startswith("%d problems in the plan" % len(r["errors"]))
    assert server.requests() == []
    r = run_module(gce_preflight.main, plan(server, instance=merged(
        INSTANCE, boot_disk={"image_project": "deeplearning-platform-release"})))
    assert r.get("failed") and "gce_vllm_image_project deeplearning-platform-release is refused" in r["msg"]
    assert "Deep Learning VM images are not compatible" in r["msg"] and "ubuntu-os-accelerator-images" in r["msg"]
    assert server.requests() == []


def test_without_names_the_option_path_is_named(server):
    instance = merged(INSTANCE, zone="asia-northeast3")
    fws = copy.deepcopy(FIREWALLS)
    fws[1]["source_ranges"] = None
    r = run_module(gce_preflight.main, plan(server, instance=instance, firewalls=fws, names={}))
    assert r.get("failed"), r
    assert "instance.zone 'asia-northeast3' is not a zone name" in r["msg"]
    assert "firewalls.1.source_ranges (unset)" in r["msg"]
    assert server.requests() == []


def test_credentials_not_json_named_and_not_leaked(server, tmp_path):
    key = tmp_path / "notjson.json"
    key.write_text("private_key: s3cr3t-value-never-printed\n")
    r = run_module(gce_preflight.main, plan(server, auth_kind="serviceaccount", service_account_file=str(key)))
    assert r.get("failed") and "gce_vllm_service_account_file %s" % key in r["msg"], r
    assert "it is not JSON" in r["msg"]
    assert "s3cr3t" not in json.dumps(r)
    key.write_text(json.dumps({"type": "authorized_user", "client_id": "x"}))
    r = run_module(gce_preflight.main, plan(server, auth_kind="serviceaccount", service_account_file=str(key)))
    assert r.get("failed") and "gce_vllm_auth_kind serviceaccount needs \"service_account\"" in r["msg"], r
    assert server.requests() == []


def test_project_and_token_from_the_environment_or_named(server, monkeypatch):
    monkeypatch.delenv("GCP_PROJECT", raising=False)
    monkeypatch.delenv("GCP_ACCESS_TOKEN", raising=False)
    args = plan(server)
    del args["project"], args["access_token"]
    r = run_module(gce_preflight.main, args)
    assert r.get("failed"), r
    assert "gce_vllm_project (unset)" in r["msg"] and "GCP_PROJECT" in r["msg"]
    assert "gce_vllm_access_token is required with gce_vllm_auth_kind accesstoken" in r["msg"]
    assert server.requests() == []
    monkeypatch.setenv("GCP_PROJECT", auth_args(server)["project"])
    monkeypatch.setenv("GCP_ACCESS_TOKEN", "test-token")
    r = run_module(gce_preflight.main, args)
    assert not r.get("failed"), r


def test_firewalls_only_plan_needs_no_api(server):
    r = run_module(gce_preflight.main, auth_args(server, firewalls=copy.deepcopy(FIREWALLS)))
    assert not r.get("failed") and not r["changed"], r
    assert server.requests() == []


@pytest.mark.parametrize("state", ["started", "stopped", "absent"])
def test_existing_vm_states_check_name_and_zone_only_without_api(server, state):
    """stop/start/teardown name the VM by name and zone: those are checked (naming the role's variables), the
    options of a VM to create are not required, and the API is not asked about the VM."""
    good = {"name": "ai-server-l4", "zone": "asia-northeast3-a", "state": state}
    r = run_module(gce_preflight.main, auth_args(server, instance=dict(good), names=dict(NAMES)))
    assert not r.get("failed") and not r["changed"], r
    assert "image" not in r and server.requests() == []
    bad = dict(good, name="AI_Server", zone="asia-northeast3")
    r = run_module(gce_preflight.main, auth_args(server, instance=bad, names=dict(NAMES)))
    assert r.get("failed"), r
    assert any(e.startswith("gce_vllm_instance_name 'AI_Server' is not a valid resource name") for e in r["errors"]), r
    assert any(e.startswith("gce_vllm_zone 'asia-northeast3' is not a zone") for e in r["errors"]), r
    assert len(r["errors"]) == 2 and server.requests() == []


def test_instance_and_single_vm_options_are_exclusive(server):
    r = run_module(gce_preflight.main, plan(server, zone="asia-northeast3-a"))
    assert r.get("failed") and "mutually exclusive" in r["msg"] and "instance" in r["msg"], r
    r = run_module(gce_preflight.main, auth_args(server, zone="asia-northeast3-a"))
    assert r.get("failed") and "machine_type" in r["msg"], r
    assert server.requests() == []


# the preflight checks a plan with the very rules gce_instance and gce_firewall apply to their own options:
# the same bad input gives the same messages, named by the option path
PATHS = ("name", "zone", "machine_type", "accelerators", "accelerators.0.type", "accelerators.0.count",
         "scheduling.on_host_maintenance", "scheduling.automatic_restart", "boot_disk.image_project",
         "boot_disk.image_family", "boot_disk.image", "boot_disk.size_gb", "labels", "tags", "metadata")


@pytest.mark.parametrize("change", [
    dict(zone="asia-northeast3"), dict(name="AI_server"), dict(machine_type="n1-standard-8"),
    dict(scheduling={"on_host_maintenance": "MIGRATE"}), dict(boot_disk={"size_gb": 5}),
    dict(labels={"App": "x"}), dict(tags=["Bad_Tag"]), dict(metadata={"bad key": "v"}),
    dict(boot_disk={"image_project": "deeplearning-platform-release"}),
])
def test_same_rules_as_gce_instance(server, change):
    instance = merged(INSTANCE, **change)
    names = dict(("instance." + p, p) for p in PATHS)
    r_plan = run_module(gce_preflight.main, auth_args(server, instance=instance, names=names))
    r_mod = run_module(gce_instance.main, auth_args(server, **instance))
    assert r_plan.get("failed") and r_mod.get("failed"), (r_plan, r_mod)
    assert r_plan["errors"] == r_mod["errors"]
    assert server.requests() == []


@pytest.mark.parametrize("change", [
    dict(source_ranges=["203.0.113.0"]), dict(name="Allow_AI"), dict(priority=70000),
    dict(allowed=[{"ip_protocol": "tcp", "ports": ["9000-8000"]}]), dict(source_ranges=None),
    dict(allowed=[{"ip_protocol": "icmp", "ports": ["22"]}]), dict(target_tags=["Bad_Tag"]),
])
def test_same_rules_as_gce_firewall(server, change):
    fw = merged(FIREWALLS[0], **change)
    paths = ("name", "priority", "allowed", "allowed.0.ip_protocol", "allowed.0.ports", "source_ranges", "target_tags")
    names = dict(("firewalls.0." + p, p) for p in paths)
    r_plan = run_module(gce_preflight.main, auth_args(server, firewalls=[fw], names=names))
    r_mod = run_module(gce_firewall.main, auth_args(server, **fw))
    assert r_plan.get("failed") and r_mod.get("failed"), (r_plan, r_mod)
    assert r_plan["errors"] == r_mod["errors"]
    assert server.requests() == []

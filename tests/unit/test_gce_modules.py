"""Unit tests of the modules gce_firewall, gce_instance and gce_preflight.

Each module's main() runs in-process, as Ansible runs it (module args patched), against the local Compute
API served from a thread on 127.0.0.1; the API's request log shows which calls a module made.
"""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.testing import (  # noqa: E402
    PROJECT,
    ComputeApiServer,
    auth_args,
    run_module,
    service_account_key,
)

from ansible_collections.llmops.gce_vllm.plugins.module_utils import gce  # noqa: E402
from ansible_collections.llmops.gce_vllm.plugins.modules import gce_firewall, gce_instance, gce_preflight  # noqa: E402

ZONE = "asia-northeast3-a"
FAMILY = "ubuntu-accelerator-2204-amd64-with-nvidia-580"
NEWEST = FAMILY + "-v20260210"  # the stand-in's newest non-deprecated image of the family


@pytest.fixture
def server():
    srv = ComputeApiServer(op_polls=2).start()
    yield srv
    srv.stop()


def writes(server):
    return [r for r in server.requests() if r["method"] != "GET" and not r["path"].endswith("/wait")]


# ============================================================================== gce_firewall
def fw_args(server, **kw):
    args = auth_args(server, name="allow-ai-server-ports", network="default", direction="INGRESS", priority=1000,
                     allowed=[{"ip_protocol": "tcp", "ports": ["8000", "8001"]}],
                     source_ranges=["203.0.113.0/24"], target_tags=["ai-server"],
                     description="AI server and vLLM ports")
    args.update(kw)
    return args


def test_firewall_create_then_idempotent(server):
    r = run_module(gce_firewall.main, fw_args(server))
    assert r["changed"] and r["action"] == "created", r
    fw = server.api.dump()["projects"][PROJECT]["firewalls"]["allow-ai-server-ports"]
    assert fw["allowed"] == [{"IPProtocol": "tcp", "ports": ["8000", "8001"]}]
    assert fw["sourceRanges"] == ["203.0.113.0/24"] and fw["targetTags"] == ["ai-server"]
    assert fw["network"].endswith("/projects/%s/global/networks/default" % PROJECT)
    server.clear_requests()
    r = run_module(gce_firewall.main, fw_args(server, allowed=[{"ip_protocol": "tcp", "ports": ["8001", "8000"]}]))
    assert not r["changed"] and r["action"] == "none"
    assert writes(server) == []


def test_firewall_drift_is_patched(server):
    run_module(gce_firewall.main, fw_args(server))
    server.clear_requests()
    r = run_module(gce_firewall.main, fw_args(server, source_ranges=["198.51.100.0/24"], priority=900), diff=True)
    assert r["changed"] and r["action"] == "patched"
    [w] = writes(server)
    assert w["method"] == "PATCH" and w["path"].endswith("/global/firewalls/allow-ai-server-ports")
    assert r["diff"]["before"]["sourceRanges"] == ["203.0.113.0/24"]
    assert r["diff"]["after"]["sourceRanges"] == ["198.51.100.0/24"] and r["diff"]["after"]["priority"] == 900
    fw = server.api.dump()["projects"][PROJECT]["firewalls"]["allow-ai-server-ports"]
    assert fw["sourceRanges"] == ["198.51.100.0/24"] and fw["priority"] == 900


def test_firewall_changed_by_hand_is_repaired(server):
    run_module(gce_firewall.main, fw_args(server))
    server.api.state.projects[PROJECT]["firewalls"]["allow-ai-server-ports"]["allowed"] = [
        {"IPProtocol": "tcp", "ports": ["22"]}]
    r = run_module(gce_firewall.main, fw_args(server))
    assert r["action"] == "patched"
    assert r["firewall"]["allowed"] == [{"IPProtocol": "tcp", "ports": ["8000", "8001"]}]


def test_firewall_direction_change_recreates(server):
    run_module(gce_firewall.main, fw_args(server, name="egress-x", direction="INGRESS"))
    r = run_module(gce_firewall.main, fw_args(server, name="egress-x", direction="EGRESS", source_ranges=None,
                                              destination_ranges=["10.0.0.0/8"]))
    assert r["action"] == "recreated", r
    assert r["firewall"]["direction"] == "EGRESS"


def test_firewall_check_mode_changes_nothing(server):
    r = run_module(gce_firewall.main, fw_args(server), check_mode=True)
    assert r["changed"] and r["action"] == "created"
    assert writes(server) == []
    assert server.api.summary()[PROJECT]["firewalls"] == []
    run_module(gce_firewall.main, fw_args(server))
    server.clear_requests()
    r = run_module(gce_firewall.main, fw_args(server, source_ranges=["10.0.0.0/8"]), check_mode=True)
    assert r["changed"] and r["action"] == "patched" and writes(server) == []
    r = run_module(gce_firewall.main, fw_args(server, state="absent"), check_mode=True)
    assert r["changed"] and r["action"] == "deleted" and writes(server) == []


def test_firewall_absent(server):
    run_module(gce_firewall.main, fw_args(server))
    r = run_module(gce_firewall.main, auth_args(server, name="allow-ai-server-ports", state="absent"))
    assert r["changed"] and r["action"] == "deleted"
    assert server.api.summary()[PROJECT]["firewalls"] == []
    r = run_module(gce_firewall.main, auth_args(server, name="allow-ai-server-ports", state="absent"))
    assert not r["changed"]


def test_firewall_world_open_only_when_written_and_warned(server):
    r = run_module(gce_firewall.main, fw_args(server, source_ranges=None))
    assert r["failed"] and "source_ranges (unset): required for an INGRESS rule" in r["msg"] and "0.0.0.0/0" in r["msg"]
    assert server.requests() == []
    r = run_module(gce_firewall.main, fw_args(server, source_ranges=["0.0.0.0/0"]))
    assert r["changed"] and not r.get("failed")
    assert any("whole internet" in w for w in r["warning_msgs"])


@pytest.mark.parametrize("kw,needle", [
    (dict(allowed=[{"ip_protocol": "tcp", "ports": ["8000,8001"]}]), "allowed.0.ports '8000,8001'"),
    (dict(allowed=[{"ip_protocol": "tcp", "ports": ["9000-8000"]}]), "allowed.0.ports '9000-8000'"),
    (dict(allowed=[{"ip_protocol": "tcp", "ports": ["70000"]}]), "allowed.0.ports '70000'"),
    (dict(allowed=[{"ip_protocol": "icmp", "ports": ["80"]}]), "ports apply only to tcp"),
    (dict(source_ranges=["203.0.113.0"]), "source_ranges '203.0.113.0' is not a CIDR range"),
    (dict(name="Allow_AI"), "name 'Allow_AI' is not a valid resource name"),
    (dict(target_tags=["AI Server"]), "target_tags"),
    (dict(priority=70000), "priority"),
    (dict(allowed=[]), "allowed: required"),
])
def test_firewall_bad_input_fails_before_any_call(server, kw, needle):
    r = run_module(gce_firewall.main, fw_args(server, **kw))
    assert r.get("failed") and needle in r["msg"], r
    assert server.requests() == []


def test_firewall_missing_credentials_file(server, tmp_path):
    args = fw_args(server, auth_kind="serviceaccount", service_account_file=str(tmp_path / "key.json"))
    del args["access_token"]
    r = run_module(gce_firewall.main, args)
    assert r["failed"] and "service_account_file %s does not exist" % (tmp_path / "key.json") in r["msg"]
    assert server.requests() == []


def test_firewall_with_a_service_account_key(server, tmp_path):
    args = fw_args(server, auth_kind="serviceaccount", service_account_file=str(service_account_key(tmp_path, server)))
    del args["access_token"]
    r = run_module(gce_firewall.main, args)
    assert r["changed"] and r["action"] == "created", r
    assert server.requests()[0]["path"] == "/token" and all(q["bearer_issued"] for q in server.requests()[1:])


def test_connection_settings_from_gcp_environment(server, monkeypatch):
    args = fw_args(server)
    for key in ("project", "auth_kind", "access_token", "api_endpoint"):
        del args[key]
    r = run_module(gce_firewall.main, args)
    assert r["failed"] and "project is required" in r["msg"] and "GCP_PROJECT" in r["msg"]
    monkeypatch.setenv("GCP_PROJECT", PROJECT)
    monkeypatch.setenv("GCP_AUTH_KIND", "accesstoken")
    monkeypatch.setenv("GCP_ACCESS_TOKEN", "from-env")
    monkeypatch.setenv("GCE_API_ENDPOINT", server.endpoint)
    r = run_module(gce_firewall.main, args)
    assert r["changed"] and r["action"] == "created", r
    assert "from-env" not in str(r)  # no_log: the token is not echoed anywhere in the result


def test_firewall_api_error_is_reported(server):
    server.add_faults({"kind": "status", "status": 403, "count": 1,
                       "message": "Required 'compute.firewalls.get' permission"})
    r = run_module(gce_firewall.main, fw_args(server))
    assert r["failed"] and "HTTP 403" in r["msg"] and "compute.firewalls.get" in r["msg"]


def test_firewall_rides_out_429(server):
    server.add_faults({"kind": "status", "status": 429, "count": 2, "retry_after": 0})
    r = run_module(gce_firewall.main, fw_args(server))
    assert r["changed"] and not r.get("failed")


# ============================================================================== gce_instance
def vm_args(server, **kw):
    args = auth_args(server, name="ai-server-l4", zone=ZONE, machine_type="g2-standard-4",
                     accelerators=[{"type": "nvidia-l4", "count": 1}],
                     boot_disk={"image_family": FAMILY, "image_project": "ubuntu-os-accelerator-images",
                                "size_gb": 200, "type": "pd-ssd"},
                     scheduling={"on_host_maintenance": "TERMINATE", "automatic_restart": True},
                     tags=["ai-server", "monitoring"], labels={"app": "vllm"},
                     metadata={"ssh-keys": "ansible:ssh-ed25519 AAAAC3Nz test"})
    args.update(kw)
    return args


def test_instance_create_returns_addresses_and_newest_image(server):
    r = run_module(gce_instance.main, vm_args(server))
    assert r["changed"] and r["actions"] == ["create"], r
    assert r["status"] == "RUNNING"
    assert r["nat_ip"] == "203.0.113.1" and r["internal_ip"] == "10.128.0.1"
    assert r["image"].endswith("/projects/ubuntu-os-accelerator-images/global/images/" + NEWEST)
    inst = server.api.dump()["projects"][PROJECT]["instances"][ZONE]["ai-server-l4"]
    assert inst["scheduling"]["onHostMaintenance"] == "TERMINATE" and inst["scheduling"]["automaticRestart"]
    assert inst["tags"]["items"] == ["ai-server", "monitoring"]
    disk = server.api.dump()["projects"][PROJECT]["disks"][ZONE]["ai-server-l4"]
    assert disk["sizeGb"] == "200" and disk["type"].endswith("/diskTypes/pd-ssd")
    assert disk["sourceImage"].endswith("/" + NEWEST)


def test_instance_second_run_changes_nothing(server):
    run_module(gce_instance.main, vm_args(server))
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server))
    assert not r["changed"] and r["actions"] == [] and r["pending_changes"] == []
    assert writes(server) == []


# gcloud's default scopes (`gcloud compute instances create --help`, --scopes alias "default")
GCLOUD_DEFAULT_SCOPES = ["https://www.googleapis.com/auth/" + s for s in (
    "devstorage.read_only", "logging.write", "monitoring.write", "pubsub", "service.management.readonly",
    "servicecontrol", "trace.append")]


def test_instance_gets_the_default_compute_service_account_like_gcloud(server):
    r = run_module(gce_instance.main, vm_args(server))
    assert not r.get("failed"), r["msg"]
    [sa] = r["instance"]["serviceAccounts"]
    assert sa["email"] == "%s-compute@developer.gserviceaccount.com" % server.api.project_number(PROJECT)
    assert sorted(sa["scopes"]) == sorted(GCLOUD_DEFAULT_SCOPES)


def test_instance_service_account_none_explicitly_and_a_named_one(server):
    r = run_module(gce_instance.main, vm_args(server, service_account_email="none"))
    assert not r.get("failed"), r["msg"]
    assert r["instance"]["serviceAccounts"] == []
    r = run_module(gce_instance.main, vm_args(server, name="named", service_account_email="vm@p.iam.gserviceaccount.com",
                                              service_account_scopes=["https://www.googleapis.com/auth/cloud-platform"]))
    assert r["instance"]["serviceAccounts"] == [{"email": "vm@p.iam.gserviceaccount.com",
                                                 "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}]


def test_instance_in_a_custom_mode_vpc_needs_and_takes_a_subnetwork(server):
    server.api.add_network(PROJECT, "ml-vpc", {"asia-northeast3": ["ml-subnet"]})
    r = run_module(gce_instance.main, vm_args(server, network="ml-vpc"))
    assert r["failed"] and "Subnetwork should be specified" in r["msg"], r["msg"]  # the API's own answer
    r = run_module(gce_instance.main, vm_args(server, network="ml-vpc", subnetwork="ml-subnet"))
    assert not r.get("failed"), r["msg"]
    nic = r["instance"]["networkInterfaces"][0]
    assert nic["subnetwork"].endswith("/projects/%s/regions/asia-northeast3/subnetworks/ml-subnet" % PROJECT)
    assert nic["network"].endswith("/global/networks/ml-vpc")
    r = run_module(gce_instance.main, vm_args(server, name="by-url", network="ml-vpc",
                                              subnetwork="projects/%s/regions/asia-northeast3/subnetworks/ml-subnet"
                                              % PROJECT))
    assert not r.get("failed"), r["msg"]


def test_instance_subnetwork_of_another_region_fails_before_any_call(server):
    r = run_module(gce_instance.main, vm_args(server, subnetwork="regions/us-central1/subnetworks/x"))
    assert r["failed"] and "subnetwork" in r["msg"] and "asia-northeast3" in r["msg"], r["msg"]
    assert server.requests() == []


@pytest.mark.parametrize("disk_type", ["pd-standard", "pd-extreme", "hyperdisk-balanced", "hyperdisk-ml"])
def test_instance_g2_boot_disk_type_is_checked_before_any_call(server, disk_type):
    boot = {"image_family": FAMILY, "image_project": "ubuntu-os-accelerator-images", "size_gb": 200, "type": disk_type}
    r = run_module(gce_instance.main, vm_args(server, boot_disk=boot))
    assert r["failed"] and "boot_disk.type" in r["msg"] and "pd-balanced" in r["msg"] and "pd-ssd" in r["msg"], r
    assert server.requests() == []


def test_instance_on_host_pool_takes_the_test_hosts_address():
    with ComputeApiServer(host_pool=["10.231.7.2"]) as srv:
        r = run_module(gce_instance.main, vm_args(srv))
        assert r["nat_ip"] == "10.231.7.2" and r["internal_ip"] == "10.231.7.2"
        r = run_module(gce_instance.main, vm_args(srv, name="second"))
        assert r["failed"] and "host pool" in r["msg"]


def test_instance_drift_updated_with_set_methods(server):
    run_module(gce_instance.main, vm_args(server))
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server, tags=["ai-server"], labels={"app": "vllm", "team": "ml"},
                                              metadata={"startup-note": "x"}), diff=True)
    assert r["actions"] == ["setTags", "setLabels", "setMetadata"]
    assert [w["path"].rsplit("/", 1)[1] for w in writes(server)] == ["setTags", "setLabels", "setMetadata"]
    inst = server.api.dump()["projects"][PROJECT]["instances"][ZONE]["ai-server-l4"]
    assert inst["tags"]["items"] == ["ai-server"]
    assert inst["labels"] == {"app": "vllm", "team": "ml"}
    assert {i["key"] for i in inst["metadata"]["items"]} == {"ssh-keys", "llmops-gce-vllm-ssh-keys",
                                                             "startup-note"}  # merged
    assert r["diff"]["before"]["tags"] == ["ai-server", "monitoring"] and r["diff"]["after"]["tags"] == ["ai-server"]


@pytest.mark.parametrize("method", ["setTags", "setLabels", "setMetadata"])
def test_instance_stale_fingerprint_412_is_re_read_and_re_applied_once(server, method):
    run_module(gce_instance.main, vm_args(server))
    server.add_faults({"kind": "concurrent_change", "path": "/%s$" % method, "count": 1})
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server, tags=["ai-server"], labels={"app": "vllm", "team": "ml"},
                                              metadata={"startup-note": "x"}))
    assert not r.get("failed"), r["msg"]
    sets = [(w["path"].rsplit("/", 1)[1], w["status"]) for w in writes(server)]
    assert sets.count((method, 412)) == 1 and sets.count((method, 200)) == 1, sets
    inst = server.api.dump()["projects"][PROJECT]["instances"][ZONE]["ai-server-l4"]
    assert inst["tags"]["items"] == ["ai-server"] and inst["labels"] == {"app": "vllm", "team": "ml"}
    keys = {i["key"] for i in inst["metadata"]["items"]}
    assert {"ssh-keys", "startup-note", "other-writer"} <= keys, keys  # the other writer's item is kept


def test_instance_412_twice_fails_clearly(server):
    run_module(gce_instance.main, vm_args(server))
    server.add_faults({"kind": "concurrent_change", "path": "/setLabels$", "count": 2})
    r = run_module(gce_instance.main, vm_args(server, labels={"app": "other"}))
    assert r["failed"] and "412" in r["msg"] and "re-read" in r["msg"], r["msg"]


def _sched(server):
    return server.api.dump()["projects"][PROJECT]["instances"][ZONE]["ai-server-l4"]["scheduling"]


def _ssh_lines(server):
    inst = server.api.dump()["projects"][PROJECT]["instances"][ZONE]["ai-server-l4"]
    value = dict((i["key"], i["value"]) for i in inst["metadata"]["items"]).get("ssh-keys", "")
    return [line for line in value.splitlines() if line.strip()]


def test_instance_ssh_keys_are_merged_keeping_other_users_keys(server):
    ours = "ansible:ssh-ed25519 AAAAC3Nz test"
    run_module(gce_instance.main, vm_args(server))
    # gcloud compute ssh and a colleague add their keys to the same metadata value
    inst = server.api.state.projects[PROJECT]["instances"][ZONE]["ai-server-l4"]
    theirs = ["alice:ssh-rsa AAAAB3Nz alice@laptop",
              'bob:ecdsa-sha2-nistp256 AAAAE2Vj google-ssh {"userName":"bob@example.com","expireOn":"2030-01-01"}']
    for item in inst["metadata"]["items"]:
        if item["key"] == "ssh-keys":
            item["value"] = "\n".join([theirs[0], ours, theirs[1]])
    r = run_module(gce_instance.main, vm_args(server))
    assert not r["changed"], r["actions"]  # our key is there: nothing to do, theirs untouched
    assert _ssh_lines(server) == [theirs[0], ours, theirs[1]]
    # our key changes: the old one goes (we added it), theirs stay, the new one is added
    new = "ansible:ssh-ed25519 AAAAC3Nz rotated"
    r = run_module(gce_instance.main, vm_args(server, metadata={"ssh-keys": new}))
    assert r["changed"] and r["actions"] == ["setMetadata"], r
    assert _ssh_lines(server) == [theirs[0], theirs[1], new]


def test_instance_os_login_is_detected_and_reported(server):
    server.api.set_project_metadata(PROJECT, {"enable-oslogin": "TRUE"})
    r = run_module(gce_instance.main, vm_args(server))
    assert not r.get("failed"), r["msg"]
    assert r["os_login"] is True
    assert any("OS Login" in w and "ssh-keys" in w and "roles/compute.osAdminLogin" in w for w in r["warning_msgs"]), \
        r["warning_msgs"]
    # the instance can turn it off again
    metadata = {"ssh-keys": "ansible:ssh-ed25519 AAAAC3Nz test", "enable-oslogin": "FALSE"}
    r = run_module(gce_instance.main, vm_args(server, metadata=metadata))
    assert r["os_login"] is False and not any("OS Login" in w for w in r["warning_msgs"])


def test_instance_scheduling_drift_on_a_running_vm_is_reported_not_sent(server):
    run_module(gce_instance.main, vm_args(server))
    server.api.state.projects[PROJECT]["instances"][ZONE]["ai-server-l4"]["scheduling"]["automaticRestart"] = False
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server))
    assert not r.get("failed"), r["msg"]
    assert not r["changed"] and r["actions"] == [] and writes(server) == []
    assert any(x.startswith("scheduling:") and "allow_stop" in x for x in r["pending_changes"]), r["pending_changes"]
    assert any("scheduling" in w for w in r["warning_msgs"])
    assert _sched(server)["automaticRestart"] is False


def test_instance_scheduling_drift_applied_when_stopped_or_when_a_stop_is_allowed(server):
    run_module(gce_instance.main, vm_args(server))
    insts = server.api.state.projects[PROJECT]["instances"][ZONE]
    insts["ai-server-l4"]["scheduling"]["automaticRestart"] = False
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server, allow_stop=True))
    assert not r.get("failed"), r["msg"]
    assert r["actions"] == ["stop", "setScheduling", "start"] and r["status"] == "RUNNING", r
    assert [w["path"].rsplit("/", 1)[1] for w in writes(server)] == ["stop", "setScheduling", "start"]
    assert _sched(server)["automaticRestart"] is True
    # a stopped VM: applied without any stop
    run_module(gce_instance.main, vm_args(server, state="stopped"))
    insts["ai-server-l4"]["scheduling"]["automaticRestart"] = False
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server, state="stopped"))
    assert r["actions"] == ["setScheduling"] and r["status"] == "TERMINATED", r
    assert _sched(server)["automaticRestart"] is True
    # state stopped on a running VM with drift: stopped first, then set
    run_module(gce_instance.main, vm_args(server, state="started"))
    insts["ai-server-l4"]["scheduling"]["automaticRestart"] = False
    r = run_module(gce_instance.main, vm_args(server, state="stopped"))
    assert r["actions"] == ["stop", "setScheduling"] and r["status"] == "TERMINATED", r


def test_instance_machine_type_drift_is_reported_not_applied(server):
    run_module(gce_instance.main, vm_args(server))
    server.clear_requests()
    r = run_module(gce_instance.main, vm_args(server, machine_type="g2-standard-8"))
    assert not r["changed"]
    assert r["pending_changes"] == ["machine_type: g2-standard-4 -> g2-standard-8 (stop the VM and change it, "
                                    "or re-create it)"]
    assert any("g2-standard-8" in w for w in r["warning_msgs"])
    assert writes(server) == []


def test_instance_disk_size_and_external_ip_drift_reported(server):
    run_module(gce_instance.main, vm_args(server))
    r = run_module(gce_instance.main, vm_args(server, boot_disk={"image_family": FAMILY, "size_gb": 300,
                                                                 "image_project": "ubuntu-os-accelerator-images"},
                                              external_ip=False))
    assert not r["changed"]
    assert [x.split(":")[0] for x in r["pending_changes"]] == ["boot_disk.size_gb", "external_ip"]


def test_instance_check_mode(server):
    r = run_module(gce_instance.main, vm_args(server), check_mode=True, diff=True)
    assert r["changed"] and r["actions"] == ["create"] and r["image"].endswith(NEWEST)
    assert r["diff"]["after"]["status"] == "RUNNING" and r["diff"]["before"] == {}
    assert writes(server) == [] and server.api.summary()[PROJECT]["instances"] == {}
    run_module(gce_instance.main, vm_args(server))
    server.clear_requests()
    for state, action in (("stopped", "stop"), ("absent", "delete")):
        r = run_module(gce_instance.main, vm_args(server, state=state, tags=["x"]), check_mode=True)
        assert r["changed"] and action in r["actions"]
    assert writes(server) == []
    assert server.api.summary()[PROJECT]["instances"] == {ZONE + "/ai-server-l4": "RUNNING"}


def test_instance_stop_start_absent_are_idempotent(server):
    run_module(gce_instance.main, vm_args(server))
    base = dict(auth_args(server), name="ai-server-l4", zone=ZONE)
    r = run_module(gce_instance.main, dict(base, state="stopped"))
    assert r["changed"] and r["actions"] == ["stop"] and r["status"] == "TERMINATED"
    r = run_module(gce_instance.main, dict(base, state="terminated"))
    assert not r["changed"] and r["status"] == "TERMINATED"
    r = run_module(gce_instance.main, dict(base, state="present"))
    assert not r["changed"] and r["status"] == "TERMINATED"
    r = run_module(gce_instance.main, dict(base, state="started"))
    assert r["changed"] and r["actions"] == ["start"] and r["status"] == "RUNNING"
    assert r["nat_ip"] == "203.0.113.1"
    r = run_module(gce_instance.main, dict(base, state="started"))
    assert not r["changed"]
    r = run_module(gce_instance.main, dict(base, state="absent"))
    assert r["changed"] and r["status"] == "ABSENT"
    assert server.api.summary()[PROJECT]["instances"] == {}
    assert server.api.dump()["projects"][PROJECT]["disks"] == {}
    r = run_module(gce_instance.main, dict(base, state="absent"))
    assert not r["changed"]
    r = run_module(gce_instance.main, dict(base, state="stopped"))
    assert r["failed"] and "does not exist" in r["msg"]


def test_instance_suspended_and_state_started_is_resumed(server):
    cpu = dict(auth_args(server), name="cpu-vm", zone=ZONE, machine_type="e2-standard-4",
               boot_disk={"image_family": "debian-12", "image_project": "debian-cloud"})
    assert run_module(gce_instance.main, cpu)["status"] == "RUNNING"
    c = gce.GceClient(PROJECT, auth_kind="accesstoken", access_token="t", api_endpoint=server.endpoint)
    c.mutate("POST", c.project_path("zones", ZONE, "instances", "cpu-vm", "suspend"))
    assert server.api.summary()[PROJECT]["instances"][ZONE + "/cpu-vm"] == "SUSPENDED"
    server.clear_requests()
    r = run_module(gce_instance.main, dict(cpu, state="started"), check_mode=True)
    assert r["changed"] and r["actions"] == ["resume"] and writes(server) == []
    r = run_module(gce_instance.main, dict(cpu, state="started"))
    assert not r.get("failed"), r["msg"]
    assert r["changed"] and r["actions"] == ["resume"] and r["status"] == "RUNNING"
    assert [w["path"].rsplit("/", 1)[1] for w in writes(server)] == ["resume"]


def test_instance_failed_operation_is_reported_verbatim(server):
    server.add_faults({"kind": "operation_error", "operation_type": "insert", "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                       "message": "The zone 'projects/llmops-demo/zones/asia-northeast3-a' does not have enough "
                                  "resources available to fulfill the request."})
    r = run_module(gce_instance.main, vm_args(server))
    assert r["failed"] and "ZONE_RESOURCE_POOL_EXHAUSTED" in r["msg"] and "enough resources" in r["msg"]
    assert server.api.summary()[PROJECT]["instances"] == {}


def test_instance_body_passes_the_discovery_validation(server):
    """Every request the module sent was accepted: no 400 in the log (the API validates each body)."""
    run_module(gce_instance.main, vm_args(server, service_account_email="sa@llmops-demo.iam.gserviceaccount.com"))
    run_module(gce_instance.main, vm_args(server, tags=["ai-server"], labels={}, metadata={"k": "v"}))
    assert [r for r in server.requests() if r["status"] >= 400 and r["status"] != 404] == []


@pytest.mark.parametrize("kw,needle", [
    (dict(scheduling={"on_host_maintenance": "MIGRATE"}), "scheduling.on_host_maintenance MIGRATE is refused: a VM with GPUs"),
    (dict(accelerators=[], scheduling={"on_host_maintenance": "MIGRATE"}), "MIGRATE is refused"),
    (dict(machine_type="n1-standard-4"), "NVIDIA L4 GPUs attach only to G2 machine types"),
    (dict(boot_disk={"image_family": "common-cu128-ubuntu-2204-nvidia-570",
                     "image_project": "deeplearning-platform-release"}), "Deep Learning VM images"),
    (dict(zone="asia-northeast3"), "zone 'asia-northeast3' is not a zone name"),
    (dict(name="AI_server"), "name 'AI_server' is not a valid resource name"),
    (dict(labels={"App": "x"}), "labels: key 'App'"),
    (dict(tags=["ai server"]), "tags"),
    (dict(boot_disk={"image_family": FAMILY, "size_gb": 5}), "boot_disk.size_gb"),
])
def test_instance_bad_input_fails_before_any_call(server, kw, needle):
    r = run_module(gce_instance.main, vm_args(server, **kw))
    assert r.get("failed") and needle in r["msg"], r
    assert server.requests() == []


def test_instance_not_json_credentials(server, tmp_path):
    key = tmp_path / "key.json"
    key.write_text("{not json")
    args = vm_args(server, auth_kind="serviceaccount", service_account_file=str(key))
    del args["access_token"]
    r = run_module(gce_instance.main, args)
    assert r["failed"] and "is not valid JSON" in r["msg"]
    assert server.requests() == []


def test_instance_unknown_image_family(server):
    r = run_module(gce_instance.main, vm_args(server, boot_disk={"image_family": "ubuntu-accelerator-1804-nope",
                                                                 "image_project": "ubuntu-os-accelerator-images"}))
    assert r["failed"] and "ubuntu-accelerator-1804-nope" in r["msg"] and "gcloud compute images list" in r["msg"]
    assert writes(server) == []


# ============================================================================== gce_preflight
def pf_args(server, **kw):
    args = auth_args(server, zone=ZONE, machine_type="g2-standard-4", accelerator_type="nvidia-l4",
                     accelerator_count=1, image_family=FAMILY, image_project="ubuntu-os-accelerator-images")
    args.update(kw)
    return args


def test_preflight_ok_resolves_newest_image(server):
    r = run_module(gce_preflight.main, pf_args(server), check_mode=True)
    assert not r.get("failed") and not r["changed"], r
    assert r["image"]["name"] == NEWEST
    assert r["machine_type"]["accelerators"] == [{"type": "nvidia-l4", "count": 1}]
    assert r["accelerator"]["name"] == "nvidia-l4"
    assert writes(server) == []
    paths = [q["path"] for q in server.requests()]
    assert any(p.endswith("/acceleratorTypes/nvidia-l4") for p in paths)
    assert any(p.endswith("/global/images/family/" + FAMILY) for p in paths)


@pytest.mark.parametrize("kw,needle,calls", [
    (dict(machine_type="n1-standard-4"), "NVIDIA L4 GPUs attach only to G2", False),
    (dict(image_family="common-cu128-ubuntu-2204-nvidia-570", image_project="deeplearning-platform-release"),
     "Deep Learning VM images", False),
    (dict(zone="asia-northeast3-"), "is not a zone name", False),
    (dict(zone="us-east1-d"), "machine_type: g2-standard-4 is not offered in zone us-east1-d", True),
    (dict(zone="us-east1-d", machine_type="n1-standard-4", accelerator_type="nvidia-tesla-t4"), None, True),
    (dict(zone="europe-west1-b", machine_type="n1-standard-4", accelerator_type="nvidia-tesla-t4"), None, True),
    (dict(accelerator_count=2), "comes with 1 x nvidia-l4", True),
    (dict(image_family="ubuntu-accelerator-2204-amd64-with-nvidia-550"), "does not resolve to any usable image", True),
    (dict(zone="mars-north1-a"), "zone: mars-north1-a does not exist", True),
])
def test_preflight_refusals(server, kw, needle, calls):
    r = run_module(gce_preflight.main, pf_args(server, **kw))
    if needle is None:
        assert not r.get("failed"), r
    else:
        assert r.get("failed") and needle in r["msg"], r
    assert bool(server.requests()) == calls


def test_preflight_accelerator_missing_in_zone(server):
    r = run_module(gce_preflight.main, pf_args(server, zone="us-east1-d", machine_type="n1-standard-4",
                                               accelerator_type="nvidia-l4"))
    # n1 + L4 is refused locally; a T4-only zone is found by the API
    assert r["failed"] and "G2" in r["msg"]
    r = run_module(gce_preflight.main, pf_args(server, zone="us-east1-b", machine_type="n1-standard-4",
                                               accelerator_type="nvidia-h100-80gb"))
    assert r["failed"] and "nvidia-h100-80gb is not available in zone us-east1-b" in r["msg"]

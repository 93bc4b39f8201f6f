"""Tests of the local Compute API itself (tests/compute_api): that it validates requests against Google's
discovery document and behaves like Compute Engine where the plugins depend on it. Plain HTTP (requests)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.server import ApiError, ComputeApiServer, parse_filter  # noqa: E402

PROJECT = "llmops-demo"
ZONE = "asia-northeast3-a"
AUTH = {"Authorization": "Bearer t"}


@pytest.fixture(scope="module")
def srv():
    server = ComputeApiServer(op_polls=2).start()
    yield server
    server.stop()


@pytest.fixture
def api(srv):
    srv.api.reset()
    session = requests.Session()
    session.headers.update(AUTH)

    def call(method, path, body=None, params=None, headers=None):
        return session.request(method, srv.endpoint + path, json=body, params=params, headers=headers, timeout=10)
    call.srv = srv
    yield call
    session.close()


def fw(name="fw-1", **extra):
    body = {"name": name, "network": "global/networks/default", "direction": "INGRESS", "priority": 1000,
            "allowed": [{"IPProtocol": "tcp", "ports": ["8000", "8001"]}], "sourceRanges": ["203.0.113.0/24"],
            "targetTags": ["ai-server"]}
    body.update(extra)
    return body


def vm(name="vm-1", **extra):
    body = {"name": name, "machineType": "zones/%s/machineTypes/g2-standard-4" % ZONE,
            "guestAccelerators": [{"acceleratorType": "zones/%s/acceleratorTypes/nvidia-l4" % ZONE,
                                   "acceleratorCount": 1}],
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": {
                "sourceImage": "projects/ubuntu-os-accelerator-images/global/images/family/"
                               "ubuntu-accelerator-2204-amd64-with-nvidia-580",
                "diskSizeGb": "200", "diskType": "zones/%s/diskTypes/pd-ssd" % ZONE}}],
            "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": True},
            "networkInterfaces": [{"network": "global/networks/default",
                                   "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]}],
            "tags": {"items": ["ai-server", "monitoring"]}}
    body.update(extra)
    return body


def error_of(resp, code):
    assert resp.status_code == code, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["errors"] and err["message"] == err["errors"][0]["message"]
    return err


# ------------------------------------------------------------------------------ discovery validation
def test_misspelled_field_is_rejected(api):
    body = fw()
    body["sourceRange"] = body.pop("sourceRanges")
    err = error_of(api("POST", "projects/%s/global/firewalls" % PROJECT, body), 400)
    assert err["message"] == ("Invalid JSON payload received. Unknown name \"sourceRange\" at 'resource': "
                              "Cannot find field.")
    assert api.srv.api.summary().get(PROJECT, {}).get("firewalls", []) == []


def test_misspelled_nested_field_is_rejected(api):
    body = fw(allowed=[{"IPprotocol": "tcp"}])
    err = error_of(api("POST", "projects/%s/global/firewalls" % PROJECT, body), 400)
    assert "Unknown name \"IPprotocol\" at 'resource.allowed[0]'" in err["message"]


@pytest.mark.parametrize("patch,needle", [
    ({"priority": "1000"}, "resource.priority"),  # integer field as a string
    ({"direction": "INBOUND"}, "Expected one of EGRESS, INGRESS"),  # enum
    ({"sourceRanges": "203.0.113.0/24"}, "expected a list"),
    ({"disabled": "false"}, "Expected a boolean"),
])
def test_wrong_types_and_enums(api, patch, needle):
    err = error_of(api("POST", "projects/%s/global/firewalls" % PROJECT, fw(**patch)), 400)
    assert needle in json.dumps(err)


def test_int64_must_be_a_string(api):
    body = vm()
    body["disks"][0]["initializeParams"]["diskSizeGb"] = 200
    err = error_of(api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), body), 400)
    assert "resource.disks[0].initializeParams.diskSizeGb" in err["message"] and "int64" in err["message"]
    body["disks"][0]["initializeParams"]["diskSizeGb"] = "two hundred"
    error_of(api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), body), 400)


def test_required_field_from_annotations(api):
    body = fw()
    del body["name"]
    err = error_of(api("POST", "projects/%s/global/firewalls" % PROJECT, body), 400)
    assert err["errors"][0]["reason"] == "required"
    assert err["message"] == "Required field 'resource.name' not specified"


def test_all_violations_are_listed(api):
    err = error_of(api("POST", "projects/%s/global/firewalls" % PROJECT, {"nam": "x", "priority": "high"}), 400)
    messages = " | ".join(e["message"] for e in err["errors"])
    assert "Unknown name \"nam\"" in messages and "resource.priority" in messages and "resource.name" in messages


def test_query_parameters_are_validated(api):
    err = error_of(api("GET", "projects/%s/aggregated/instances" % PROJECT, params={"maxresults": 5}), 400)
    assert "Unknown name \"maxresults\"" in err["message"]
    error_of(api("GET", "projects/%s/aggregated/instances" % PROJECT, params={"maxResults": "many"}), 400)
    error_of(api("GET", "projects/Bad_Project/global/firewalls"), 400)


def test_output_only_fields_are_accepted_on_update(api):
    api("POST", "projects/%s/global/firewalls" % PROJECT, fw())
    got = api("GET", "projects/%s/global/firewalls/fw-1" % PROJECT).json()
    got["priority"] = 900
    r = api("PUT", "projects/%s/global/firewalls/fw-1" % PROJECT, got)
    assert r.status_code == 200, r.text
    assert api("GET", "projects/%s/global/firewalls/fw-1" % PROJECT).json()["priority"] == 900


def test_unimplemented_and_unknown_paths(api):
    r = api("POST", "projects/%s/zones/%s/instances/vm-1/reset" % (PROJECT, ZONE))
    assert error_of(r, 501)["message"].startswith("local Compute API: compute.instances.reset is not implemented")
    error_of(api("GET", "projects/%s/no/such/thing" % PROJECT), 404)


def test_authorization_is_required(api):
    r = requests.get(api.srv.endpoint + "projects/%s/zones" % PROJECT, timeout=5)
    assert error_of(r, 401)["status"] == "UNAUTHENTICATED"
    r = requests.get(api.srv.endpoint + "projects/%s/zones" % PROJECT, headers={"Authorization": "Bearer "},
                     timeout=5)
    error_of(r, 401)


# ------------------------------------------------------------------------------ behaviour
def test_image_family_resolves_to_newest_non_deprecated(api):
    r = api("GET", "projects/ubuntu-os-accelerator-images/global/images/family/"
                   "ubuntu-accelerator-2204-amd64-with-nvidia-580")
    assert r.json()["name"] == "ubuntu-accelerator-2204-amd64-with-nvidia-580-v20260210"
    error_of(api("GET", "projects/ubuntu-os-accelerator-images/global/images/family/"
                        "ubuntu-accelerator-2204-amd64-with-nvidia-550"), 404)  # only an obsolete image
    assert api("GET", "projects/deeplearning-platform-release/global/images/family/"
                      "common-cu128-ubuntu-2204-nvidia-570").status_code == 200


def test_operations_go_pending_running_done(api):
    op = api("POST", "projects/%s/global/firewalls" % PROJECT, fw()).json()
    assert op["kind"] == "compute#operation" and op["status"] == "PENDING" and op["operationType"] == "insert"
    assert op["selfLink"].startswith("https://www.googleapis.com/compute/v1/projects/%s/global/operations/" % PROJECT)
    path = "projects/%s/global/operations/%s" % (PROJECT, op["name"])
    assert api("GET", path).json()["status"] == "RUNNING"
    done = api("POST", path + "/wait").json()
    assert done["status"] == "DONE" and "error" not in done


def test_instance_lifecycle_and_status(api):
    base = "projects/%s/zones/%s/instances" % (PROJECT, ZONE)
    op = api("POST", base, vm()).json()
    inst = api("GET", base + "/vm-1").json()
    assert inst["status"] == "PROVISIONING"
    assert inst["guestAccelerators"][0]["acceleratorType"].endswith("/acceleratorTypes/nvidia-l4")
    assert inst["networkInterfaces"][0]["accessConfigs"][0]["natIP"].startswith("203.0.113.")
    opp = "projects/%s/zones/%s/operations/%s" % (PROJECT, ZONE, op["name"])
    api("POST", opp + "/wait")
    api("POST", opp + "/wait")
    assert api("GET", base + "/vm-1").json()["status"] == "RUNNING"
    error_of(api("POST", base, vm()), 409)
    stop = api("POST", base + "/vm-1/stop").json()
    assert api("GET", base + "/vm-1").json()["status"] == "STOPPING"
    for _attempt in range(2):
        api("GET", "projects/%s/zones/%s/operations/%s" % (PROJECT, ZONE, stop["name"]))
    assert api("GET", base + "/vm-1").json()["status"] == "TERMINATED"
    dele = api("DELETE", base + "/vm-1").json()
    for _attempt in range(2):
        api("GET", "projects/%s/zones/%s/operations/%s" % (PROJECT, ZONE, dele["name"]))
    error_of(api("GET", base + "/vm-1"), 404)


@pytest.mark.parametrize("change,needle", [
    (dict(scheduling={"onHostMaintenance": "MIGRATE", "automaticRestart": True}), "do not support live migration"),
    (dict(machineType="zones/%s/machineTypes/n1-standard-4" % ZONE), "only be attached to G2"),
    (dict(machineType="zones/%s/machineTypes/g2-standard-5" % ZONE), "does not exist in zone"),
    (dict(disks=[{"boot": True, "initializeParams": {
        "sourceImage": "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-570",
        "diskSizeGb": "200"}}]), "Deep Learning VM images do not support G2"),
    (dict(disks=[{"boot": True, "initializeParams": {
        "sourceImage": "projects/ubuntu-os-accelerator-images/global/images/family/ubuntu-accelerator-2204-amd64-"
                       "with-nvidia-580", "diskSizeGb": "5"}}]), "cannot be smaller than the image"),
])
def test_compute_rules_on_insert(api, change, needle):
    err = error_of(api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), vm(**change)), 400)
    assert needle in err["message"]


def test_unknown_zone(api):
    err = error_of(api("GET", "projects/%s/zones/mars-north1-a/instances" % PROJECT), 400)
    assert "Unknown zone" in err["message"]
    error_of(api("GET", "projects/%s/zones/mars-north1-a" % PROJECT), 404)


def test_accelerator_types_per_zone(api):
    names = [a["name"] for a in api("GET", "projects/%s/zones/%s/acceleratorTypes" % (PROJECT, ZONE)).json()["items"]]
    assert "nvidia-l4" in names
    error_of(api("GET", "projects/%s/zones/us-east1-d/acceleratorTypes/nvidia-l4" % PROJECT), 404)


def test_fingerprints_guard_set_methods(api):
    base = "projects/%s/zones/%s/instances/vm-1" % (PROJECT, ZONE)
    api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), vm())
    inst = api("GET", base).json()
    error_of(api("POST", base + "/setTags", {"items": ["x"], "fingerprint": "stale"}), 412)
    r = api("POST", base + "/setTags", {"items": ["x"], "fingerprint": inst["tags"]["fingerprint"]})
    assert r.status_code == 200
    assert api("GET", base).json()["tags"]["items"] == ["x"]
    error_of(api("POST", base + "/setTags", {"items": ["y"], "fingerprint": inst["tags"]["fingerprint"]}), 412)


def test_request_id_makes_writes_idempotent(api):
    rid = "6f1c3a5e-8d2b-4c7e-9a10-0123456789ab"
    op1 = api("POST", "projects/%s/global/firewalls" % PROJECT, fw(), params={"requestId": rid}).json()
    op2 = api("POST", "projects/%s/global/firewalls" % PROJECT, fw(), params={"requestId": rid}).json()
    assert op1["name"] == op2["name"]
    assert api.srv.api.summary()[PROJECT]["firewalls"] == ["fw-1"]


def test_firewall_patch_is_a_merge_and_keeps_immutables(api):
    api("POST", "projects/%s/global/firewalls" % PROJECT, fw())
    path = "projects/%s/global/firewalls/fw-1" % PROJECT
    assert api("PATCH", path, {"name": "fw-1", "sourceRanges": ["10.0.0.0/8"]}).status_code == 200
    got = api("GET", path).json()
    assert got["sourceRanges"] == ["10.0.0.0/8"] and got["targetTags"] == ["ai-server"]
    error_of(api("PATCH", path, {"name": "fw-1", "direction": "EGRESS"}), 400)
    error_of(api("PATCH", path, {"name": "fw-1", "allowed": [{"IPProtocol": "tcp", "ports": ["80,443"]}]}), 400)
    error_of(api("PATCH", path, {"sourceRanges": ["10.0.0.0/8"]}), 400)  # name is required in a patch


def test_aggregated_list_pages_5000_instances_fast(api):
    api.srv.api.seed(5000, zones=20)
    api.srv.clear_requests()
    token, seen, pages = None, 0, 0
    while True:
        params = {"maxResults": 500}
        if token:
            params["pageToken"] = token
        page = api("GET", "projects/%s/aggregated/instances" % PROJECT, params=params).json()
        pages += 1
        seen += sum(len(v.get("instances", [])) for v in page["items"].values())
        token = page.get("nextPageToken")
        if not token:
            break
    assert (seen, pages) == (5000, 10)
    assert sum(r["ms"] for r in api.srv.requests()) < 1000
    error_of(api("GET", "projects/%s/aggregated/instances" % PROJECT, params={"pageToken": "garbage!"}), 400)


def test_filter_subset():
    inst = {"name": "vm-00001", "status": "RUNNING", "labels": {"env": "prod"},
            "tags": {"items": ["ai-server", "monitoring"]}}
    assert parse_filter('status = RUNNING')(inst)
    assert parse_filter('(status = RUNNING) (labels.env = "prod")')(inst)
    assert not parse_filter('status != RUNNING')(inst)
    assert parse_filter('name = vm-0000*')(inst)
    assert parse_filter('tags.items eq ai-server AND name eq "vm-\\d+"')(inst)
    with pytest.raises(ApiError):  # the real API cannot mix regular expressions with = expressions
        parse_filter('tags.items = ai-server AND name eq "vm-\\d+"')
    assert parse_filter('(labels.env = dev) OR (labels.env = prod)')(inst)
    assert not parse_filter('labels.env = dev')(inst)
    with pytest.raises(Exception):
        parse_filter('status = (')


def test_fault_injection_via_admin_endpoint(api):
    base = api.srv.url
    requests.post(base + "_admin/faults", json={"kind": "status", "status": 429, "count": 2}, timeout=5)
    codes = [api("GET", "projects/%s/zones/%s" % (PROJECT, ZONE)).status_code for _attempt in range(3)]
    assert codes == [429, 429, 200]
    requests.post(base + "_admin/faults", json={"kind": "drop", "count": 1}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        requests.get(api.srv.endpoint + "projects/%s/zones" % PROJECT, headers=AUTH, timeout=5)
    assert requests.delete(base + "_admin/faults", timeout=5).json() == {"faults": []}


def test_cli_port_file_state_file_and_sigterm(tmp_path):
    port_file, state = tmp_path / "port", tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "compute_api", "server.py"), "--port", "0",
                             "--port-file", str(port_file), "--state", str(state), "--host-pool", "10.231.9.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 20
        while not port_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        port = int(port_file.read_text())
        endpoint = "http://127.0.0.1:%d/compute/v1/" % port
        r = requests.post(endpoint + "projects/%s/zones/%s/instances" % (PROJECT, ZONE), json=vm(), headers=AUTH,
                          timeout=5)
        assert r.status_code == 200, r.text
        inst = requests.get(endpoint + "projects/%s/zones/%s/instances/vm-1" % (PROJECT, ZONE), headers=AUTH,
                            timeout=5).json()
        assert inst["networkInterfaces"][0]["networkIP"] == "10.231.9.2"
        assert inst["networkInterfaces"][0]["accessConfigs"][0]["natIP"] == "10.231.9.2"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert "vm-1" in json.loads(state.read_text())["projects"][PROJECT]["instances"][ZONE]


# ------------------------------------------------------------------------------ as strict as the real API (issue 10)
@pytest.mark.parametrize("field,value", [
    ("machineType", "g2-standard-4"),
    ("guestAccelerators", [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}]),
])
def test_bare_names_in_url_fields_are_malformed(api, field, value):
    err = error_of(api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), vm(**{field: value})), 400)
    assert "The URL is malformed" in err["message"], err


def test_bare_disk_type_is_malformed(api):
    body = vm()
    body["disks"][0]["initializeParams"]["diskType"] = "pd-ssd"
    err = error_of(api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), body), 400)
    assert "The URL is malformed" in err["message"], err


def test_set_scheduling_only_on_terminated_instances(api):
    api("POST", "projects/%s/zones/%s/instances" % (PROJECT, ZONE), vm())
    api.srv.api.settle()
    path = "projects/%s/zones/%s/instances/vm-1" % (PROJECT, ZONE)
    with api.srv.api.lock:
        api.srv.api.state.projects[PROJECT]["instances"][ZONE]["vm-1"]["status"] = "RUNNING"
    err = error_of(api("POST", path + "/setScheduling", {"automaticRestart": False}), 400)
    assert "TERMINATED" in err["message"]
    with api.srv.api.lock:
        api.srv.api.state.projects[PROJECT]["instances"][ZONE]["vm-1"]["status"] = "TERMINATED"
    assert api("POST", path + "/setScheduling", {"automaticRestart": False}).status_code == 200


def test_rate_limits_come_as_403_too(api):
    api.srv.add_faults({"kind": "status", "status": 403, "reason": "rateLimitExceeded", "count": 1})
    err = error_of(api("GET", "projects/%s/zones/%s" % (PROJECT, ZONE)), 403)
    assert err["errors"][0]["reason"] == "rateLimitExceeded" and "Quota exceeded" in err["message"]


def test_wait_long_polls_and_sometimes_answers_early(api):
    a = api.srv.api
    saved = (a.clock_scale, a.wait_early_every, a.wait_hold)
    a.clock_scale, a.wait_early_every, a.wait_hold = 100.0, 2, 120.0
    a._waits = 0
    try:
        api.srv.add_faults({"kind": "slow_operation", "seconds": 10 ** 6, "operation_type": "insert"})
        op = api("POST", "projects/%s/global/firewalls" % PROJECT, fw()).json()
        path = "projects/%s/global/operations/%s/wait" % (PROJECT, op["name"])
        t0 = time.monotonic()
        first = api("POST", path).json()  # held for the 120 API seconds (1.2 real ones), then not DONE
        held = time.monotonic() - t0
        t0 = time.monotonic()
        second = api("POST", path).json()  # the 2nd wait answers at once
        early = time.monotonic() - t0
    finally:
        a.clock_scale, a.wait_early_every, a.wait_hold = saved
    assert first["status"] == "RUNNING" and held >= 1.1, (first["status"], held)
    assert second["status"] == "RUNNING" and early < 0.5, (second["status"], early)


def test_no_results_on_page_warning_is_per_page(api):
    a = api.srv.api
    a.seed(4, project=PROJECT, zones=2)  # 2 instances in each of 2 zones
    zones = sorted({"zones/" + z for z in a.state.projects[PROJECT]["instances"]})
    first = api("GET", "projects/%s/aggregated/instances" % PROJECT, params={"maxResults": 2}).json()
    assert first.get("nextPageToken")
    with_items = [s for s, v in first["items"].items() if v.get("instances")]
    assert with_items == [zones[0]]
    # every other scope has no result on this page, and says so on this page
    assert first["items"][zones[1]]["warning"]["code"] == "NO_RESULTS_ON_PAGE"
    assert all(v["warning"]["code"] == "NO_RESULTS_ON_PAGE" for s, v in first["items"].items() if s != zones[0])

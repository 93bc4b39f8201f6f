"""A fleet on the GCE side, with the real playbooks against the local Compute API (no test host is booted).

One scenario, in order (each step is an ansible-playbook run of the collection's own playbooks, with the
demo inventory inventories/local: localhost plus the llmops.gce_vllm.gce inventory plugin on the local API):
  1. provision.yml with gce_vllm_instances = three VMs over three zones of one region: all three RUNNING, with
     the same network tags and labels, each VM's SSH host keys in the known_hosts file, and (gce_vllm_load_balancer
     auto, more than one VM) the load balancer: health check, one instance group per zone, backend service,
     forwarding rule, and the health-check firewall rule; a second run changes nothing;
  2. stop.yml with gce_vllm_target_instances = one VM: only that VM stops;
  3. start.yml (its localhost play; --limit localhost) for that VM: it runs again and the refreshed inventory
     finds every VM of the run in group ai_server;
  4. teardown.yml for one VM deletes only it and its zone's instance group (the firewall rules and the load
     balancer stay for the others); teardown.yml for the rest deletes them, the load balancer and the firewall
     rules; a second teardown changes nothing.
(A target name outside the fleet is refused before any API call: tests/unit/test_gce_fleet.py, with the role's names.)
Seven playbook runs: about 75 s on a quiet machine, several minutes under heavy load.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.compute_api.server import ComputeApiServer  # noqa: E402

VENV_BIN = ROOT / ".venv" / "bin"
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PROJECT = "llmops-demo"  # the project of inventories/local/gce.yml
# made-up loopback addresses of the host pool: nothing here logs in to the VMs, and the load balancer's health
# probes (getHealth) are refused at once there
POOL = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
FLEET = [
    {"name": "fleet-a", "zone": "asia-northeast3-a"},
    {"name": "fleet-b", "zone": "asia-northeast3-b"},
    {"name": "fleet-c"},  # gce_vllm_zone
]
# each VM its own host key (as real VMs have): the 32 key bytes differ in the last one
HOST_KEYS = {addr: base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(31) + bytes([i]))
             .decode() for i, addr in enumerate(POOL)}


@pytest.fixture
def api(tmp_path):
    srv = ComputeApiServer(host_pool=list(POOL), op_polls=1, op_seconds=2.0).start()
    srv.api.host_keys_delay = 0
    for addr in POOL:
        srv.api.host_keys[addr] = {"ssh-ed25519": HOST_KEYS[addr]}
    yield srv
    srv.stop()


def run(playbook, api, tmp_path, check=True, limit=None, **extra):
    varfile = tmp_path / "vars.json"
    base = {
        "gce_vllm_project": PROJECT, "gce_vllm_auth_kind": "accesstoken", "gce_vllm_access_token": "local",
        "gce_vllm_zone": "asia-northeast3-c", "gce_vllm_instances": FLEET, "gce_vllm_lb_check_timeout": 1,
        "gce_vllm_ai_source_ranges": ["10.231.0.0/16"], "gce_vllm_ssh_public_key_file": "",
        "gce_vllm_known_hosts_file": str(tmp_path / "known_hosts"), "gce_vllm_host_keys_timeout": 20,
    }
    base.update(extra)
    varfile.write_text(json.dumps(base))
    env = dict(os.environ, PATH="%s:%s" % (VENV_BIN, os.environ.get("PATH", "")),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", GCE_API_ENDPOINT=api.endpoint,
               LLMOPS_DEMO_ACCESS_TOKEN="local", LLMOPS_DEMO_STATE=str(tmp_path))
    cmd = ["ansible-playbook", "-i", "inventories/local", playbook, "-e", "@%s" % varfile]
    if limit:
        cmd += ["--limit", limit]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, out[-6000:]
    tail = out.rsplit("PLAY RECAP", 1)
    recap = {h: tuple(int(x) for x in rest) for h, *rest in RECAP_RE.findall(tail[-1])} if len(tail) == 2 else {}
    return proc.returncode, out, recap


def lb(api):
    return api.api.summary()[PROJECT]["load_balancer"]


def instances(api):
    return api.api.summary().get(PROJECT, {}).get("instances", {})


def test_fleet_provision_stop_start_teardown_all_or_one(api, tmp_path):
    # 1. three VMs over three zones of one region from one variable
    run("playbooks/provision.yml", api, tmp_path)
    assert instances(api) == {"asia-northeast3-a/fleet-a": "RUNNING", "asia-northeast3-b/fleet-b": "RUNNING",
                              "asia-northeast3-c/fleet-c": "RUNNING"}
    state = api.api.dump()["projects"][PROJECT]["instances"]
    vms = [vm for zone in state.values() for vm in zone.values()]
    assert {tuple(vm["tags"]["items"]) for vm in vms} == {("ai-server", "monitoring")}
    assert all(vm["labels"].get("app") == "vllm" and vm["labels"].get("managed-by") == "ansible" for vm in vms)
    assert lb(api) == {
        "healthChecks": ["asia-northeast3/ai-server-lb"],
        "instanceGroups": ["asia-northeast3-%s/ai-server-lb-asia-northeast3-%s" % (z, z) for z in "abc"],
        "backendServices": ["asia-northeast3/ai-server-lb"], "forwardingRules": ["asia-northeast3/ai-server-lb"]}
    assert "allow-lb-health-checks" in api.api.summary()[PROJECT]["firewalls"]
    known = (tmp_path / "known_hosts").read_text()
    assert all(addr in known for addr in POOL), known
    _rc, out, recap = run("playbooks/provision.yml", api, tmp_path)
    assert recap["localhost"][1] == 0, out[-5000:]  # nothing to change

    # 2. stop one
    run("playbooks/stop.yml", api, tmp_path, gce_vllm_target_instances=["fleet-b"])
    assert instances(api)["asia-northeast3-b/fleet-b"] == "TERMINATED"
    assert instances(api)["asia-northeast3-a/fleet-a"] == "RUNNING"

    # 3. start it again (comma-separated string form); the inventory finds the run's VMs
    _rc, out, _recap = run("playbooks/start.yml", api, tmp_path, limit="localhost",
                           gce_vllm_target_instances="fleet-b")
    assert instances(api)["asia-northeast3-b/fleet-b"] == "RUNNING"
    assert "Check every VM of the run is in the inventory" in out

    # 4. teardown one, then the rest
    run("playbooks/teardown.yml", api, tmp_path, gce_vllm_target_instances=["fleet-c"])
    assert sorted(instances(api)) == ["asia-northeast3-a/fleet-a", "asia-northeast3-b/fleet-b"]
    assert api.api.summary()[PROJECT]["firewalls"]  # shared by the rest of the fleet: kept
    assert lb(api)["instanceGroups"] == ["asia-northeast3-a/ai-server-lb-asia-northeast3-a",
                                         "asia-northeast3-b/ai-server-lb-asia-northeast3-b"]
    assert lb(api)["forwardingRules"] == ["asia-northeast3/ai-server-lb"]
    run("playbooks/teardown.yml", api, tmp_path)
    assert instances(api) == {} and api.api.summary()[PROJECT]["firewalls"] == []
    assert all(v == [] for v in lb(api).values()), lb(api)
    _rc, _out, recap = run("playbooks/teardown.yml", api, tmp_path)
    assert recap["localhost"][1] == 0, recap

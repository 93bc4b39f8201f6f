"""Unit tests of the dynamic inventory llmops.gce_vllm.gce.

The plugin runs for real (loaded by ansible-core's plugin loader, parsed by the InventoryManager or the
ansible-inventory CLI) against the local Compute API of tests/compute_api, served from a thread on
127.0.0.1; the API's own request log shows which calls the plugin made.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, inventory_loader
from ansible.template import trust_as_template

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
init_plugin_loader([COLLECTIONS])

from ansible_collections.llmops.gce_vllm.plugins.inventory import gce as gce_inventory  # noqa: E402

PLUGIN = "llmops.gce_vllm.gce"


def a_instance(name="vm-1", zone="asia-northeast3-a", status="RUNNING", tags=("ai-server", "monitoring"),
               labels=None, nat_ip="203.0.113.7", network_ip="10.178.0.2", gpus=(("nvidia-l4", 1),),
               machine_type="g2-standard-4", project="proj-one", metadata=None):
    """An instance resource as the Compute API returns it (field names and types of the discovery document)."""
    base = "https://compute.googleapis.com/compute/v1/projects/%s" % project
    nic = {
        "kind": "compute#networkInterface",
        "name": "nic0",
        "network": base + "/global/networks/default",
        "subnetwork": base + "/regions/%s/subnetworks/default" % zone.rsplit("-", 1)[0],
        "networkIP": network_ip,
    }
    if nat_ip is not None:
        nic["accessConfigs"] = [{"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT",
                                 "name": "External NAT", "natIP": nat_ip}]
    inst = {
        "kind": "compute#instance",
        "id": "8437029384756102938",
        "creationTimestamp": "2026-11-24T01:02:03.456-08:00",
        "name": name,
        "zone": base + "/zones/" + zone,
        "machineType": base + "/zones/%s/machineTypes/%s" % (zone, machine_type),
        "status": status,
        "tags": {"items": list(tags), "fingerprint": "42WmSpB8rSM="},
        "networkInterfaces": [nic],
        "guestAccelerators": [
            {"acceleratorType": base + "/zones/%s/acceleratorTypes/%s" % (zone, t), "acceleratorCount": c}
            for t, c in gpus
        ],
        "metadata": {"kind": "compute#metadata", "fingerprint": "x",
                     "items": [{"key": k, "value": v} for k, v in (metadata or {}).items()]},
        "selfLink": base + "/zones/%s/instances/%s" % (zone, name),
    }
    if labels:
        inst["labels"] = dict(labels)
    return inst


# --------------------------------------------------------------------------- pure parts
def test_instance_record_maps_the_api_fields_to_prefixed_hostvars():
    inst = a_instance(labels={"env": "prod"}, metadata={"startup-script": "echo secret", "app": "vllm"})
    rec = gce_inventory.instance_record("proj-one", inst, ["app"])
    assert rec == {
        "gce_name": "vm-1",
        "gce_id": "8437029384756102938",
        "gce_project": "proj-one",
        "gce_zone": "asia-northeast3-a",
        "gce_region": "asia-northeast3",
        "gce_status": "RUNNING",
        "gce_machine_type": "g2-standard-4",
        "gce_gpus": [{"type": "nvidia-l4", "count": 1}],
        "gce_labels": {"env": "prod"},
        "gce_tags": ["ai-server", "monitoring"],
        "gce_private_ip": "10.178.0.2",
        "gce_public_ip": "203.0.113.7",
        "gce_network": "default",
        "gce_self_link": inst["selfLink"],
        "gce_creation_timestamp": "2026-11-24T01:02:03.456-08:00",
        "gce_metadata": {"app": "vllm"},
    }


def test_instance_record_without_external_ip_gpus_labels_or_metadata():
    inst = a_instance(nat_ip=None, gpus=(), tags=())
    del inst["metadata"]
    rec = gce_inventory.instance_record("proj-one", inst)
    assert rec["gce_public_ip"] is None
    assert rec["gce_gpus"] == [] and rec["gce_labels"] == {} and rec["gce_tags"] == []
    assert rec["gce_metadata"] == {}


@pytest.mark.parametrize("name,wanted", [
    ("gce.yml", True), ("prod.gce.yml", True), ("prod.gce.yaml", True), ("x_gce.yml", True),
    ("gcp.yml", False), ("hosts.yml", False), ("prod.gce.json", False),
])
def test_verify_file_takes_only_gce_yml_names(tmp_path, name, wanted):
    path = tmp_path / name
    path.write_text("plugin: %s\n" % PLUGIN)
    assert inventory_loader.get(PLUGIN).verify_file(str(path)) is wanted


def test_simple_expressions_resolve_like_jinja(tmp_path):
    """The no-Jinja fast path of _compose gives what ansible-core's templating gives, or steps aside."""
    plugin = inventory_loader.get(PLUGIN)
    plugin.loader = DataLoader()
    plugin._vars = {}
    plugin.set_options(direct={"plugin": PLUGIN, "projects": ["proj-one"]})
    rec = gce_inventory.instance_record("proj-one", a_instance(labels={"team": "ml", "items": "x"}))
    rec["templated"] = trust_as_template("{{ gce_zone }}")
    exprs = ["gce_zone", " gce_labels.team ", "gce_gpus", "gce_labels", "'ubuntu'", '"a b"',
             "gce_labels.items", "gce_zone | upper", "gce_gpus[0].type", "templated", "true", "gce_public_ip"]
    fast = {}
    for expr in exprs:
        value = plugin._resolve_simple(trust_as_template(expr), rec)
        if value is not gce_inventory._MISS:
            fast[expr] = value
    # what takes the fast path, and what must not (dict methods, filters, indexing, templates, literals)
    assert sorted(fast) == sorted(["gce_zone", " gce_labels.team ", "gce_gpus", "gce_labels", "'ubuntu'",
                                   '"a b"', "gce_public_ip"])
    for expr, value in fast.items():
        assert value == _jinja(plugin, expr, rec), expr
    assert plugin._compose(trust_as_template("gce_zone | upper"), rec) == "ASIA-NORTHEAST3-A"
    assert plugin._compose(trust_as_template("templated"), rec) == "asia-northeast3-a"


def _jinja(plugin, expr, variables):
    plugin.templar.available_variables = variables
    return plugin.templar.evaluate_expression(trust_as_template(expr))

"""Unit tests of the dynamic inventory llmops.gce_vllm.gce.

The plugin runs for real (loaded by ansible-core's plugin loader, parsed by the InventoryManager or the
ansible-inventory CLI) against the local Compute API of tests/compute_api, served from a thread on
127.0.0.1; the API's own request log shows which calls the plugin made.
"""
import inspect
import json
import os
import subprocess
import sys
import time

import pytest

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.inventory.host import Host
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.inventory import Constructable
from ansible.plugins.loader import init_plugin_loader, inventory_loader
from ansible.template import trust_as_template
from ansible.utils.collection_loader import AnsibleCollectionConfig

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
if not AnsibleCollectionConfig.collection_finder:  # conftest.py normally did it
    init_plugin_loader([COLLECTIONS])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ansible_collections.llmops.gce_vllm.plugins.inventory import gce as gce_inventory  # noqa: E402
from tests.compute_api.server import ComputeApiServer  # noqa: E402

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


@pytest.fixture
def api():
    """The local Compute API (tests/compute_api) in a thread on 127.0.0.1."""
    srv = ComputeApiServer().start()
    yield srv
    srv.stop()


def api_endpoint(srv):
    return srv.endpoint


def add_instance(srv, project, inst):
    """Put an instance resource straight into the API's state (like its own seed()), as the API stores it."""
    zone = inst["zone"].rsplit("/", 1)[-1]
    with srv.api.lock:
        srv.api.state.project(project)["instances"].setdefault(zone, {})[inst["name"]] = inst


def seed_instances(srv, project, count, zones):
    srv.api.seed(count, project=project, zones=zones)


def aggregated_calls(srv):
    return len(srv.requests(r"/aggregated/instances"))


def total_calls(srv):
    return len(srv.requests())


# --------------------------------------------------------------------------- pure parts
def test_instance_record_maps_the_api_fields_to_prefixed_hostvars():
    inst = a_instance(labels={"env": "prod"}, metadata={"startup-script": "echo secret", "app": "vllm"})
    rec = gce_inventory.instance_record("proj-one", inst, ["app"])
    assert rec == {
        "gce_name": "vm-1",
        "gce_hostname": None,
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
    ("gcp.yml", True), ("prod.gcp.yaml", True), ("hosts.yml", False), ("prod.gce.json", False),
])
def test_verify_file_takes_gce_and_google_cloud_gcp_yml_names(tmp_path, name, wanted):
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


# --------------------------------------------------------------------------- against the local Compute API
ZONES20 = (["asia-northeast%d-%s" % (r, z) for r in (1, 2, 3) for z in "abc"]
           + ["us-central1-%s" % z for z in "abcf"] + ["europe-west1-%s" % z for z in "bcd"]
           + ["europe-west4-%s" % z for z in "abc"] + ["us-east1-b"])


def write_config(tmp_path, api, name="test.gce.yml", **options):
    config = {"plugin": PLUGIN, "projects": ["proj-one"], "auth_kind": "accesstoken",
              "access_token": "local-test-token", "api_endpoint": api_endpoint(api)}
    config.update(options)
    path = tmp_path / name
    path.write_text(json.dumps(config))  # JSON is YAML
    return str(path)


def parse(path, cache=True):
    """Run the plugin the way ansible-core does (parse, cache update, reconcile); returns the InventoryData."""
    inventory = InventoryData()
    plugin = inventory_loader.get(PLUGIN)
    plugin.parse(inventory, DataLoader(), path, cache=cache)
    if plugin.get_option("cache"):
        plugin.update_cache_if_changed()
    inventory.reconcile_inventory()
    return inventory


def group_hosts(inventory, group):
    return sorted(h.name for h in inventory.groups[group].get_hosts()) if group in inventory.groups else []


@pytest.fixture
def fleet(api):
    """Three instances: the L4 AI server, a CPU box in another zone without external IP, a TERMINATED one."""
    add_instance(api, "proj-one", a_instance(labels={"env": "prod", "app": "vllm"}))
    add_instance(api, "proj-one", a_instance(name="cpu-1", zone="asia-northeast3-b", tags=("monitoring",),
                                             nat_ip=None, network_ip="10.178.0.3", gpus=(),
                                             machine_type="e2-standard-2", labels={"env": "dev"}))
    add_instance(api, "proj-one", a_instance(name="old-1", status="TERMINATED", nat_ip=None,
                                             network_ip="10.178.0.4"))
    return api


def test_builtin_groups_and_hostvars(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet))
    assert sorted(inv.hosts) == ["cpu-1", "vm-1"]  # RUNNING only, by default
    assert group_hosts(inv, "ai_server") == ["vm-1"]
    assert group_hosts(inv, "monitoring") == ["cpu-1", "vm-1"]
    assert group_hosts(inv, "label_env_prod") == ["vm-1"]
    assert group_hosts(inv, "label_app_vllm") == ["vm-1"]
    assert group_hosts(inv, "label_env_dev") == ["cpu-1"]
    assert group_hosts(inv, "zone_asia_northeast3_a") == ["vm-1"]
    assert group_hosts(inv, "zone_asia_northeast3_b") == ["cpu-1"]
    assert group_hosts(inv, "region_asia_northeast3") == ["cpu-1", "vm-1"]
    assert group_hosts(inv, "status_running") == ["cpu-1", "vm-1"]
    assert group_hosts(inv, "machine_type_g2_standard_4") == ["vm-1"]
    assert group_hosts(inv, "gpu_nvidia_l4") == ["vm-1"]
    assert "status_terminated" not in inv.groups and "project_proj_one" not in inv.groups
    vm = inv.hosts["vm-1"].vars
    assert vm["ansible_host"] == "203.0.113.7"
    assert vm["gce_private_ip"] == "10.178.0.2" and vm["gce_public_ip"] == "203.0.113.7"
    assert vm["gce_gpus"] == [{"type": "nvidia-l4", "count": 1}]
    assert vm["gce_zone"] == "asia-northeast3-a" and vm["gce_machine_type"] == "g2-standard-4"
    assert vm["gce_tags"] == ["ai-server", "monitoring"] and vm["gce_labels"] == {"env": "prod", "app": "vllm"}
    assert vm["gce_metadata"] == {}
    # no external IP: ansible_host falls back to the private address
    assert inv.hosts["cpu-1"].vars["ansible_host"] == "10.178.0.3"
    assert aggregated_calls(fleet) == 1


def test_statuses_option(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, statuses=[]))
    assert sorted(inv.hosts) == ["cpu-1", "old-1", "vm-1"]
    assert group_hosts(inv, "status_terminated") == ["old-1"]
    inv = parse(write_config(tmp_path, fleet, statuses=["TERMINATED", "STOPPED"]))
    assert sorted(inv.hosts) == ["old-1"]


def test_zones_filter_on_the_controller_with_one_call(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, zones=["asia-northeast3-b"]))
    assert sorted(inv.hosts) == ["cpu-1"]
    assert aggregated_calls(fleet) == 1


def test_hostnames_preference(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, hostnames=["public_ip", "name"]))
    assert sorted(inv.hosts) == ["203.0.113.7", "cpu-1"]
    inv = parse(write_config(tmp_path, fleet, hostnames=["private_ip"]))
    assert sorted(inv.hosts) == ["10.178.0.2", "10.178.0.3"]
    inv = parse(write_config(tmp_path, fleet, hostnames=["labels.app", "gce_name ~ '.' ~ gce_zone"]))
    assert sorted(inv.hosts) == ["cpu-1.asia-northeast3-b", "vllm"]


def test_address_preference(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, address_preference=["private_ip"]))
    assert inv.hosts["vm-1"].vars["ansible_host"] == "10.178.0.2"
    inv = parse(write_config(tmp_path, fleet, address_preference=[]))
    assert "ansible_host" not in inv.hosts["vm-1"].vars


def test_same_name_in_two_zones_gets_a_unique_hostname(tmp_path, api, capsys):
    add_instance(api, "proj-one", a_instance(name="web", zone="asia-northeast3-a"))
    add_instance(api, "proj-one", a_instance(name="web", zone="asia-northeast3-b"))
    inv = parse(write_config(tmp_path, api))
    assert len(inv.hosts) == 2 and "web" in inv.hosts
    other = [h for h in inv.hosts if h != "web"][0]
    assert other in ("web.asia-northeast3-a", "web.asia-northeast3-b")
    assert inv.hosts[other].vars["gce_zone"] == other.split(".", 1)[1]


def test_instances_without_a_hostname(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, hostnames=["labels.app"]))
    assert sorted(inv.hosts) == ["vllm"]  # cpu-1 has no label app: skipped, with one warning
    with pytest.raises(AnsibleError, match="no entry of 'hostnames' gives a value for instance cpu-1"):
        parse(write_config(tmp_path, fleet, hostnames=["labels.app"], strict=True))


def test_tag_named_like_a_reserved_group(tmp_path, api):
    add_instance(api, "proj-one", a_instance(tags=("all", "ai-server")))
    inv = parse(write_config(tmp_path, api))
    assert group_hosts(inv, "tag_all") == ["vm-1"] and group_hosts(inv, "ai_server") == ["vm-1"]
    assert len(inv.groups["all"].child_groups) > 1  # still the real 'all', holding every group


def test_users_keyed_groups_groups_and_compose(tmp_path, fleet):
    inv = parse(write_config(
        tmp_path, fleet,
        keyed_groups=[{"key": "gce_labels.env", "prefix": "env"},
                      {"key": "gce_machine_type | regex_replace('-.*', '')", "prefix": "family"}],
        groups={"has_gpu": "gce_gpus | length > 0"},
        compose={"ansible_user": "'ubuntu'", "gpu_count": "gce_gpus | map(attribute='count') | sum"}))
    assert group_hosts(inv, "env_prod") == ["vm-1"] and group_hosts(inv, "env_dev") == ["cpu-1"]
    assert group_hosts(inv, "family_g2") == ["vm-1"] and group_hosts(inv, "family_e2") == ["cpu-1"]
    assert group_hosts(inv, "has_gpu") == ["vm-1"]
    assert inv.hosts["vm-1"].vars["ansible_user"] == "ubuntu"
    assert inv.hosts["vm-1"].vars["gpu_count"] == 1 and inv.hosts["cpu-1"].vars["gpu_count"] == 0
    assert group_hosts(inv, "ai_server") == ["vm-1"]  # built-in groups still there


def test_builtin_groups_can_be_chosen(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, builtin_groups=["project", "tags"], tag_group_prefix="tag_"))
    assert group_hosts(inv, "project_proj_one") == ["cpu-1", "vm-1"]
    assert group_hosts(inv, "tag_ai_server") == ["vm-1"]
    assert "ai_server" not in inv.groups and "zone_asia_northeast3_a" not in inv.groups


def test_metadata_only_the_listed_keys(tmp_path, api):
    add_instance(api, "proj-one", a_instance(metadata={"startup-script": "export TOKEN=s3cr3t", "role": "ai"}))
    inv = parse(write_config(tmp_path, api, metadata_keys=["role"]))
    assert inv.hosts["vm-1"].vars["gce_metadata"] == {"role": "ai"}
    assert "s3cr3t" not in json.dumps(inv.hosts["vm-1"].vars)


def test_pagination_one_aggregated_call_per_page(tmp_path, api):
    seed_instances(api, "proj-one", 1234, ZONES20)
    inv = parse(write_config(tmp_path, api, statuses=[]))
    assert len(inv.hosts) == 1234
    assert aggregated_calls(api) == 3  # 500 + 500 + 234, never one call per zone
    assert sum(len(group_hosts(inv, "zone_" + z.replace("-", "_"))) for z in ZONES20) == 1234


def test_several_projects(tmp_path, api):
    add_instance(api, "proj-one", a_instance(name="a-1"))
    add_instance(api, "proj-two", a_instance(name="b-1", project="proj-two"))
    inv = parse(write_config(tmp_path, api, projects=["proj-one", "proj-two"], builtin_groups=["project"]))
    assert group_hosts(inv, "project_proj_one") == ["a-1"] and group_hosts(inv, "project_proj_two") == ["b-1"]
    assert inv.hosts["b-1"].vars["gce_project"] == "proj-two"
    assert aggregated_calls(api) == 2


def test_cache_hit_makes_no_api_call(tmp_path, fleet):
    cache_dir = tmp_path / "cache"
    path = write_config(tmp_path, fleet, cache=True, cache_plugin="ansible.builtin.jsonfile",
                        cache_connection=str(cache_dir), cache_timeout=600)
    first = parse(path)
    assert aggregated_calls(fleet) == 1 and any(cache_dir.iterdir())
    second = parse(path)  # a new plugin instance, like a new ansible-playbook run
    assert aggregated_calls(fleet) == 1, "the cached run called the API"
    assert sorted(second.hosts) == sorted(first.hosts)
    assert {g: group_hosts(second, g) for g in second.groups} == {g: group_hosts(first, g) for g in first.groups}
    assert second.hosts["vm-1"].vars["gce_gpus"] == first.hosts["vm-1"].vars["gce_gpus"]
    # refresh (meta: refresh_inventory, --flush-cache) fetches again
    parse(path, cache=False)
    assert aggregated_calls(fleet) == 2
    # another query (other filters) does not reuse the cached answer
    path = write_config(tmp_path, fleet, cache=True, cache_plugin="ansible.builtin.jsonfile",
                        cache_connection=str(cache_dir), cache_timeout=600, filters=["labels.env = prod"])
    parse(path)
    assert aggregated_calls(fleet) == 3


def test_filter_syntax_error_shows_the_api_message(tmp_path, fleet):
    path = write_config(tmp_path, fleet, filters=["labels.env = = prod"])
    with pytest.raises(AnsibleError) as err:
        parse(path)
    text = str(err.value)
    assert "HTTP 400" in text and "Invalid list filter expression" in text
    assert "Check the 'filters' option" in text and "labels.env = = prod" in text


def test_rate_limits_and_outages_are_retried(tmp_path, fleet):
    fleet.add_faults([{"kind": "status", "status": 429, "count": 1, "retry_after": 0, "path": "/aggregated/"},
                      {"kind": "status", "status": 503, "count": 1, "retry_after": 0, "path": "/aggregated/"}])
    inv = parse(write_config(tmp_path, fleet))
    assert sorted(inv.hosts) == ["cpu-1", "vm-1"]
    assert [r["status"] for r in fleet.requests(r"/aggregated/")] == [429, 503, 200]


def _sent_filter(fleet):
    from urllib.parse import parse_qs
    return [parse_qs(r["query"]).get("filter", [None])[0] for r in fleet.requests(r"/aggregated/")]


def test_several_filters_are_juxtaposed_parenthesized_groups_like_google_cloud(tmp_path, fleet):
    filters = ["status = RUNNING OR status = TERMINATED", "(labels.app = vllm)", "name = vm-1"]
    inv = parse(write_config(tmp_path, fleet, filters=filters), cache=False)
    assert _sent_filter(fleet) == ["(status = RUNNING OR status = TERMINATED) (labels.app = vllm) (name = vm-1)"]
    assert sorted(inv.hosts) == ["vm-1"]
    fleet.clear_requests()
    parse(write_config(tmp_path, fleet, filters=["labels.app = vllm"]), cache=False)
    assert _sent_filter(fleet) == ["labels.app = vllm"]  # one filter goes as it is


def test_regex_filters_mixed_with_comparisons_fail_before_any_call(tmp_path, fleet):
    path = write_config(tmp_path, fleet, filters=["name eq vm-.*", "labels.app = vllm"])
    with pytest.raises(AnsibleError) as err:
        parse(path, cache=False)
    text = str(err.value)
    assert "filters" in text and "eq" in text and "cannot be mixed" in text, text
    assert total_calls(fleet) == 0
    inv = parse(write_config(tmp_path, fleet, filters=["name eq vm-.*", "labels.app eq vllm"]), cache=False)
    assert sorted(inv.hosts) == ["vm-1"]


def test_403_rate_limits_are_retried_and_never_blamed_on_iam(tmp_path, fleet):
    fleet.add_faults({"kind": "status", "status": 403, "reason": "rateLimitExceeded", "count": 2,
                      "path": "/aggregated/"})
    with pytest.raises(AnsibleError) as err:
        parse(write_config(tmp_path, fleet, retries=1))
    text = str(err.value)
    assert "gave up after 2 attempts" in text and "rateLimitExceeded" in text, text
    assert "roles/compute.viewer" not in text and "Check the credentials" not in text, text
    assert [r["status"] for r in fleet.requests(r"/aggregated/")] == [403, 403]
    fleet.add_faults({"kind": "status", "status": 403, "reason": "userRateLimitExceeded", "count": 1,
                      "path": "/aggregated/"})
    inv = parse(write_config(tmp_path, fleet), cache=False)
    assert sorted(inv.hosts) == ["cpu-1", "vm-1"]


def test_missing_credentials_file_fails_before_any_api_call(tmp_path, fleet):
    path = write_config(tmp_path, fleet, auth_kind="serviceaccount",
                        service_account_file=str(tmp_path / "nope.json"))
    with pytest.raises(AnsibleError) as err:
        parse(path)
    assert "nope.json does not exist" in str(err.value) and "service_account_file" in str(err.value)
    assert total_calls(fleet) == 0


@pytest.mark.parametrize("options,words", [
    ({"projects": []}, ["'projects' is empty", "GCP_PROJECT"]),
    ({"projects": ["Bad_Project"]}, ["not a project ID"]),
    ({"zones": ["asia-northeast3"]}, ["option 'zones'", "asia-northeast3-a"]),
    ({"hostnames": ["public-ip"]}, ["option 'hostnames'", "public-ip"]),
    ({"page_size": 1000}, ["page_size", "1 to 500"]),
    ({"auth_kind": "accesstoken", "access_token": ""}, ["access_token", "GCP_ACCESS_TOKEN"]),
])
def test_bad_options_fail_before_any_api_call(tmp_path, fleet, monkeypatch, options, words):
    monkeypatch.delenv("GCP_PROJECT", raising=False)
    monkeypatch.delenv("GCP_ACCESS_TOKEN", raising=False)
    with pytest.raises(AnsibleError) as err:
        parse(write_config(tmp_path, fleet, **options))
    for word in words:
        assert word in str(err.value)
    assert total_calls(fleet) == 0


def test_5000_instances_in_20_zones(tmp_path, api):
    """Behaviour at fleet size (timing is `make bench`'s job; printed here for information)."""
    seed_instances(api, "proj-one", 5000, ZONES20)
    path = write_config(tmp_path, api, statuses=[])
    started = time.perf_counter()
    inv = parse(path)
    took = time.perf_counter() - started
    print("5,000 instances: inventory built in %.2fs" % took)
    assert len(inv.hosts) == 5000
    assert aggregated_calls(api) == 10
    assert sum(len(group_hosts(inv, "zone_" + z.replace("-", "_"))) for z in ZONES20) == 5000


def test_ansible_inventory_cli(tmp_path, fleet):
    """The real CLI: ansible-inventory -i x.gce.yml --list, the endpoint from GCE_API_ENDPOINT."""
    path = write_config(tmp_path, fleet, name="cli.gce.yml")
    config = json.loads(open(path).read())
    del config["api_endpoint"]
    open(path, "w").write(json.dumps(config))
    env = dict(os.environ, GCE_API_ENDPOINT=api_endpoint(fleet), ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_INVENTORY_UNPARSED_FAILED="true")
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i", path, "--list"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    data = json.loads(out)
    assert data["ai_server"]["hosts"] == ["vm-1"]
    assert sorted(data["monitoring"]["hosts"]) == ["cpu-1", "vm-1"]
    assert data["_meta"]["hostvars"]["vm-1"]["gce_zone"] in ("asia-northeast3-a", {"__ansible_unsafe": "asia-northeast3-a"})


# --------------------------------------------------------------------------- canaries of the private paths
def _typed(value):
    """value with the exact type of every part spelled out (a data-tagged value is of a tagged subclass, such
    as _AnsibleTaggedStr), so that equal-looking values differ."""
    if isinstance(value, dict):
        return (type(value).__name__, sorted((_typed(k), _typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, value)


def _host_state(inventory):
    return {name: (_typed(host.vars), _typed(host.get_vars()), sorted(g.name for g in host.get_groups()))
            for name, host in inventory.hosts.items()}


def _sample_inventories():
    """The same sample set once through the fast path and once through inventory.set_variable."""
    plugin = inventory_loader.get(PLUGIN)
    records = [gce_inventory.instance_record("proj-one", a_instance(labels={"env": "prod"},
                                                                    metadata={"role": "ai"}), ["role"]),
               gce_inventory.instance_record("proj-one", a_instance(name="cpu-1", nat_ip=None, gpus=(), tags=()))]
    built = []
    for fast in (True, False):
        inventory = InventoryData()
        inventory.current_source = "/srv/inv/test.gce.yml"
        plugin.inventory = inventory
        for rec in records:
            name = inventory.add_host(rec["gce_name"])
            plugin._set_host_variables(name, dict(rec, ansible_host=rec["gce_private_ip"]), fast=fast)
        built.append(inventory)
    return built


def test_fast_host_variables_equal_set_variable():
    """Canary of _set_host_variables: the dict update gives exactly what inventory.set_variable gives.

    Fails when ansible-core changes what the update relies on: Host.vars holding the host's own variables
    as a plain dict that get_vars() reads, and Host.set_variable storing a value untouched under its name.
    """
    assert isinstance(Host("probe").vars, dict)
    fast, public = _sample_inventories()
    assert sorted(fast.hosts) == ["cpu-1", "vm-1"]
    assert _host_state(fast) == _host_state(public)
    assert fast.hosts["vm-1"].get_vars()["gce_labels"] == {"env": "prod"}
    assert fast.hosts["cpu-1"].vars["inventory_file"] == "/srv/inv/test.gce.yml"


def test_the_canary_sees_a_changed_set_variable(monkeypatch):
    """The comparison above is not blind: a set_variable that stores values differently is noticed."""
    original = Host.set_variable
    monkeypatch.setattr(Host, "set_variable", lambda self, key, value: original(self, key, [value]))
    fast, public = _sample_inventories()
    assert _host_state(fast) != _host_state(public)


def test_a_host_of_an_earlier_source_gets_set_variable(tmp_path, fleet, monkeypatch):
    """A host that already holds one of the names (another source made it) takes the public path, so
    hash_behaviour=merge merges as it does for every other inventory source."""
    monkeypatch.setattr(C, "DEFAULT_HASH_BEHAVIOUR", "merge")
    inventory = InventoryData()
    inventory.add_host("vm-1")
    inventory.set_variable("vm-1", "gce_labels", {"owner": "static"})
    plugin = inventory_loader.get(PLUGIN)
    plugin.parse(inventory, DataLoader(), write_config(tmp_path, fleet))
    assert inventory.hosts["vm-1"].vars["gce_labels"] == {"owner": "static", "env": "prod", "app": "vllm"}
    assert inventory.hosts["cpu-1"].vars["gce_labels"] == {"env": "dev"}


def test_constructable_helpers_go_through_compose(tmp_path):
    """Canary of the _compose shortcut: compose and keyed_groups expressions that are a variable path reach
    the plugin's _compose (never Jinja2). Fails when ansible-core's Constructable helpers stop calling
    self._compose(template, variables), which would silently make every such expression cost a compile."""
    plugin = inventory_loader.get(PLUGIN)
    plugin.loader = DataLoader()
    plugin._vars = {}
    plugin.set_options(direct={"plugin": PLUGIN, "projects": ["proj-one"]})
    plugin.inventory = InventoryData()
    rec = gce_inventory.instance_record("proj-one", a_instance(labels={"team": "ml"}))
    plugin.inventory.add_host("vm-1")

    def no_jinja(*_args, **_kwargs):
        raise AssertionError("templated by Jinja2")

    plugin.templar.evaluate_expression = no_jinja
    plugin._set_composite_vars({"team": trust_as_template("gce_labels.team")}, rec, "vm-1", strict=True)
    plugin._add_host_to_keyed_groups([{"key": trust_as_template("gce_zone"), "prefix": "z"}], rec, "vm-1",
                                     strict=True)
    assert plugin.inventory.hosts["vm-1"].vars["team"] == "ml"
    assert "z_asia_northeast3_a" in plugin.inventory.groups
    assert list(inspect.signature(Constructable._compose).parameters)[:3] == ["self", "template", "variables"]


# --------------------------------------------------------------------------- public API behaviour
def test_compose_sees_the_magic_variables(tmp_path, fleet):
    compose = {"short": "inventory_hostname | upper", "in_ai": "'ai_server' in group_names"}
    inv = parse(write_config(tmp_path, fleet, compose=compose, strict=True))
    assert inv.hosts["vm-1"].vars["short"] == "VM-1" and inv.hosts["vm-1"].vars["in_ai"] is True
    assert inv.hosts["cpu-1"].vars["in_ai"] is False


def test_groups_and_keyed_groups_see_what_compose_set(tmp_path, fleet):
    inv = parse(write_config(tmp_path, fleet, compose={"tier": "gce_gpus | length > 0 and 'gpu' or 'cpu'"},
                             groups={"gpu_tier": "tier == 'gpu'"}, keyed_groups=[{"key": "tier", "prefix": "tier"}],
                             strict=True))
    assert group_hosts(inv, "tier_gpu") == ["vm-1"] and group_hosts(inv, "tier_cpu") == ["cpu-1"]
    assert group_hosts(inv, "gpu_tier") == ["vm-1"]


def test_one_plugin_parses_two_inventories(tmp_path, fleet):
    """The groups the plugin made belong to one inventory: a second parse (refresh_inventory) makes them again."""
    plugin = inventory_loader.get(PLUGIN)
    path = write_config(tmp_path, fleet)
    for _round in range(2):
        inventory = InventoryData()
        plugin.parse(inventory, DataLoader(), path)
        assert group_hosts(inventory, "ai_server") == ["vm-1"]


def test_cache_holds_the_records_as_one_json_text(tmp_path, fleet):
    cache_dir = tmp_path / "cache"
    path = write_config(tmp_path, fleet, cache=True, cache_plugin="ansible.builtin.jsonfile",
                        cache_connection=str(cache_dir), cache_timeout=600)
    first = parse(path)
    plugin = inventory_loader.get(PLUGIN)
    plugin.parse(InventoryData(), DataLoader(), path)
    entry = plugin._cache[plugin.get_cache_key(path)]
    assert isinstance(entry["records"], str)
    assert sorted(r["gce_name"] for r in json.loads(entry["records"])) == ["cpu-1", "old-1", "vm-1"]
    # an entry this version cannot read (an older format, a damaged text) is fetched again
    plugin._cache[plugin.get_cache_key(path)] = dict(entry, records="[{")
    plugin.update_cache_if_changed()
    second = parse(path)
    assert aggregated_calls(fleet) == 2 and sorted(second.hosts) == sorted(first.hosts)


# ------------------------------------------------------------------------------ coming from google.cloud.gcp_compute
def _warnings(monkeypatch):
    from ansible.utils.display import Display
    seen = []
    monkeypatch.setattr(Display, "warning", lambda self, msg, *a, **kw: seen.append(str(msg)))
    return seen


def test_a_google_cloud_inventory_file_works_with_only_the_plugin_name_changed(tmp_path, fleet, monkeypatch):
    """An inventory file written for google.cloud.gcp_compute (file name *.gcp.yml, keyed_groups on the raw
    instance fields, hostnames [hostname, name]): only its plugin line changed."""
    warnings = _warnings(monkeypatch)
    path = write_config(tmp_path, fleet, name="prod.gcp.yml", hostnames=["hostname", "name"], keyed_groups=[
        {"key": "tags['items']", "prefix": "tag"},
        {"key": "labels.env", "prefix": "env"},
        {"key": "zone"},
        {"key": "status", "prefix": "status"},
    ], compose={"ansible_host": "networkInterfaces[0].networkIP"})
    inv = parse(path, cache=False)
    assert sorted(inv.hosts) == ["cpu-1", "old-1", "vm-1"]  # every status, as google.cloud lists them
    assert group_hosts(inv, "tag_ai_server") == ["old-1", "vm-1"]
    assert group_hosts(inv, "env_prod") == ["vm-1"] and group_hosts(inv, "env_dev") == ["cpu-1"]
    assert group_hosts(inv, "_asia_northeast3_b") == ["cpu-1"]  # constructed's leading separator, as there
    assert group_hosts(inv, "status_TERMINATED") == ["old-1"]
    vm = inv.hosts["vm-1"].vars
    assert vm["ansible_host"] == "10.178.0.2" and vm["zone"] == "asia-northeast3-a" and vm["project"] == "proj-one"
    assert vm["gce_name"] == "vm-1"  # ours are still there
    assert not [w for w in warnings if "keyed" in w], warnings


def test_hostnames_hostname_takes_the_instances_hostname_field(tmp_path, api):
    inst = a_instance(name="web")
    inst["hostname"] = "web.internal.example.com"
    add_instance(api, "proj-one", inst)
    inv = parse(write_config(tmp_path, api, hostnames=["hostname", "name"]), cache=False)
    assert sorted(inv.hosts) == ["web.internal.example.com"]


def test_a_keyed_group_whose_key_resolves_on_no_host_warns(tmp_path, fleet, monkeypatch):
    warnings = _warnings(monkeypatch)
    inv = parse(write_config(tmp_path, fleet, keyed_groups=[{"key": "tags['items']", "prefix": "tag"},
                                                            {"key": "gce_labels.env", "prefix": "env"},
                                                            # resolves, into groups the hosts are in already
                                                            {"key": "gce_zone", "prefix": "zone"}]), cache=False)
    assert group_hosts(inv, "env_prod") == ["vm-1"]
    hits = [w for w in warnings if "keyed_groups" in w]
    assert len(hits) == 1 and "tags['items']" in hits[0] and "google_cloud_compat" in hits[0], warnings

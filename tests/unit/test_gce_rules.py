"""Unit tests of module_utils/gce_rules.py: the GCE rules and resource helpers every plugin shares."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# module_helpers installs the collection loader
import tests.unit.module_helpers  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.llmops.gce_vllm.plugins.module_utils import gce, gce_rules  # noqa: E402


def test_gce_reexports_the_rules_not_copies():
    for name in ("basename", "check_zone", "check_name", "check_project", "check_ports", "check_cidrs",
                 "check_labels", "check_gpu_setup", "open_to_world", "image_path", "machine_family", "DEFAULT_SCOPES"):
        assert getattr(gce, name) is getattr(gce_rules, name), name


@pytest.mark.parametrize("ports,needle", [
    ("8000,8001", "gce_vllm_ai_ports \"8000,8001\" is not a port list"),
    ([8000, 80010], "gce_vllm_ai_ports 80010 is not a port"),
    ([8000, 8000], "gce_vllm_ai_ports lists 8000 twice"),
    (["9000-8000"], "'9000-8000' is not a port"),
    ([True], "True is not a port"),
])
def test_check_ports_refusals_name_the_variable(ports, needle):
    err = gce_rules.check_ports(ports, "gce_vllm_ai_ports")
    assert err and needle in err and "[8000, 8001]" in err


def test_check_ports_accepts_numbers_strings_and_ranges():
    assert gce_rules.check_ports([8000, "8001", "9000-9010"], "p") is None
    assert gce_rules.check_ports(None, "p") is None


def test_names_map_paths_and_default_to_the_path():
    names = gce_rules.Names({"instance.zone": "gce_vllm_zone"})
    assert names.sub("instance")("zone") == "gce_vllm_zone"
    assert names.sub("instance")("name") == "instance.name"
    assert names.sub("firewalls.0").sub("allowed.1")("ports") == "firewalls.0.allowed.1.ports"
    assert gce_rules.Names()("zone") == "zone"


def test_resource_helpers():
    inst = {"networkInterfaces": [{"networkIP": "10.0.0.2",
                                   "accessConfigs": [{"name": "x"}, {"natIP": "203.0.113.7"}]}]}
    assert gce_rules.nat_ip(inst) == "203.0.113.7" and gce_rules.internal_ip(inst) == "10.0.0.2"
    assert gce_rules.nat_ip({}) is None and gce_rules.nat_ip({"networkInterfaces": []}) is None
    assert gce_rules.network_path("default") == "global/networks/default"
    assert gce_rules.network_path("https://x/compute/v1/projects/p/global/networks/n") == "projects/p/global/networks/n"
    assert gce_rules.network_id("global/networks/n", "p") == ("p", "n")
    assert gce_rules.basename("https://x/zones/asia-northeast3-a/") == "asia-northeast3-a"
    assert gce_rules.has_gpu("g2-standard-4", []) and gce_rules.has_gpu("n1-standard-4", [{"type": "t4", "count": 1}])
    assert not gce_rules.has_gpu("e2-standard-2", [])


def test_image_problems():
    assert gce_rules.image_problems({"name": "i", "diskSizeGb": "10"}, "image i", "p", 200) == ([], [])
    errors, unused = gce_rules.image_problems({"name": "i", "diskSizeGb": "50"}, "image i", "p", 20, size_name="disk")
    assert errors == ["disk 20 GB is smaller than image i (50 GB)"]
    errors, warnings = gce_rules.image_problems({"name": "i", "deprecated": {"state": "DEPRECATED"}}, "x", "p")
    assert not errors and warnings == ["boot image i is deprecated"]
    assert "does not resolve" in gce_rules.image_problems(None, "image family f", "p")[0][0]


def test_api_option_problems_without_api(tmp_path):
    names = gce_rules.Names({"project": "gce_vllm_project", "auth_kind": "gce_vllm_auth_kind",
                             "service_account_file": "gce_vllm_service_account_file"})
    errors, unused = gce_rules.api_option_problems({"project": "", "auth_kind": "serviceaccount"}, names, environ={})
    assert errors[0].startswith("gce_vllm_project (unset)")
    assert errors[1].startswith("gce_vllm_service_account_file is required with gce_vllm_auth_kind serviceaccount")
    adc = tmp_path / "adc.json"
    adc.write_text("{not json")
    errors, unused = gce_rules.api_option_problems({"project": "my-project-1", "auth_kind": "application"},
                                                   environ={"GOOGLE_APPLICATION_CREDENTIALS": str(adc)})
    assert errors and errors[0].startswith("GOOGLE_APPLICATION_CREDENTIALS %s" % adc) and "not JSON" in errors[0]
    adc.write_text('{"type": "authorized_user"}')
    adc.chmod(0o644)
    errors, warnings = gce_rules.api_option_problems({"project": "my-project-1", "auth_kind": "application"},
                                                     environ={"GOOGLE_APPLICATION_CREDENTIALS": str(adc)})
    assert not errors and warnings and "chmod 600" in warnings[0]

"""Bad inputs to the exporters and prometheus roles fail in their validation, naming every bad variable at once and
saying "Nothing was changed" (the checks run on the controller only, before any task touches a host: this runs
only the roles' validate tags against localhost)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAY = """
- name: Validate only
  hosts: all
  gather_facts: false
  roles:
    - role: llmops.gce_vllm.{role}
"""


def _validate(tmp_path, role, extra, inventory="localhost,"):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(role=role))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", inventory, "-c", "local",
           "--tags", role + "_validate", "-e", json.dumps(extra), str(play)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_exporters_bad_inputs_are_named_together(tmp_path):
    res = _validate(tmp_path, "exporters", {"exporters_gpu_port": 9100, "exporters_gpu_interval": 0.1,
                                            "exporters_node_listen_address": "example.com", "exporters_gpu_user": "root",
                                            "exporters_node_extra_args": ["--web.listen-address=:1"]})
    assert res.returncode != 0
    for words in ("exporters_node_port and exporters_gpu_port are both 9100", "exporters_gpu_interval (0.1) must be at least 0.25",
                  "exporters_node_listen_address (example.com)", "exporters_gpu_user (root)",
                  "must not pass --web.listen-address", "Nothing was changed."):
        assert words in res.stdout, (words, res.stdout[-3000:])


def test_exporters_defaults_pass(tmp_path):
    res = _validate(tmp_path, "exporters", {})
    assert res.returncode == 0, res.stdout[-3000:]


def test_prometheus_bad_inputs_and_a_vllm_host_without_key_are_named(tmp_path):
    inventory = tmp_path / "inv.yml"
    inventory.write_text(json.dumps({"ai_server": {"hosts": {"vm1": {"ansible_connection": "local"}}},
                                     "prometheus": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    play = tmp_path / "play.yml"
    res = _validate(tmp_path, "prometheus", {"prometheus_scrape_interval": "15 s", "prometheus_listen_address": "my-host"},
                    inventory=str(inventory))
    assert play.exists()
    out = res.stdout.replace("\n", " ")
    assert res.returncode != 0
    for words in ("prometheus_scrape_interval (15 s)", "must be Prometheus durations", "prometheus_listen_address (my-host)",
                  "vllm_server_api_key is not set for vm1 (group ai_server)",
                  "ai_server_api_key is not set for vm1 (group ai_server)", "Nothing was changed."):
        assert words in out, (words, res.stdout[-3000:])


def test_prometheus_needs_the_ai_server_key_unless_no_ai_server_is_scraped(tmp_path):
    inventory = tmp_path / "inv.yml"
    inventory.write_text(json.dumps({"ai_server": {"hosts": {"vm1": {"ansible_connection": "local", "vllm_server_api_key": "k"}}},
                                     "prometheus": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    res = _validate(tmp_path, "prometheus", {}, inventory=str(inventory))
    out = res.stdout.replace("\n", " ")
    assert res.returncode != 0 and "ai_server_api_key is not set for vm1 (group ai_server)" in out, res.stdout[-3000:]
    assert "vllm_server_api_key is not set" not in out and 'set prometheus_ai_server_group to ""' in out
    res = _validate(tmp_path, "prometheus", {"prometheus_ai_server_group": ""}, inventory=str(inventory))
    assert res.returncode == 0, res.stdout[-3000:]

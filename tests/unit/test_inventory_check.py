"""llmops.gce_vllm.inventory_check (plugins/action/inventory_check.py): before site.yml's first API call, the
inventory must hold a llmops.gce_vllm.gce source for the project (issue 15, item 2)."""
import os

from ansible_collections.llmops.gce_vllm.plugins.action import inventory_check as ic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _gce(tmp_path, name="gce.yml", body="plugin: llmops.gce_vllm.gce\n"):
    d = tmp_path / "inv"
    d.mkdir(exist_ok=True)
    (d / name).write_text(body)
    return d


def test_no_source_says_how_to_get_the_collection_s_inventory():
    msg = ic.source_problem(["/etc/ansible/hosts"], "my-project", "")
    assert "none of its sources (/etc/ansible/hosts) is a llmops.gce_vllm.gce inventory file" in msg
    assert "Nothing was created" in msg
    assert "ansible-galaxy collection list llmops.gce_vllm" in msg
    assert "cp -r %s ./inventory-gce" % os.path.join(ic.COLLECTION_ROOT, "inventories", "gce") in msg
    assert os.path.isfile(os.path.join(ic.COLLECTION_ROOT, "inventories", "gce", "gce.yml"))   # what it points at exists
    assert "projects: [my-project]" in msg and "llmops.gce_vllm.site -i ./inventory-gce" in msg


def test_the_repository_s_inventories_are_sources(tmp_path):
    assert ic.source_problem([os.path.join(ROOT, "inventories", "local")], "llmops-demo", "") is None
    assert ic.source_problem([os.path.join(ROOT, "inventories", "gce")], "p1", "p1") is None   # projects from GCP_PROJECT


def test_a_source_for_another_project_is_refused(tmp_path):
    d = _gce(tmp_path, body="plugin: llmops.gce_vllm.gce\nprojects: [other]\n")
    msg = ic.source_problem([str(d)], "mine", "mine")
    assert msg and "do not list project mine" in msg and "lists other" in msg
    assert ic.source_problem([str(d / "gce.yml")], "other", "") is None


def test_files_the_plugin_would_not_read_do_not_count(tmp_path):
    d = _gce(tmp_path, name="hosts.yml")                                            # not *gce.yml: verify_file refuses it
    assert ic.source_problem([str(d)], "p", "p")
    d2 = _gce(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path, body="plugin: google.cloud.gcp_compute\n")
    assert ic.source_problem([str(d2)], "p", "p")
    assert ic.source_problem(["localhost,"], "p", "p")                             # a host list


def test_no_project_accepts_any_gce_source(tmp_path):
    assert ic.source_problem([str(_gce(tmp_path, body="plugin: llmops.gce_vllm.gce\nprojects: [x]\n"))], "", "") is None

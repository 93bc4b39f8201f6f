"""llmops.gce_vllm.hf_snapshot without huggingface_hub: which paths it stages (vLLM's own rule, lora_rules.locate), bad
repo ids, check mode before the venv exists, and a venv missing. The staging itself (vLLM's offline call, the download
path) runs on the real engine: tests/real_engine/test_8_staged_offline.py."""
import os

from module_helpers import run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.modules import hf_snapshot


def params(tmp_path, **kw):
    p = dict(python=str(tmp_path / "venv" / "bin" / "python"), hf_home=str(tmp_path / "hf"), model="org/model",
             revision="", adapters=[], working_dir=str(tmp_path), home=str(tmp_path))
    p.update(kw)
    return p


def test_directories_are_left_to_vllm_and_repo_ids_staged_once(tmp_path):
    (tmp_path / "local-adapter").mkdir()
    p = params(tmp_path, model="/srv/model", adapters=["org/a", "local-adapter", "/abs/adapter", "~/x", "org/a"])
    assert hf_snapshot.repos_to_stage(p) == [("org/a", "main")]
    p = params(tmp_path, revision="abc123", adapters=["org/model"])
    assert hf_snapshot.repos_to_stage(p) == [("org/model", "abc123"), ("org/model", "main")]


def test_a_path_that_is_no_directory_and_no_repo_id_is_refused(tmp_path):
    failed, result = run_module(hf_snapshot, params(tmp_path, adapters=["not--a/repo..id"]))
    assert failed and "neither a directory on this host nor a Hugging Face repo id" in result["msg"], result
    assert "not--a/repo..id" in result["msg"]


def test_nothing_to_stage_changes_nothing_and_needs_no_venv(tmp_path):
    failed, result = run_module(hf_snapshot, params(tmp_path, model="/srv/model", download=True))
    assert not failed and not result["changed"] and result["snapshots"] == [], result


def test_check_mode_before_the_venv_exists_reports_every_repo_missing(tmp_path):
    failed, result = run_module(hf_snapshot, params(tmp_path, adapters=["org/a"], download=True), check_mode=True)
    assert not failed and result["changed"] and result["missing"] == ["org/model@main", "org/a@main"], result
    assert not os.path.exists(tmp_path / "hf")


def test_without_the_venv_it_fails_naming_the_interpreter(tmp_path):
    failed, result = run_module(hf_snapshot, params(tmp_path, download=True))
    assert failed and "is not an executable interpreter" in result["msg"] and "venv" in result["msg"], result

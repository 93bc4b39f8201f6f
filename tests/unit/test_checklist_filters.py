"""llmops.gce_vllm.checklist_report / checklist_markdown: the runbook's checklist report from the roles' verify results."""
import json

import pytest
import yaml

from ansible.errors import AnsibleFilterError
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import filter_loader
from ansible.template import Templar, trust_as_template
from ansible_collections.llmops.gce_vllm.plugins.filter import checklist_markdown as md_plugin
from ansible_collections.llmops.gce_vllm.plugins.filter import checklist_report as report_plugin

SECRET = "vk-Zr4c9PqT7sN2mW8xLk3J"   # what a host's variables may hold: never in the report


def _check(name, ok=True, detail="fine"):
    return {"name": name, "check": name.replace("_", " "), "ok": ok, "detail": detail}


def _result(**over):
    result = {
        "instance": "ai-server-1", "project": "llmops-demo", "zone": "asia-northeast3-a", "machine_type": "g2-standard-4",
        "external_ip": "10.231.1.2", "internal_ip": "10.128.0.2",
        "gpu_host": {"ok": True, "gpu": {"count": 1, "cuda_version": "13.0", "driver_version": "580.95.05"},
                     "checks": [_check("gpu_host_gpu", detail="1 GPU(s): [0] NVIDIA L4 23034 MiB;"),
                                _check("gpu_host_libcuda")]},
        "vllm_server": {"ok": True, "port": 8001, "models": ["base", "easycontract"],
                        "checks": [_check("vllm_server_health", detail="HTTP 200"),
                                   _check("vllm_server_models", detail="base, easycontract")]},
        "ai_server": {"ok": True, "port": 8000, "checks": [_check("ai_server_health", detail="HTTP 200")]},
        "external": {"checks": [_check("checklist_external_ai"), _check("checklist_external_vllm"),
                                _check("checklist_external_no_key")]},
    }
    result.update(over)
    return result


def _report(results, **kw):
    return report_plugin.checklist_report(results, run_id="20261201T120000Z", generated_at="2026-12-01T12:00:00Z", **kw)


def test_runbook_numbering_and_a_passing_host():
    report = _report({"h1": _result()})
    assert report["passed"] is True
    host = report["hosts"][0]
    assert host["passed"] is True and host["instance"] == "ai-server-1" and host["external_ip"] == "10.231.1.2"
    assert [c["id"] for c in host["checks"]] == ["1", None, "2", "3", "4", "5a", "5b", "5c"]
    assert [c["name"] for c in host["checks"]][1] == "gpu_host_libcuda"
    assert report["project"] == "llmops-demo" and report["zone"] == "asia-northeast3-a"


def test_one_failed_check_fails_its_host_and_the_report():
    res = _result()
    res["vllm_server"]["checks"][1] = _check("vllm_server_models", ok=False, detail="missing: easycontract")
    report = _report({"h1": res, "h2": _result(instance="ai-server-2")})
    assert report["passed"] is False
    h1, h2 = report["hosts"]
    assert h1["passed"] is False and h2["passed"] is True
    failed = [c for c in h1["checks"] if not c["passed"]]
    assert [(c["id"], c["detail"]) for c in failed] == [("3", "missing: easycontract")]


@pytest.mark.parametrize("ok", ["True", 1, "yes", None])
def test_only_a_real_true_passes(ok):
    """A check whose ok is not the boolean true (an unrendered or string result) must not pass."""
    res = _result()
    res["ai_server"]["checks"][0]["ok"] = ok
    assert _report({"h1": res})["passed"] is False


@pytest.mark.parametrize(("cuda", "min_major", "passed"), [
    ("13.0", 13, True), ("13.2", 13, True), ("12.4", 13, False), (None, 13, False), ("garbage", 13, False),
    ("12.4", 12, True),
])
def test_item_1_also_needs_the_cuda_major(cuda, min_major, passed):
    res = _result()
    res["gpu_host"]["gpu"]["cuda_version"] = cuda
    item = _report({"h1": res}, min_cuda_major=min_major)["hosts"][0]["checks"][0]
    assert item["id"] == "1" and item["passed"] is passed
    if not passed:
        assert "checklist_min_cuda_major" in item["detail"]


def test_a_host_without_a_result_fails_the_report():
    report = _report({"h1": _result(), "gone": None})
    assert report["passed"] is False
    gone = report["hosts"][1]
    assert gone["host"] == "gone" and gone["passed"] is False and gone["checks"][0]["name"] == "host_reachable"


def test_a_role_that_recorded_nothing_is_a_failed_check():
    report = _report({"h1": _result(ai_server=None)})
    assert report["passed"] is False
    assert [c["detail"] for c in report["hosts"][0]["checks"] if not c["passed"]] == ["no ai_server result recorded"]


def test_no_host_is_not_a_pass():
    assert _report({})["passed"] is False


def test_only_named_keys_reach_the_report():
    """Whatever else a host's result carries (a key, a token) does not reach the report or its Markdown."""
    res = _result(vllm_server_api_key=SECRET, extra={"token": SECRET})
    res["vllm_server"]["api_key"] = SECRET
    res["vllm_server"]["checks"][0]["headers"] = {"Authorization": "Bearer " + SECRET}
    report = _report({"h1": res}, deployment={"boot_image": "ubuntu-accelerator-2404", "firewall_rules": ["a", "b"]})
    text = json.dumps(report) + md_plugin.checklist_markdown(report)
    assert SECRET not in text
    assert report["deployment"] == {"boot_image": "ubuntu-accelerator-2404", "firewall_rules": ["a", "b"]}


@pytest.mark.parametrize(("args", "word"), [
    ({"results": ["h1"]}, "mapping"),
    ({"results": {"h1": _result()}, "min_cuda_major": "thirteen"}, "checklist_min_cuda_major"),
    ({"results": {"h1": _result()}, "deployment": ["x"]}, "checklist_deployment"),
    ({"results": {"h1": _result(external={"checks": ["not a dict"]})}}, "name, check, ok, detail"),
])
def test_bad_input_is_a_clear_error(args, word):
    results = args.pop("results")
    with pytest.raises(AnsibleFilterError, match=word):
        _report(results, **args)


def test_markdown_is_for_a_person():
    res = _result()
    res["ai_server"]["checks"][0] = _check("ai_server_health", ok=False, detail="refused | twice\nthen timed out")
    report = _report({"h1": res}, deployment={"boot_image": "img-1"})
    text = md_plugin.checklist_markdown(report)
    assert "Ansible managed" not in text and "<!--" not in text
    lines = text.splitlines()
    assert lines[0] == "# Deployment checklist (2026-12-01T12:00:00Z)"
    assert "Project `llmops-demo`, zone `asia-northeast3-a`: **FAILED**" in lines
    assert "- boot image: `img-1`" in lines
    assert "## ai-server-1 (g2-standard-4, external IP 10.231.1.2, internal IP 10.128.0.2)" in lines
    assert "| 4 | ai server health | FAIL | refused \\| twice then timed out |" in lines
    assert "| - | gpu host libcuda | PASS | fine |" in lines
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 8 and all(row.count(" | ") == 3 for row in rows)
    assert text.endswith("\n")


def test_stand_ins_are_named_in_the_report_and_its_page():
    """A run against the tests' nvidia-smi and vLLM stand-ins (make demo) must not read as a real deployment."""
    res = _result(standins=["/usr/bin/nvidia-smi", "/app/vllm-server/venv/bin/vllm"])
    report = _report({"h1": res, "h2": _result(instance="ai-server-2")})
    assert report["standins"] == ["GPU", "vLLM"]
    assert report["hosts"][0]["standins"] == [{"what": "GPU", "path": "/usr/bin/nvidia-smi"},
                                              {"what": "vLLM", "path": "/app/vllm-server/venv/bin/vllm"}]
    assert report["hosts"][1]["standins"] == []
    lines = md_plugin.checklist_markdown(report).splitlines()
    assert lines[4].startswith("**Stand-ins, not the real thing:** the GPU and vLLM were the tests' stand-ins")
    one = md_plugin.checklist_markdown(_report({"h1": _result(standins=["/usr/bin/nvidia-smi"])}))
    assert "**Stand-ins, not the real thing:** the GPU was the tests' stand-in (tests/standin): the checks below " \
           "show what it answers, not a real one." in one
    assert "Stand-ins on this host: GPU (`/usr/bin/nvidia-smi`), vLLM (`/app/vllm-server/venv/bin/vllm`)." in lines
    assert sum("Stand-ins on this host" in line for line in lines) == 1


def test_a_real_deployment_mentions_no_stand_in():
    report = _report({"h1": _result(standins=[])})
    assert report["standins"] == [] and report["hosts"][0]["standins"] == []
    assert "tand-in" not in md_plugin.checklist_markdown(report)


def test_markdown_refuses_what_is_not_a_report():
    with pytest.raises(AnsibleFilterError, match="checklist_report"):
        md_plugin.checklist_markdown({"passed": True})


def test_both_resolve_by_fqcn_in_a_template():
    """The checklist role writes llmops.gce_vllm.checklist_report / checklist_markdown: the loader must find them."""
    for name in ("llmops.gce_vllm.checklist_report", "llmops.gce_vllm.checklist_markdown"):
        assert filter_loader.get(name) is not None, name
    templar = Templar(loader=DataLoader(), variables={"results": {"h1": _result()}})
    text = templar.template(trust_as_template(
        "{{ results | llmops.gce_vllm.checklist_report(run_id='r', generated_at='t') | llmops.gce_vllm.checklist_markdown }}"))
    assert "**PASSED**" in text


@pytest.mark.parametrize("plugin", [report_plugin, md_plugin])
def test_documentation_is_valid_yaml_naming_the_plugin(plugin):
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc["name"] == plugin.__name__.rsplit(".", 1)[1]
    assert "_value" in yaml.safe_load(plugin.RETURN)
    assert yaml.safe_load(plugin.EXAMPLES)

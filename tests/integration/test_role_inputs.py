"""Bad inputs to the host roles: each must fail with a message naming the variable, and change nothing.

One real systemd test host (tests/harness/testhosts.py) per session. Every case runs the molecule
converge playbook (the three roles, validation first) with one bad variable, then compares a snapshot
of the host (files under /app, /etc/systemd/system, /opt, /usr/local/share/ca-certificates, users,
groups, installed packages, unit states) taken before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "harness" / "testhosts.py"
CONVERGE = ROOT / "molecule" / "default" / "converge.yml"
VALIDATE_ONLY = Path(__file__).with_name("validate_only.yml")

SNAPSHOT = r"""
set -u
for d in /app /etc/systemd/system /opt /usr/local/share/ca-certificates; do
  [ -e "$d" ] && find "$d" -xdev -printf '%p %y %m %u %g %s %T@\n' | sort
done
md5sum /etc/passwd /etc/group /etc/shadow
dpkg-query -W -f '${Package} ${Version}\n' | md5sum
for u in vllm ai-server; do echo "$u $(systemctl is-active $u) $(systemctl is-enabled $u 2>&1)"; done
"""

GOOD = {"vllm_server_api_key": "k3y-" + os.urandom(12).hex(), "ai_server_backend_internal_token": "t0k-" + os.urandom(12).hex()}

ADAPTERS = [
    {"name": "easycontract", "path": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"},
    {"name": "checklist", "path": "imyj1013/exaone-qlora-checklist-adapter"},
]

# (id, extra vars, words the failure message must contain)
CASES = [
    ("api-key-runbook-placeholder", {"vllm_server_api_key": "your-vllm-api-key"}, ["vllm_server_api_key", "placeholder"]),
    ("api-key-empty", {"vllm_server_api_key": ""}, ["vllm_server_api_key"]),
    ("api-key-changeme", {"vllm_server_api_key": "changeme"}, ["vllm_server_api_key"]),
    ("api-key-with-space", {"vllm_server_api_key": "abc def ghi jkl"}, ["vllm_server_api_key"]),
    ("backend-token-placeholder", {"ai_server_backend_internal_token": "your-internal-token"}, ["ai_server_backend_internal_token"]),
    ("vllm-base-url-without-v1", {"ai_server_vllm_base_url": "http://localhost:8001"}, ["ai_server_vllm_base_url", "/v1"]),
    ("callback-url-with-v1", {"ai_server_backend_callback_base_url": "https://backend.example.com/api/v1"},
     ["ai_server_backend_callback_base_url", "401"]),
    ("adapter-not-served", {"ai_server_lora_adapter_checklist": "checklist-v2"}, ["checklist-v2", "vllm_server_lora_adapters"]),
    ("timeout-zero", {"ai_server_http_timeout_sec": 0}, ["ai_server_http_timeout_sec"]),
    ("timeout-negative", {"ai_server_http_timeout_sec": -5}, ["ai_server_http_timeout_sec"]),
    ("lora-rank-24", {"vllm_server_max_lora_rank": 24}, ["vllm_server_max_lora_rank"]),
    ("gpu-mem-zero", {"vllm_server_gpu_memory_utilization": 0}, ["vllm_server_gpu_memory_utilization"]),
    ("gpu-mem-1.5", {"vllm_server_gpu_memory_utilization": 1.5}, ["vllm_server_gpu_memory_utilization"]),
    ("max-model-len-8k", {"vllm_server_max_model_len": "8k"}, ["vllm_server_max_model_len"]),
    ("max-model-len-zero", {"vllm_server_max_model_len": 0}, ["vllm_server_max_model_len"]),
    ("dtype-unknown", {"vllm_server_dtype": "fp8x"}, ["vllm_server_dtype"]),
    ("adapter-duplicate-names", {"vllm_server_lora_adapters": ADAPTERS + [dict(ADAPTERS[0], path="other/repo")]},
     ["duplicate", "vllm_server_lora_adapters"]),
    ("adapter-name-with-space", {"vllm_server_lora_adapters": [{"name": "easy contract", "path": "a/b"}] + ADAPTERS[1:]},
     ["vllm_server_lora_adapters"]),
    ("adapter-name-with-quote", {"vllm_server_lora_adapters": [{"name": "easy'contract", "path": "a/b"}] + ADAPTERS[1:]},
     ["vllm_server_lora_adapters"]),
    ("adapter-without-path", {"vllm_server_lora_adapters": [{"name": "easycontract"}] + ADAPTERS[1:]}, ["path"]),
    ("adapter-unknown-key", {"vllm_server_lora_adapters": [dict(ADAPTERS[0], rank=16)] + ADAPTERS[1:]},
     ["vllm_server_lora_adapters"]),
    ("ports-equal", {"ai_server_port": 8001}, ["ai_server_port", "vllm_server_port"]),
    ("api-key-in-extra-args", {"vllm_server_extra_args": ["--api-key=abcdefgh123"]}, ["vllm_server_extra_args"]),
    ("health-timeout-zero", {"vllm_server_health_timeout": 0}, ["vllm_server_health_timeout"]),
]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def testhost():
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    if not HARNESS.exists():
        pytest.skip("tests/harness/testhosts.py is missing")
    state = Path(tempfile.mkdtemp(prefix="llmops-inputs-"))
    created = _run([sys.executable, str(HARNESS), "create", "--state", str(state), "--count", "1", "--prefix", "inputs"])
    try:
        assert created.returncode == 0, created.stdout + created.stderr
        inventory = yaml.safe_load((state / "inventory.yml").read_text())
        hosts = list(inventory["testhosts"]["hosts"])
        yield {"state": state, "inventory": state / "inventory.yml", "name": hosts[0]}
    finally:
        _run([sys.executable, str(HARNESS), "destroy", "--state", str(state)])
        shutil.rmtree(state, ignore_errors=True)


def _snapshot(host) -> str:
    res = _run([sys.executable, str(HARNESS), "exec", "--state", str(host["state"]), host["name"], "--",
                "sh", "-c", SNAPSHOT])
    assert res.returncode == 0, res.stderr
    return res.stdout


def _playbook(host, playbook, extra: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
               MOLECULE_EPHEMERAL_DIRECTORY=str(host["state"]))
    varfile = host["state"] / "extra-vars.json"
    varfile.write_text(json.dumps({**GOOD, **extra}))
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(host["inventory"]),
           "-e", f"@{varfile}", str(playbook)]
    return _run(cmd, env=env, cwd=ROOT, timeout=300)


def test_good_inputs_pass_validation(testhost):
    """Positive control: the checks accept the defaults with real-looking secrets."""
    res = _playbook(testhost, VALIDATE_ONLY, {})
    assert res.returncode == 0, res.stdout[-3000:]


@pytest.mark.parametrize(("extra", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(testhost, extra, words):
    before = _snapshot(testhost)
    res = _playbook(testhost, CONVERGE, extra)
    after = _snapshot(testhost)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "changed=0" in out, out[-3000:]
    for word in words:
        assert word in out, f"{word!r} not in the failure:\n{out[-3000:]}"
    for secret in GOOD.values():
        assert secret not in out, "a secret leaked into the output"
    assert before == after

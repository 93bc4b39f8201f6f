"""Bad input: one parametrized test over roles, modules, the inventory plugin and the playbooks.

Every case runs the real entry point with ONE bad value on top of good inputs, and must
  1. fail (non-zero exit),
  2. say so with a message that names the variable/option and the fix (asserted word by word),
  3. change nothing: the test host's files, accounts, units and main PIDs, and the local Compute API's
     state are compared before and after; provision.yml must not even call the API.
The host-role cases run against the converged deployment: a bad edit to a working deployment must
leave it untouched (no restart either: the main PIDs are in the snapshot).
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.reliability import lib

ADAPTERS = [
    {"name": "easycontract", "path": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"},
    {"name": "checklist", "path": "imyj1013/exaone-qlora-checklist-adapter"},
]
# (id, bad vars, words the failure must contain: the variable and the fix; a tuple = any one of them, where
# ansible-core's argument_spec check may answer before the role's own check)
ROLE_CASES = [
    ("lora-entry-without-path", {"vllm_server_lora_adapters": [{"name": "easycontract"}, ADAPTERS[1]]},
     ["vllm_server_lora_adapters", ("non-empty `path`", "missing required arguments: path")]),
    ("lora-duplicate-names", {"vllm_server_lora_adapters": ADAPTERS + [{"name": "checklist", "path": "x/y"}]},
     ["vllm_server_lora_adapters has duplicate names", "Give each adapter its own name"]),
    ("lora-name-with-space", {"vllm_server_lora_adapters": [{"name": "easy contract", "path": "a/b"}, ADAPTERS[1]]},
     ["vllm_server_lora_adapters", "letters, digits, '.', '_', '-' only"]),
    ("lora-name-with-quotes", {"vllm_server_lora_adapters": [{"name": "easy\"con'tract", "path": "a/b"}, ADAPTERS[1]]},
     ["vllm_server_lora_adapters", "letters, digits, '.', '_', '-' only"]),
    ("max-lora-rank-24", {"vllm_server_max_lora_rank": 24},
     [("vllm_server_max_lora_rank (24) must be one of", "value of vllm_server_max_lora_rank must be one of"), "16"]),
    ("gpu-memory-utilization-0", {"vllm_server_gpu_memory_utilization": 0},
     ["vllm_server_gpu_memory_utilization (0) must be a fraction in (0, 1]", "0.85"]),
    ("gpu-memory-utilization-1.5", {"vllm_server_gpu_memory_utilization": 1.5},
     ["vllm_server_gpu_memory_utilization (1.5) must be a fraction in (0, 1]"]),
    ("max-model-len-8k", {"vllm_server_max_model_len": "8k"},
     [("vllm_server_max_model_len (8k) must be a positive integer",
       "argument 'vllm_server_max_model_len' is of type str and we were unable to convert to int")]),
    ("port-8000-for-both", {"vllm_server_port": 8000},
     ["ai_server_port (8000) must be a TCP port 1-65535 different from vLLM's ports", "vllm_server_port"]),
    ("vllm-base-url-without-v1", {"ai_server_vllm_base_url": "http://localhost:8001"},
     ["ai_server_vllm_base_url (http://localhost:8001) must be an http(s) URL ending in /v1", "http://localhost:8001/v1"]),
    ("callback-url-ending-in-v1", {"ai_server_backend_callback_base_url": "https://backend.example.com/api/v1"},
     ["ai_server_backend_callback_base_url", "WITHOUT /v1", "401"]),
    ("api-key-runbook-placeholder", {"vllm_server_api_key": "your-vllm-api-key"},
     ["vllm_server_api_key", "placeholder", "openssl rand -hex 32"]),
    ("backend-token-runbook-placeholder", {"ai_server_backend_internal_token": "your-internal-token"},
     ["ai_server_backend_internal_token", "placeholder", "token the backend team issued"]),
    ("api-key-empty", {"vllm_server_api_key": ""}, ["vllm_server_api_key is missing, empty", "from vault"]),
    ("dtype-unknown", {"vllm_server_dtype": "fp8x"},
     [("vllm_server_dtype (fp8x) must be one of", "value of vllm_server_dtype must be one of"), "bfloat16"]),
    ("vllm-user-root", {"vllm_server_user": "root"}, ["vllm_server_user (root)", "never root"]),
    ("api-key-in-extra-args", {"vllm_server_extra_args": ["--api-key", "abcdefgh1234"]},
     ["vllm_server_extra_args", "must not pass --api-key", "vllm_server_api_key"]),
    ("python-not-on-host", {"vllm_server_python": "python3.42"},
     ["vllm_server_python (default gpu_host_python)=python3.42: no such interpreter", "python3.N"]),
    ("vllm-version-not-on-index", {"vllm_server_pip_spec": "vllm==0.15.99"},
     ["lists no file of vllm==0.15.99", "checking vllm_server_python"]),
    ("model-revision-with-space", {"vllm_server_model_revision": "main; rm -rf /"},
     ["vllm_server_model_revision (main; rm -rf /) must be empty", "commit hash"]),
]

# (id, module, args, words)
MODULE_CASES = [
    ("http_health-url-without-scheme", "llmops.gce_vllm.http_health", {"url": "localhost:8001/health"},
     ["url must be an http:// or https:// URL with a host"]),
    ("http_health-negative-timeout", "llmops.gce_vllm.http_health", {"url": "http://127.0.0.1:8001/health", "timeout": -1},
     ["timeout must be >= 0 seconds, got -1"]),
    ("http_health-interval-0", "llmops.gce_vllm.http_health", {"url": "http://127.0.0.1:8001/health", "interval": 0},
     ["interval must be > 0 seconds", "e.g. interval: 1"]),
    ("http_health-status-700", "llmops.gce_vllm.http_health", {"url": "http://127.0.0.1:8001/health", "status_code": [700]},
     ["status_code entries must be HTTP statuses 100-599"]),
    ("vllm_models-base-url-no-scheme", "llmops.gce_vllm.vllm_models", {"base_url": "127.0.0.1:8001", "api_key": "abcdefgh12"},
     ["base_url must be an http:// or https:// URL"]),
    ("vllm_models-empty-api-key", "llmops.gce_vllm.vllm_models", {"base_url": "http://127.0.0.1:8001", "api_key": ""},
     ["api_key is empty"]),
    ("gpu_info-nvidia-smi-missing", "llmops.gce_vllm.gpu_info", {"nvidia_smi": "/nonexistent/nvidia-smi"},
     ["nvidia_smi=/nonexistent/nvidia-smi does not exist", "point nvidia_smi at"]),
]

# provision.yml: (id, bad vars, words). "{d}" is the case's scratch directory.
PROVISION_CASES = [
    ("migrate-with-gpu", {"gce_vllm_on_host_maintenance": "MIGRATE"}, ["gce_vllm_on_host_maintenance MIGRATE is refused", "TERMINATE"]),
    ("l4-on-non-g2", {"gce_vllm_machine_type": "n1-standard-8"}, ["gce_vllm_machine_type 'n1-standard-8' cannot carry", "g2-standard"]),
    ("missing-source-ranges", {"gce_vllm_ai_source_ranges": []}, ["gce_vllm_ai_source_ranges (unset)"]),
    ("malformed-zone", {"gce_vllm_zone": "asia-northeast3"}, ["gce_vllm_zone 'asia-northeast3' is not a zone", "asia-northeast3-a"]),
    ("malformed-port-list", {"gce_vllm_ai_ports": "8000,8001"}, ["gce_vllm_ai_ports", "[8000, 8001]"]),
    ("credentials-file-missing", {"gce_vllm_auth_kind": "serviceaccount", "gce_vllm_service_account_file": "{d}/nope.json"},
     ["gce_vllm_service_account_file", "does not exist"]),
    ("credentials-file-not-json", {"gce_vllm_auth_kind": "serviceaccount", "gce_vllm_service_account_file": "{d}/notjson.json"},
     ["gce_vllm_service_account_file", "not JSON"]),
    ("deep-learning-image-on-g2", {"gce_vllm_image_project": "deeplearning-platform-release"},
     ["Deep Learning VM images are not compatible", "ubuntu-os-accelerator-images"]),
]

# the inventory plugin: (id, config overrides, words)
INVENTORY_CASES = [
    ("filter-syntax-error", {"filters": ["name = (ai-server"]}, ["Check the 'filters' option", "name = (ai-server"]),
    ("inventory-credentials-missing", {"auth_kind": "serviceaccount", "service_account_file": "{d}/nope.json"},
     ["service_account_file", "does not exist"]),
    ("inventory-credentials-not-json", {"auth_kind": "serviceaccount", "service_account_file": "{d}/notjson.json"},
     ["service_account_file", "is not valid JSON", "gcloud iam service-accounts keys create"]),
    ("inventory-zone-malformed", {"zones": ["asia-northeast3"]}, ["zones", "asia-northeast3"]),
    ("inventory-hostnames-unknown", {"hostnames": ["public_dns"]},
     ["option 'hostnames' has 'public_dns'", "name, public_ip, private_ip"]),
    ("inventory-no-project", {"projects": []}, ["projects", "GCP_PROJECT"]),
]

CASES = ([pytest.param("role", c[1], c[2], id=c[0]) for c in ROLE_CASES]
         + [pytest.param("module", (c[1], c[2]), c[3], id=c[0]) for c in MODULE_CASES]
         + [pytest.param("provision", c[1], c[2], id=c[0]) for c in PROVISION_CASES]
         + [pytest.param("inventory", c[1], c[2], id=c[0]) for c in INVENTORY_CASES])


def test_enough_cases():
    assert len(CASES) >= 30


@pytest.fixture(scope="module")
def scratch(workdir):
    d = workdir / "inputs"
    d.mkdir(exist_ok=True)
    (d / "notjson.json").write_text("project = demo\n")
    return d


def _fmt(value, d):
    if isinstance(value, str):
        return value.replace("{d}", str(d))
    if isinstance(value, list):
        return [_fmt(v, d) for v in value]
    if isinstance(value, dict):
        return {k: _fmt(v, d) for k, v in value.items()}
    return value


def _provision(api, secrets_, scratch, bad) -> lib.Run:
    good = {"gce_vllm_project": api.project, "gce_vllm_ai_source_ranges": ["10.231.0.0/16"],
            "gce_vllm_auth_kind": "accesstoken", "gce_vllm_access_token": secrets_["gce_access_token"],
            "gce_vllm_api_endpoint": api.endpoint}
    f = scratch / "provision-vars.json"
    f.write_text(json.dumps({**good, **bad}))
    f.chmod(0o600)
    return lib.run([lib.VENV_BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", "-e", "@%s" % f, lib.PROVISION],
                   timeout=300)


def _inventory(api, secrets_, scratch, bad) -> lib.Run:
    cfg = {"plugin": "llmops.gce_vllm.gce", "projects": [api.project], "api_endpoint": api.endpoint,
           "auth_kind": "accesstoken", "access_token": secrets_["gce_access_token"]}
    cfg.update(bad)
    f = scratch / "case.gce.yml"
    f.write_text(yaml.safe_dump(cfg))
    f.chmod(0o600)
    # A broken inventory source must stop the run, not leave an empty inventory behind a warning.
    env = lib.ansible_env(ANSIBLE_INVENTORY_UNPARSED_FAILED="true", ANSIBLE_INVENTORY_ENABLED="llmops.gce_vllm.gce")
    env.pop("GCP_PROJECT", None)
    return lib.run([lib.VENV_BIN / "ansible-inventory", "-i", f, "--list"], env=env, timeout=120)


def _module(host, module, args) -> lib.Run:
    return lib.run([lib.VENV_BIN / "ansible", "-i", host.inventory, "testhosts", "-m", module, "-a", json.dumps(args)],
                   timeout=120)


@pytest.mark.parametrize(("entry", "bad", "words"), CASES)
def test_bad_input_is_refused_before_any_change(request, entry, bad, words, converged, api, secrets_, scratch):
    host = converged.host
    bad = _fmt(bad, scratch)
    host_before, api_before = lib.host_snapshot(host), api.state()
    n_requests = len(api.requests())
    t0 = time.monotonic()
    if entry == "role":
        res = converged.configure(bad, name="bad-" + request.node.callspec.id)
        where, value = "configure.yml", json.dumps(bad)
    elif entry == "module":
        res = _module(host, *bad)
        where, value = "ansible -m %s" % bad[0].rsplit(".", 1)[1], json.dumps(bad[1])
    elif entry == "provision":
        res = _provision(api, secrets_, scratch, bad)
        where, value = "provision.yml", json.dumps(bad)
    else:
        res = _inventory(api, secrets_, scratch, bad)
        where, value = "ansible-inventory (gce plugin)", json.dumps(bad)
    seconds = time.monotonic() - t0
    host_after, api_after = lib.host_snapshot(host), api.state()
    calls = api.requests()[n_requests:]
    writes = [r for r in calls if r["method"] != "GET"]

    flat = res.flat
    missing = [w for w in words if not any(" ".join(alt.split()) in flat for alt in ((w,) if isinstance(w, str) else w))]
    host_diff = lib.diff_lines(host_before, host_after)
    unchanged = not host_diff and api_before == api_after and not writes and (entry != "provision" or not calls)
    leaked = [k for k, v in secrets_.items() if v in res.out]
    lib.record("bad_inputs", case=request.node.callspec.id, entry=where, value=value.replace(str(scratch), "DIR"),
               words=[w if isinstance(w, str) else " / ".join(w) for w in words], rejected=res.rc != 0, message_ok=not missing, unchanged=unchanged,
               api_writes=len(writes) if entry in ("provision", "inventory") else "-",
               seconds=round(seconds, 1), leaked=leaked)

    assert res.rc != 0, "%s accepted the bad input %s:\n%s" % (where, value, res.tail())
    assert not missing, "the failure does not say %s:\n%s" % (missing, res.tail())
    assert not host_diff, "the test host changed:\n%s" % "\n".join(host_diff[:40])
    assert api_before == api_after and not writes, "the Compute API changed or was written to: %s" % writes
    if entry == "provision":
        assert not calls, "provision.yml called the API before refusing: %s" % calls
    assert not leaked, "a secret appeared in the output: %s" % leaked


def test_good_input_positive_control(deployment, api, secrets_, scratch):
    """The same entry points accept good input, so the cases above fail for their bad value only.
    configure.yml: the session's first converge (conftest) ran it with the good inputs and succeeded."""
    assert deployment.first_run.rc == 0
    res = _inventory(api, secrets_, scratch, {})
    assert res.rc == 0, res.tail()
    res = _module(deployment.host, "llmops.gce_vllm.http_health", {"url": "http://127.0.0.1:8001/health", "timeout": 10})
    assert res.rc == 0, res.tail()


# An adapter vLLM would refuse at start (its rank above --max-lora-rank: vllm#2847) must be refused before the unit
# changes: read from the host where vLLM reads it (roles/vllm_server/tasks/validate.yml, module lora_adapter_info).
# Its adapter_config.json is PEFT's own output (tests/fixtures/lora/, r=32).
LORA_FIXTURE = lib.ROOT / "tests" / "fixtures" / "lora" / "peft-0.21.0-r32-q_v.json"
LORA_DIR_ON_HOST = "/srv/lora/big-r32"


def _service_identity(host) -> dict:
    """What a restart or a rewrite would change: the unit's and vllm.env's checksums, MainPID, ActiveEnterTimestamp."""
    sums = host.sh("md5sum /etc/systemd/system/vllm.service /app/vllm-server/vllm.env").stdout
    return {"sums": sums, **host.props("vllm", "MainPID", "ActiveEnterTimestamp", "NRestarts", "ActiveState")}


def test_lora_rank_above_max_is_refused_and_the_running_service_untouched(converged):
    host = converged.host
    host.sh("mkdir -p %s && cat > %s/adapter_config.json && chmod -R a+rX /srv/lora" % (LORA_DIR_ON_HOST, LORA_DIR_ON_HOST),
            input=LORA_FIXTURE.read_text())
    adapters = ADAPTERS + [{"name": "big", "path": LORA_DIR_ON_HOST}]
    before, ident_before = lib.host_snapshot(host), _service_identity(host)
    assert ident_before["ActiveState"] == "active"
    t0 = time.monotonic()
    res = converged.configure({"vllm_server_lora_adapters": adapters, "vllm_server_max_lora_rank": 16}, name="bad-lora-rank-32")
    seconds = time.monotonic() - t0
    after, ident_after = lib.host_snapshot(host), _service_identity(host)
    words = ["big (%s): its rank r = 32 is greater than vllm_server_max_lora_rank 16" % LORA_DIR_ON_HOST,
             "LoRA rank 32 is greater than max_lora_rank 16.", "set vllm_server_max_lora_rank to 32", "Nothing was changed"]
    missing = [w for w in words if w not in res.flat]
    diff = lib.diff_lines(before, after)
    lib.record("bad_inputs", case="lora-adapter-rank-32-above-max-16", entry="configure.yml",
               value=json.dumps({"vllm_server_lora_adapters": "+ %s (r=32)" % LORA_DIR_ON_HOST, "vllm_server_max_lora_rank": 16}),
               words=words, rejected=res.rc != 0, message_ok=not missing, unchanged=not diff and ident_before == ident_after,
               api_writes="-", seconds=round(seconds, 1), leaked=[k for k, v in converged.secrets.items() if v in res.out])
    assert res.rc != 0, "configure.yml accepted an adapter of rank 32 with --max-lora-rank 16:\n" + res.tail()
    assert not missing, "the failure does not say %s:\n%s" % (missing, res.tail())
    assert ident_before == ident_after, "the running vLLM service was touched: %s -> %s" % (ident_before, ident_after)
    assert not diff, "the test host changed:\n%s" % "\n".join(diff[:40])
    assert "TASK [llmops.gce_vllm.venv_service : Write the unit" not in res.out, "the run got as far as the unit"


def test_lora_rank_within_max_positive_control(converged):
    """The same adapter with vllm_server_max_lora_rank 32 passes the check (and is served); then back to the good inputs."""
    host = converged.host
    host.sh("test -f %s/adapter_config.json" % LORA_DIR_ON_HOST)
    adapters = ADAPTERS + [{"name": "big", "path": LORA_DIR_ON_HOST}]
    try:
        res = converged.configure({"vllm_server_lora_adapters": adapters, "vllm_server_max_lora_rank": 32}, name="lora-rank-32-ok")
        assert res.rc == 0, res.tail()
        assert "Check the LoRA adapters as vLLM will load them" in res.out
        again = converged.configure({"vllm_server_lora_adapters": adapters, "vllm_server_max_lora_rank": 32}, name="lora-rank-32-noop")
        assert again.rc == 0 and again.changed() == 0, again.tail()
        # the unit already serves these adapters with this rank: the check is skipped on a no-op run
        assert re.search(r"TASK \[llmops.gce_vllm.vllm_server : Check the LoRA adapters as vLLM will load them[^\n]*\n\s*skipping:",
                         again.out), again.tail()
    finally:
        res = converged.configure(name="lora-restore")
        assert res.rc == 0, res.tail()

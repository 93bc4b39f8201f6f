"""site.yml end to end (what `make demo` runs), and provision.yml's input checks.

test_demo_end_to_end runs scripts/demo itself (a real systemd test host, the local Compute API, the vLLM
stand-in) with secrets chosen here, and checks from the outside what the demo claims:
  - the first site.yml run succeeds and its checklist report passed every check;
  - the second site.yml run reports changed=0 for every host;
  - stop.yml takes the VM out of the (RUNNING-only) inventory, start.yml brings both services back;
  - the second teardown.yml run reports changed=0, and the local Compute API is empty afterwards;
  - none of the secrets appears in the report files or in any log of the run;
  - nothing is left behind (no harness state, no API process).
It takes a few minutes (skipped unless run as root with the harness present; LLMOPS_SKIP_DEMO=1 skips it).

test_provision_refuses_bad_input runs provision.yml with one bad input at a time against a recording
HTTP server standing in for the Compute API, and asserts that it fails with a message naming the variable,
that no firewall or VM task started, and that the server never received a request (validated before any
API call: the role's argument specs, the SSH key check, then the rules phase of the one preflight task).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _env(**extra):
    env = dict(os.environ)
    env["PATH"] = "%s:%s" % (VENV_BIN, env.get("PATH", ""))
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env


def _recap(text):
    """{host: (ok, changed, unreachable, failed)} of the last PLAY RECAP in text."""
    tail = text.rsplit("PLAY RECAP", 1)
    assert len(tail) == 2, "no PLAY RECAP in the output"
    return {h: tuple(int(x) for x in rest) for h, *rest in RECAP_RE.findall(tail[1])}


# --------------------------------------------------------------------------------------------------
# provision.yml: bad input fails before any API call


class _Recorder(BaseHTTPRequestHandler):
    requests: list = []

    def _any(self):
        type(self).requests.append((self.command, self.path))
        body = json.dumps({"error": {"code": 403, "message": "recording stand-in: no API here", "status": "PERMISSION_DENIED"}})
        self.send_response(403)  # not retried by the client: the play fails right after the first call
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "notjson.json").write_text("project = demo\n")
    (d / "user.json").write_text(json.dumps({"type": "authorized_user", "client_id": "x"}))
    (d / "id.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoDemoDemoDemoDemoDemoDemoDemoDemoDemoDem test\n")
    return d


GOOD_INPUT = {
    "gce_vllm_project": "llmops-test",
    "gce_vllm_ai_source_ranges": ["10.231.0.0/16"],
    "gce_vllm_auth_kind": "accesstoken",
    "gce_vllm_access_token": "not-a-real-token",
}

# (id, overrides, text the message must contain)
BAD_INPUTS = [
    ("migrate-with-gpu", {"gce_vllm_on_host_maintenance": "MIGRATE"}, "gce_vllm_on_host_maintenance MIGRATE is refused"),
    ("l4-on-n1", {"gce_vllm_machine_type": "n1-standard-8"}, "gce_vllm_machine_type 'n1-standard-8' cannot carry"),
    ("no-source-ranges", {"gce_vllm_ai_source_ranges": []}, "gce_vllm_ai_source_ranges (unset)"),
    ("source-range-not-cidr", {"gce_vllm_ai_source_ranges": ["10.0.0.300/8"]}, "gce_vllm_ai_source_ranges"),
    ("zone-is-a-region", {"gce_vllm_zone": "asia-northeast3"}, "gce_vllm_zone 'asia-northeast3' is not a zone"),
    ("ports-as-string", {"gce_vllm_ai_ports": "8000,8001"}, "gce_vllm_ai_ports"),
    ("port-out-of-range", {"gce_vllm_ai_ports": [8000, 80010]}, "gce_vllm_ai_ports"),
    ("duplicate-ports", {"gce_vllm_ai_ports": [8000, 8000]}, "gce_vllm_ai_ports"),
    ("credentials-missing", {"gce_vllm_auth_kind": "serviceaccount", "gce_vllm_service_account_file": "/nonexistent/sa.json"},
     "gce_vllm_service_account_file /nonexistent/sa.json does not exist"),
    ("credentials-not-json", {"gce_vllm_auth_kind": "serviceaccount", "gce_vllm_service_account_file": "{d}/notjson.json"},
     "it is not JSON"),
    ("credentials-not-service-account", {"gce_vllm_auth_kind": "serviceaccount", "gce_vllm_service_account_file": "{d}/user.json"},
     "needs \"service_account\""),
    ("dlvm-image-on-g2", {"gce_vllm_image_project": "deeplearning-platform-release"}, "Deep Learning VM images are not compatible"),
    ("no-project", {"gce_vllm_project": ""}, "gce_vllm_project (unset)"),
    ("bad-instance-name", {"gce_vllm_instance_name": "AI_Server"}, "gce_vllm_instance_name 'AI_Server'"),
    ("disk-too-small", {"gce_vllm_disk_size_gb": 5}, "gce_vllm_disk_size_gb"),
    ("unknown-auth-kind", {"gce_vllm_auth_kind": "password"}, "gce_vllm_auth_kind must be one of"),
    ("private-key-as-ssh-key", {"gce_vllm_ssh_user": "ansible", "gce_vllm_ssh_public_key_file": "{d}/notjson.json"},
     "is not an OpenSSH public key"),
]


# the role's tasks after its checks (roles/gce_vllm/tasks/main.yml): the first ones that would change anything
_CHANGING_TASK = re.compile(r"^TASK \[[^\]]*gce_vllm : (Firewall rules|The GPU VM)", re.M)


def _run_provision(extra_vars, endpoint, tmp_path):
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(extra_vars))
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", "playbooks/provision.yml", "-e", "@%s" % varfile],
        cwd=ROOT, env=_env(GCE_API_ENDPOINT=endpoint), capture_output=True, text=True, timeout=300, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _endpoint(recorder, case):
    """Each case gets its own path prefix on the recording server, so requests are attributed to it."""
    return "http://127.0.0.1:%d/%s/compute/v1/" % (recorder.server_address[1], case)


def _requests_of(case):
    return [r for r in _Recorder.requests if r[1].startswith("/%s/" % case)]


@pytest.fixture(scope="module")
def provision_runs(recorder, files, tmp_path_factory):
    """Runs provision.yml once per bad input (and once with the good input), three at a time."""
    cases = [(case[0], case[1]) for case in BAD_INPUTS] + [("good-input", {})]

    def one(case, overrides):
        extra = dict(GOOD_INPUT)
        extra.update({k: (v.format(d=files) if isinstance(v, str) else v) for k, v in overrides.items()})
        return case, _run_provision(extra, _endpoint(recorder, case), tmp_path_factory.mktemp(case))

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(lambda c: one(*c), cases))


@pytest.mark.parametrize("case,overrides,expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_provision_refuses_bad_input(case, overrides, expected, provision_runs):
    rc, out = provision_runs[case]
    flat = " ".join(out.split())
    assert rc != 0, "%s: provision.yml accepted the bad input:\n%s" % (case, out[-3000:])
    assert " ".join(expected.split()) in flat, "%s: message does not say %r:\n%s" % (case, expected, out[-3000:])
    assert not _CHANGING_TASK.search(out), "%s: got past the checks to a task that changes something" % case
    assert _requests_of(case) == [], "%s: the Compute API was called: %s" % (case, _requests_of(case))


def test_provision_good_input_reaches_the_api(provision_runs):
    """Positive control: with good input the validation passes and the first API call is made
    (the recording server answers 403, so the play then fails, but only after calling it)."""
    rc, out = provision_runs["good-input"]
    assert rc != 0
    assert "gce_vllm : Preflight" in out
    assert _requests_of("good-input"), "validation did not let good input through:\n%s" % out[-3000:]


# site.yml: without a llmops.gce_vllm.gce inventory source for the project (or with its vault file missing) it
# stops before provision's first API call (issue 15, item 2): nothing is created, nothing billed.
SITE_INVENTORIES = [
    ("site-no-inventory", None, ["none of its sources", "is a llmops.gce_vllm.gce inventory file", "Nothing was created",
                                 "ansible-galaxy collection list llmops.gce_vllm", "/inventories/gce ./inventory-gce"]),
    ("site-host-list", "localhost,", ["none of its sources (localhost,)", "Nothing was created"]),
    ("site-other-project", "other-project", ["do not list project llmops-test", "lists other-project"]),
    ("site-no-vault-file", "gce-copy", ["reads vault_ai_server_api_key", "ansible-vault create", "vault.yml.example",
                                        "--ask-vault-pass", "Nothing was created"]),
]


@pytest.mark.parametrize("case,inventory,words", SITE_INVENTORIES, ids=[c[0] for c in SITE_INVENTORIES])
def test_site_without_a_gce_inventory_calls_no_api(recorder, tmp_path, case, inventory, words):
    extra = dict(GOOD_INPUT, gce_vllm_ssh_user="ansible")
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(extra))
    args = ["ansible-playbook", "playbooks/site.yml", "-e", "@%s" % varfile]
    env = _env(GCE_API_ENDPOINT=_endpoint(recorder, case))
    env.pop("GCP_PROJECT", None)
    if inventory is None:             # no -i and no ansible.cfg inventory: what a new user gets
        env["ANSIBLE_INVENTORY"] = str(tmp_path / "absent-hosts")
    elif inventory == "other-project":
        (tmp_path / "inv").mkdir()
        (tmp_path / "inv" / "gce.yml").write_text("plugin: llmops.gce_vllm.gce\nprojects: [other-project]\n")
        args += ["-i", str(tmp_path / "inv")]
    elif inventory == "gce-copy":     # the shipped inventories/gce for the project, before its vault file exists
        shutil.copytree(ROOT / "inventories" / "gce", tmp_path / "inv")
        env["GCP_PROJECT"] = GOOD_INPUT["gce_vllm_project"]
        args += ["-i", str(tmp_path / "inv")]
    else:
        args += ["-i", inventory]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    flat = " ".join(out.split())
    assert proc.returncode != 0, "%s: site.yml went on:\n%s" % (case, out[-3000:])
    missing = [w for w in words if w not in flat]
    assert not missing, "%s: the failure does not say %s:\n%s" % (case, missing, out[-3000:])
    assert not _CHANGING_TASK.search(out) and "gce_vllm : Preflight" not in out, "%s: got to provision" % case
    assert _requests_of(case) == [], "%s: the Compute API was called: %s" % (case, _requests_of(case))


def test_site_runs_by_fqcn_with_the_gce_inventory_up_to_the_api(recorder, tmp_path):
    """Positive control: `ansible-playbook llmops.gce_vllm.site` (no ansible.cfg) with the shipped inventory, its vault
    keys given, passes the inventory check and reaches provision's first API call (the recorder answers 403)."""
    shutil.copytree(ROOT / "inventories" / "gce", tmp_path / "inv")
    extra = dict(GOOD_INPUT, gce_vllm_ssh_user="ansible", vault_vllm_server_api_key="k3y-8f1d2c3b4a5e",
                 vault_ai_server_backend_internal_token="t0k-8f1d2c3b4a5e", vault_ai_server_api_key="a1k-8f1d2c3b4a5e")
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(extra))
    env = _env(GCE_API_ENDPOINT=_endpoint(recorder, "site-fqcn"), GCP_PROJECT=GOOD_INPUT["gce_vllm_project"],
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"))
    env.pop("ANSIBLE_CONFIG")
    proc = subprocess.run(["ansible-playbook", "llmops.gce_vllm.site", "-i", str(tmp_path / "inv"), "-e", "@%s" % varfile],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert "gce_vllm : Preflight" in out, out[-3000:]
    assert _requests_of("site-fqcn"), "the inventory check did not let a good inventory through:\n%s" % out[-3000:]


# stop / start / teardown: (id, playbook, overrides, words). Each checks what it needs before any API call.
TARGET_INPUTS = [
    ("teardown-zone-is-a-region", "teardown", {"gce_vllm_zone": "asia-northeast3"}, ["gce_vllm_zone 'asia-northeast3' is not a zone"]),
    ("stop-zone-is-a-region", "stop", {"gce_vllm_zone": "asia-northeast3"}, ["gce_vllm_zone 'asia-northeast3' is not a zone"]),
    ("teardown-bad-rule-name", "teardown", {"gce_vllm_monitoring_firewall_name": "Allow_Mon"},
     ["gce_vllm_monitoring_firewall_name 'Allow_Mon' is not a valid resource name"]),
    ("stop-no-project", "stop", {"gce_vllm_project": ""}, ["gce_vllm_project (unset)"]),
    ("start-bad-instance-name", "start", {"gce_vllm_instance_name": "AI_Server"},
     ["gce_vllm_instance_name 'AI_Server' is not a valid resource name"]),
    ("stop-token-missing", "stop", {"gce_vllm_access_token": ""}, ["gce_vllm_access_token is required with gce_vllm_auth_kind"]),
]


@pytest.mark.parametrize("case,playbook,overrides,words", TARGET_INPUTS, ids=[c[0] for c in TARGET_INPUTS])
def test_target_playbooks_refuse_bad_input(recorder, tmp_path, case, playbook, overrides, words):
    extra = dict(GOOD_INPUT, **overrides)
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(extra))
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "playbooks/%s.yml" % playbook, "-e", "@%s" % varfile],
                          cwd=ROOT, env=_env(GCE_API_ENDPOINT=_endpoint(recorder, case)), capture_output=True,
                          text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    flat = " ".join(out.split())
    assert proc.returncode != 0, "%s: %s.yml accepted the bad input:\n%s" % (case, playbook, out[-3000:])
    missing = [w for w in words if w not in flat]
    assert not missing, "%s: the failure does not say %s:\n%s" % (case, missing, out[-3000:])
    assert _requests_of(case) == [], "%s: the Compute API was called: %s" % (case, _requests_of(case))


def test_teardown_good_input_reaches_the_api(recorder, tmp_path):
    """Positive control of the cases above: good input passes the checks and the first API call is made."""
    varfile = tmp_path / "vars.json"
    varfile.write_text(json.dumps(GOOD_INPUT))
    proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "playbooks/teardown.yml", "-e", "@%s" % varfile],
                          cwd=ROOT, env=_env(GCE_API_ENDPOINT=_endpoint(recorder, "teardown-good")),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0  # the recording server answers 403
    assert _requests_of("teardown-good"), "the checks did not let good input through:\n%s" % (proc.stdout + proc.stderr)[-3000:]


# --------------------------------------------------------------------------------------------------
# make demo, end to end

def _demo_skip_reason():
    if os.environ.get("LLMOPS_SKIP_DEMO") == "1":
        return "LLMOPS_SKIP_DEMO=1"
    if os.geteuid() != 0:
        return "the test-host harness needs root"
    for p in ("tests/harness/testhosts.py", "tests/compute_api", "scripts/demo"):
        if not (ROOT / p).exists():
            return "%s is missing" % p
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn missing (make hostdeps)"
    return None


@pytest.mark.skipif(_demo_skip_reason() is not None, reason=str(_demo_skip_reason()))
def test_demo_end_to_end(tmp_path):
    results = tmp_path / "results"
    secret_env = {
        "LLMOPS_DEMO_VLLM_API_KEY": "vk-" + secrets.token_urlsafe(24),
        "LLMOPS_DEMO_BACKEND_TOKEN": "bt-" + secrets.token_urlsafe(24),
        "LLMOPS_DEMO_ACCESS_TOKEN": "at-" + secrets.token_urlsafe(24),
        "LLMOPS_DEMO_AI_API_KEY": "ak-" + secrets.token_urlsafe(24),
    }
    proc = subprocess.run(
        [str(ROOT / "scripts" / "demo")], cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False,
        env=_env(LLMOPS_DEMO_RESULTS=str(results), LLMOPS_DEMO_RECORD="0", **secret_env),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "scripts/demo failed (exit %d):\n%s" % (proc.returncode, out[-6000:])

    logs = sorted(results.glob("demo-*"))
    assert len(logs) == 1, "expected one demo log dir under %s" % results
    logdir = logs[0]

    first = _recap((logdir / "site-1.log").read_text())
    assert first and all(r[3] == 0 and r[2] == 0 for r in first.values()), first
    assert any(r[1] > 0 for r in first.values()), "the first run changed nothing: it did not provision"
    second = _recap((logdir / "site-2.log").read_text())
    assert second and all(r[1] == 0 for r in second.values()), "second site.yml run: %s" % second
    assert "RUNNING instances in group ai_server after stop: 0" in out
    started = _recap((logdir / "start.log").read_text())
    assert started and all(r[3] == 0 and r[2] == 0 for r in started.values()), "start.yml: %s" % started
    teardown2 = _recap((logdir / "teardown-2.log").read_text())
    assert teardown2 and all(r[1] == 0 for r in teardown2.values()), "second teardown run: %s" % teardown2
    assert "instances: none, firewall rules: none" in out

    report = json.loads((logdir / "report.json").read_text())
    assert report["passed"] is True
    assert len(report["hosts"]) == 1
    checks = report["hosts"][0]["checks"]
    ids = [c["id"] for c in checks if c["id"]]   # the runbook's items, numbered; the roles' other checks have none
    assert ids == ["1", "2", "3", "4", "5a", "5b", "5c"], ids
    assert {"gpu_host_libcuda", "ai_server_vllm_models"} <= {c["name"] for c in checks}, checks
    assert all(c["passed"] for c in checks), report
    assert report["hosts"][0]["external_ip"].startswith("10.231."), report["hosts"][0]
    md = (logdir / "report.md").read_text()
    assert "PASSED" in md and "NVIDIA L4" in md
    # the GPU and vLLM were tests/standin's: the checklist found them on the host, and the report says so
    assert report["standins"] == ["GPU", "vLLM"], report["standins"]
    assert "**Stand-ins, not the real thing:** the GPU and vLLM were the tests' stand-ins" in md, md
    # what the docs may quote about the run (scripts/render_docs.py): every step the demo prints, timed
    result = json.loads((logdir / "result.json").read_text())
    steps = len(re.findall(r'^\s*step "', (ROOT / "scripts" / "demo").read_text(), re.M))
    assert result["passed"] is True and result["steps"] == steps and result["standins"] == ["GPU", "vLLM"], result
    assert 0 < result["seconds"] < 1500, result
    assert "Ansible managed" not in md and "<!--" not in md, md   # a page for a person, not managed state

    # no secret anywhere in what the run produced or printed
    produced = [out] + [p.read_text(errors="replace") for p in results.rglob("*") if p.is_file()]
    for name, value in secret_env.items():
        assert not any(value in text for text in produced), "%s leaked into the demo's output or results" % name

    # nothing left behind
    assert "make demo: PASSED" in out
    for line in out.splitlines():
        m = re.search(r"Compute API at \S+ \(pid (\d+),", line)
        if m:
            assert not Path("/proc/%s" % m.group(1)).exists() or \
                b"compute_api" not in Path("/proc/%s/cmdline" % m.group(1)).read_bytes(), "the Compute API still runs"
    work = re.search(r"^work dir (\S+)$", out, re.M)
    assert work, "scripts/demo did not print its work dir"
    assert not Path(work.group(1)).exists(), "the demo's work dir (harness state) was left behind"

"""Bad inputs to the host roles: each must fail with a message naming the variable, and change nothing.

One real systemd test host (tests/harness/testhosts.py) per module, with the stand-ins installed
(nvidia-smi printing an L4, an empty libcuda.so.1, the vLLM stand-in wheel) and converged once with good
inputs (the positive control). Every case then runs the molecule converge playbook (the three roles,
validation first) with one bad variable and compares a snapshot of the host taken before and after:
files under /app, /etc/systemd/system, /opt, users, groups, installed packages, unit states and main
PIDs (a restart would change them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests" / "harness" / "testhosts.py"
STANDIN = ROOT / "tests" / "standin"
CONVERGE = ROOT / "molecule" / "default" / "converge.yml"
VALIDATE_ONLY = Path(__file__).with_name("validate_only.yml")
ROLE_ALONE = Path(__file__).with_name("role_alone.yml")
ROLE_PARAMS = Path(__file__).with_name("role_params.yml")

SNAPSHOT = r"""
set -u
for d in /app /etc/systemd/system /opt /usr/local/share/ca-certificates; do
  [ -e "$d" ] && find "$d" -xdev -printf '%p %y %m %u %g %s %T@\n' | sort
done
md5sum /etc/passwd /etc/group /etc/shadow
dpkg-query -W -f '${Package} ${Version}\n' | md5sum
for u in vllm ai-server; do
  echo "$u $(systemctl is-active $u) $(systemctl is-enabled $u 2>&1) $(systemctl show -p MainPID -p NRestarts --value $u | tr '\n' ' ')"
done
"""

GOOD = {"vllm_server_api_key": "k3y-" + os.urandom(12).hex(), "ai_server_backend_internal_token": "t0k-" + os.urandom(12).hex(),
        "ai_server_api_key": "ak-" + os.urandom(12).hex()}

ADAPTERS = [
    {"name": "easycontract", "path": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"},
    {"name": "checklist", "path": "imyj1013/exaone-qlora-checklist-adapter"},
]

# (id, extra vars, words the failure message must contain). The runbook's own bad inputs (placeholder and
# empty secrets, /v1 URL mistakes, LoRA list errors, rank 24, memory fraction, '8k', dtype, equal ports,
# --api-key in extra args) run once, in the cross-cutting suite tests/reliability/test_1_bad_inputs.py,
# against the same kind of host and snapshot; these are the role cases that suite does not repeat.
CASES = [
    ("api-key-changeme", {"vllm_server_api_key": "changeme"}, ["vllm_server_api_key"]),
    ("api-key-with-space", {"vllm_server_api_key": "abc def ghi jkl"}, ["vllm_server_api_key"]),
    ("adapter-not-served", {"ai_server_lora_adapter_checklist": "checklist-v2"}, ["checklist-v2", "vllm_server_lora_adapters"]),
    ("timeout-zero", {"ai_server_http_timeout_sec": 0}, ["ai_server_http_timeout_sec"]),
    ("timeout-negative", {"ai_server_http_timeout_sec": -5}, ["ai_server_http_timeout_sec"]),
    ("max-model-len-zero", {"vllm_server_max_model_len": 0}, ["vllm_server_max_model_len"]),
    ("adapter-unknown-key", {"vllm_server_lora_adapters": [dict(ADAPTERS[0], rank=16)] + ADAPTERS[1:]},
     ["vllm_server_lora_adapters"]),
    ("health-timeout-zero", {"vllm_server_health_timeout": 0}, ["vllm_server_health_timeout"]),
    # the authenticating proxies (issue 9)
    ("ai-api-key-placeholder", {"ai_server_api_key": "your-api-key"}, ["ai_server_api_key", "placeholder"]),
    ("ai-api-key-is-vllm-key", {"ai_server_api_key": GOOD["vllm_server_api_key"]}, ["ai_server_api_key", "equals vLLM's key"]),
    ("vllm-public-bind-unguarded", {"vllm_server_host": "0.0.0.0"},
     ["vllm_server_host (0.0.0.0) is not a loopback address", "/invocations", "vllm_server_allow_unguarded_bind"]),
    ("ai-public-bind-unguarded", {"ai_server_host": "0.0.0.0", "ai_server_auth_proxy": False},
     ["ai_server_host (0.0.0.0) is not a loopback address", "ai_server_allow_unguarded_bind"]),
    ("open-path-prefix-and-bad-source", {"vllm_server_open_paths": [{"path": "/metrics*", "sources": ["10.0.0.0/8"]},
                                                                    {"path": "/version", "sources": ["10.1.2.3/8"]}]},
     ["vllm_server_open_paths[0]: path '/metrics*'", "vllm_server_open_paths[1]: source '10.1.2.3/8'"]),
    ("backend-port-is-public-port", {"vllm_server_backend_port": 8001}, ["vllm_server_backend_port (8001)"]),
    # issue 15, item 9: the app layouts, its entry point and the extra .env keys (several wrong at once: all named)
    ("app-layout-module-env-extra", {"ai_server_app_module": "app.main:app", "ai_server_app_layout": "uv_project",
                                     "ai_server_venv_tool": "pip", "ai_server_env_extra": {"VLLM_API_KEY": "x", "bad-key": "y"}},
     ["ai_server_app_module (app.main:app) names app/main.py", "set ai_server_venv_tool: uv", "lacks pyproject.toml or uv.lock",
      "ai_server_env_extra / ai_server_env_extra_secret keys", "VLLM_API_KEY, bad-key"]),
    ("app-module-not-module-colon-attr", {"ai_server_app_module": "main", "ai_server_env_extra": {"A": "it's\nbad"}},
     ["ai_server_app_module (main) must be uvicorn's MODULE:ATTRIBUTE", "ai_server_env_extra values", "['A']"]),
    ("env-extra-secret-placeholder", {"ai_server_env_extra_secret": {"APP_SIGNING_KEY": "changeme"}}, ["ai_server_env_extra_secret"]),
    # placeholder callback hosts, refused like placeholder secrets (issue 15, item 5)
    ("callback-url-example-com", {"ai_server_backend_callback_base_url": "https://backend.example.com/api"},
     ["ai_server_backend_callback_base_url (https://backend.example.com/api) is a placeholder"]),
    ("callback-url-invalid", {"ai_server_backend_callback_base_url": "https://callbacks.invalid/api"},
     ["ai_server_backend_callback_base_url (https://callbacks.invalid/api) is a placeholder"]),
    ("tls-certificate-without-key", {"vllm_server_tls_certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
     ["vllm_server_tls_certificate and vllm_server_tls_key go together"]),
]


WHEEL = "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl"


def _harness():
    sys.path.insert(0, str(ROOT))
    from tests.harness import testhosts  # noqa: PLC0415 (imported only when the suite runs)

    return testhosts


@pytest.fixture(scope="module")
def testhost(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    th = _harness()
    state = tmp_path_factory.mktemp("inputs-hosts")
    try:
        th.create(str(state), count=1, prefix="inputs")
        name = th.load_state(str(state))["hosts"][0]["name"]
        host = {"th": th, "state": state, "inventory": state / "inventory.yml", "name": name}
        wheel_dir = tmp_path_factory.mktemp("wheel")
        subprocess.run([sys.executable, str(STANDIN / "build_wheel.py"), str(wheel_dir)], check=True,
                       capture_output=True)
        th.copy_in(str(state), name, str(sorted(wheel_dir.glob("*.whl"))[0]), WHEEL)
        th.copy_in(str(state), name, str(STANDIN / "nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
        th.exec_in(str(state), name, ["touch", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"])
        yield host
    finally:
        th.destroy(str(state))


def _sh(host, script: str) -> str:
    return host["th"].exec_in(str(host["state"]), host["name"], ["sh", "-c", script]).stdout.decode()


def _snapshot(host) -> str:
    out = _sh(host, SNAPSHOT)
    assert "/etc/systemd/system" in out and "/etc/passwd" in out
    return out


def _playbook(host, playbook, extra: dict, args=()) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               MOLECULE_EPHEMERAL_DIRECTORY=str(host["state"]), LLMOPS_STANDIN_WHEEL=WHEEL)
    varfile = host["state"] / "extra-vars.json"
    varfile.write_text(json.dumps({**GOOD, **extra}))
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(host["inventory"]),
           "-e", f"@{varfile}", *args, str(playbook)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def converged(testhost):
    """Positive control: good inputs pass validation and converge the three roles."""
    res = _playbook(testhost, VALIDATE_ONLY, {})
    assert res.returncode == 0, res.stdout[-3000:]
    res = _playbook(testhost, CONVERGE, {})
    assert res.returncode == 0, res.stdout[-5000:]
    assert "failed=0" in res.stdout
    status = _sh(testhost, "systemctl is-active vllm ai-server")
    assert status.split() == ["active", "active"]
    return testhost


def _assert_refused(host, extra, words, playbook=CONVERGE, args=()):
    before = _snapshot(host)
    res = _playbook(host, playbook, extra, args)
    after = _snapshot(host)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "changed=0" in out, out[-3000:]
    for word in words:
        assert word in out, f"{word!r} not in the failure:\n{out[-3000:]}"
    for secret in GOOD.values():
        assert secret not in out, "a secret leaked into the output"
    assert before == after, "the host changed"
    return out


@pytest.mark.parametrize(("extra", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(converged, extra, words):
    _assert_refused(converged, extra, words)


# One task of each role's validate.yml: in the converge play (a validation pass, then the roles), each runs once.
ONE_CHECK_PER_ROLE = [
    "llmops.gce_vllm.gpu_host : Check that the OS is supported and the gpu_host inputs",
    "llmops.gce_vllm.vllm_server : Check the vLLM API key",
    "llmops.gce_vllm.ai_server : Check ai_server_backend_internal_token",
]


def test_each_role_validates_once_per_play(converged):
    res = _playbook(converged, CONVERGE, {})
    assert res.returncode == 0, res.stdout[-3000:]
    assert "changed=0" in res.stdout, res.stdout[-3000:]
    for task in ONE_CHECK_PER_ROLE:
        assert res.stdout.count(f"TASK [{task}]") == 1, f"{task!r} did not run exactly once:\n{res.stdout[-3000:]}"


def test_a_role_alone_still_validates_itself(converged):
    """Without a playbook's validation pass the role's own main.yml checks its inputs before any change."""
    out = _assert_refused(converged, {"vllm_server_api_key": "changeme"}, ["vllm_server_api_key", "placeholder"],
                          playbook=ROLE_ALONE)
    assert out.count("TASK [llmops.gce_vllm.vllm_server : Check the vLLM API key]") == 1


def test_a_phase_tag_still_validates_every_role_first(converged):
    """--tags of one role's phase: the play's validation pass still checks every role (here ai_server's input)."""
    _assert_refused(converged, {"ai_server_backend_callback_base_url": "https://backend.example.com/api/v1"},
                    ["ai_server_backend_callback_base_url", "WITHOUT /v1"], args=("--tags", "vllm_server_configure"))
    res = _playbook(converged, CONVERGE, {}, ("--tags", "ai_server_configure"))
    assert res.returncode == 0 and "changed=0" in res.stdout, res.stdout[-3000:]
    assert "TASK [llmops.gce_vllm.venv_service : Write the unit, verified by systemd-analyze, of ai-server]" in res.stdout
    assert "TASK [llmops.gce_vllm.venv_service : Write the unit, verified by systemd-analyze, of vllm]" not in res.stdout


def test_a_typo_warns_naming_the_real_variable(converged):
    """issue 15, item 3: an undeclared name with a role's prefix warns (once) and names the closest declared one."""
    res = _playbook(converged, VALIDATE_ONLY, {"vllm_server_max_model_length": 4096, "_vllm_server_private": 1})
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0, out[-3000:]
    assert out.count("vllm_server_max_model_length is not a variable of any llmops.gce_vllm role") == 1, out[-3000:]
    assert "did you mean vllm_server_max_model_len?" in out
    assert "_vllm_server_private" not in out


def test_a_role_parameter_another_role_reads_is_refused_before_any_change(converged):
    """issue 15, item 4: vllm_server_port as a parameter of vllm_server only; the wiring (ai_server) cannot see it."""
    out = _assert_refused(converged, {}, ["vllm_server_port is set only on role llmops.gce_vllm.vllm_server",
                                          "service_wiring.yml", "at play level"], playbook=ROLE_PARAMS)
    assert "TASK [llmops.gce_vllm.gpu_host : Check the names and the scope" in out


def test_missing_vault_and_required_inputs_fail_in_one_line_each(tmp_path):
    """issue 15, item 5: configure.yml with the shipped inventories/gce group_vars and no vault file, and without the
    required callback URL: one line per problem, before any login, no argument spec dumped. No host is contacted
    (192.0.2.1 is TEST-NET-1)."""
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "group_vars" / "ai_server").mkdir()
    vars_text = (ROOT / "inventories" / "gce" / "group_vars" / "ai_server" / "vars.yml").read_text()
    (inv / "group_vars" / "ai_server" / "vars.yml").write_text(
        "\n".join(l for l in vars_text.splitlines() if not l.startswith("ai_server_backend_callback_base_url")) + "\n")
    (inv / "hosts.yml").write_text("ai_server:\n  hosts:\n    vm:\n      ansible_host: 192.0.2.1\n")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"))
    env.pop("ANSIBLE_CONFIG", None)   # what a new user has: no ansible.cfg, core's default (JSON) result format
    res = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inv), "llmops.gce_vllm.configure"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    flat = " ".join(out.split())
    for words in ("vllm_server_api_key cannot be read: vault_vllm_server_api_key is undefined: create the vault file "
                  "group_vars/ai_server/vault.yml of your inventory from vault.yml.example",
                  "--ask-vault-pass or --vault-password-file FILE",
                  "ai_server_backend_callback_base_url is required (role llmops.gce_vllm.ai_server) and not set"):
        assert words in flat, f"{words!r} not in:\n{out[-3000:]}"
    assert "argument_spec" not in out and "Wait until the VM lets Ansible log in" not in out, out[-3000:]
    assert len(out) < 4000, f"{len(out)} characters for two problems:\n{out}"


# Bad hosts rather than bad variables: the GPU checks come before any change too.
GPU_CASES = [
    ("wrong-gpu-model",
     "mv /usr/bin/nvidia-smi /usr/bin/nvidia-smi.real && printf '#!/bin/sh\\nNVIDIA_SMI_STANDIN_NAME=\"Tesla T4\" "
     "NVIDIA_SMI_STANDIN_MEMORY_MIB=15360 exec /usr/bin/nvidia-smi.real \"$@\"\\n' > /usr/bin/nvidia-smi && chmod 755 /usr/bin/nvidia-smi",
     "mv -f /usr/bin/nvidia-smi.real /usr/bin/nvidia-smi",
     ["Tesla T4", "15360 MiB", "gpu_host_expected_gpu_name"]),
    ("old-driver",
     "mv /usr/bin/nvidia-smi /usr/bin/nvidia-smi.real && printf '#!/bin/sh\\nNVIDIA_SMI_STANDIN_DRIVER=550.54.15 "
     "exec /usr/bin/nvidia-smi.real \"$@\"\\n' > /usr/bin/nvidia-smi && chmod 755 /usr/bin/nvidia-smi",
     "mv -f /usr/bin/nvidia-smi.real /usr/bin/nvidia-smi",
     ["driver 550.54.15", "gpu_host_min_driver_major"]),
    ("libcuda-missing",
     "mv /usr/lib/x86_64-linux-gnu/libcuda.so.1 /root/libcuda.so.1",
     "mv -f /root/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1",
     ["libcuda.so.1", "gpu_host_cuda_lib_dir"]),
]


@pytest.mark.parametrize(("setup", "undo", "words"), [c[1:] for c in GPU_CASES], ids=[c[0] for c in GPU_CASES])
def test_wrong_gpu_host_fails_clearly_and_changes_nothing(converged, setup, undo, words):
    _sh(converged, setup)
    try:
        _assert_refused(converged, {}, words)
    finally:
        _sh(converged, undo)


def _changed_tasks(out: str) -> list[str]:
    """The tasks a run reports changed, from the default callback's output (TASK header, then `changed:` lines)."""
    tasks, task = [], None
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rfind("]")]
        elif line.startswith("changed:") and task is not None:
            tasks.append(task)
    return tasks


def _task_output(out: str, task: str) -> str:
    """What the default callback printed under the TASK header that contains `task` (its diff, its result)."""
    start = out.find(task)
    return out[start:out.find("\nTASK [", start)] if start >= 0 else f"(no task {task!r})"


def test_one_change_is_its_writes_and_one_restart_with_a_masked_diff(converged):
    """Issue 15, item 6: from the converged host (the tests above change nothing; the ones below converge with
    settings of their own), one change per file reports exactly the file writes and one restart per service;
    --diff shows the plain keys of vllm.env and .env and masks the secret values, never printing one."""
    token = "t0k-" + os.urandom(12).hex()   # a rotated secret: the line shows as changed, neither value
    extra = {"vllm_server_max_model_len": 4096, "vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "1"},
             "ai_server_http_timeout_sec": 31, "ai_server_backend_internal_token": token}
    res = _playbook(converged, CONVERGE, extra, ("--diff",))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    changed = _changed_tasks(res.stdout)
    vllm = [t for t in changed if t.endswith(" vllm")]
    ai = [t for t in changed if t.endswith(" ai-server")]
    assert len(changed) == 5 and len(vllm) == 3 and len(ai) == 2, changed
    assert sum("(re)start" in t for t in changed) == 2, changed
    assert "changed=5" in res.stdout, res.stdout[-2000:]
    # the diffs: plain keys shown, the secret key shown as changed, its values never
    vllm_env = _task_output(out, "Write the environment file (secrets masked in the diff, mode 0600) of vllm]")
    assert '-VLLM_STANDIN_STARTUP_DELAY="2"' in vllm_env and '+VLLM_STANDIN_STARTUP_DELAY="1"' in vllm_env, vllm_env
    ai_env = _task_output(out, "Write the environment file (secrets masked in the diff, mode 0600) of ai-server]")
    assert "-HTTP_TIMEOUT_SEC=30" in ai_env and "+HTTP_TIMEOUT_SEC=31" in ai_env, ai_env
    assert "-BACKEND_INTERNAL_TOKEN=********\n" in ai_env and "+BACKEND_INTERNAL_TOKEN=******** (changed)" in ai_env, ai_env
    assert "--max-model-len 4096" in _task_output(out, "Write the unit, verified by systemd-analyze, of vllm]")
    for secret in [*GOOD.values(), token]:
        assert secret not in out, "a secret leaked into the output"


def test_lora_modules_reach_vllm_as_one_json_argument_each(converged):
    """systemd quoting: an adapter path with quotes, $, %, backslash and non-ASCII reaches vLLM intact."""
    adapters = [
        {"name": "easycontract", "path": "/data/it's a $HOME ${X} 100% %n \"x\\y\" \u00e9"},
        {"name": "checklist", "path": ADAPTERS[1]["path"], "base_model_name": "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"},
    ]
    # the role reads every adapter directory before any change (lora_adapter_info): this one must be an adapter
    config = (ROOT / "tests" / "fixtures" / "lora" / "peft-0.21.0-r32-q_v.json").read_text().replace('"r": 32', '"r": 8')
    converged["th"].exec_in(str(converged["state"]), converged["name"], [
        "python3", "-c", "import os, sys; os.makedirs(sys.argv[1], exist_ok=True); "
        "open(os.path.join(sys.argv[1], 'adapter_config.json'), 'w').write(sys.argv[2])", adapters[0]["path"], config])
    res = _playbook(converged, CONVERGE, {"vllm_server_lora_adapters": adapters})
    assert res.returncode == 0, res.stdout[-4000:]
    pid = _sh(converged, "systemctl show -p MainPID --value vllm").strip()
    argv = _sh(converged, f"cat /proc/{pid}/cmdline").split("\0")[:-1]
    i = argv.index("--lora-modules") + 1
    assert [json.loads(a) for a in argv[i:i + 2]] == adapters
    assert argv[i + 2] == "--max-lora-rank"


def test_ai_server_from_an_archive_with_pip(converged, tmp_path):
    """The other app source and venv tool: an archive from the controller, venv by pip; idempotent."""
    archive = tmp_path / "ai-server.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("main.py", "requirements.txt"):
            tar.add(ROOT / "examples" / "ai-server" / name, arcname=name)
    extra = {"ai_server_app_source_type": "archive", "ai_server_app_source": str(archive), "ai_server_venv_tool": "pip"}
    res = _playbook(converged, CONVERGE, extra)
    assert res.returncode == 0, res.stdout[-4000:]
    # the venv itself says what it holds (no marker file): pip (ensurepip) and the app's pinned uvicorn
    assert "uvicorn-" in _sh(converged, "ls /app/ai-server/.venv/lib/python3*/site-packages/")
    assert _sh(converged, "test -x /app/ai-server/.venv/bin/pip3 && echo pip || echo none").strip() == "pip"
    assert _sh(converged, "ls /app/ai-server/.llmops-applied /app/ai-server/.venv/.llmops-requirements 2>/dev/null || true").strip() == ""
    status = _sh(converged, "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8000/health\").status)'")
    assert status.strip() == "200"
    again = _playbook(converged, CONVERGE, extra)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]


UV_APP = ROOT / "examples" / "ai-server-uv"


def test_ai_server_deploys_a_uv_project_package_app_with_extra_env(converged):
    """Issue 15, item 9: the other app layout (a package, pyproject.toml + uv.lock, `uv sync --frozen`) with its entry
    point app.main:app and extra .env keys, one of them secret: the app answers on /health with the plain key's value
    and sees the secret; the venv holds exactly the lock without its dev group; the rerun changes nothing."""
    greeting = "hello-from-a-uv-project"
    signing_key = "sk-" + os.urandom(12).hex()
    extra = {"ai_server_app_source": str(UV_APP), "ai_server_app_layout": "uv_project", "ai_server_app_module": "app.main:app",
             "ai_server_env_extra": {"APP_GREETING": greeting}, "ai_server_env_extra_secret": {"APP_SIGNING_KEY": signing_key}}
    res = _playbook(converged, CONVERGE, extra, ("--diff",))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert signing_key not in out and "+APP_SIGNING_KEY=******** (changed)" in out, out[-5000:]
    assert f"+APP_GREETING='{greeting}'" in out, out[-5000:]
    # the process reads them: /health through the proxy on the public port (open without the key)
    body = _sh(converged, "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8000/health\").read().decode())'")
    health = json.loads(body)
    assert health["greeting"] == greeting and health["signing_key_set"] is True, health
    env = _sh(converged, "stat -c '%a %U' /app/ai-server/.env; grep -c \"^APP_SIGNING_KEY='\" /app/ai-server/.env").split("\n")
    assert env[0].split() == ["600", "aiserver"] and env[1] == "1", env
    site = _sh(converged, "ls /app/ai-server/.venv/lib/python3*/site-packages/")
    assert "fastapi-0.162.5.dist-info" in site and "pytest" not in site, site   # the lock, without the dev group
    unit = _sh(converged, "systemctl show -p ExecStart --value ai-server")
    assert "app.main:app" in unit, unit
    again = _playbook(converged, CONVERGE, extra)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]


def test_ai_server_deploys_the_uv_project_from_git_into_a_new_directory(converged, tmp_path):
    """The third app source, git, with the uv layout (issue 15, item 9: a directory, an archive or git): a new deployment
    (the app directory and its service gone) cloned from a repository on the host at a pinned commit, installed with
    `uv sync --frozen`; the checkout is that commit, the app answers, the rerun changes nothing."""
    repo = tmp_path / "ai-server-uv.git"
    work = tmp_path / "work"
    shutil.copytree(UV_APP, work)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for argv in (["init", "-q", str(work)], ["-C", str(work), "add", "-A"], ["-C", str(work), "commit", "-qm", "app"],
                 ["clone", "-q", "--bare", str(work), str(repo)]):
        subprocess.run(git + argv, check=True, capture_output=True)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    root = Path(converged["th"].load_state(str(converged["state"]))["hosts"][0]["root"])
    shutil.copytree(repo, root / "srv" / "ai-server-uv.git")
    # the repository belongs to the app's account (git refuses a repository of another owner: safe.directory)
    _sh(converged, "chown -R aiserver: /srv/ai-server-uv.git; systemctl stop ai-server; rm -rf /app/ai-server")
    extra = {"ai_server_app_source_type": "git", "ai_server_app_source": "file:///srv/ai-server-uv.git",
             "ai_server_app_version": commit, "ai_server_app_layout": "uv_project", "ai_server_app_module": "app.main:app"}
    res = _playbook(converged, CONVERGE, extra)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    head = _sh(converged, "git config --global --add safe.directory /app/ai-server; git -C /app/ai-server rev-parse HEAD")
    assert head.strip() == commit
    status = _sh(converged, "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8000/health\").status)'")
    assert status.strip() == "200"
    assert "app.main:app" in _sh(converged, "systemctl show -p ExecStart --value ai-server")
    again = _playbook(converged, CONVERGE, extra)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]

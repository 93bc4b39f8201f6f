"""testinfra checks of the converged test host (molecule verify).

Secrets are never passed on a command line here either: scripts that need the key read it on the
host from vllm.env themselves; checks from the controller read it through the ansible backend.
"""

import base64
import json
import os
import re
import urllib.error
import urllib.request

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
# The one list of routes the public ports must refuse without the key (checklist check 5c probes the same)
with open(os.path.join(ROOT, "roles", "checklist", "vars", "main.yml"), encoding="utf-8") as _fh:
    MUST_REFUSE = yaml.safe_load(_fh)["_checklist_must_refuse"]
PORTS = {"vllm_server": 8001, "ai_server": 8000}
PROXY_CFG = {"vllm_server": "/etc/haproxy/vllm-proxy.cfg", "ai_server": "/etc/haproxy/ai-server-proxy.cfg"}
VLLM_DIR = "/app/vllm-server"
AI_DIR = "/app/ai-server"
BASE_MODEL = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"
ADAPTERS = {
    "easycontract": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1",
    "checklist": "imyj1013/exaone-qlora-checklist-adapter",
}
RUNBOOK_ENV_KEYS = [
    "APP_ENV",
    "VLLM_BASE_URL",
    "VLLM_API_KEY",
    "VLLM_MODEL",
    "VLLM_LORA_ADAPTER_EASYCONTRACT",
    "VLLM_LORA_ADAPTER_CHECKLIST",
    "BACKEND_CALLBACK_BASE_URL",
    "BACKEND_INTERNAL_TOKEN",
    "HTTP_TIMEOUT_SEC",
]
# Scans every process's command line and the whole journal on the host for the three secrets, which it
# reads itself from the proxies' configurations and the AI server's .env; prints only counts and process ids.
SCAN_SCRIPT = r"""
import glob, os, subprocess, json
def val(path, key):
    for line in open(path):
        if line.startswith(key + "="):
            return line.split("=", 1)[1].strip().strip('"')
def proxy_key(path):
    for line in open(path):
        if "Bearer " in line and "key_ok" in line:
            return line.split('"Bearer ', 1)[1].split('"', 1)[0]
secrets = [proxy_key("/etc/haproxy/vllm-proxy.cfg"), val("/app/ai-server/.env", "BACKEND_INTERNAL_TOKEN"),
           proxy_key("/etc/haproxy/ai-server-proxy.cfg")]
assert all(s and len(s) >= 8 for s in secrets)
me = str(os.getpid())
procs, scanned = [], 0
for path in glob.glob("/proc/[0-9]*/cmdline"):
    pid = path.split("/")[2]
    if pid == me:
        continue
    try:
        data = open(path, "rb").read().decode(errors="replace")
    except OSError:
        continue
    scanned += 1
    if any(s in data for s in secrets):
        procs.append(pid)
journal = subprocess.run(["journalctl", "--no-pager", "-o", "cat"], capture_output=True, text=True).stdout
print(json.dumps({"scanned": scanned, "procs": procs, "journal_lines": journal.count("\n"),
                  "journal_hits": sum(journal.count(s) for s in secrets)}))
"""


def _env(host, path):
    with host.sudo():
        content = host.file(path).content_string
    values = {}
    for line in content.splitlines():
        if line and not line.startswith("#"):
            key, _sep, value = line.partition("=")
            values[key] = value.strip('"')
    return values


@pytest.fixture(scope="module")
def address(host):
    variables = host.ansible.get_variables()
    return variables.get("ansible_host", variables["inventory_hostname"])


def _proxy_key(host, role):
    """A public port's key, read (as root) from its proxy's root-only configuration."""
    with host.sudo():
        text = host.file(PROXY_CFG[role]).content_string
    return re.search(r'"Bearer ([^"]+)"', text).group(1)


@pytest.fixture(scope="module")
def api_key(host):
    return _proxy_key(host, "vllm_server")


@pytest.fixture(scope="module")
def ai_key(host):
    """The AI server callers' key: only in its proxy's configuration."""
    return _proxy_key(host, "ai_server")


@pytest.fixture(scope="module")
def keys(api_key, ai_key):
    return {"vllm_server": api_key, "ai_server": ai_key}


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _call(url, method="GET", headers=None):
    """(status, headers, body bytes) of one request; a POST/PUT sends a small JSON object."""
    data = b'{"model": "%s", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}' % BASE_MODEL.encode() \
        if method in ("POST", "PUT") else None
    hdrs = {"Content-Type": "application/json"} if data else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# converge.yml opens /metrics to the controller's /24 (test_an_open_path_answers_only_its_sources): the one route of
# the list the controller may reach without the key here, as check 5c leaves out what vllm_server_open_paths opens
OPENED_TO_CONTROLLER = {("vllm_server", "/metrics")}
ROUTES = [(role, r["method"], r["path"]) for role, routes in MUST_REFUSE.items() for r in routes
          if (role, r["path"]) not in OPENED_TO_CONTROLLER]


@pytest.mark.parametrize("unit", ["vllm", "ai-server", "vllm-proxy", "ai-server-proxy", "ai-server-ready"])
def test_units_active_and_enabled(host, unit):
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled


@pytest.mark.parametrize(
    ("name", "home"),
    [("vllm", VLLM_DIR), ("aiserver", AI_DIR)],
)
def test_service_users_are_unprivileged_system_users(host, name, home):
    user = host.user(name)
    assert user.exists
    assert 0 < user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"
    assert user.home == home


@pytest.mark.parametrize(
    ("path", "owner", "mode"),
    [
        (VLLM_DIR, "vllm", 0o750),
        (f"{VLLM_DIR}/venv", "vllm", None),
        (f"{VLLM_DIR}/.cache/huggingface", "vllm", 0o750),
        (AI_DIR, "aiserver", 0o750),
        (f"{AI_DIR}/resources/s3", "aiserver", 0o750),
        (f"{AI_DIR}/.venv", "aiserver", None),
    ],
)
def test_directories(host, path, owner, mode):
    with host.sudo():
        d = host.file(path)
        assert d.is_directory
        assert d.user == owner
        if mode is not None:
            assert d.mode == mode


@pytest.mark.parametrize(
    ("path", "owner"),
    [(f"{VLLM_DIR}/vllm.env", "root"), (f"{AI_DIR}/.env", "aiserver")],
)
def test_env_files_are_private(host, path, owner):
    with host.sudo():
        f = host.file(path)
        assert f.is_file
        assert f.user == owner
        assert f.mode == 0o600


def test_ai_server_env_has_exactly_the_runbook_keys(host, api_key, ai_key):
    env = _env(host, f"{AI_DIR}/.env")
    assert list(env) == RUNBOOK_ENV_KEYS
    assert ai_key not in env.values()   # the callers' key is the proxy's, not the app's
    assert env["APP_ENV"] == "production"
    # vLLM's own port on loopback, behind its proxy (the key still sent: vLLM checks it on /v1)
    assert env["VLLM_BASE_URL"] == "http://127.0.0.1:18001/v1"
    assert env["VLLM_API_KEY"] == api_key
    assert env["VLLM_MODEL"] == BASE_MODEL
    assert env["VLLM_LORA_ADAPTER_EASYCONTRACT"] == "easycontract"
    assert env["VLLM_LORA_ADAPTER_CHECKLIST"] == "checklist"
    assert not env["BACKEND_CALLBACK_BASE_URL"].rstrip("/").endswith("/v1")
    assert env["HTTP_TIMEOUT_SEC"] == "30"


def test_vllm_env_holds_scalars_only(host):
    env = _env(host, f"{VLLM_DIR}/vllm.env")
    # behind the proxy vLLM holds no key: the proxy checks it on every path (a rotation reloads only the proxy)
    assert "VLLM_API_KEY" not in env
    for key, value in env.items():
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)
        assert "{" not in value and " " not in value


def test_unit_files(host):
    unit = host.file("/etc/systemd/system/vllm.service")
    assert unit.user == "root" and unit.mode == 0o644
    text = unit.content_string
    assert "--api-key" not in text
    assert "User=vllm" in text
    for needle in ("Restart=always", "RestartSec=10", "TimeoutStartSec=600", "LimitNOFILE=65536",
                   "LimitNPROC=65536", "HF_HOME=/app/vllm-server/.cache/huggingface", "NoNewPrivileges=yes"):
        assert needle in text
    # gpu_host found libcuda.so.1 through the dynamic linker (gpu_host_cuda_lib_dir empty): no LD_LIBRARY_PATH
    assert "LD_LIBRARY_PATH" not in text
    ai = host.file("/etc/systemd/system/ai-server.service").content_string
    assert re.search(r"^After=.*vllm\.service", ai, re.M)
    assert re.search(r"^Wants=.*vllm\.service", ai, re.M)
    assert "uvicorn main:app --host 127.0.0.1 --port 18000" in ai
    assert "User=aiserver" in ai and "RestartSec=5" in ai


@pytest.mark.parametrize("unit", ["vllm", "ai-server", "vllm-proxy", "ai-server-proxy", "ai-server-ready"])
def test_units_pass_systemd_analyze_verify_and_run_what_is_on_disk(host, unit):
    """The roles verify each unit before writing it; after converge systemd runs exactly the files on disk."""
    with host.sudo():
        verify = host.run("d=$(mktemp -d) && cp /etc/systemd/system/%s.service $d/ && "
                          "systemd-analyze verify --man=no $d/%s.service; r=$?; rm -rf $d; exit $r" % (unit, unit))
        props = host.run("systemctl show %s -p NeedDaemonReload -p ActiveState" % unit).stdout
    assert verify.rc == 0, verify.stdout + verify.stderr
    assert "NeedDaemonReload=no" in props and "ActiveState=active" in props


def test_no_marker_files_on_the_host(host):
    """Restarts and installs are derived from the host's state (units, file times, the venvs), not from records."""
    with host.sudo():
        found = host.run("find /app /opt/llmops-uv -name '.llmops-*' 2>/dev/null").stdout.split()
    assert found == []


def test_vllm_process_arguments(host):
    """Each LoRA adapter reached vLLM as one JSON argument, exactly as configured; no key argument."""
    pid = host.check_output("systemctl show -p MainPID --value vllm")
    assert pid.isdigit() and int(pid) > 0
    with host.sudo():
        raw = host.check_output(f"cat /proc/{pid}/cmdline | base64 -w0")
    argv = base64.b64decode(raw).decode().split("\0")[:-1]
    assert "--api-key" not in argv
    assert argv[argv.index("serve") + 1] == BASE_MODEL
    i = argv.index("--lora-modules") + 1
    modules = []
    while i < len(argv) and not argv[i].startswith("--"):
        modules.append(json.loads(argv[i]))
        i += 1
    assert modules == [{"name": n, "path": p} for n, p in ADAPTERS.items()]
    assert argv[argv.index("--max-lora-rank") + 1] == "16"
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.85"
    proc_user = host.check_output(f"ps -o user= -p {pid}") if host.exists("ps") else None
    if proc_user is not None:
        assert proc_user.strip() == "vllm"


def test_secrets_absent_from_process_arguments_and_journal(host):
    with host.sudo():
        out = host.check_output("python3 -c %s", SCAN_SCRIPT)
    result = json.loads(out)
    assert result["scanned"] > 10
    assert result["journal_lines"] > 10
    assert result["procs"] == [], f"secret found in the command line of pids {result['procs']}"
    assert result["journal_hits"] == 0


def test_models_listed_with_key_and_401_without(address, api_key):
    status, _body = _get(f"http://{address}:8001/v1/models")
    assert status == 401
    status, _body = _get(f"http://{address}:8001/v1/models", {"Authorization": "Bearer wrong-key-123"})
    assert status == 401
    status, body = _get(f"http://{address}:8001/v1/models", {"Authorization": f"Bearer {api_key}"})
    assert status == 200
    ids = [m["id"] for m in body["data"]]
    assert ids[0] == BASE_MODEL
    assert sorted(ids[1:]) == sorted(ADAPTERS)
    by_id = {m["id"]: m for m in body["data"]}
    for name, path in ADAPTERS.items():
        assert by_id[name]["root"] == path
        assert by_id[name]["parent"] == BASE_MODEL


def test_vllm_health(address):
    status, _body = _get(f"http://{address}:8001/health")
    assert status == 200


def test_ai_server_health_reports_vllm(address):
    status, body = _get(f"http://{address}:8000/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["vllm"]["reachable"] is True
    assert body["storage_ready"] is True


def test_ai_server_saves_files_under_resources_s3(host, address, ai_key):
    data = b"molecule verify\n"
    req = urllib.request.Request(f"http://{address}:8000/files/verify.txt", data=data, method="PUT",
                                 headers={"Authorization": f"Bearer {ai_key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    with host.sudo():
        f = host.file(f"{AI_DIR}/resources/s3/verify.txt")
        assert f.content == data
        assert f.user == "aiserver"


def test_ai_server_chat_uses_the_adapter(address, ai_key):
    body = json.dumps({"task": "checklist", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(f"http://{address}:8000/v1/chat", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {ai_key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["model"] == "checklist"


@pytest.mark.parametrize("unit", ["vllm", "ai-server", "vllm-proxy", "ai-server-proxy", "ai-server-ready"])
def test_units_are_sandboxed(host, unit):
    out = host.check_output(f"systemd-analyze security --no-pager {unit}.service")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out)
    assert match, out[-500:]
    score, band = float(match.group(1)), match.group(2)
    assert band in ("SAFE", "OK"), f"{unit}: {score} {band}"


# --- the authenticating proxies (issue 9: vLLM's key guarded only /v1; the AI server had no key at all) --------------
@pytest.mark.parametrize(("role", "method", "path"), ROUTES)
def test_every_route_refuses_a_missing_or_wrong_key(address, role, method, path):
    url = f"http://{address}:{PORTS[role]}{path}"
    for headers in ({}, {"Authorization": "Bearer wrong-key-123"}, {"Authorization": "wrong-key-123"}):
        status, hdrs, body = _call(url, method, headers)
        assert status == 401, f"{method} {path} on {role}'s port with {sorted(headers) or 'no key'}: HTTP {status}"
        assert json.loads(body) == {"error": "Unauthorized"}
        assert hdrs.get("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize(("role", "method", "path"), ROUTES)
def test_every_route_passes_with_the_right_key(address, keys, role, method, path):
    """With the key the request reaches the service: whatever it answers, it is not the proxy's 401."""
    status, _hdrs, body = _call(f"http://{address}:{PORTS[role]}{path}", method, {"Authorization": f"Bearer {keys[role]}"})
    assert status != 401 and b'"Unauthorized"' not in body, f"{method} {path}: HTTP {status}"
    assert status < 500, f"{method} {path}: HTTP {status} {body[:200]!r}"


def test_the_other_keys_do_not_open_the_other_port(address, keys):
    assert _call(f"http://{address}:8000/v1/chat", "POST", {"Authorization": f"Bearer {keys['vllm_server']}"})[0] == 401
    assert _call(f"http://{address}:8001/v1/models", "GET", {"Authorization": f"Bearer {keys['ai_server']}"})[0] == 401


@pytest.mark.parametrize(("port", "path"), [(8001, "/health"), (8000, "/health"), (8000, "/ready"), (8001, "/health?x=1")])
def test_health_checks_stay_open(address, port, path):
    assert _call(f"http://{address}:{port}{path}")[0] == 200


def test_an_open_path_answers_only_its_sources(host, address):
    """converge opens /metrics to the controller's /24 and /version to 192.0.2.0/24 (which excludes it)."""
    status, _h, body = _call(f"http://{address}:8001/metrics")
    assert status == 200 and b"vllm:num_requests_running" in body
    assert _call(f"http://{address}:8001/version")[0] == 401
    # /metrics from the host itself (source 127.0.0.1, outside the range): refused
    probe = host.run("python3 -c \"import urllib.request,urllib.error\n"
                     "try: print(urllib.request.urlopen('http://127.0.0.1:8001/metrics', timeout=5).status)\n"
                     "except urllib.error.HTTPError as e: print(e.code)\"")
    assert probe.stdout.strip() == "401", probe.stdout + probe.stderr


def test_the_services_listen_on_loopback_only_and_the_proxies_on_the_public_ports(host):
    with host.sudo():
        out = host.check_output("ss -Hltnp")
    listeners = {}
    for line in out.splitlines():
        fields = line.split()
        local, proc = fields[3], " ".join(fields[5:])
        addr, _sep, port = local.rpartition(":")
        listeners.setdefault(int(port), []).append((addr, proc))
    assert {addr for addr, _p in listeners[18001]} == {"127.0.0.1"}, listeners[18001]
    assert {addr for addr, _p in listeners[18000]} == {"127.0.0.1"}, listeners[18000]
    for port in (8000, 8001):
        assert all('"haproxy"' in proc for _a, proc in listeners[port]), listeners[port]
    public = sorted(p for p, entries in listeners.items() if any(a not in ("127.0.0.1", "[::1]") for a, _p in entries))
    assert public == [22, 8000, 8001], listeners


@pytest.mark.parametrize("role", ["vllm_server", "ai_server"])
def test_proxy_configuration_is_roots_only(host, role):
    with host.sudo():
        cfg = host.file(PROXY_CFG[role])
        assert cfg.user == "root" and cfg.group == "root" and cfg.mode == 0o600
        assert cfg.content_string.startswith("#")   # ansible_managed, commented
        check = host.run("haproxy -c -q -f %s" % PROXY_CFG[role])
    assert check.rc == 0, check.stderr
    unit = host.file("/etc/systemd/system/%s.service" % os.path.basename(PROXY_CFG[role])[:-4]).content_string
    assert "Bearer" not in unit and "-Ws -f %s" % PROXY_CFG[role] in unit


# --- readiness apart from liveness (issue 11) ------------------------------------------------------------------------
DRAIN = "/var/lib/llmops/drain"


def _ready(address):
    status, _h, body = _call(f"http://{address}:8000/ready")
    return status, json.loads(body)


def _wait_ready(address, want, timeout=30):
    import time  # pylint: disable=import-outside-toplevel
    deadline = time.monotonic() + timeout
    while True:
        got = _ready(address)
        if got[0] == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_ready_is_the_collections_checker_on_loopback(host, address):
    assert _ready(address) == (200, {"ready": True, "reason": "ready"})
    with host.sudo():
        out = host.check_output("ss -Hltnp sport = :18002")
        env = host.file("/var/lib/llmops/ai-server-ready.env")
        assert env.user == "root" and env.mode == 0o600
        script = host.file("/usr/local/lib/llmops/ai_ready.py")
        assert script.user == "root" and script.mode == 0o644
    assert out.split()[3] == "127.0.0.1:18002", out


def test_only_root_can_drain(host):
    drain_dir = host.file(os.path.dirname(DRAIN))
    assert drain_dir.user == "root" and drain_dir.group == "root" and drain_dir.mode == 0o755
    for user in ("aiserver", "vllm", "llmops-ready", "haproxy"):
        with host.sudo(user):
            assert host.run(f"touch {DRAIN}").rc != 0, user
    assert not host.file(DRAIN).exists


def test_the_drain_file_turns_ready_to_503_while_health_stays_200(host, address):
    with host.sudo():
        host.check_output(f"touch {DRAIN}")
    try:
        assert _ready(address) == (503, {"ready": False, "reason": "draining"})
        assert _call(f"http://{address}:8000/health")[0] == 200   # liveness
    finally:
        with host.sudo():
            host.check_output(f"rm -f {DRAIN}")
    assert _ready(address) == (200, {"ready": True, "reason": "ready"})


def test_ready_follows_vllm_while_the_ai_server_stays_alive(host, address):
    with host.sudo():
        host.check_output("systemctl stop vllm")
    try:
        assert _ready(address) == (503, {"ready": False, "reason": "vLLM is not healthy"})
        assert _call(f"http://{address}:8000/health")[0] == 200
    finally:
        with host.sudo():
            host.check_output("systemctl start vllm")
    assert _wait_ready(address, 200) == (200, {"ready": True, "reason": "ready"})

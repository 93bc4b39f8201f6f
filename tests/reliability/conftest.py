"""Fixtures of the reliability suite: ONE real systemd test host and ONE local Compute API per session.

Order of the files matters (pytest runs them by name): bad inputs and secrets/hardening look at the
converged host first, the fault tests then break it on purpose and repair it.

At the end of a run the results go to results/reliability/latest.json (always) and, for a run of the
whole suite (no -k/-m, no file or test selected), to docs/reliability.md and
tests/reliability/last-results.json, written by report.py from those results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.reliability import lib, report  # noqa: E402

PROJECT = "llmops-rel"
_T0 = time.time()


def _host_skip_reason():
    if os.geteuid() != 0:
        return "the test-host harness needs root"
    if not lib.HARNESS.exists():
        return "tests/harness/testhosts.py is missing"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn is missing (make hostdeps)"
    return None


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reliability")
    d.chmod(0o700)
    return d


@pytest.fixture(scope="session")
def secrets_() -> dict:
    """This run's secrets: unique and random, so finding one anywhere is a real leak."""
    lib.SECRETS.update({
        "vllm_server_api_key": lib.new_secret("vk"),
        "ai_server_backend_internal_token": lib.new_secret("bt"),
        "ai_server_api_key": lib.new_secret("ak"),
        "gce_access_token": lib.new_secret("at"),
    })
    return dict(lib.SECRETS)


@pytest.fixture(scope="session")
def api(workdir):
    """The local Compute API (tests/compute_api) in a thread of this process, on loopback."""
    srv = lib.ComputeApi(PROJECT)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def testhost(workdir):
    reason = _host_skip_reason()
    if reason:
        pytest.skip(reason)
    from tests.harness import testhosts

    state = workdir / "hosts"
    t0 = time.monotonic()
    try:
        testhosts.create(str(state), count=1, prefix="rel")
        name, hv = lib.load_inventory(state / "inventory.yml")
        host = lib.TestHost(state=state, inventory=state / "inventory.yml", name=name, address=hv["ansible_host"],
                            key=Path(hv["ansible_ssh_private_key_file"]))
        # What the ubuntu-accelerator image carries and cannot exist here: nvidia-smi printing an L4, the
        # driver's libcuda.so.1 (empty stand-in), and the vLLM stand-in wheel (tests/standin).
        wheel = subprocess.run([sys.executable, str(ROOT / "tests/standin/build_wheel.py"), str(workdir / "wheel")],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        empty = workdir / "empty"
        empty.write_bytes(b"")
        testhosts.copy_in(str(state), name, str(ROOT / "tests/standin/nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
        testhosts.copy_in(str(state), name, str(empty), "/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        testhosts.copy_in(str(state), name, wheel, lib.STANDIN_WHEEL_ON_HOST)
        lib.RESULTS["notes"].append("test host %s (%s) ready in %.1f s" % (name, host.address, time.monotonic() - t0))
        yield host
    finally:
        try:
            testhosts.destroy(str(state))
        except Exception as exc:  # noqa: BLE001  (report, do not mask the test's own failure)
            print("WARNING: destroying the test host failed: %s" % exc, file=sys.stderr)


class Deployment:
    """configure.yml (the production entry point) against the test host, with this run's good inputs."""

    def __init__(self, host: lib.TestHost, workdir: Path, secrets: dict):
        self.host, self.workdir, self.secrets = host, workdir, secrets
        self.good = {
            "gce_vllm_hosts": "testhosts",
            "gce_vllm_connect_timeout": 60,
            "vllm_server_api_key": secrets["vllm_server_api_key"],
            "ai_server_backend_internal_token": secrets["ai_server_backend_internal_token"],
            "ai_server_api_key": secrets["ai_server_api_key"],
            "ai_server_backend_callback_base_url": "http://127.0.0.1:9/api",
            "vllm_server_pip_spec": lib.STANDIN_WHEEL_ON_HOST,
            "vllm_server_stage_models": False,   # the stand-in's venv has no huggingface_hub, no hub is reachable
            "vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "2"},
            "vllm_server_health_timeout": 60,
        }
        self.good_file = workdir / "good-vars.yml"   # like a vault file: 0600, never on a command line
        self._n = 0
        self.set_good()

    def set_good(self, **changes):
        """Change the deployment's desired state (what every later run applies)."""
        self.good.update(changes)
        self.good_file.write_text(yaml.safe_dump(self.good))
        self.good_file.chmod(0o600)

    def _cmd(self, playbook, extra, args):
        self._n += 1
        cmd = [lib.VENV_BIN / "ansible-playbook", "-i", self.host.inventory, "-e", "@%s" % self.good_file]
        if extra:
            f = self.workdir / ("extra-%03d.json" % self._n)
            f.write_text(json.dumps(extra))
            f.chmod(0o600)
            cmd += ["-e", "@%s" % f]
        return cmd + list(args) + [playbook]

    def log(self, name):
        return self.workdir / ("%03d-%s.log" % (self._n, name))

    def configure(self, extra=None, args=(), name="configure", timeout=600, playbook=lib.CONFIGURE, cwd=lib.ROOT) -> lib.Run:
        cmd = self._cmd(playbook, extra, args)
        return lib.run(cmd, timeout=timeout, cwd=cwd, log=self.log(name))

    def configure_killed(self, marker, delay, extra=None, name="killed") -> lib.Run:
        cmd = self._cmd(lib.CONFIGURE, extra, ())
        return lib.run_until(cmd, marker, delay, log=self.log(name))

    def configure_watched(self, on_line, extra=None, name="watched") -> lib.Run:
        """configure.yml, calling on_line(line, proc) for each line of its output as it is printed."""
        cmd = self._cmd(lib.CONFIGURE, extra, ())
        return lib.run_streamed(cmd, on_line, log=self.log(name))

    def healthy(self, timeout=60.0) -> bool:
        return (lib.wait_http(self.host.url(8001, "/health"), timeout=timeout) is not None
                and lib.wait_http(self.host.url(8000, "/health"), timeout=timeout) is not None)


@pytest.fixture(scope="session")
def deployment(testhost, workdir, secrets_) -> Deployment:
    """The converged deployment; its first full run is made with -vvv and kept for the secret scan."""
    dep = Deployment(testhost, workdir, secrets_)
    with lib.CmdlineWatch(secrets_) as watch:   # every process's command line, sampled during the run
        res = dep.configure(args=["-vvv"], name="first-converge-vvv")
    dep.first_watch = watch
    dep.first_run = res
    dep.first_log = dep.log("first-converge-vvv")
    lib.RESULTS["notes"].append("first converge (configure.yml -vvv): rc=%d in %.1f s" % (res.rc, res.seconds))
    if res.rc != 0:
        from tests.harness import testhosts
        pytest.fail("the first converge failed:\n%s\n\n%s" % (
            res.tail(6000), testhosts.diagnose(str(testhost.state), testhost.name)))
    return dep


@pytest.fixture
def converged(deployment) -> Deployment:
    """The deployment, healthy (a test that broke it must repair it; this checks)."""
    if not deployment.healthy(timeout=5):
        res = deployment.configure(name="repair")
        assert res.rc == 0 and deployment.healthy(), "could not restore the deployment:\n" + res.tail()
    return deployment


# --------------------------------------------------------------------------------------------------
# Writing the results


def pytest_sessionfinish(session, exitstatus):
    if not any(lib.RESULTS[k] for k in ("bad_inputs", "faults", "secrets", "hardening")):
        return
    data = report.collect(lib.RESULTS, seconds=time.time() - _T0, exitstatus=int(exitstatus),
                          failed=session.testsfailed, collected=session.testscollected)
    # The suite's own outputs are a place secrets could leak to: check them before writing.
    text = json.dumps(data)
    found = sum(text.count(v) + report.render(data).count(v) for v in lib.SECRETS.values())
    data["secrets"].append({"where": "the suite's own results (this page, last-results.json)", "how": "substring search",
                            "found": found})
    data["summary"]["secret_places_checked"] += 1
    data["summary"]["secrets_found"] += found
    if found:
        print("ERROR: a secret is in the reliability results; not writing them", file=sys.stderr)
        session.exitstatus = 1
        return
    out = ROOT / "results" / "reliability"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(data, indent=1, sort_keys=True))
    if lib.whole_suite(session.config, Path(__file__).parent) and os.environ.get("LLMOPS_RELIABILITY_DOCS", "1") != "0":
        (ROOT / "docs" / "reliability.md").write_text(report.render(data))
        (Path(__file__).with_name("last-results.json")).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

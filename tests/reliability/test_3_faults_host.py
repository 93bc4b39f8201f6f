"""Faults on the host: processes killed while serving, slow and crash-looping vLLM, a controller killed
mid-converge, and drift. Each test breaks the deployment on purpose; the `converged` fixture checks (and
if need be restores) health before a test that needs it. The order saves converge runs: each run that
injects a fault also repairs the fault of the test before it.
"""

from __future__ import annotations

import json
import re
import threading
import time

from tests.reliability import lib

VLLM, AI = "vllm", "ai-server"


class HealthProbe:
    """Polls vLLM /health from the controller every 0.1 s in a thread; counts 200s."""

    def __init__(self, url):
        self.url, self.ok, self.polls = url, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.polls += 1
            if lib.http_status(self.url, timeout=0.5) == 200:
                self.ok += 1
            self._stop.wait(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def _pids(host):
    return host.main_pid(VLLM), host.main_pid(AI)


def _models(host, key):
    import urllib.request

    req = urllib.request.Request(host.url(8001, "/v1/models"), headers={"Authorization": "Bearer " + key})
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (test host)
        return json.load(r)["data"]


def _kill_and_recover(dep, unit, port):
    host = dep.host
    before = host.props(unit, "MainPID", "NRestarts")
    t0 = time.monotonic()
    host.sh("kill -KILL %s" % before["MainPID"])
    # wait until the old process is gone, then until it answers again
    lib.wait_http(host.url(port, "/health"), want=None, timeout=5, interval=0.05)
    recovered = lib.wait_http(host.url(port, "/health"), timeout=60, interval=0.1)
    elapsed = time.monotonic() - t0 if recovered is not None else None
    after = host.props(unit, "MainPID", "NRestarts", "RestartUSec")
    return before, after, elapsed


def test_vllm_killed_while_serving_is_restarted_by_systemd(converged, secrets_):
    before, after, elapsed = _kill_and_recover(converged, VLLM, 8001)
    served = sorted(c["id"] for c in _models(converged.host, secrets_["vllm_server_api_key"])) if elapsed else []
    ok = elapsed is not None and after["MainPID"] != before["MainPID"] and len(served) == 3
    lib.record("faults", fault="vLLM process SIGKILLed while serving", injected="kill -KILL MainPID",
               expected="systemd restarts it (Restart=always, RestartSec=10); healthy again",
               observed="new MainPID, NRestarts %s -> %s; /v1/models lists %s"
                        % (before["NRestarts"], after["NRestarts"], ", ".join(served)),
               survived=ok, recovery_s=elapsed, figure="%.1f s to healthy (RestartSec 10 s + 2 s start)" % (elapsed or -1))
    assert elapsed is not None, "vLLM did not come back within 60 s"
    assert ok, (before, after, served)


def test_ai_server_killed_while_serving_is_restarted_by_systemd(converged):
    before, after, elapsed = _kill_and_recover(converged, AI, 8000)
    ok = elapsed is not None and after["MainPID"] != before["MainPID"]
    lib.record("faults", fault="AI server process SIGKILLed while serving", injected="kill -KILL MainPID",
               expected="systemd restarts it (Restart=always, RestartSec=5); healthy again",
               observed="new MainPID, NRestarts %s -> %s" % (before["NRestarts"], after["NRestarts"]),
               survived=ok, recovery_s=elapsed, figure="%.1f s to healthy (RestartSec 5 s + uvicorn start)" % (elapsed or -1))
    assert ok, (before, after, elapsed)


def test_vllm_slower_than_the_timeout_fails_with_its_journal(converged):
    extra = {"vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "40"}, "vllm_server_health_timeout": 5}
    res = converged.configure(extra, name="slow-vllm")
    journal = "vLLM API server version" in res.out and "non-default args" in res.out
    said = "did not become healthy within 5" in res.flat and "journal lines" in res.out
    lib.record("faults", fault="vLLM slower than the health timeout", injected="VLLM_STANDIN_STARTUP_DELAY=40 s, "
               "vllm_server_health_timeout=5", expected="play fails with the unit's last journal lines",
               observed="rc=%d after %.0f s; timeout named: %s; vLLM's own log lines in the failure: %s"
               % (res.rc, res.seconds, said, journal), survived=res.rc != 0 and said and journal)
    assert res.rc != 0, res.tail()
    assert said, res.tail()
    assert journal, "the failure does not carry vLLM's journal:\n" + res.tail()


def test_crash_looping_vllm_is_never_reported_healthy(deployment):
    converged = deployment   # any starting state will do: this run rewrites vllm.env and (re)starts vLLM
    extra = {"vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "3", "VLLM_STANDIN_CRASH": "1"},
             "vllm_server_health_timeout": 14}
    # ... but not a healthy vLLM of the test before (its 40 s start-up may end while this run is still on its way
    # to the restart, on a loaded machine): every 200 counted below must come from the crash-looping one
    converged.host.sh("systemctl stop vllm")
    with HealthProbe(converged.host.url(8001, "/health")) as probe:
        res = converged.configure(extra, name="crash-loop")
    m = re.search(r"NRestarts=(\d+)", res.out)
    restarts = int(m.group(1)) if m else 0
    oom = "CUDA out of memory" in res.out
    ok = res.rc != 0 and probe.ok == 0 and "is not serving" in res.out and oom
    lib.record("faults", fault="vLLM crash-looping (dies 1 s after start)", injected="VLLM_STANDIN_CRASH=1",
               expected="never reported healthy; the failure says so",
               observed="rc=%d; /health answered 200 %d times in %d probes; failure shows NRestarts=%d and the "
                        "crash (CUDA OOM) from the journal: %s" % (res.rc, probe.ok, probe.polls, restarts, oom),
               survived=ok)
    assert res.rc != 0, res.tail()
    assert probe.ok == 0
    assert "is not serving" in res.out and oom, res.tail()
    assert restarts >= 1, "the failure does not show systemd restarting it:\n" + res.tail()


LEFTOVERS = ("find /app /etc/systemd/system -xdev \\( -name '.ansible_tmp*' -o -name '*.tmp' -o -name '.#*' \\) "
             "-print 2>/dev/null")


def _installed_url(host):
    """The URL pip recorded for the installed vLLM stand-in (its direct_url.json, PEP 610): what the venv holds."""
    out = host.sh("cat /app/vllm-server/venv/lib/python3*/site-packages/vllm_standin-*.dist-info/direct_url.json", check=False)
    try:
        return json.loads(out.stdout).get("url")
    except ValueError:
        return None


def test_converge_killed_during_the_vllm_install_converges_next_run(deployment):
    """SIGKILL of ansible-playbook (and its ssh) while pip installs vLLM; the next run must finish the job
    (it also repairs the crash loop left by the test before: any starting state will do)."""
    converged = deployment
    host = converged.host
    # a new spec (the same wheel at another path: another URL in the venv's record): the role must (re)install
    wheel = "/opt/standin/reinstall/" + lib.STANDIN_WHEEL_ON_HOST.rsplit("/", 1)[1]
    host.sh("mkdir -p /opt/standin/reinstall && cp %s %s" % (lib.STANDIN_WHEEL_ON_HOST, wheel))
    spec = "file://" + wheel
    extra = {"vllm_server_pip_spec": spec, "vllm_server_pip_extra_args": ["--force-reinstall", "--no-deps"]}
    killed = converged.configure_killed("TASK [llmops.gce_vllm.vllm_server : Install vLLM", 1.0, extra, name="kill-install")
    assert killed.killed, "the run was not killed mid-install:\n" + killed.tail()
    url_after_kill = _installed_url(host)
    res = converged.configure(extra, name="after-kill-install")
    url = _installed_url(host)
    works = host.sh("/app/vllm-server/venv/bin/vllm --version", check=False)
    leftovers = host.sh(LEFTOVERS).stdout.split()
    markers = host.sh("ls /app/vllm-server/.llmops-applied /app/vllm-server/venv/.llmops-pip-spec 2>/dev/null || true").stdout.split()
    healthy = converged.healthy(timeout=30)
    ok = res.rc == 0 and url == spec and works.returncode == 0 and not leftovers and healthy and not markers
    lib.record("faults", fault="converge SIGKILLed during the vLLM install", injected="SIGKILL to ansible-playbook's "
               "process group 1 s into the install task",
               expected="the next run converges; nothing half-written",
               observed="venv after the kill: %s; next run rc=%d (changed=%d); vllm --version rc=%d; temp files left: %d; "
                        "healthy: %s" % ("old install (new spec not installed)" if url_after_kill != spec else "new spec",
                                         res.rc, res.changed(), works.returncode, len(leftovers), healthy),
               survived=ok, figure="next run %.0f s" % res.seconds)
    assert res.rc == 0, res.tail()
    assert url == spec and works.returncode == 0, (url, works.stdout, works.stderr)
    assert not leftovers, leftovers
    assert not markers, "marker files on the host: %s" % markers
    assert healthy
    converged.set_good(vllm_server_pip_spec=spec)   # the desired state from now on (no reinstall back)


def test_converge_killed_during_the_unit_change_converges_next_run(converged, secrets_):
    """SIGKILL right after the new unit file is written, before the run phase (daemon-reload, restart) ran:
    the next run must still bring the RUNNING service to the new configuration (the 'lost handler' case)."""
    host = converged.host
    unit = "/etc/systemd/system/vllm.service"
    old = host.read(unit)
    extra = {"vllm_server_max_model_len": 4096}
    killed = converged.configure_killed("TASK [llmops.gce_vllm.venv_service : Read whether the running process matches the host for vllm]",
                                        0.0, extra, name="kill-unit")
    assert killed.killed, "the run was not killed before the run phase:\n" + killed.tail()
    mid = host.read(unit)
    whole = mid in (old,) or ("--max-model-len 4096" in mid and mid.rstrip().endswith("WantedBy=multi-user.target"))
    leftovers = host.sh(LEFTOVERS).stdout.split()
    res = converged.configure(extra, name="after-kill-unit")
    healthy = converged.healthy(timeout=30)
    reload_due = host.props(VLLM, "NeedDaemonReload")["NeedDaemonReload"]
    served = {c["id"]: c for c in _models(host, secrets_["vllm_server_api_key"])} if healthy else {}
    running_len = next((c.get("max_model_len") for c in served.values() if c.get("max_model_len")), None)
    ok = whole and not leftovers and res.rc == 0 and reload_due == "no" and running_len == 4096
    lib.record("faults", fault="converge SIGKILLed during the unit change", injected="SIGKILL to ansible-playbook's "
               "process group when the run phase starts (new unit written, daemon-reload/restart not yet run)",
               expected="the next run converges: unit complete, systemd reloaded, the running vLLM uses the new unit",
               observed="unit after the kill complete: %s; temp files: %d; next run rc=%d; NeedDaemonReload=%s; "
                        "running max_model_len=%s" % (whole, len(leftovers), res.rc, reload_due, running_len),
               survived=ok)
    converged.set_good(**extra)   # the desired state from now on
    assert whole, "half-written unit:\n" + mid
    assert not leftovers, leftovers
    assert res.rc == 0, res.tail()
    assert reload_due == "no", "the next run left systemd with a stale unit (NeedDaemonReload=yes)"
    assert running_len == 4096, "the running vLLM still serves max_model_len=%s: the restart was lost" % running_len


def test_converge_killed_before_the_restart_for_an_env_change_converges_next_run(converged):
    """SIGKILL when the restart for a changed vllm.env starts: the next run must still restart vLLM
    so that the RUNNING process has the new environment (systemd reads EnvironmentFile only at start)."""
    host = converged.host
    extra = {"vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "1"}}
    killed = converged.configure_killed("TASK [llmops.gce_vllm.venv_service : Enable and (re)start vllm]", 0.0, extra,
                                        name="kill-env-restart")
    assert killed.killed, "the run was not killed at the restart:\n" + killed.tail()
    on_disk = 'VLLM_STANDIN_STARTUP_DELAY="1"' in host.sh("cat /app/vllm-server/vllm.env").stdout
    res = converged.configure(extra, name="after-kill-env-restart")
    converged.set_good(**extra)   # the desired state from now on
    healthy = converged.healthy(timeout=30)
    pid = host.main_pid(VLLM)
    running = host.sh("tr '\\0' '\\n' < /proc/%d/environ | grep '^VLLM_STANDIN_STARTUP_DELAY=' || true" % pid).stdout.strip()
    ok = on_disk and res.rc == 0 and healthy and running == "VLLM_STANDIN_STARTUP_DELAY=1"
    lib.record("faults", fault="converge SIGKILLed before the restart for a changed vllm.env",
               injected="SIGKILL to ansible-playbook's process group when the (re)start task starts",
               expected="the next run restarts vLLM: the running process has the new environment",
               observed="new vllm.env on disk after the kill: %s; next run rc=%d changed=%d; running vLLM has %s"
                        % (on_disk, res.rc, res.changed(), running or "(none)"), survived=ok)
    assert on_disk, "the kill came before vllm.env was written"
    assert res.rc == 0, res.tail()
    assert running == "VLLM_STANDIN_STARTUP_DELAY=1", "the running vLLM still has %s: the restart was lost" % running


def test_drift_env_file_edited_by_hand(converged):
    host = converged.host
    env = "/app/vllm-server/vllm.env"
    good = host.sh("md5sum < %s" % env).stdout
    v0, a0 = _pids(host)
    host.sh("sed -i 's/^VLLM_STANDIN_STARTUP_DELAY=.*/VLLM_STANDIN_STARTUP_DELAY=\"0\"/' %s && echo 'EXTRA=1' >> %s" % (env, env))
    res = converged.configure(name="drift-env")
    v1, a1 = _pids(host)
    restored = host.sh("md5sum < %s" % env).stdout == good
    mode = host.sh("stat -c '%%a %%U' %s" % env).stdout.strip()
    ok = res.rc == 0 and restored and v1 != v0 and a1 == a0 and mode == "600 root"
    lib.record("faults", fault="drift: vllm.env edited by hand", injected="sed + append on the host",
               expected="restored; vLLM restarted, the AI server not",
               observed="rc=%d changed=%d; restored: %s (%s); vLLM restarted: %s; AI server restarted: %s"
                        % (res.rc, res.changed(), restored, mode, v1 != v0, a1 != a0), survived=ok)
    assert ok, res.tail()


def test_checklist_with_the_ai_server_down_runs_every_check_reports_then_fails(converged, secrets_, workdir):
    """verify.yml (the checklist role) while the AI server is stopped: every check still runs and is recorded, the
    report is written (and says which checks failed, with no secret), and only then does the play fail. The
    report goes to the default checklist_results_dir, results/ under the directory ansible-playbook runs in."""
    host = converged.host
    cwd = workdir / "verify-ai-down"
    cwd.mkdir()
    results = cwd / "results"
    host.sh("systemctl stop ai-server")
    try:
        res = converged.configure({"gce_public_ip": host.address, "checklist_timeout": 3}, playbook=lib.VERIFY,
                                  name="verify-ai-down", cwd=cwd)
    finally:
        host.sh("systemctl start ai-server")
    latest = results / "latest"
    report = json.loads((latest / "report.json").read_text()) if (latest / "report.json").is_file() else {}
    md = (latest / "report.md").read_text() if (latest / "report.md").is_file() else ""
    checks = (report.get("hosts") or [{}])[0].get("checks", [])
    ids = [c["id"] for c in checks if c["id"]]
    failed = sorted(c["id"] or c["name"] for c in checks if not c["passed"])
    leaked = [k for k, v in secrets_.items() if v in md or v in json.dumps(report) or v in res.out]
    ok = (res.rc != 0 and report.get("passed") is False and ids == ["1", "2", "3", "4", "5a", "5b", "5c"]
          and failed == ["4", "5a", "ai_server_vllm_models"] and "| 4 | AI server" in md and "**FAILED**" in md
          and "The checklist failed on" in res.out and not leaked)
    lib.record("faults", fault="AI server down while the checklist runs", injected="systemctl stop ai-server, verify.yml",
               expected="every check runs, the report names the failed ones, then the play fails",
               observed="rc=%d; report passed=%s; failed checks %s of %d; secrets in report/output: %d"
                        % (res.rc, report.get("passed"), failed, len(checks), len(leaked)), survived=ok)
    assert res.rc != 0, res.tail()
    assert report, "no report under %s:\n%s" % (results, res.tail())
    assert ids == ["1", "2", "3", "4", "5a", "5b", "5c"], checks
    assert failed == ["4", "5a", "ai_server_vllm_models"], checks
    assert "| 4 | AI server" in md and "**FAILED**" in md, md
    assert "The checklist failed on" in res.out, res.tail()
    assert not leaked, leaked


def test_drift_service_stopped(converged):
    host = converged.host
    v0 = host.main_pid(VLLM)
    host.sh("systemctl stop ai-server")
    res = converged.configure(name="drift-stopped")
    v1, a1 = _pids(host)
    active = host.props(AI, "ActiveState")["ActiveState"]
    ok = res.rc == 0 and active == "active" and a1 != 0 and v1 == v0 and res.changed() >= 1
    lib.record("faults", fault="drift: ai-server.service stopped", injected="systemctl stop ai-server",
               expected="started again; vLLM untouched",
               observed="rc=%d changed=%d; ai-server %s; vLLM restarted: %s" % (res.rc, res.changed(), active, v1 != v0),
               survived=ok)
    assert ok, res.tail()


def test_drift_unit_deleted(converged):
    host = converged.host
    unit = "/etc/systemd/system/vllm.service"
    good = host.read(unit)
    v0, a0 = _pids(host)
    host.sh("rm -f %s && systemctl daemon-reload" % unit)
    res = converged.configure(name="drift-unit-deleted")
    v1, a1 = _pids(host)
    restored = host.sh("cat %s" % unit, check=False).stdout == good
    props = host.props(VLLM, "LoadState", "ActiveState", "NeedDaemonReload", "UnitFileState")
    ok = (res.rc == 0 and restored and props["LoadState"] == "loaded" and props["ActiveState"] == "active"
          and props["NeedDaemonReload"] == "no" and props["UnitFileState"] == "enabled" and a1 == a0)
    lib.record("faults", fault="drift: vllm.service unit file deleted", injected="rm + daemon-reload on the host",
               expected="unit restored, reloaded, enabled, vLLM running; the AI server not restarted",
               observed="rc=%d changed=%d; restored: %s; %s; vLLM restarted: %s; AI server restarted: %s"
                        % (res.rc, res.changed(), restored, " ".join("%s=%s" % kv for kv in props.items()),
                           v1 != v0, a1 != a0), survived=ok)
    assert ok, (props, res.tail())

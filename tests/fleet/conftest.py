"""The fleet suite's one host set (issue 11): a balancer and three AI-server hosts running the real roles.

One session-scoped set of systemd test hosts: ``lb`` runs the collection's load_balancer role (HAProxy from Debian's
packages), the three backends run gpu_host, vllm_server (the vLLM stand-in wheel) and ai_server (the example app),
deployed by playbooks/configure.yml in one play (all three at once) while the balancer's play runs beside it.
Both test files share it and the helpers below: ``Fleet.play`` (ansible-playbook with the task-timing callback of
tests/bench), ``Load`` (a few clients of the AI server's chat route through the balancer, bounded in count and time,
recording each request's start, latency and status) and ``View`` (the balancer's own view: HAProxy's ``/stats;csv``
on the balancer's loopback, polled, every change of a server's status and its session counter recorded).
Everything measured is saved to results/fleet/fleet.json (read by ``make bench``'s fleet-roll stage).
"""
import json
import os
import secrets
import subprocess
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
if str(ROOT / "tests" / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "bench"))

import benchlib  # noqa: E402
from tests.harness import testhosts  # noqa: E402

WHEEL_ON_HOST = "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl"
# an adapter the roll adds: PEFT's own adapter_config.json (tests/fixtures/lora, r=32) at rank 16, a directory on
# every backend, where vLLM reads an absolute path
EXTRA_ADAPTER = {"name": "fleet-extra", "path": "/srv/lora/fleet-extra"}
STANDIN_ENV = {"VLLM_STANDIN_STARTUP_DELAY": "2"}
CHECK = {"load_balancer_check_interval": 1, "load_balancer_check_timeout": 1,
         "load_balancer_unhealthy_threshold": 2, "load_balancer_healthy_threshold": 2}
RESULTS_FILE = ROOT / "results" / "fleet" / "fleet.json"
T0 = time.time()
RESULTS = {"suite": "fleet", "t0_epoch": T0, "code": benchlib.code_state(), "plays": [], "runs": {}}


def now():
    return round(time.time() - T0, 3)


class Play:
    def __init__(self, name, proc, events, start, end):
        self.name, self.rc, self.start, self.end = name, proc.returncode, start, end
        self.out = proc.stdout + proc.stderr
        self.events = events

    def recap(self, host):
        line = [ln for ln in self.out.splitlines() if ln.startswith(host + " ") and "ok=" in ln][-1]
        return {k: int(v) for k, v in (f.split("=") for f in line.split(":", 1)[1].split())}

    def tail(self, n=5000):
        return self.out[-n:]

    def hooks(self):
        """Per host, the roll's steps from the play's own task timings (epoch seconds, relative to T0)."""
        steps = {"Drain this host (create the drain file)": "drained",
                 "Enable and (re)start vllm": "restart",
                 "Undrain this host (remove the drain file)": "undrained"}
        out = {}
        for e in self.events:
            host = out.setdefault(e["host"], {})
            task = e["task"].split(" : ", 1)[-1]   # the callback's names carry the role: "ns.coll.role : name"
            if task in steps and e["status"] == "ok":
                host[steps[task]] = [round(e["start"] - T0, 3), round(e["end"] - T0, 3)]
            elif task.startswith("Wait until the load balancer shows this host in the wanted state"):
                key = "lb_up" if "drained" in host and "undrained" in host else "lb_down"
                if e["status"] == "ok":
                    host[key] = [round(e["start"] - T0, 3), round(e["end"] - T0, 3)]
            elif e["status"] == "failed":
                host.setdefault("failed", [round(e["end"] - T0, 3), task])
        return {h: v for h, v in out.items() if v}


class Fleet:
    def __init__(self, state, work, hosts, balancer, backends, key, vllm_key, vars_file):
        self.state, self.work, self.balancer, self.backends = state, work, balancer, backends
        self.key, self.vllm_key, self.vars = key, vllm_key, vars_file
        self.addr = {n: hosts[n]["ansible_host"] for n in [balancer] + backends}
        self.balancer_netns = testhosts.host_netns(str(state), balancer)
        self.inventories = [state / "inventory.yml", work / "groups.yml"]
        self.lb_playbook = work / "lb.yml"
        self.lb_playbook.write_text(yaml.safe_dump([{
            "name": "The load balancer", "hosts": "load_balancer", "become": True, "gather_facts": False,
            "roles": [{"role": "llmops.gce_vllm.load_balancer"}]}]))

    # ---------------------------------------------------------------------------------------------- plays
    def start_play(self, playbook, name, extra=None, inventories=()):
        argv = [str(Path(sys.executable).parent / "ansible-playbook")]
        for inv in self.inventories + list(inventories):
            argv += ["-i", str(inv)]
        argv += ["-e", "@%s" % self.vars]
        if extra:
            f = self.work / ("%s.json" % name)
            f.write_text(json.dumps(extra))
            argv += ["-e", "@%s" % f]
        argv.append(str(playbook))
        events = self.work / ("%s-events.json" % name)
        # this suite's own SSH master sockets: a master left by an earlier host at the same address (this machine's
        # test hosts reuse their addresses) must not carry this run's connections
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.work / "cp"),
                   ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "tests" / "bench" / "callback_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="bench_recorder", LLMOPS_BENCH_EVENTS=str(events))
        start = now()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def finish():
            out, err = proc.communicate(timeout=900)
            end = now()
            (self.work / ("%s.log" % name)).write_text(out + err)
            data = json.loads(events.read_text()) if events.exists() else {"events": []}
            play = Play(name, subprocess.CompletedProcess(argv, proc.returncode, out, err), data["events"], start, end)
            RESULTS["plays"].append({"name": name, "rc": play.rc, "start": start, "end": end, "vars": sorted(extra or {})})
            return play
        return finish

    def play(self, playbook, name, extra=None, inventories=()):
        return self.start_play(playbook, name, extra, inventories)()

    def configure(self, name, extra=None, inventories=()):
        return self.play(ROOT / "playbooks" / "configure.yml", name, extra, inventories)

    def lb(self, name, extra=None):
        return self.play(self.lb_playbook, name, extra)

    # ---------------------------------------------------------------------------------------------- hosts
    def sh(self, host, argv, check=True):
        return testhosts.exec_in(str(self.state), host, argv, check=check).stdout.decode()

    def unit(self, host, unit):
        out = self.sh(host, ["systemctl", "show", "-p", "InvocationID", "-p", "NRestarts", "-p", "ActiveState", unit])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def starts_since(self, host, unit, since_epoch):
        out = self.sh(host, ["journalctl", "-u", unit, "--since=@%d" % since_epoch, "-o", "cat", "--no-pager"])
        return len([ln for ln in out.splitlines() if ln.startswith("Started ")])

    def stopping_at(self, host, unit, since_epoch):
        """When systemd began to stop the unit (epoch), the first time since since_epoch."""
        out = self.sh(host, ["journalctl", "-u", unit, "--since=@%d" % since_epoch, "-o", "short-unix", "--no-pager"])
        return min(float(ln.split()[0]) for ln in out.splitlines() if "Stopping " in ln)

    def models(self, host):
        """vLLM's /v1/models through the host's public vLLM port (its authenticating proxy), with the key."""
        req = urllib.request.Request("http://%s:8001/v1/models" % self.addr[host],
                                     headers={"Authorization": "Bearer " + self.vllm_key})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return {m["id"]: m for m in json.loads(resp.read())["data"]}

    # ------------------------------------------------------------------------------------- balancer's view
    def stats(self):
        """HAProxy's own view, read from a thread in the balancer's network namespace (read_stats)."""
        return testhosts.in_netns(self.balancer_netns, self.read_stats)

    def read_stats(self):
        """HAProxy's own view, its CSV on the balancer's loopback (stats listen there only), read by a thread already
        in the balancer's network namespace (not a process started in the host: the poller reads it five times a
        second): {server: {"status", "stot"}}."""
        with urllib.request.urlopen("http://127.0.0.1:8404/stats;csv", timeout=5) as resp:  # noqa: S310 (loopback)
            text = resp.read().decode()
        rows = [r.split(",") for r in text.splitlines() if r and not r.startswith("#")]
        return {r[1]: {"status": r[17], "stot": int(r[7] or 0)}
                for r in rows if len(r) > 17 and r[1] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, want, hosts=None, timeout=60):
        """Wait until each of hosts (default every backend) has status want in the balancer; return the time."""
        hosts = hosts or self.backends
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.stats()
            if all(stats.get(h, {}).get("status") == want for h in hosts):
                return now()
            time.sleep(0.2)
        raise AssertionError("not all %s in the balancer within %s s: %s" % (want, timeout, self.stats()))


class Load:
    """A few clients of the AI server's chat route through the balancer, bounded in count and time.

    Each request is recorded as (start, latency s, status): start relative to the suite's T0, status the HTTP code
    or the connection error. Each client waits `pause` s between its requests (about 10 a second in all): enough to
    land dozens of requests in every drain and restart window, without the clients taking the machine's CPUs from
    the play they measure (back to back, three clients kept the CPUs busy: a no-op rerun of the three hosts took
    334 s beside another suite)."""

    def __init__(self, fleet, clients=3, seconds=1500, pause=0.3):
        self.fleet, self.results, self.pause = fleet, [], pause
        self.stop_at, self._stop = time.monotonic() + seconds, threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _c in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self):
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
        url = "http://%s:8000/v1/chat" % self.fleet.addr[self.fleet.balancer]
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            t = now()
            t1 = time.monotonic()
            req = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": "Bearer " + self.fleet.key})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    status = resp.status
                    resp.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError as exc:
                status = repr(exc)
            self.results.append((t, round(time.monotonic() - t1, 4), status))
            self._stop.wait(self.pause)

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(35)
        return self.results


class View:
    """The balancer's view, polled every 0.2 s: each change of a backend's status, with its session counter."""

    def __init__(self, fleet, seconds=1500):
        self.fleet, self.changes, self.last = fleet, [], {}
        self.stot = []   # (t, {server: stot}) at every poll
        self.stop_at, self._stop = time.monotonic() + seconds, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        testhosts.enter_netns(self.fleet.balancer_netns)
        while not self._stop.is_set() and time.monotonic() < self.stop_at:
            try:
                stats = self.fleet.read_stats()
            except Exception:  # noqa: BLE001  (a missed poll; the next one reads again)
                time.sleep(0.2)
                continue
            t = now()
            self.stot.append((t, {h: stats.get(h, {}).get("stot") for h in self.fleet.backends}))
            for host in self.fleet.backends:
                status = stats.get(host, {}).get("status")
                if status != self.last.get(host):
                    self.changes.append({"t": t, "host": host, "status": status})
                    self.last[host] = status
            time.sleep(0.2)

    def stop(self):
        self._stop.set()
        self.thread.join(35)
        return self.changes

    def sessions(self, host, start, end):
        """How many sessions the balancer sent to host from the poll at or after start to the last poll before end
        (its stot counter; end excluded: the poll that first reads UP may count sessions sent after the UP)."""
        inside = [s[host] for t, s in self.stot if start <= t < end and s.get(host) is not None]
        return (inside[-1] - inside[0]) if inside else 0


class Traffic:
    """Load and View together, over one measured run; record() saves both under RESULTS["runs"][name]."""

    def __init__(self, fleet, clients=3, seconds=1500):
        self.view = View(fleet, seconds)
        self.load = Load(fleet, clients, seconds)
        self.start = now()

    def stop(self):
        self.results = self.load.stop()
        self.changes = self.view.stop()
        self.end = now()
        return self

    def failed(self):
        return [r for r in self.results if r[2] != 200]

    def record(self, name, play=None, **extra):
        run = {"start": self.start, "end": self.end, "requests": [list(r) for r in self.results],
               "failed": len(self.failed()), "balancer": self.changes}
        if play is not None:
            run.update(play={"name": play.name, "rc": play.rc, "start": play.start, "end": play.end},
                       hooks=play.hooks())
        run.update(extra)
        RESULTS["runs"][name] = run
        return run


def _fleet_hosts(work, state):
    testhosts.create(str(state), count=4, prefix="fleet")
    inv = yaml.safe_load((state / "inventory.yml").read_text())
    hosts = inv["testhosts"]["hosts"]
    names = sorted(hosts)
    balancer, backends = names[0], names[1:]
    wheel = subprocess.run([sys.executable, str(ROOT / "tests/standin/build_wheel.py"), str(work / "wheel")],
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    empty = work / "empty"
    empty.write_bytes(b"")
    adapter = json.loads((ROOT / "tests/fixtures/lora/peft-0.21.0-r32-q_v.json").read_text())
    adapter.update(r=16, lora_alpha=32)
    adapter_file = work / "adapter_config.json"
    adapter_file.write_text(json.dumps(adapter, indent=2))
    for name in backends:   # what the accelerator image carries and cannot exist here; the roll's extra adapter
        testhosts.copy_in(str(state), name, str(ROOT / "tests/standin/nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
        testhosts.copy_in(str(state), name, str(empty), "/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        testhosts.copy_in(str(state), name, wheel, WHEEL_ON_HOST)
        testhosts.copy_in(str(state), name, str(adapter_file), EXTRA_ADAPTER["path"] + "/adapter_config.json")
        testhosts.exec_in(str(state), name, ["chmod", "-R", "a+rX", "/srv/lora"])
    # the backends' group vars: the stand-in's start-up delay (a host var can override it: the failing roll)
    (work / "groups.yml").write_text(yaml.safe_dump({"all": {"children": {
        "ai_server": {"hosts": {n: None for n in backends}, "vars": {"vllm_server_extra_env": STANDIN_ENV}},
        "load_balancer": {"hosts": {balancer: None}}}}}))
    return hosts, balancer, backends


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    """The host set, deployed: the backends by configure.yml (all at once) beside the balancer's play."""
    if os.geteuid() != 0:
        pytest.skip("the test-host harness needs root")
    work = tmp_path_factory.mktemp("fleet")
    work.chmod(0o700)
    state = work / "hosts"
    try:
        hosts, balancer, backends = _fleet_hosts(work, state)
        key = secrets.token_urlsafe(16)
        vllm_key = "vk-" + secrets.token_urlsafe(16)
        good = work / "vars.yml"   # like a vault file: 0600, never on a command line
        good.write_text(yaml.safe_dump(dict(CHECK, **{
            "gce_vllm_hosts": "ai_server", "gce_vllm_connect_timeout": 60,
            "vllm_server_api_key": vllm_key,
            "ai_server_backend_internal_token": "bt-" + secrets.token_urlsafe(16),
            "ai_server_api_key": key, "ai_server_backend_callback_base_url": "http://127.0.0.1:9/api",
            # the stand-in's venv has no huggingface_hub and no hub is reachable here: no staging
            "vllm_server_pip_spec": WHEEL_ON_HOST, "vllm_server_stage_models": False, "vllm_server_health_timeout": 60})))
        good.chmod(0o600)
        f = Fleet(state, work, hosts, balancer, backends, key, vllm_key, good)
        lb = f.start_play(f.lb_playbook, "load-balancer")
        deploy = f.configure("first-configure", {"gce_vllm_serial": "100%"})
        lb = lb()
        assert deploy.rc == 0, deploy.tail() + "\n" + RESULTS["plays"][-1]["name"]
        assert lb.rc == 0, lb.tail(4000)
        f.wait_status("UP")
        yield f
    finally:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS["end"] = now()
        RESULTS_FILE.write_text(json.dumps(RESULTS, indent=1))
        testhosts.destroy(str(state))


def pytest_runtest_logreport(report):
    """Each fleet test's outcome goes into the json: make bench uses it only when every test passed."""
    if report.when == "call" or report.outcome != "passed":
        tests = RESULTS.setdefault("tests", {})
        if tests.get(report.nodeid) in (None, "passed"):
            tests[report.nodeid] = report.outcome

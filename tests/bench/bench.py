"""make bench: the collection side by side with the runbook's manual procedure, on real test hosts.

Stages (all by default; --only to pick):
  runbook    the runbook's sections 3-4 (tests/bench/runbook_manual.sh) on a fresh host: 1st/2nd run wall
             time, endpoint downtime during the 2nd run (probes every 50 ms from the controller), restarts
  configure  playbooks/configure.yml on a fresh host: 1st/2nd run wall time, tasks changed, restarts
             (systemd NRestarts/MainPID/ExecMainStartTimestamp), downtime during the 2nd run; the 2nd run
             again with stock Ansible's SSH settings (no pipelining; ssh_args as ansible-core ships them,
             ControlMaster/ControlPersist 60s included): what ansible.cfg's settings buy over the defaults
             (runbook and configure share each repeat: two fresh hosts, ratios from the same repeat)
  fleet      configure on 1, 2, 4 hosts at once
  health     stand-in becomes healthy at a known instant; time until http_health / vllm_models return
  inventory  llmops.gce_vllm.gce vs google.cloud.gcp_compute over the local Compute API, 100/1000/5000
             instances in 20 zones, cold and cached
  fleet-roll the rolling configure behind HAProxy (tests/fleet, three backends): time per host, failed requests,
             p50/p99 latency during the roll against idle, the failing roll and its fixed rerun, the no-op rerun;
             from results/fleet/fleet.json when it is fresh (written by a passing run of the whole suite on the
             code measured now, within BENCH_FLEET_MAX_AGE_H hours, default 24), else it runs `pytest tests/fleet`
             first (--fleet-roll-rerun: always)
  startup    the REAL vLLM engine (its CPU build, tests/real_engine): cold start (compile caches emptied) vs warm
             restart (caches kept), --startup-repeats of each, phases from the collection's journal parser
             (llmops.gce_vllm.vllm_startup_info); needs what `make real-engine` needs
Raw figures: docs/benchmarks/results.json (+ logs under results/bench/); the report: tests/bench/report.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402  pylint: disable=wrong-import-position

REPO = bl.REPO
BENCH = REPO / "tests" / "bench"
VENV_BIN = Path(sys.executable).parent
RESULTS_JSON = REPO / "docs" / "benchmarks" / "results.json"
MODEL = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"
LORAS = [("easycontract", "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"),
         ("checklist", "imyj1013/exaone-qlora-checklist-adapter")]
STANDIN_DELAY = "2"  # the stand-in's start-up delay (s) on test hosts, the same for the runbook and the roles


class Ctx:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.logs = REPO / "results" / "bench" / time.strftime("%Y%m%dT%H%M%S")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.api_key = secrets.token_urlsafe(30)
        self.token = secrets.token_urlsafe(30)
        self.wheel = self._build_wheel()
        self.extra_vars = self.workdir / "bench-vars.yml"
        fd = os.open(self.extra_vars, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({
                "vllm_server_api_key": self.api_key,
                "ai_server_backend_internal_token": self.token,
                "ai_server_api_key": secrets.token_urlsafe(30),
                "ai_server_backend_callback_base_url": "http://127.0.0.1:9/api",
                "vllm_server_pip_spec": "/opt/standin/" + self.wheel.name,
                "vllm_server_stage_models": False,   # the stand-in's venv has no huggingface_hub; no hub here
                "vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": STANDIN_DELAY},
                "gce_vllm_hosts": "all",
                "gce_vllm_connect_timeout": 120,
            }, fh)
        self.rb_env = self.workdir / "rb.env"
        fd = os.open(self.rb_env, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("VLLM_API_KEY=%s\nBACKEND_INTERNAL_TOKEN=%s\nRB_VLLM_PIP_SPEC=/opt/standin/%s\n"
                     "RB_APP_SRC=/opt/standin/ai-server\nRB_VLLM_EXTRA_ENV=VLLM_STANDIN_STARTUP_DELAY=%s\n"
                     % (self.api_key, self.token, self.wheel.name, STANDIN_DELAY))

    def _build_wheel(self) -> Path:
        out = self.workdir / "wheel"
        out.mkdir(exist_ok=True)
        text = bl.run([sys.executable, str(REPO / "tests" / "standin" / "build_wheel.py"), str(out)])[2]
        wheels = list(out.glob("*.whl"))
        if not wheels:
            raise RuntimeError("tests/standin/build_wheel.py made no wheel: " + text)
        return wheels[0]

    def ansible_env(self, events: Path | None = None, extra: dict | None = None) -> dict:
        env = dict(os.environ)
        env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
        env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
        env["ANSIBLE_CALLBACK_PLUGINS"] = str(BENCH / "callback_plugins")
        env["ANSIBLE_CALLBACKS_ENABLED"] = "bench_recorder"
        env["ANSIBLE_NOCOLOR"] = "1"
        if events:
            env["LLMOPS_BENCH_EVENTS"] = str(events)
        env.update(extra or {})
        return env


code_state = bl.code_state


# ----------------------------------------------------------------------------------------------- hosts
def prepare_hosts(ctx: Ctx, hosts: bl.Hosts, tag: str):
    bl.run([str(VENV_BIN / "ansible-playbook"), "-i", str(hosts.inventory), str(BENCH / "prepare.yml"),
            "-e", "bench_wheel=" + str(ctx.wheel)], env=ctx.ansible_env(), log_to=ctx.logs / (tag + "-prepare.log"))
    for h in hosts.hosts:
        bl.scp(h, [ctx.rb_env], "/tmp/rb.env")
        bl.ssh(h, "chmod 600 /tmp/rb.env")


def probe_urls(host: dict) -> dict:
    return {"vllm": "http://%s:8001/health" % host["ip"], "ai_server": "http://%s:8000/health" % host["ip"]}


def run_runbook(ctx: Ctx, host: dict, tag: str) -> dict:
    cmd = "set -a; . /tmp/rb.env; set +a; exec bash /opt/standin/runbook_manual.sh"
    secs, out = bl.run(bl.ssh_cmd(host, cmd), log_to=ctx.logs / (tag + ".log"), timeout=1800)[1:]
    notes = sorted({line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("RUNBOOK-NOT-RERUNNABLE:")})
    return {"wall_s": round(secs, 3), "not_rerunnable": notes}


def run_configure(ctx: Ctx, inventory: Path, tag: str, extra_env: dict | None = None) -> dict:
    events = ctx.logs / (tag + "-events.json")
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "configure.yml"),
           "-e", "@" + str(ctx.extra_vars)]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m0 = bl.cpu_times()
    secs = bl.run(cmd, env=ctx.ansible_env(events, extra_env), log_to=ctx.logs / (tag + ".log"), timeout=1800)[1]
    m1 = bl.cpu_times()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    data = json.loads(events.read_text(encoding="utf-8"))
    changed = {h: s.get("changed", 0) for h, s in data["stats"].items()}
    tasks = [e for e in data["events"] if e["status"] != "skipped"]
    slow = sorted(tasks, key=lambda e: e["end"] - e["start"], reverse=True)[:8]
    return {"wall_s": round(secs, 3), "controller_cpu_s": round(cpu, 2), "changed": changed,
            "tasks_run": len(tasks), "loadavg_1m": round(os.getloadavg()[0], 2),
            "machine_cpu_busy": round((m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]), 3),
            "changed_tasks": sorted({e["task"] for e in data["events"] if e["changed"]}),
            "failed": sum(s.get("failures", 0) + s.get("unreachable", 0) for s in data["stats"].values()),
            "slowest_tasks": [{"task": e["task"], "host": e["host"], "s": round(e["end"] - e["start"], 3)}
                              for e in slow]}


def second_run_measured(ctx: Ctx, hosts: list[dict], action) -> dict:
    """Run `action()` (a 2nd run) while probing every host's endpoints; restarts from systemd's counters."""
    before = {h["name"]: bl.unit_state(h) for h in hosts}
    probers = {h["name"]: bl.Prober(probe_urls(h)) for h in hosts}
    for p in probers.values():
        p.start()
    time.sleep(0.3)  # a few probes before the run starts: the endpoints must be up at the start
    try:
        result = action()
    finally:
        time.sleep(0.3)
        for p in probers.values():
            p.stop()
    after = {h["name"]: bl.unit_state(h) for h in hosts}
    per_host = {}
    for h in hosts:
        per_host[h["name"]] = {"downtime": probers[h["name"]].result(),
                               "restarts": bl.restarts_between(before[h["name"]], after[h["name"]])}
    result = dict(result) if isinstance(result, dict) else {"wall_s": round(result, 3)}
    result["hosts"] = per_host
    result["max_downtime_s"] = max(d["downtime_s"] for ph in per_host.values() for d in ph["downtime"].values())
    result["restarts_total"] = sum(n for ph in per_host.values() for n in ph["restarts"].values())
    result["endpoints_up_at_start"] = all(d["ok_at_start"] for ph in per_host.values()
                                          for d in ph["downtime"].values())
    return result


# ---------------------------------------------------------------------------------------- stage 1 + 2
def stage_single(ctx: Ctx) -> dict:
    reps = []
    for i in range(ctx.args.repeats):
        bl.log("runbook + configure, repeat %d/%d" % (i + 1, ctx.args.repeats))
        with bl.Hosts(ctx.workdir / ("single%d" % i), 2, "bsingle%d" % i) as hosts:
            prepare_hosts(ctx, hosts, "single%d" % i)
            h_rb, h_cf = hosts.hosts
            rep = {"runbook": {}, "configure": {}, "code_at_start": code_state()}
            if "runbook" in ctx.stages:
                first = run_runbook(ctx, h_rb, "single%d-runbook-1" % i)
                bl.log("runbook 1st run %.1fs" % first["wall_s"])
                second = second_run_measured(ctx, [h_rb], lambda: run_runbook(ctx, h_rb, "single%d-runbook-2" % i))
                bl.log("runbook 2nd run %.1fs, downtime %.2fs, restarts %d" % (
                    second["wall_s"], second["max_downtime_s"], second["restarts_total"]))
                rep["runbook"] = {"first": first, "second": second}
            if "configure" in ctx.stages:
                inv = hosts.state_dir / "one.yml"
                write_inventory(hosts, [h_cf], inv)
                first = run_configure(ctx, inv, "single%d-configure-1" % i)
                bl.log("configure 1st run %.1fs, changed %s" % (first["wall_s"], first["changed"]))
                second = second_run_measured(ctx, [h_cf], lambda: run_configure(ctx, inv, "single%d-configure-2" % i))
                bl.log("configure 2nd run %.1fs, changed %s, downtime %.2fs, restarts %d" % (
                    second["wall_s"], second["changed"], second["max_downtime_s"], second["restarts_total"]))
                rep["configure"] = {"first": first, "second": second}
                if i == 0:  # what ansible.cfg's SSH settings buy over stock Ansible's: once, it is slower
                    stock = stock_ssh_env()
                    plain = run_configure(ctx, inv, "single%d-configure-3-stock-ssh" % i, stock)
                    plain["env"] = stock
                    bl.log("configure 2nd run with stock Ansible SSH settings %s: %.1fs" % (stock, plain["wall_s"]))
                    rep["configure"]["second_stock_ssh"] = plain
            rep["code_at_end"] = code_state()
            if rep["code_at_end"] != rep["code_at_start"]:
                bl.log("WARNING: the measured code changed during this repeat (%s -> %s)" % (
                    rep["code_at_start"], rep["code_at_end"]))
            reps.append(rep)
    return summarize_single(reps)


def stock_ssh_env() -> dict:
    """The environment that puts back ansible-core's own defaults over ansible.cfg's SSH settings: pipelining off
    (its default) and ssh_args as the ssh connection plugin documents them (ControlMaster=auto, ControlPersist=60s:
    stock Ansible keeps a master connection too), read from the installed ansible-core, not written here."""
    code = ("import yaml; from ansible.plugins.connection import ssh; "
            "o = yaml.safe_load(ssh.DOCUMENTATION)['options']; "
            "print(o['ssh_args']['default']); print(o['pipelining'].get('default') or False)")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", code], capture_output=True, text=True, check=True).stdout
    ssh_args, pipelining = out.splitlines()[:2]
    return {"ANSIBLE_PIPELINING": str(pipelining), "ANSIBLE_SSH_ARGS": ssh_args}


def write_inventory(hosts: bl.Hosts, chosen: list[dict], path: Path):
    inv = {"all": {"children": {"testhosts": {"hosts": {h["name"]: h["hostvars"] for h in chosen}}}}}
    path.write_text(json.dumps(inv), encoding="utf-8")


def summarize_single(reps: list[dict]) -> dict:
    out = {"repeats": reps}

    def col(kind, *keys):
        vals = []
        for r in reps:
            v = r.get(kind) or {}
            for k in keys:
                v = v.get(k) if isinstance(v, dict) else None
            vals.append(v)
        return vals
    for kind in ("runbook", "configure"):
        if not any(r.get(kind) for r in reps):
            continue
        out[kind] = {
            "first_wall_s": bl.median(col(kind, "first", "wall_s")),
            "second_wall_s": bl.median(col(kind, "second", "wall_s")),
            "second_downtime_s": bl.median(col(kind, "second", "max_downtime_s")),
            "second_restarts": bl.median(col(kind, "second", "restarts_total")),
            "runs": len(reps),
        }
        if kind == "configure":
            out[kind]["first_changed"] = bl.median([sum(c.values()) for c in col(kind, "first", "changed") if c])
            out[kind]["second_changed"] = bl.median([sum(c.values()) for c in col(kind, "second", "changed") if c])
            out[kind]["second_stock_ssh_wall_s"] = bl.median(col(kind, "second_stock_ssh", "wall_s"))
            out[kind]["second_controller_cpu_s"] = bl.median(col(kind, "second", "controller_cpu_s"))
            out[kind]["second_machine_busy"] = bl.median(col(kind, "second", "machine_cpu_busy"))
    if out.get("runbook") and out.get("configure"):
        ratios = {}
        for which in ("first", "second"):
            rs = [r["configure"][which]["wall_s"] / r["runbook"][which]["wall_s"] for r in reps
                  if r.get("configure") and r.get("runbook")]
            ratios["configure_over_runbook_" + which] = bl.median(rs)
        out["ratios"] = ratios
    return out


# ------------------------------------------------------------------------------------------- stage 3
def stage_fleet(ctx: Ctx, single: dict | None) -> dict:
    """1st run: the largest N fresh hosts at once (1 host: the single stage of this same bench run, whose
    fresh-host 1st runs are exactly that). 2nd runs: every N (a --limit'ed subset of the same configured hosts),
    probed for downtime."""
    sizes = sorted(set(ctx.args.fleet))
    big = max(sizes)
    out = {}
    reps = (single or {}).get("repeats") or []
    one_first = [r["configure"]["first"]["wall_s"] for r in reps if r.get("configure")]
    bl.log("fleet: %d hosts" % big)
    with bl.Hosts(ctx.workdir / "fleet", big, "bfleet") as hosts:
        prepare_hosts(ctx, hosts, "fleet")
        first = run_configure(ctx, hosts.inventory, "fleet%d-configure-1" % big)
        bl.log("fleet %d: 1st run %.1fs, failed %s" % (big, first["wall_s"], first["failed"]))
        for n in sizes:
            chosen = hosts.hosts[:n]
            inv = hosts.state_dir / ("fleet%d.yml" % n)
            write_inventory(hosts, chosen, inv)
            second = second_run_measured(ctx, chosen, lambda: run_configure(ctx, inv, "fleet%d-configure-2" % n))
            bl.log("fleet %d: 2nd run %.1fs, changed %s, downtime %.2fs" % (
                n, second["wall_s"], second["changed"], second["max_downtime_s"]))
            row = {"second": second}
            if n == big:
                row["first"] = first
            elif n == 1 and one_first:
                row["first"] = {"wall_s": bl.median(one_first), "from": "single stage (median of fresh hosts)"}
            out[str(n)] = row
    if "1" in out:
        base2 = out["1"]["second"]["wall_s"]
        base1 = out["1"].get("first", {}).get("wall_s")
        for r in out.values():
            r["second_ratio_to_1"] = round(r["second"]["wall_s"] / base2, 3)
            if base1 and r.get("first"):
                r["first_ratio_to_1"] = round(r["first"]["wall_s"] / base1, 3)
    return out


# ------------------------------------------------------------------------------------------- stage 4
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, deadline: float) -> float | None:
    """Tight 10 ms loop: wall-clock instant the stand-in first accepts a connection."""
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                return time.time()
        except OSError:
            time.sleep(0.01)
    return None


def stage_health(ctx: Ctx) -> dict:
    """The stand-in turns healthy DELAY s after start; the module was started at the same time."""
    import threading
    coll = REPO / "build" / "collections"
    env = dict(os.environ, PYTHONPATH=str(coll) + os.pathsep + str(REPO / "tests" / "standin"))
    res = {"http_health": [], "vllm_models": [], "ansible_task": []}
    loras = [json.dumps({"name": n, "path": p}) for n, p in LORAS]
    reps = ctx.args.health_repeats
    for i in range(reps):
        # ready instants spread evenly over one poll interval (1 s), so the figure is not a lucky phase
        delay = round(2.0 + (i + 0.5) / reps, 3)
        for mod in ("http_health", "vllm_models"):
            port = free_port()
            args = {"http_health": {"url": "http://127.0.0.1:%d/health" % port, "timeout": 30},
                    "vllm_models": {"base_url": "http://127.0.0.1:%d" % port, "api_key": ctx.api_key,
                                    "expected": [MODEL] + [lora[0] for lora in LORAS], "timeout": 30}}[mod]
            argfile = ctx.workdir / "modargs.json"
            fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"ANSIBLE_MODULE_ARGS": args}, fh)
            srv_env = dict(env, VLLM_STANDIN_STARTUP_DELAY=str(delay), VLLM_API_KEY=ctx.api_key)
            srv = subprocess.Popen([sys.executable, "-m", "vllm_standin", "serve", MODEL, "--host", "127.0.0.1",
                                    "--port", str(port), "--enable-lora", "--lora-modules", *loras],
                                   env=srv_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t_start = time.time()
            ready = {}
            th = threading.Thread(target=lambda: ready.setdefault("t", wait_ready(port, t_start + 60)))
            th.start()
            try:
                proc = subprocess.run([sys.executable, "-m",
                                       "ansible_collections.llmops.gce_vllm.plugins.modules." + mod, str(argfile)],
                                      env=env, capture_output=True, text=True, timeout=120, check=False)
                t_ret = time.time()
                th.join()
            finally:
                srv.terminate()
                srv.wait(timeout=10)
            try:
                out = json.loads(proc.stdout)
            except ValueError:
                out = {"failed": True, "msg": proc.stdout[-500:] + proc.stderr[-500:]}
            t_ready = ready.get("t")
            rec = {"latency_s": round(t_ret - t_ready, 3) if t_ready else None, "delay_s": delay,
                   "ready_after_start_s": round(t_ready - t_start, 3) if t_ready else None,
                   "failed": bool(out.get("failed")), "attempts": out.get("attempts"),
                   "elapsed": out.get("elapsed")}
            if out.get("failed"):
                rec["msg"] = str(out.get("msg"))[:300]
            res[mod].append(rec)
            bl.log("health %s #%d: returned %.3fs after ready" % (mod, i + 1, rec["latency_s"] or -1))
    res["ansible_task"] = health_via_playbook(ctx, env, loras)
    for mod in ("http_health", "vllm_models", "ansible_task"):
        lat = [r["latency_s"] for r in res[mod] if not r["failed"]]
        res[mod + "_median_s"] = bl.median(lat)
        res[mod + "_max_s"] = max(lat) if lat else None
    return res


def health_via_playbook(ctx: Ctx, env: dict, loras: list[str]) -> list[dict]:
    """The same through ansible-playbook (localhost): task end (callback clock) minus the ready instant."""
    import threading
    out = []
    reps = max(3, ctx.args.health_repeats // 2)
    for i in range(reps):
        port = free_port()
        delay = round(5.0 + (i + 0.5) / reps, 3)  # ansible-playbook needs ~2-3 s to reach the task
        srv = subprocess.Popen([sys.executable, "-m", "vllm_standin", "serve", MODEL, "--host", "127.0.0.1",
                                "--port", str(port), "--enable-lora", "--lora-modules", *loras],
                               env=dict(env, VLLM_STANDIN_STARTUP_DELAY=str(delay), VLLM_API_KEY=ctx.api_key),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_start = time.time()
        ready = {}
        th = threading.Thread(target=lambda: ready.setdefault("t", wait_ready(port, t_start + 60)))
        th.start()
        events = ctx.logs / ("health-play-%d.json" % i)
        try:
            rc = bl.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                         str(BENCH / "health_play.yml"), "-e", "bench_port=%d" % port],
                        env=ctx.ansible_env(events, {"ANSIBLE_PYTHON_INTERPRETER": sys.executable}),
                        log_to=ctx.logs / ("health-play-%d.log" % i), check=False, timeout=120)[0]
            th.join()
        finally:
            srv.terminate()
            srv.wait(timeout=10)
        t_ready = ready.get("t")
        try:
            evs = json.loads(events.read_text(encoding="utf-8"))["events"]
            task = [e for e in evs if e["action"].endswith("http_health")][0]
        except (OSError, ValueError, IndexError):
            out.append({"failed": True, "latency_s": None, "msg": "no task result (rc=%s)" % rc})
            continue
        rec = {"latency_s": round(task["end"] - t_ready, 3) if t_ready else None, "delay_s": delay,
               "task_started_before_ready": task["start"] < (t_ready or 0), "failed": task["status"] != "ok"}
        out.append(rec)
        bl.log("health via ansible-playbook #%d: task ended %.3fs after ready" % (i + 1, rec["latency_s"] or -1))
    return out


# ------------------------------------------------------------------------------------------- stage 5
def stage_inventory(ctx: Ctx) -> dict:
    sys.path.insert(0, str(BENCH))
    import inventory_bench  # noqa: E402  pylint: disable=import-outside-toplevel
    return inventory_bench.run(ctx)


# ------------------------------------------------------------------------------------------- stage 6
FLEET_JSON = REPO / "results" / "fleet" / "fleet.json"
FLEET_RUNS = ("idle", "roll", "noop", "roll-fails", "roll-fixed")


def fleet_json_fresh(path: Path, max_age_h: float) -> str | None:
    """None when the fleet suite's json can stand for the code measured now; else why not."""
    if not path.exists():
        return "no %s" % path
    data = json.loads(path.read_text(encoding="utf-8"))
    if time.time() - path.stat().st_mtime > max_age_h * 3600:
        return "older than %s h" % max_age_h
    if data.get("code") != code_state():
        return "measured code %s, now %s" % (data.get("code"), code_state())
    tests = data.get("tests") or {}
    if not tests or any(v != "passed" for v in tests.values()):
        return "not every fleet test passed: %s" % {k: v for k, v in tests.items() if v != "passed"}
    missing = [r for r in FLEET_RUNS if r not in data.get("runs", {})]
    return "runs missing: %s" % missing if missing else None


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    values = sorted(values)
    return values[max(0, min(len(values) - 1, int(round(q / 100.0 * len(values) + 0.5)) - 1))]


def summarize_fleet_roll(data: dict) -> dict:
    runs = data["runs"]

    def lat(run):
        ok = [r[1] for r in run["requests"] if r[2] == 200]
        return {"requests": len(run["requests"]), "failed": run["failed"],
                "p50_s": round(percentile(ok, 50), 4) if ok else None,
                "p99_s": round(percentile(ok, 99), 4) if ok else None}

    def per_host(run):
        out = {}
        for host, h in sorted(run.get("hooks", {}).items()):
            row = {}
            if "drained" in h and "lb_up" in h:
                row["out_of_rotation_s"] = round(h["lb_up"][1] - h["drained"][0], 2)
            if "drained" in h and "lb_down" in h:
                row["drain_to_down_s"] = round(h["lb_down"][1] - h["drained"][0], 2)
            if "restart" in h and "undrained" in h:
                row["restart_to_undrain_s"] = round(h["undrained"][0] - h["restart"][0], 2)
            if "undrained" in h and "lb_up" in h:
                row["undrain_to_up_s"] = round(h["lb_up"][1] - h["undrained"][0], 2)
            if row:
                out[host] = row
        return out

    def play_s(run):
        return round(run["play"]["end"] - run["play"]["start"], 1)

    roll = runs["roll"]
    hosts = per_host(roll)
    out = {"hosts": len(roll.get("hooks", {})) or 3,
           "idle": lat(runs["idle"]),
           "roll": dict(lat(roll), play_s=play_s(roll), per_host=hosts,
                        per_host_median_out_of_rotation_s=bl.median([h.get("out_of_rotation_s") for h in hosts.values()]),
                        play_per_host_s=round(play_s(roll) / max(1, len(hosts)), 1),
                        down_before_stop_s=roll.get("down_before_stop_s")),
           "noop": dict(lat(runs["noop"]), play_s=play_s(runs["noop"]),
                        play_per_host_s=round(play_s(runs["noop"]) / 3, 1)),
           "roll_fails": dict(lat(runs["roll-fails"]), play_s=play_s(runs["roll-fails"]),
                              broken=runs["roll-fails"].get("broken")),
           "roll_fixed": dict(lat(runs["roll-fixed"]), play_s=play_s(runs["roll-fixed"])),
           "suite_s": round(data.get("end", 0), 1),
           "first_deploy_s": next((round(p["end"] - p["start"], 1) for p in data["plays"]
                                   if p["name"] == "first-configure"), None)}
    # the picture's data: the roll's balancer view, step timings and requests, relative to the roll's start
    t0 = roll["start"]
    out["timeline"] = {
        "end": round(roll["end"] - t0, 2),
        "balancer": [dict(c, t=round(c["t"] - t0, 2)) for c in roll["balancer"]],
        "hooks": {h: {k: ([round(v[0] - t0, 2), round(v[1] - t0, 2)] if k != "failed" else v) for k, v in steps.items()}
                  for h, steps in roll.get("hooks", {}).items()},
        "requests": [[round(r[0] - t0, 2), r[1], r[2] == 200] for r in roll["requests"]],
    }
    return out


def stage_fleet_roll(ctx: Ctx) -> dict:
    why = "--fleet-roll-rerun" if ctx.args.fleet_roll_rerun else fleet_json_fresh(FLEET_JSON, ctx.args.fleet_max_age_h)
    source = "results/fleet/fleet.json of an earlier run of tests/fleet"
    if why:
        bl.log("fleet-roll: running tests/fleet (%s)" % why)
        rc, secs, _out = bl.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fleet"],
                                env=ctx.ansible_env(), log_to=ctx.logs / "fleet-roll-pytest.log", timeout=3600,
                                check=False)
        if rc != 0:
            raise RuntimeError("tests/fleet failed (rc %s, %.0f s): see %s" % (rc, secs, ctx.logs / "fleet-roll-pytest.log"))
        source = "this bench run (pytest tests/fleet, %.0f s)" % secs
        still = fleet_json_fresh(FLEET_JSON, ctx.args.fleet_max_age_h)
        if still:
            raise RuntimeError("tests/fleet passed but its json is not usable: " + still)
    data = json.loads(FLEET_JSON.read_text(encoding="utf-8"))
    out = summarize_fleet_roll(data)
    out["source"] = source
    out["fleet_json_date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FLEET_JSON.stat().st_mtime))
    out["fleet_json_code"] = data.get("code")
    bl.log("fleet-roll: roll %.0f s for %d hosts, %d of %d requests failed; p50 %s s / p99 %s s (idle %s / %s)" % (
        out["roll"]["play_s"], out["hosts"], out["roll"]["failed"], out["roll"]["requests"], out["roll"]["p50_s"],
        out["roll"]["p99_s"], out["idle"]["p50_s"], out["idle"]["p99_s"]))
    return out


# ------------------------------------------------------------------------------------------- stage 7
def stage_startup(ctx: Ctx) -> dict:
    """The real engine's cold and warm starts: tests/real_engine/bench_startup.py (the real-engine suite's host and
    deployment fixtures), which writes its figures to a JSON file this stage returns."""
    out = ctx.workdir / "startup.json"
    if out.exists():
        out.unlink()
    env = dict(os.environ, LLMOPS_STARTUP_BENCH_OUT=str(out), LLMOPS_STARTUP_BENCH_N=str(ctx.args.startup_repeats))
    rc, secs, text = bl.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                             str(REPO / "tests" / "real_engine" / "bench_startup.py")], env=env, timeout=3600,
                            check=False, log_to=ctx.logs / "startup.log")
    if rc != 0 or not out.exists():
        raise RuntimeError("the startup stage failed (rc=%s, %.0f s): see %s\n%s" % (
            rc, secs, ctx.logs / "startup.log", text[-3000:]))
    data = json.loads(out.read_text(encoding="utf-8"))
    data["stage_wall_s"] = round(secs, 1)
    return data


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="runbook,configure,fleet,health,inventory,fleet-roll,startup")
    ap.add_argument("--fleet-roll-rerun", action="store_true", help="run tests/fleet even if its json is fresh")
    ap.add_argument("--fleet-max-age-h", type=float, default=float(os.environ.get("BENCH_FLEET_MAX_AGE_H", "24")))
    ap.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "2")))
    ap.add_argument("--health-repeats", type=int, default=int(os.environ.get("BENCH_HEALTH_REPEATS", "7")))
    ap.add_argument("--inventory-repeats", type=int, default=int(os.environ.get("BENCH_INVENTORY_REPEATS", "3")))
    ap.add_argument("--startup-repeats", type=int, default=int(os.environ.get("BENCH_STARTUP_REPEATS", "3")),
                    help="cold starts and warm restarts of the real engine (each; the engine is slow on 2 cores)")
    ap.add_argument("--fleet", default=os.environ.get("BENCH_FLEET", "1,2,4"))
    ap.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "100,1000,5000"))
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR", "/tmp/llmops-bench"))
    ap.add_argument("--results", default=str(RESULTS_JSON))
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    args.fleet = [int(x) for x in str(args.fleet).split(",") if x]
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x]
    ctx = Ctx(args)
    ctx.stages = set(args.only.split(","))
    results_path = Path(args.results)
    data = json.loads(results_path.read_text(encoding="utf-8")) if results_path.exists() else {}
    cur = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                    text=True, check=False).stdout.strip(),
           "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}, "stages": {},
           # uncommitted changes to tracked files the bench measured (so a figure is never pinned to the wrong code)
           "worktree_changes": sorted(
               line[3:] for line in subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                                   capture_output=True, text=True, check=False).stdout.splitlines()
               if line[3:] and not line[3:].startswith(("docs/benchmarks", "tests/bench/")))}
    t0 = time.monotonic()
    cur["code_at_start"] = code_state()
    failure = None
    try:
        if ctx.stages & {"runbook", "configure"}:
            cur["stages"]["single"] = stage_single(ctx)
        if "health" in ctx.stages:
            cur["stages"]["health"] = stage_health(ctx)
        if "inventory" in ctx.stages:
            cur["stages"]["inventory"] = stage_inventory(ctx)
        if "fleet" in ctx.stages:
            cur["stages"]["fleet"] = stage_fleet(ctx, cur["stages"].get("single"))
        if "fleet-roll" in ctx.stages:
            cur["stages"]["fleet_roll"] = stage_fleet_roll(ctx)
        if "startup" in ctx.stages:
            cur["stages"]["startup"] = stage_startup(ctx)
    except Exception as exc:  # noqa: BLE001 - keep what was measured, never publish a partial run
        failure = exc
    cur["bench_wall_s"] = round(time.monotonic() - t0, 1)
    cur["code_at_end"] = code_state()
    for stage in cur["stages"].values():  # a merged page may hold stages of several runs: say which
        stage["measured"] = {"date": cur["date"], "commit": cur["commit"], "code_at_start": cur["code_at_start"],
                             "code_at_end": cur["code_at_end"]}
    cur["secrets_in_logs"] = scan_secrets(ctx)
    bl.write_json(ctx.logs / "results.json", cur)
    if failure is not None or cur["secrets_in_logs"]:
        bl.log("bench FAILED (%s); partial figures in %s; %s untouched" % (
            failure or "secrets found in logs: %s" % cur["secrets_in_logs"], ctx.logs / "results.json", results_path))
        if failure is not None:
            raise failure
        return 1
    # keep earlier stages that this run did not repeat (so a partial run updates only what it measured)
    latest = data.get("latest", {})
    merged = dict(latest.get("stages", {}))
    merged.update(cur["stages"])
    history = data.get("history", [])
    entry = {k: cur[k] for k in ("date", "commit", "bench_wall_s")}
    entry.update({"stages": sorted(cur["stages"]), "summary": headline(cur)})
    history.append(entry)
    data = {"latest": dict(cur, stages=merged, measured_now=sorted(cur["stages"])), "history": history[-20:]}
    bl.write_json(results_path, data)
    bl.log("results: %s (logs %s), bench took %.0fs" % (results_path, ctx.logs, cur["bench_wall_s"]))
    if not args.no_report:
        bl.run([sys.executable, str(BENCH / "report.py"), "--results", str(results_path)], timeout=300)
        bl.log("report: docs/benchmarks.md")
    return 0


def scan_secrets(ctx: Ctx) -> list[str]:
    """Files under this run's log dir that contain the run's vLLM key or backend token (must be none)."""
    found = []
    for path in sorted(ctx.logs.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if ctx.api_key in text or ctx.token in text:
                found.append(str(path.relative_to(ctx.logs)))
    return found


def headline(cur: dict) -> dict:
    s = cur["stages"]
    h = {}
    single = s.get("single", {})
    for kind in ("runbook", "configure"):
        if kind in single:
            h[kind + "_first_s"] = single[kind]["first_wall_s"]
            h[kind + "_second_s"] = single[kind]["second_wall_s"]
            h[kind + "_second_downtime_s"] = single[kind]["second_downtime_s"]
    if "configure" in single:
        h["configure_second_changed"] = single["configure"].get("second_changed")
        h["configure_second_stock_ssh_s"] = single["configure"].get("second_stock_ssh_wall_s")
    if "health" in s:
        h["health_median_s"] = s["health"].get("http_health_median_s")
        h["models_median_s"] = s["health"].get("vllm_models_median_s")
    if "fleet" in s:
        for n, r in s["fleet"].items():
            if not n.isdigit():
                continue
            h["fleet%s_first_s" % n] = (r.get("first") or {}).get("wall_s")
            h["fleet%s_second_s" % n] = r["second"]["wall_s"]
    if "fleet_roll" in s:
        fr = s["fleet_roll"]
        h["roll_s"] = fr["roll"]["play_s"]
        h["roll_failed"] = fr["roll"]["failed"]
        h["roll_p99_s"] = fr["roll"]["p99_s"]
    if "inventory" in s:
        for row in s["inventory"].get("rows", []):
            h["inv_%s_%s_%s_s" % (row["plugin"], row["instances"], row["mode"])] = row["median_s"]
    if "startup" in s:
        for kind in ("cold", "warm"):
            h["startup_%s_ready_s" % kind] = (s["startup"].get(kind) or {}).get("ready_median_s")
    return h


if __name__ == "__main__":
    sys.exit(main())

"""make bench, stage 5: llmops.gce_vllm.gce vs google.cloud.gcp_compute over the local Compute API.

N instances (100 / 1,000 / 5,000) in 20 zones are seeded into tests/compute_api (pages of 500: the API's
default and cap, which both plugins use). Both plugins group by network tag (ours: builtin_groups [tags]
with tag_group_prefix tag_; theirs: keyed_groups on tags['items'] with prefix tag), name hosts by instance
name, and cache with ansible.builtin.jsonfile. Timed: the whole `ansible-inventory --list` process, cold
(empty cache) and cached (second run), plus the plugin alone in-process (tests/bench/inv_timer.py).
google.cloud.gcp_compute runs in .venv-bench-gcp (Python 3.12, ansible 14.5.0, the same ansible-core
2.21.5) with tests/bench/gcp_redirect on PYTHONPATH (its sitecustomize sends Google's hard-coded hosts to
the local API); ours runs in .venv, untouched.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import benchlib as bl

REPO = bl.REPO
BENCH = REPO / "tests" / "bench"
GCP_VENV = REPO / ".venv-bench-gcp"
PROJECT = "llmops-bench"
OURS = "llmops.gce_vllm.gce"
THEIRS = "google.cloud.gcp_compute"


def _admin(base: str, path: str, body=None, method="POST"):
    req = urllib.request.Request(base + "/_admin/" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read().decode() or "{}")


def _api_requests(base: str) -> int:
    return len(_admin(base, "requests", method="GET")["requests"])


def run(ctx) -> dict:
    work = ctx.workdir / "inventory"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port_file = work / "api.port"
    log = open(ctx.logs / "inventory-api.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    srv = subprocess.Popen([sys.executable, str(REPO / "tests" / "compute_api" / "server.py"), "--port", "0",
                            "--port-file", str(port_file), "--project", PROJECT],
                           stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if srv.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("local Compute API did not start; see %s" % (ctx.logs / "inventory-api.log"))
            time.sleep(0.05)
        port = int(port_file.read_text().strip())
        base = "http://127.0.0.1:%d" % port
        return _measure(ctx, work, base)
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
        log.close()


def _write_sources(work: Path, base: str) -> dict:
    endpoint = base + "/compute/v1/"
    ours = work / "bench.gce.yml"
    ours.write_text(json.dumps({
        "plugin": OURS, "projects": [PROJECT], "api_endpoint": endpoint, "auth_kind": "accesstoken",
        "access_token": "bench-token", "hostnames": ["name"], "builtin_groups": ["tags"],
        "tag_group_prefix": "tag_", "page_size": 500,
        "cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(work / "cache-ours"),
        "cache_timeout": 3600}), encoding="utf-8")
    theirs = work / "bench.gcp.yml"
    theirs.write_text(json.dumps({
        "plugin": THEIRS, "projects": [PROJECT], "auth_kind": "accesstoken", "access_token": "bench-token",
        "hostnames": ["name"], "keyed_groups": [{"key": "tags['items']", "prefix": "tag"}],
        "cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(work / "cache-theirs"),
        "cache_timeout": 3600}), encoding="utf-8")
    return {OURS: ours, THEIRS: theirs}


def _env(plugin: str, base: str, work: Path) -> tuple[list[str], dict]:
    env = dict(os.environ)
    env["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "True"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "True"
    env.pop("PYTHONPATH", None)
    if plugin == OURS:
        env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
        env["PATH"] = str(REPO / ".venv" / "bin") + os.pathsep + env.get("PATH", "")
        return [str(REPO / ".venv" / "bin" / "ansible-inventory")], env
    cfg = work / "gcp-ansible.cfg"
    cfg.write_text("[defaults]\n", encoding="utf-8")
    env["ANSIBLE_CONFIG"] = str(cfg)
    env["ANSIBLE_HOME"] = str(work / "gcp-ansible-home")
    env["PATH"] = str(GCP_VENV / "bin") + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(BENCH / "gcp_redirect")
    env["LLMOPS_BENCH_COMPUTE_API"] = base + "/compute/v1/"
    return [str(GCP_VENV / "bin" / "ansible-inventory")], env


def _one(plugin, source, base, work, mode, expect) -> dict:
    cmd, env = _env(plugin, base, work)
    cache = work / ("cache-ours" if plugin == OURS else "cache-theirs")
    if mode == "cold":
        shutil.rmtree(cache, ignore_errors=True)
    _admin(base, "requests", method="DELETE")
    out_file = work / "out.json"
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd + ["-i", str(source), "--list", "--output", str(out_file)], env=env,
                          capture_output=True, text=True, timeout=600, check=False, cwd=work)
    secs = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time (user + system) of the process: less sensitive than wall time to other load on the machine
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError("%s %s failed: %s" % (plugin, mode, (proc.stdout + proc.stderr)[-2000:]))
    data = json.loads(out_file.read_text(encoding="utf-8"))
    hosts = len(data.get("_meta", {}).get("hostvars", {}))
    group = data.get("tag_ai_server", {}).get("hosts", [])
    if hosts != expect or len(group) != expect:
        raise RuntimeError("%s %s: %d hosts, %d in tag_ai_server; expected %d"
                           % (plugin, mode, hosts, len(group), expect))
    return {"s": round(secs, 3), "cpu_s": round(cpu, 3), "api_requests": _api_requests(base)}


def _inproc(plugin, source, base, work) -> dict | None:
    cmd, env = _env(plugin, base, work)
    py = str(Path(cmd[0]).parent / "python")
    proc = subprocess.run([py, str(BENCH / "inv_timer.py"), str(source), "tag_ai_server"], env=env,
                          capture_output=True, text=True, timeout=600, check=False, cwd=work)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _startup(plugin, base, work) -> float:
    cmd, env = _env(plugin, base, work)
    vals = []
    for _attempt in range(3):
        t0 = time.monotonic()
        subprocess.run(cmd + ["-i", "localhost,", "--list"], env=env, capture_output=True, timeout=120, check=True,
                       cwd=work)
        vals.append(time.monotonic() - t0)
    return bl.median(vals)


def _measure(ctx, work: Path, base: str) -> dict:
    sources = _write_sources(work, base)
    plugins = [OURS]
    note = ""
    if (GCP_VENV / "bin" / "ansible-inventory").exists():
        plugins.append(THEIRS)
    else:
        note = "google.cloud.gcp_compute not measured: .venv-bench-gcp is missing (scripts/bench creates it)."
    rows = []
    res = {"rows": rows, "zones": 20, "page_size": 500, "repeats": ctx.args.inventory_repeats,
           "note": note or ("Both: hosts named by instance name, one group per network tag (`tag_ai_server`, "
                            "`tag_monitoring`), jsonfile cache; every instance RUNNING and tagged `ai-server`, "
                            "`monitoring`. google.cloud.gcp_compute 1.15.0 runs in its own Python 3.12 venv with "
                            "the same ansible-core 2.21.5; a sitecustomize there redirects its hard-coded Google "
                            "URLs to the local API. Median of %d runs each." % ctx.args.inventory_repeats)}
    res["startup_s"] = _startup(OURS, base, work)
    if THEIRS in plugins:
        res["startup_gcp_s"] = _startup(THEIRS, base, work)
    for n in ctx.args.sizes:
        _admin(base, "reset")
        seeded = _admin(base, "seed", {"count": n, "zones": 20, "project": PROJECT})
        bl.log("inventory: seeded %d instances in %ss" % (n, seeded.get("seconds")))
        for plugin in plugins:
            # gcp_compute at 5,000 takes ~20 s a run: fewer repeats there keep the bench short
            reps = ctx.args.inventory_repeats if (plugin == OURS or n < 5000) else max(1, ctx.args.inventory_repeats - 1)
            cold, cached = [], []
            for _rep in range(reps):
                cold.append(_one(plugin, sources[plugin], base, work, "cold", n))
                cached.append(_one(plugin, sources[plugin], base, work, "cached", n))
            # plugin alone, in-process: cold (cache emptied) then cached
            shutil.rmtree(work / ("cache-ours" if plugin == OURS else "cache-theirs"), ignore_errors=True)
            ip_cold = _inproc(plugin, sources[plugin], base, work)
            ip_cached = _inproc(plugin, sources[plugin], base, work)
            for mode, runs, ip in (("cold", cold, ip_cold), ("cached", cached, ip_cached)):
                row = {"plugin": plugin, "instances": n, "mode": mode, "runs": [r["s"] for r in runs],
                       "median_s": bl.median([r["s"] for r in runs]),
                       "median_cpu_s": bl.median([r["cpu_s"] for r in runs]), "api_requests": runs[-1]["api_requests"],
                       "plugin_only_s": ip and ip.get("parse_s")}
                rows.append(row)
                bl.log("inventory %s %d %s: %.2fs, CPU %.2fs (plugin only %s s), %d API requests" % (
                    plugin, n, mode, row["median_s"], row["median_cpu_s"], row["plugin_only_s"],
                    row["api_requests"]))
    return res

"""Issue 13 on the real engine (one engine start, shared with the other files of the suite):

- adapter-only changes of vllm_server_lora_adapters reach the running vLLM without a restart: an adapter added, one
  removed, one whose path changed, each through configure.yml; systemd's NRestarts, InvocationID and MainPID stay
  the same, /v1/models lists exactly the new adapters with their paths, the unit on the host names them for the next
  start, and requests to the adapters not touched keep succeeding while the change runs; a rerun changes nothing;
- the compile caches (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) live under the service directory:
  populated after a start, still there after a restart.
"""

from __future__ import annotations

import json
import threading
import time

from tests.real_engine import engine, report
from tests.real_engine.conftest import VLLM_PORT, http
from tests.reliability import lib

PROPS = ("MainPID", "NRestarts", "InvocationID", "ExecMainStartTimestampMonotonic")
ADAPTERS_DIR = "%s/adapters" % engine.MODEL_ON_HOST
CACHES = {"VLLM_CACHE_ROOT": "/app/vllm-server/.cache/vllm",
          "TORCHINDUCTOR_CACHE_DIR": "/app/vllm-server/.cache/torchinductor",
          "TRITON_CACHE_DIR": "/app/vllm-server/.cache/triton"}


class Traffic:
    """Completions to `names` through the public port with the key, one a second in a thread, while a change runs."""

    def __init__(self, dep, names):
        self.dep, self.names = dep, list(names)
        self.results: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        i = 0
        while not self._stop.is_set():
            name = self.names[i % len(self.names)]
            i += 1
            status, _h, body = http(self.dep.url(VLLM_PORT, "/v1/completions"), "POST",
                                    {"model": name, "prompt": "hello", "max_tokens": 2}, self.dep.key_header(), timeout=60)
            self.results.append((name, status, body[:200].decode(errors="replace") if status != 200 else ""))
            # one request a second: enough to see a failed one during the change; back to back, the CPU engine would
            # take a core from the rest of make test for the whole change
            self._stop.wait(1.0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(90)

    def failures(self):
        return [r for r in self.results if r[1] != 200]


def served(dep):
    status, _h, body = http(dep.url(VLLM_PORT, "/v1/models"), headers=dep.key_header())
    assert status == 200, (status, body[:300])
    return {c["id"]: c["root"] for c in json.loads(body)["data"] if c.get("parent")}


def change(dep, name, adapters, untouched):
    """configure.yml with `adapters`; returns (run, traffic, before props, after props, served)."""
    before = dep.host.props("vllm", *PROPS)
    with Traffic(dep, untouched) as traffic:
        res = dep.play(lib.CONFIGURE, name, ["-e", json.dumps({"vllm_server_lora_adapters": adapters})])
        time.sleep(1)   # a request or two after the run, too
    after = dep.host.props("vllm", *PROPS)
    return res, traffic, before, after, served(dep)


def test_adapter_changes_without_a_restart(deployment):
    dep = deployment
    host = dep.host
    orig = dep.vars["vllm_server_lora_adapters"]
    v2 = "%s/easycontract-v2" % ADAPTERS_DIR
    host.sh("rm -rf %s && cp -a %s/easycontract %s && chmod -R a+rX %s" % (v2, ADAPTERS_DIR, v2, v2))
    start = host.props("vllm", *PROPS)
    steps = [
        ("lora-add", orig + [{"name": "added", "path": "%s/easycontract" % ADAPTERS_DIR}], ["easycontract", "checklist"]),
        # the AI server of the play references easycontract and checklist by name: both stay served
        ("lora-remove-and-change-path", [{"name": "easycontract", "path": v2},
                                         {"name": "checklist", "path": dep.adapters["checklist"]}], ["checklist"]),
        ("lora-change-path-back", orig, ["checklist"]),
    ]
    rows = []
    for name, adapters, untouched in steps:
        res, traffic, before, after, now = change(dep, name, adapters, untouched)
        want = {a["name"]: a["path"] for a in adapters}
        unit = host.read("/etc/systemd/system/vllm.service")
        in_unit = all(json.dumps(a, separators=(",", ":")) in unit for a in adapters) and unit.count('{"name":') == len(adapters)
        reload_ = host.props("vllm", "NeedDaemonReload")["NeedDaemonReload"]
        fails = traffic.failures()
        ok = (res.rc == 0 and res.changed() > 0 and before == after and now == want and in_unit and reload_ == "no"
              and not fails and len(traffic.results) > 0)
        rows.append(ok)
        report.check("%s: adapters %s applied to the running engine: no restart (MainPID %s, NRestarts %s, InvocationID "
                     "unchanged), /v1/models lists exactly them, the unit names them for the next start, requests to %s "
                     "kept succeeding" % (name, ", ".join(want), after.get("MainPID"), after.get("NRestarts"),
                                          ", ".join(untouched)), ok,
                     "rc=%d changed=%d, props %s -> %s, served %s, unit names them %s, NeedDaemonReload %s, %d requests, "
                     "%d failed %s" % (res.rc, res.changed(), before, after, now, in_unit, reload_, len(traffic.results),
                                       len(fails), fails[:3]))
        assert res.rc == 0, res.tail()
        assert before == after, (before, after, res.tail(3000))
        assert now == want, (now, want)
        assert in_unit, unit
        assert reload_ == "no"
        assert traffic.results and not fails, fails[:5]
    # the rerun: the unit on the host changed after the start (its adapters), the process runs the same configuration
    before = host.props("vllm", *PROPS)
    res = dep.play(lib.CONFIGURE, "lora-rerun-no-change")
    after = host.props("vllm", *PROPS)
    ok = res.rc == 0 and res.changed() == 0 and before == after == start
    report.check("after the runtime changes a rerun of configure.yml changes nothing and restarts nothing (the unit "
                 "is newer than the process, which runs the same configuration apart from its adapters)", ok,
                 "rc=%d changed=%d, props at the start %s, now %s" % (res.rc, res.changed(), start, after))
    assert res.rc == 0 and res.changed() == 0, res.tail()
    assert before == after == start, (start, before, after)


def _cache_listing(host):
    out = {}
    for key, path in CACHES.items():
        files = host.sh("find %s -type f 2>/dev/null | sort" % path, check=False).stdout.split()
        out[key] = files
    return out


def test_compile_caches_survive_a_restart(deployment):
    dep = deployment
    host = dep.host
    env = host.sh("tr '\\0' '\\n' < /proc/%d/environ | grep -E '^(VLLM_CACHE_ROOT|TORCHINDUCTOR_CACHE_DIR|TRITON_CACHE_DIR)='"
                  % host.main_pid("vllm"), check=False).stdout.split()
    env_ok = sorted(env) == sorted("%s=%s" % kv for kv in CACHES.items())
    first = _cache_listing(host)
    t0 = host.props("vllm", "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"]
    host.sh("systemctl restart vllm", timeout=120)
    t_restart = time.monotonic()
    ready = None
    while time.monotonic() - t_restart < 300:
        status, _h, _b = http(dep.url(VLLM_PORT, "/health"), timeout=5)
        if status == 200:
            ready = time.monotonic() - t_restart
            break
        time.sleep(0.5)
    second = _cache_listing(host)
    journal = host.sh("journalctl -u vllm --no-pager -o cat --since=-%ds | grep -iE 'cache|compil' | tail -n 20"
                      % int(time.monotonic() - t_restart + 5), check=False).stdout
    kept = all(set(first[k]) <= set(second[k]) for k in CACHES)
    populated = [k for k in CACHES if first[k]]
    report.RESULTS["facts"]["compile_caches"] = {k: len(v) for k, v in first.items()}
    report.RESULTS["facts"]["warm_restart_seconds"] = round(ready, 1) if ready else None
    report.note("warm restart journal (cache/compile lines): %s" % journal.strip().replace("\n", " | ")[:1500])
    ok = env_ok and ready is not None and kept and bool(populated)
    report.check("the compile caches are the service directory's (%s in the engine's environment), populated after a "
                 "start (%s) and still there after a restart (/health again after %s s)" % (
                     ", ".join(CACHES), ", ".join(populated) or "none", round(ready, 1) if ready else "never"), ok,
                 "environment %s; files before %s, after %s; start monotonic %s" % (
                     env, {k: len(v) for k, v in first.items()}, {k: len(v) for k, v in second.items()}, t0))
    assert env_ok, env
    assert ready is not None, "vLLM did not answer /health within 300 s of the restart"
    assert populated, first
    assert kept, (first, second)

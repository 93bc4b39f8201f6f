"""Starts of the real engine, cold and warm, and their phases as the collection reads them (shared by
test_7_startup_phases.py and the `make bench` stage bench_startup.py).

cold: vLLM stopped, its compile caches under the service directory emptied (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR,
TRITON_CACHE_DIR: the unit's Environment= lines, read back from the unit), then started; warm: a plain restart, caches
kept. The phases come from the collection's own module (llmops.gce_vllm.vllm_startup_info, run with `ansible` as a
user would) on the host's real journal; the first /health 200 is also watched from outside (StartWatch).
"""

from __future__ import annotations

import json
import re
import time

from tests.real_engine.conftest import StartWatch
from tests.reliability import lib

CACHE_VARS = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def cache_dirs(host) -> dict:
    """{variable: directory} of the compile caches, as the unit sets them."""
    env = host.sh("systemctl show vllm --property=Environment --value").stdout
    found = dict(re.findall(r"\b(%s)=(\S+)" % "|".join(CACHE_VARS), env))
    missing = [v for v in CACHE_VARS if v not in found]
    assert not missing, "the unit sets no %s (Environment=%s)" % (missing, env)
    return found


def cache_bytes(host) -> dict:
    """{variable: bytes in the files under that cache directory}."""
    out = {}
    for var, path in cache_dirs(host).items():
        sizes = host.sh("find %s -type f -printf '%%s\\n'" % path).stdout.split()
        out[var] = sum(int(x) for x in sizes)
    return out


def startup_info(dep, unit="vllm") -> dict:
    """What llmops.gce_vllm.vllm_startup_info returns on the host (ad-hoc `ansible`: 'HOST | SUCCESS => {json}';
    JSON, not the YAML result format ansible.cfg sets for people)."""
    env = dict(lib.ansible_env(), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    res = lib.run([lib.VENV_BIN / "ansible", "-i", dep.host.inventory, dep.host.name, "-b", "-m",
                   "llmops.gce_vllm.vllm_startup_info", "-a", "unit=%s" % unit], timeout=120, env=env)
    assert res.rc == 0, "vllm_startup_info failed (rc=%d):\n%s" % (res.rc, res.tail(3000))
    task = json.loads(res.out[res.out.index("=>") + 2:].strip())
    assert not task.get("failed"), task
    return task


def journal(host, invocation) -> str:
    """The journal of one invocation, as the module reads it (for fixtures and failure messages)."""
    return host.sh("journalctl --no-pager --output=short-iso-precise _SYSTEMD_INVOCATION_ID=%s + INVOCATION_ID=%s"
                   % (invocation, invocation)).stdout


def start(dep, cold: bool, timeout=420) -> dict:
    """One start: cold (caches emptied) or warm. Returns {kind, info (the module's result), health_200_s (first
    /health 200 seen from outside, after systemd started the main process), cache_bytes_before}."""
    host = dep.host
    if cold:
        host.sh("systemctl stop vllm")
        for path in cache_dirs(host).values():
            host.sh("find %s -mindepth 1 -delete" % path)
    before = cache_bytes(host)
    # the watch begins once systemctl has returned: the old process is gone (a restart waits for its stop) and the new
    # one forked, so a 200 is the new start's (begun before, the warm case saw the old engine's 200: -2.0 s)
    host.sh("systemctl %s vllm" % ("start" if cold else "restart"))
    with StartWatch(dep.engine_url("/health"), netns=dep.netns) as watch:
        t0 = time.monotonic()
        while watch.first_ok is None and time.monotonic() - t0 < timeout:
            time.sleep(0.2)
    assert watch.first_ok is not None, "vLLM did not answer /health 200 within %d s (%s start)" % (
        timeout, "cold" if cold else "warm")
    started = int(host.props("vllm", "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"]) / 1e6
    time.sleep(1.0)   # the access log line of that first 200 reaches the journal
    info = startup_info(dep)
    return {"kind": "cold" if cold else "warm", "info": info, "health_200_s": round(watch.first_ok - started, 2),
            "cache_bytes_before": before}

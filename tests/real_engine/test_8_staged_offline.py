"""Issue 13 on the real engine: weights staged in HF_HOME before a (re)start, and offline (re)starts.

The generated tiny model and one adapter are placed on the host in huggingface_hub's cache layout under the role's HF_HOME
(hub/models--ORG--NAME/refs/main -> snapshots/<commit>/), as a download would leave them, and served by HUB ID through
configure.yml (vllm_server_model: llmops-test/tiny-llama). No machine here reaches huggingface.co, so:

- the role must see both as staged (hf_snapshot's check, vLLM's own offline call) and skip the download task, and the
  cache must be left as it was placed;
- the unit runs vLLM with HF_HUB_OFFLINE=1 (in /proc/<pid>/environ), vLLM resolves the id to the snapshot directory (its
  "HF_HUB_OFFLINE is True, replace model_id" journal line: vllm#23684's code path) and serves it under the id;
- that start happens with the hub unreachable (probed from the host, as vLLM would ask it without HF_HUB_OFFLINE);
- the engine would otherwise ask the hub: from the host the hub does not answer, and an id that is not in the cache makes
  the role try the download and fail with the hub's error before the unit changes, the running engine untouched.
The suite's last file (test_8): the session ends on this deployment, so nothing converges it back to the model as a
local directory (an engine start fewer).
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from tests.real_engine import engine, report, startup
from tests.real_engine.conftest import VLLM_PORT, http
from tests.reliability import lib

HF_HOME = "/app/vllm-server/.cache/huggingface"
MODEL_ID = "llmops-test/tiny-llama"
ADAPTER_ID = "llmops-test/tiny-easycontract"
COMMIT = hashlib.sha1(b"llmops-test tiny-llama").hexdigest()
ADAPTER_COMMIT = hashlib.sha1(b"llmops-test tiny-easycontract").hexdigest()
PROPS = ("MainPID", "NRestarts", "InvocationID", "ExecMainStartTimestampMonotonic")


def storage(repo):
    return "%s/hub/models--%s" % (HF_HOME, repo.replace("/", "--"))


def place(host, repo, src, commit):
    """src (a directory on the host) as huggingface_hub's cache holds a download of `repo` at main."""
    d = storage(repo)
    # refs/main holds the commit without a newline, as huggingface_hub writes it (and reads it: f.read(), no strip)
    names = {"d": d, "c": commit, "src": src, "home": HF_HOME}
    host.sh("rm -rf %(d)s && mkdir -p %(d)s/refs %(d)s/snapshots/%(c)s && cp -a %(src)s/. %(d)s/snapshots/%(c)s/ && "
            "printf %%s %(c)s > %(d)s/refs/main && chown -R vllm:vllm %(home)s/hub" % names)


def cache_listing(host):
    return host.sh("find %s/hub -printf '%%p %%y %%s %%T@\\n' | sort" % HF_HOME).stdout


def journal_of(host, invocation):
    """The journal lines of one start of the vllm unit (its InvocationID)."""
    return host.sh("journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID=%s" % invocation, check=False).stdout


def hub_unreachable(host):
    """(True, the error) when the hub does not answer from the host: what vLLM would meet without HF_HUB_OFFLINE."""
    probe = host.sh("runuser -u vllm -- env HF_HOME=%s /app/vllm-server/venv/bin/python -c \"import huggingface_hub as h; "
                    "h.model_info('%s', timeout=15)\" 2>&1 | tail -n 1" % (HF_HOME, MODEL_ID), check=False, timeout=120)
    out = probe.stdout.strip()
    return ("ConnectError" in out or "ConnectTimeout" in out or "resolve" in out.lower()), out[-160:]


def served(dep):
    status, _h, body = http(dep.url(VLLM_PORT, "/v1/models"), headers=dep.key_header())
    assert status == 200, (status, body[:300])
    return {c["id"]: c["root"] for c in json.loads(body)["data"]}


def environ(host):
    pid = host.main_pid("vllm")
    env = host.sh("tr '\\0' '\\n' < /proc/%d/environ" % pid).stdout.split("\n")
    return {k: v for k, _s, v in (line.partition("=") for line in env) if k in ("HF_HUB_OFFLINE", "HF_HOME")}


@pytest.fixture(scope="module")
def hub_deployment(deployment):
    """The deployment serving the model and easycontract by hub id from the placed cache (left so: the suite's last file)."""
    dep = deployment
    place(dep.host, MODEL_ID, dep.base, COMMIT)
    place(dep.host, ADAPTER_ID, dep.adapters["easycontract"], ADAPTER_COMMIT)
    dep.hub_vars = {"vllm_server_model": MODEL_ID,
                    "vllm_server_lora_adapters": [{"name": "easycontract", "path": ADAPTER_ID},
                                                  {"name": "checklist", "path": dep.adapters["checklist"]}]}
    return dep


def test_hub_id_served_from_the_staged_cache_with_hf_hub_offline(hub_deployment):
    dep = hub_deployment
    host = dep.host
    unreachable, probe = hub_unreachable(host)
    assert unreachable, probe
    cache_before = cache_listing(host)
    res = dep.play(lib.CONFIGURE, "hub-id-from-the-staged-cache", ["-e", json.dumps(dep.hub_vars)])
    assert res.rc == 0, res.tail(6000)
    # the role's check saw both snapshots and skipped the download (no hub here: a download would have failed)
    download_skipped = (bool(re.search(r"TASK \[[^\]]*Download the missing snapshots[^\]]*\][^\n]*\n(skipping|skipped)", res.out))
                        and host.sh("test -e %s/stage.log" % HF_HOME, check=False).returncode != 0)
    cache_kept = cache_listing(host) == cache_before
    unit = host.read("/etc/systemd/system/vllm.service")
    env = environ(host)
    start = host.props("vllm", *PROPS)
    journal = journal_of(host, start["InvocationID"])
    resolved = re.findall(r"HF_HUB_OFFLINE is True, replace model_id \[([^\]]+)\] to model_path \[([^\]]+)\]", journal)
    models = served(dep)
    status, _h, body = http(dep.url(VLLM_PORT, "/v1/completions"), "POST",
                            {"model": "easycontract", "prompt": "hello", "max_tokens": 2}, dep.key_header(), timeout=60)
    want_path = "%s/snapshots/%s" % (storage(MODEL_ID), COMMIT)
    ok = (download_skipped and cache_kept and "Environment=HF_HUB_OFFLINE=1" in unit
          and env == {"HF_HUB_OFFLINE": "1", "HF_HOME": HF_HOME} and (MODEL_ID, want_path) in resolved
          and MODEL_ID in models and models.get("easycontract") == ADAPTER_ID and status == 200)
    report.RESULTS["facts"]["offline_resolution"] = resolved
    report.RESULTS["facts"]["offline_start_seconds"] = startup.startup_info(dep)["startup"]["ready_seconds"]
    report.check("the model (%s) and an adapter (%s) placed in HF_HOME's hub cache as a download leaves them are seen as "
                 "staged: no download, the cache untouched; with the hub unreachable from the host (%s) the unit runs vLLM with HF_HUB_OFFLINE=1 and HF_HOME "
                 "(/proc/<pid>/environ), vLLM resolves the id to the snapshot offline and serves it under the id, the "
                 "adapter answers" % (MODEL_ID, ADAPTER_ID, probe), ok,
                 "download skipped %s, cache kept %s, environ %s, vLLM: %s, /v1/models %s, completion %s %s" % (
                     download_skipped, cache_kept, env, resolved, models, status, body[:120]))
    assert download_skipped, res.out[-6000:]
    assert cache_kept
    assert "Environment=HF_HUB_OFFLINE=1" in unit
    assert env == {"HF_HUB_OFFLINE": "1", "HF_HOME": HF_HOME}, env
    assert (MODEL_ID, want_path) in resolved, journal[-3000:]
    assert MODEL_ID in models and models.get("easycontract") == ADAPTER_ID, models
    assert status == 200, body[:300]
    # a rerun: everything staged, nothing changes (the check asks no hub)
    res = dep.play(lib.CONFIGURE, "hub-id-rerun", ["-e", json.dumps(dep.hub_vars)])
    after = host.props("vllm", *PROPS)
    report.check("a rerun with the hub id changes nothing and restarts nothing", res.rc == 0 and res.changed() == 0
                 and after == start, "rc=%d changed=%d, %s -> %s" % (res.rc, res.changed(), start, after))
    assert res.rc == 0 and res.changed() == 0, res.tail()
    assert after == start, (start, after)


def test_an_id_not_in_the_cache_is_downloaded_and_fails_before_any_change(hub_deployment):
    """The proof that the placed snapshots were seen as present: the same run with an id that is not in the cache
    does try the hub (and, the hub being unreachable, fails with its error), before the unit changes."""
    dep = hub_deployment
    host = dep.host
    before = host.props("vllm", *PROPS)
    unit_before = host.read("/etc/systemd/system/vllm.service")
    missing = "llmops-test/not-in-the-cache"
    res = dep.play(lib.CONFIGURE, "hub-id-not-staged", ["-e", json.dumps(dict(
        dep.hub_vars, vllm_server_model=missing, vllm_server_stage_timeout=300, vllm_server_stage_poll=2))], timeout=900)
    after = host.props("vllm", *PROPS)
    unit_kept = host.read("/etc/systemd/system/vllm.service") == unit_before
    log = host.sh("cat %s/stage.log 2>/dev/null | tail -n 5" % HF_HOME, check=False).stdout
    words = ["downloading %s (revision main) failed" % missing]
    absent = [w for w in words if w not in res.flat]
    status, _h, _b = http(dep.url(VLLM_PORT, "/health"))
    ok = res.rc != 0 and not absent and before == after and unit_kept and status == 200 and missing in log
    report.check("an id that is not in the cache makes the role download it (the hub is unreachable: the run fails with "
                 "the hub's error, in %.0f s) before the unit changes; the engine keeps running" % res.seconds, ok,
                 "rc=%d, missing words %s, unit kept %s, vllm %s -> %s, /health %s, stage.log: %s" % (
                     res.rc, absent or "none", unit_kept, before["MainPID"], after["MainPID"], status,
                     log.strip().replace("\n", " | ")[:400]))
    assert res.rc != 0, res.tail()
    assert not absent, (absent, res.tail(4000))
    assert unit_kept
    assert before == after, (before, after)
    assert status == 200
    assert missing in log, log


def test_the_model_snapshot_is_where_the_engine_reads_it(hub_deployment):
    """The placed snapshot is the generated model (same files as the local directory of the session)."""
    host = hub_deployment.host
    a = host.sh("cd %s && find . -type f -exec md5sum {} + | sort -k2" % hub_deployment.base).stdout
    b = host.sh("cd %s/snapshots/%s && find . -type f -exec md5sum {} + | sort -k2" % (storage(MODEL_ID), COMMIT)).stdout
    assert a == b and a.strip(), (a, b)
    assert engine.MODEL_ON_HOST in hub_deployment.base

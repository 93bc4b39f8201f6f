"""Secrets never leak; both units are sandboxed (systemd-analyze security, next to the runbook's units).

The secrets are this session's fresh random strings (conftest.secrets_), so a substring search is exact.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.reliability import lib

# The runbook's units, verbatim (l4-vllm-guide.ko.md sections 3-4 and 4-4), for scoring next to ours.
# Only User=$(whoami) is resolved, to the login user of the host (ansible here; ubuntu on the GCE image).
RUNBOOK_VLLM = r"""[Unit]
Description=vLLM Server (EXAONE 2.4B + LoRA)
After=network.target

[Service]
Type=simple
User=root
WorkingDirectory=/app/vllm-server
EnvironmentFile=/app/vllm-server/vllm.env
Environment="PATH=/app/vllm-server/venv/bin:/usr/local/bin:/usr/bin:/bin"
Environment="LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu"
Environment="HF_HOME=/app/vllm-server/.cache/huggingface"
Environment="TRANSFORMERS_CACHE=/app/vllm-server/.cache/huggingface"

ExecStart=/app/vllm-server/venv/bin/vllm serve ${VLLM_MODEL} \
    --host ${VLLM_HOST} \
    --port ${VLLM_PORT} \
    --api-key ${VLLM_API_KEY} \
    --gpu-memory-utilization ${VLLM_GPU_MEMORY_UTILIZATION} \
    --max-model-len ${VLLM_MAX_MODEL_LEN} \
    --dtype ${VLLM_DTYPE} \
    --trust-remote-code \
    --enable-lora \
    --lora-modules \
      '{"name":"easycontract","path":"temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"}' \
      '{"name":"checklist","path":"imyj1013/exaone-qlora-checklist-adapter"}' \
    --max-lora-rank ${VLLM_MAX_LORA_RANK}

Restart=always
RestartSec=10
TimeoutStartSec=600
LimitNOFILE=65536
LimitNPROC=65536

[Install]
WantedBy=multi-user.target
"""
RUNBOOK_AI = """[Unit]
Description=AI Server (FastAPI)
After=network.target vllm.service
Wants=vllm.service

[Service]
Type=simple
User=ansible
WorkingDirectory=/app/ai-server
Environment="PATH=/app/ai-server/.venv/bin:/usr/local/bin:/usr/bin:/bin"
ExecStart=/app/ai-server/.venv/bin/uvicorn main:app --host 0.0.0.0 --port 8000

Restart=always
RestartSec=5
TimeoutStartSec=60

[Install]
WantedBy=multi-user.target
"""
EXPOSURE_RE = re.compile(r"Overall exposure level for (\S+): ([0-9.]+) (\w+)")
ITEM_RE = re.compile(r"^✗\s+(\S+)\s+(.*?)\s+([0-9.]+)\s*$")


def _found(text: str, secrets: dict) -> list:
    return [k for k, v in secrets.items() if v in text]


def test_no_secret_on_any_command_line_during_a_full_run(deployment, secrets_):
    """Every process's /proc/PID/cmdline on this machine (controller and test host) was sampled every
    50 ms while the first converge ran (conftest); the running services are checked here too."""
    watch = deployment.first_watch
    # now, with both services up: their whole process trees
    pids = deployment.host.sh("systemctl show -p MainPID --value vllm ai-server").stdout.split()
    hits = list(watch.hits)
    for pid in pids:
        out = deployment.host.sh("cat /proc/%s/cmdline | tr '\\0' ' '; echo; pgrep -a -P %s || true" % (pid, pid)).stdout
        hits += [("service pid %s" % pid, k, "") for k in _found(out, secrets_)]
    lib.record("secrets", where="command lines of every process (controller + test host) during the -vvv converge, "
               "and of both services", how="%d samples of /proc/*/cmdline, %d distinct command lines"
               % (watch.passes, len(watch.processes_seen)), found=len(hits))
    assert watch.passes > 20, "the sampler barely ran"
    assert not hits, "secrets on command lines: %s" % hits


def test_no_secret_in_the_vvv_log_of_a_full_run(deployment, secrets_):
    text = deployment.first_log.read_text(errors="replace")
    found = _found(text, secrets_)
    lib.record("secrets", where="`ansible-playbook -vvv` output of the first full converge",
               how="substring search of %d KB of log" % (len(text) // 1024), found=len(found))
    assert "TASK [llmops.gce_vllm.venv_service : Write the environment file (secrets masked in the diff, mode 0600) of vllm]" in text, \
        "the -vvv log is not a full run"
    assert not found, "secrets in the -vvv log: %s" % found


def test_no_secret_in_check_diff_output_with_rotated_secrets(converged, secrets_):
    """--check --diff with NEW secrets: the env files would change, so a diff is due; it must not show them."""
    rotated = {"vllm_server_api_key": lib.new_secret("vk"), "ai_server_backend_internal_token": lib.new_secret("bt"),
               "ai_server_api_key": lib.new_secret("ak")}
    lib.SECRETS.update({"rotated_" + k: v for k, v in rotated.items()})
    res = converged.configure(rotated, args=["--check", "--diff", "-vvv"], name="check-diff")
    found = _found(res.out, {**secrets_, **rotated})
    lib.record("secrets", where="`--check --diff -vvv` output, with rotated secrets (so the env files differ)",
               how="substring search (old and new secrets)", found=len(found))
    assert res.rc == 0, res.tail()
    assert res.changed() > 0, "check mode saw no change although the secrets were rotated"
    assert not found, "secrets in --check --diff output: %s" % found


def test_no_secret_in_files_other_users_can_read(converged, secrets_):
    host = converged.host
    patterns = "\n".join(secrets_.values()) + "\n"
    # as an unprivileged user: whatever it can read anywhere on the host (directory permissions included)
    as_nobody = host.sh("runuser -u nobody -- grep -rlsF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys "
                        "--exclude-dir=dev || true", input=patterns, timeout=300).stdout.split()
    # as root: every file holding a secret, with its mode and owner: only the AI server's .env, the proxies'
    # configurations and the readiness checker's env file may (behind its proxy vLLM holds no key: vllm.env has none).
    # The checker (ai_server_readiness) asks vLLM's /v1/models with the app's VLLM_BASE_URL and key, through vLLM's
    # proxy, so a key the proxy refuses makes the host not ready; systemd reads its env file as root.
    as_root = host.sh("grep -rlsF -f /dev/stdin / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
                      "| xargs -r stat -c '%n %a %U:%G' || true", input=patterns, timeout=300).stdout.splitlines()
    lib.record("secrets", where="files on the test host readable by another user", how="`grep -r` over / as nobody",
               found=len(as_nobody))
    holders = sorted(as_root)
    lib.RESULTS["notes"].append("files holding a secret on the host (as root): " + "; ".join(holders))
    assert not as_nobody, "secrets readable by nobody: %s" % as_nobody
    allowed = {"/app/ai-server/.env": "600 aiserver:aiserver", "/etc/haproxy/vllm-proxy.cfg": "600 root:root",
               "/etc/haproxy/ai-server-proxy.cfg": "600 root:root", "/var/lib/llmops/ai-server-ready.env": "600 root:root"}
    unexpected = [h for h in holders if h.split()[0] not in allowed]
    assert not unexpected, "secrets in unexpected files: %s" % unexpected
    assert {h.split()[0]: h.split(None, 1)[1] for h in holders} == allowed, holders


def test_no_secret_in_results_and_report_files(converged, secrets_, workdir):
    """verify.yml (the runbook's checklist, incl. the external checks from the controller) writes its report."""
    results = workdir / "verify-results"
    res = converged.configure({"checklist_results_dir": str(results), "gce_public_ip": converged.host.address},
                              playbook=lib.VERIFY, name="verify")
    assert res.rc == 0, res.tail()
    files = [p for p in results.rglob("*") if p.is_file()]
    assert files, "verify.yml wrote no report under %s" % results
    found = [(str(p), k) for p in files for k in _found(p.read_text(errors="replace"), secrets_)]
    found += [("verify.yml output", k) for k in _found(res.out, secrets_)]
    lib.record("secrets", where="verify.yml report files (%s) and its output" % ", ".join(sorted({p.suffix for p in files})),
               how="substring search of %d files" % len(files), found=len(found))
    assert not found, found


def _score(host, unit):
    out = host.sh("systemd-analyze security --no-pager %s" % unit, check=False).stdout
    m = EXPOSURE_RE.search(out)
    assert m, "no exposure level for %s:\n%s" % (unit, out[-2000:])
    items = []
    for line in out.splitlines():
        im = ITEM_RE.match(line.strip())
        if im and float(im.group(3)) >= 0.2:
            items.append((float(im.group(3)), im.group(1)))
    return float(m.group(2)), m.group(3), [item[1] for item in sorted(items, reverse=True)]


@pytest.fixture(scope="module")
def runbook_units(deployment):
    host = deployment.host
    host.sh("mkdir -p /run/systemd/system && cat > /run/systemd/system/runbook-vllm.service", input=RUNBOOK_VLLM)
    host.sh("cat > /run/systemd/system/runbook-ai-server.service", input=RUNBOOK_AI)
    host.sh("systemctl daemon-reload")
    yield {"vllm.service": "runbook-vllm.service", "ai-server.service": "runbook-ai-server.service"}
    host.sh("rm -f /run/systemd/system/runbook-vllm.service /run/systemd/system/runbook-ai-server.service; "
            "systemctl daemon-reload")


@pytest.mark.parametrize("unit", ["vllm.service", "ai-server.service"])
def test_units_are_sandboxed_ok_band_or_better(converged, runbook_units, unit):
    host = converged.host
    ours, band, remaining = _score(host, unit)
    theirs, their_band = _score(host, runbook_units[unit])[:2]
    user = host.props(unit, "User")["User"]
    version = host.sh("systemctl --version | head -n1").stdout.strip()
    lib.record("hardening", unit=unit, ours=ours, ours_band=band, runbook=theirs, runbook_band=their_band,
               user=user, remaining=remaining, systemd=version)
    assert user and user != "root", "%s runs as root" % unit
    assert band in ("SAFE", "OK"), "%s scores %s %s; remaining: %s" % (unit, ours, band, remaining)
    assert ours < theirs


# --- the authenticating proxies (issue 9) -------------------------------------------------------------------------
def _workers(host, unit):
    return sorted(host.sh("pgrep -P %d || true" % host.main_pid(unit)).stdout.split())


def test_services_listen_on_loopback_only(converged):
    out = converged.host.sh("ss -Hltnp").stdout
    by_port = {}
    for line in out.splitlines():
        f = line.split()
        addr, _sep, port = f[3].rpartition(":")
        by_port.setdefault(int(port), set()).add((addr, '"haproxy"' in line))
    lib.RESULTS["notes"].append("listeners on the test host (ss -ltnp): " + "; ".join(
        "%d on %s%s" % (p, "/".join(sorted(a for a, _h in v)), " (haproxy)" if all(h for _a, h in v) else "")
        for p, v in sorted(by_port.items())))
    assert by_port[18001] == {("127.0.0.1", False)} and by_port[18000] == {("127.0.0.1", False)}, by_port
    assert all(h for _a, h in by_port[8001] | by_port[8000]), by_port


def test_key_rotation_reloads_the_proxy_without_restarting_vllm_or_failing_a_request(converged, secrets_):
    """A new vllm_server_api_key: the proxy reloads (same master, new workers), vLLM keeps running, the public port
    answers every probe during the run, and afterwards only the new key opens /v1."""
    host = converged.host
    old_key = converged.good["vllm_server_api_key"]
    new_key = lib.new_secret("vk")
    lib.SECRETS["rotated_proxy_vllm_server_api_key"] = new_key
    vllm_pid, proxy_pid, workers = host.main_pid("vllm"), host.main_pid("vllm-proxy"), _workers(host, "vllm-proxy")
    failures, polls, stop = [], [0], threading.Event()

    def probe():   # a new connection each time, every 20 ms, for the whole run
        while not stop.is_set():
            polls[0] += 1
            status = lib.http_status(host.url(8001, "/health"), timeout=2.0)
            if status != 200:
                failures.append(status)
            stop.wait(0.02)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    converged.set_good(vllm_server_api_key=new_key)
    try:
        res = converged.configure(name="rotate-vllm-key")
    finally:
        stop.set()
        thread.join(5)
    # the old workers stop listening at once (the master signals them) and exit when their connections end: none
    # may serve the old configuration (the old key) afterwards
    old = set(workers)
    for _attempt in range(100):
        if not old & set(_workers(host, "vllm-proxy")):
            break
        time.sleep(0.1)
    old_key_answers = [lib.http_status(host.url(8001, "/v1/models"), headers={"Authorization": "Bearer " + old_key}, timeout=5)
                       for _request in range(20)]
    reloaded = re.search(r"TASK \[llmops\.gce_vllm\.auth_proxy : Reload without dropping a connection[^\]]*vllm-proxy\][^\n]*\n"
                         r"\s*changed:", res.out) is not None
    after = host.main_pid("vllm"), host.main_pid("vllm-proxy"), _workers(host, "vllm-proxy")
    new_ok = lib.http_status(host.url(8001, "/v1/models"), headers={"Authorization": "Bearer " + new_key}, timeout=5)
    old_refused = lib.http_status(host.url(8001, "/v1/models"), headers={"Authorization": "Bearer " + old_key}, timeout=5)
    ok = (res.rc == 0 and reloaded and not failures and after[0] == vllm_pid and after[1] == proxy_pid
          and after[2] != workers and new_ok == 200 and set(old_key_answers) == {401} and not old & set(_workers(host, "vllm-proxy")))
    lib.record("faults", fault="rotation of vllm_server_api_key", injected="a new key, configure.yml",
               expected="the proxy reloads, vLLM keeps running, no request fails, only the new key opens /v1",
               observed="rc=%d; proxy reloaded: %s (master %s, workers %s -> %s); vLLM pid %s -> %s; %d of %d /health probes "
                        "failed; new key -> %s, old key -> %s (20 more: %s); old workers left: %s"
               % (res.rc, reloaded, "kept" if after[1] == proxy_pid else "replaced", workers, after[2], vllm_pid, after[0],
                  len(failures), polls[0], new_ok, old_refused, sorted(set(old_key_answers)),
                  sorted(old & set(_workers(host, "vllm-proxy")))),
               survived=ok)
    assert res.rc == 0, res.tail()
    assert reloaded, "the proxy was not reloaded:\n" + res.tail()
    assert after[0] == vllm_pid, "vLLM was restarted for a key rotation"
    assert after[1] == proxy_pid and after[2] != workers, "not a reload (master %s -> %s, workers %s -> %s)" % (
        proxy_pid, after[1], workers, after[2])
    assert not failures, "%d of %d probes failed during the reload: %s" % (len(failures), polls[0], failures[:10])
    assert (new_ok, old_refused) == (200, 401)
    assert set(old_key_answers) == {401}, "the old key still opened /v1 after the reload: %s" % old_key_answers
    assert not old & set(_workers(host, "vllm-proxy")), "old workers still running 10 s after the reload"
    assert new_key not in res.out and old_key not in res.out
    secrets_["vllm_server_api_key"] = new_key   # the later tests talk to vLLM with the key now deployed


def _self_signed(workdir, address):
    """A self-signed certificate for the test host's address (SAN IP), made now with openssl; (cert, key) PEM."""
    key, crt = workdir / "tls.key", workdir / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % address,
                    "-addext", "subjectAltName=IP:%s" % address, "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    key.chmod(0o600)
    return crt.read_text(), key.read_text(), crt


def test_tls_on_the_public_port_with_a_self_signed_certificate(converged, workdir, secrets_):
    """vllm_server_tls_certificate/_key: the proxy serves HTTPS (the certificate verifies against itself), the key is
    still required on every path; the private key is only in the root-only PEM; turning TLS off again removes it."""
    host = converged.host
    cert, key, crt_file = _self_signed(workdir, host.address)
    lib.SECRETS["tls_private_key"] = key.strip().splitlines()[1]   # a line of the private key, for the scans
    ctx = ssl.create_default_context(cafile=str(crt_file))
    url = "https://%s:8001" % host.address

    def status(path, key_=None):
        req = urllib.request.Request(url + path, headers={"Authorization": "Bearer " + key_} if key_ else {})
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:  # noqa: S310 (test host)
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        res = converged.configure({"vllm_server_tls_certificate": cert, "vllm_server_tls_key": key}, name="tls-on")
        assert res.rc == 0, res.tail()
        assert key.strip().splitlines()[1] not in res.out
        got = (status("/health"), status("/invocations"), status("/v1/models", secrets_["vllm_server_api_key"]))
        plain = lib.http_status(host.url(8001, "/health"), timeout=3)
        pem = host.sh("stat -c '%a %U' /etc/haproxy/vllm-proxy.pem").stdout.split()
        lib.RESULTS["notes"].append("TLS on port 8001 (self-signed, verified): /health %s, /invocations without key %s, "
                                    "/v1/models with key %s; plain HTTP %s; PEM %s" % (got + (plain, pem)))
        assert got == (200, 401, 200), got
        assert plain != 200
        assert pem == ["600", "root"], pem
    finally:
        res = converged.configure(name="tls-off")
    assert res.rc == 0, res.tail()
    assert host.sh("test -e /etc/haproxy/vllm-proxy.pem", check=False).returncode != 0
    assert lib.http_status(host.url(8001, "/health"), timeout=3) == 200


@pytest.mark.parametrize("unit", ["vllm-proxy.service", "ai-server-proxy.service"])
def test_proxy_units_are_sandboxed_ok_band_or_better(converged, unit):
    """The authenticating proxies (the runbook had none): master root (it reads the root-only configuration), workers
    user haproxy, the unit sandboxed."""
    score, band, remaining = _score(converged.host, unit)
    workers = converged.host.sh("ps -o user= --ppid %d" % converged.host.main_pid(unit)).stdout.split()
    lib.RESULTS["notes"].append("systemd-analyze security %s: %.1f %s (workers run as %s; remaining: %s)"
                                % (unit, score, band, ",".join(sorted(set(workers))), ", ".join(remaining[:6])))
    assert band in ("SAFE", "OK"), "%s scores %s %s; remaining: %s" % (unit, score, band, remaining)
    assert workers and set(workers) == {"haproxy"}, workers

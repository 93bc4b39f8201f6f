"""Observability on a real systemd test host (issue 12): the exporters role, the prometheus role, and Prometheus
scraping the host's vLLM (the stand-in, behind the authenticating proxy, with the key from a credentials file), the
AI server (the real example app, behind its own proxy, with its key from another credentials file), node_exporter
(Debian's real prometheus-node-exporter, systemd collector on) and the GPU exporter (the stand-in wheel serving the
real H200 capture, in the role's venv and hardened unit).

One host (Debian 12) runs everything: gpu_vm.yml (gpu_host, vllm_server, ai_server) once, then
playbooks/monitoring.yml twice (the second run changes nothing). Then chats go to vLLM and through the AI server
(the base model, each adapter, a bad task), and the test asserts every target is up, that PromQL over every job's
series returns data, and that every main panel of the dashboard has data: tests/monitoring/plot.py's `collect`
asks Prometheus for each panel's queries and saves them to results/monitoring/panels.json, from which
`python -m tests.monitoring.plot --from-json` draws docs/monitoring/panels.png. The AI server's real /metrics is
saved as the dated fixture the dashboard's metric-name check reads (tests/fixtures/ai_server/).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin"
GPU_VM = Path(__file__).with_name("gpu_vm.yml")
PLAYBOOK = ROOT / "playbooks" / "monitoring.yml"
CHECKS = Path(__file__).with_name("monitoring_checks.yml")
VLLM_WHEEL = "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl"
GPU_WHEEL = "/opt/standin/nvitop_exporter_standin-1.7.2-py3-none-any.whl"
KEY = "k3y-" + os.urandom(16).hex()
AI_KEY = "ak-" + os.urandom(16).hex()
TOKEN = "t0k-" + os.urandom(16).hex()
RESULTS = ROOT / "results" / "monitoring"
AI_FIXTURES = ROOT / "tests" / "fixtures" / "ai_server"
BASE = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    sys.path.insert(0, str(ROOT))
    from tests.harness import testhosts as th  # noqa: PLC0415 (imported only when the suite runs)

    state = tmp_path_factory.mktemp("monitoring-hosts")
    wheels = tmp_path_factory.mktemp("wheels")
    for package in ("vllm_standin", "nvitop_exporter_standin"):
        subprocess.run([sys.executable, str(STANDIN / "build_wheel.py"), str(wheels), package], check=True, capture_output=True)
    try:
        th.create(str(state), count=1, prefix="monitor")
        name = th.load_state(str(state))["hosts"][0]["name"]
        for wheel in (VLLM_WHEEL, GPU_WHEEL):
            th.copy_in(str(state), name, str(wheels / os.path.basename(wheel)), wheel)
        th.copy_in(str(state), name, str(STANDIN / "nvidia-smi"), "/usr/bin/nvidia-smi", mode="0755")
        th.exec_in(str(state), name, ["touch", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"])
        groups = state / "groups.yml"
        groups.write_text(json.dumps({g: {"hosts": {name: None}} for g in ("monitoring", "ai_server", "prometheus")}))
        ip = th.exec_in(str(state), name, ["sh", "-c", "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1"]
                        ).stdout.decode().split()[0]
        yield {"th": th, "state": state, "name": name, "ip": ip, "inventories": [state / "inventory.yml", groups]}
    finally:
        th.destroy(str(state))


def _sh(host, script: str) -> str:
    res = host["th"].exec_in(str(host["state"]), host["name"], ["sh", "-c", script], check=False)
    assert res.returncode == 0, (script, res.stdout, res.stderr)
    return res.stdout.decode()


def _play(host, playbook=PLAYBOOK, inventories=None, **extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", LLMOPS_STANDIN_WHEEL=VLLM_WHEEL)
    varfile = host["state"] / "extra-vars.json"
    varfile.write_text(json.dumps({
        "vllm_server_api_key": KEY, "ai_server_api_key": AI_KEY, "ai_server_backend_internal_token": TOKEN,
        "exporters_gpu_pip_specs": [GPU_WHEEL], "exporters_gpu_interval": 1,
        "prometheus_listen_address": "0.0.0.0",   # opened on purpose: the test queries it from the controller
        "prometheus_scrape_interval": "2s", "prometheus_scrape_timeout": "2s", "prometheus_evaluation_interval": "2s", **extra}))
    varfile.chmod(0o600)
    cmd = [str(Path(sys.executable).with_name("ansible-playbook"))]
    for inv in inventories or host["inventories"]:
        cmd += ["-i", str(inv)]
    cmd += ["-e", "@%s" % varfile, str(playbook)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def _api(host, path, **params):
    url = "http://%s:9090/api/v1/%s?%s" % (host["ip"], path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


@pytest.fixture(scope="module")
def converged(host):
    times = [time.monotonic()]
    for playbook in (GPU_VM, PLAYBOOK, PLAYBOOK):
        res = _play(host, playbook)
        assert res.returncode == 0, res.stdout[-6000:]
        times.append(time.monotonic())
    recap = [line for line in res.stdout.splitlines() if line.startswith(host["name"]) and "ok=" in line]
    host["timings"] = dict(zip(("gpu_vm_s", "monitoring_first_s", "monitoring_second_s"),
                               (round(b - a, 1) for a, b in zip(times, times[1:]))))
    print("timings", host["timings"])
    assert recap and "changed=0" in recap[-1], "\n".join(recap) + res.stdout[-4000:]
    assert KEY not in res.stdout and AI_KEY not in res.stdout
    return host


def test_exporters_answer_on_9100_and_9400_and_their_units_are_hardened(converged):
    with urllib.request.urlopen("http://%s:9100/metrics" % converged["ip"], timeout=10) as resp:
        node = resp.read().decode()
    assert 'node_systemd_unit_state{name="vllm.service",state="active",type="simple"} 1' in node
    assert "node_systemd_unit_state{name=\"cron.service\"" not in node   # only the units the role names
    with urllib.request.urlopen("http://%s:9400/metrics" % converged["ip"], timeout=10) as resp:
        gpu = resp.read().decode()
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'gpu_utilization_Percentage{devicename="NVIDIA H200",hostname="%s",' % converged["name"] in gpu
    props = _sh(converged, "systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p DevicePolicy -p CapabilityBoundingSet "
                           "-p ActiveState nvitop-exporter; systemctl show -p User -p ProtectSystem -p NoNewPrivileges -p ActiveState "
                           "prometheus-node-exporter")
    assert set(props.split()) == {"User=nvitop-exporter", "NoNewPrivileges=yes", "ProtectSystem=strict", "DevicePolicy=closed",
                                  "CapabilityBoundingSet=", "ActiveState=active", "User=prometheus"}, props
    assert props.split().count("ProtectSystem=strict") == 2 and props.split().count("ActiveState=active") == 2, props


def test_the_keys_are_in_credentials_files_only(converged):
    name = converged["name"]
    listing = _sh(converged, "stat -c '%a %U %G %n' /etc/prometheus/llmops/*.key /etc/prometheus/prometheus.yml")
    assert listing.split("\n")[:3] == ["640 root prometheus /etc/prometheus/llmops/ai_server-%s.key" % name,
                                       "640 root prometheus /etc/prometheus/llmops/vllm-%s.key" % name,
                                       "640 root prometheus /etc/prometheus/prometheus.yml"], listing
    config = _sh(converged, "cat /etc/prometheus/prometheus.yml")
    assert KEY not in config and "credentials_file: \"/etc/prometheus/llmops/vllm-%s.key\"" % name in config
    assert AI_KEY not in config and "credentials_file: \"/etc/prometheus/llmops/ai_server-%s.key\"" % name in config
    assert _sh(converged, "cat /etc/prometheus/llmops/vllm-%s.key" % name) == KEY
    assert _sh(converged, "cat /etc/prometheus/llmops/ai_server-%s.key" % name) == AI_KEY
    # no key in Prometheus' arguments (a scrape config's key would show in /proc/PID/cmdline)
    args = _sh(converged, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value prometheus)/cmdline")
    assert "prometheus" in args and KEY not in args and AI_KEY not in args, args
    # without its key, each proxy refuses /metrics (the AI server's with vLLM's key too): Prometheus must send it
    for port, key in ((8001, None), (8000, None), (8000, KEY)):
        req = urllib.request.Request("http://%s:%d/metrics" % (converged["ip"], port),
                                     headers={"Authorization": "Bearer " + key} if key else {})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401, (port, key)


def _ai(host, path, body=None, key=AI_KEY):
    """(status, body) of a request to the AI server through its proxy."""
    req = urllib.request.Request("http://%s:8000%s" % (host["ip"], path), data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _save_ai_server_fixture(text: str) -> None:
    """The AI server's real /metrics: always to results/monitoring/ai-server-metrics.prom, and once per pinned
    prometheus-client version as the dated fixture tests/fixtures/ai_server/ai-server-prometheus-client-VERSION-DATE.prom
    that the dashboard's metric-name check reads (an existing one of that version is kept: a run leaves the tree clean)."""
    assert KEY not in text and AI_KEY not in text and TOKEN not in text, "a secret is in /metrics"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ai-server-metrics.prom").write_text(text)
    pins = (ROOT / "examples" / "ai-server" / "requirements.txt").read_text()
    version = re.search(r"^prometheus-client==(\S+)$", pins, re.M).group(1)
    if not list(AI_FIXTURES.glob("ai-server-prometheus-client-%s-*.prom" % version)):
        AI_FIXTURES.mkdir(parents=True, exist_ok=True)
        (AI_FIXTURES / ("ai-server-prometheus-client-%s-%s.prom" % (version, datetime.date.today().isoformat()))).write_text(text)


def _vllm_chat(host, i):
    body = json.dumps({"model": BASE, "max_tokens": 8 + i, "messages": [{"role": "user", "content": "hello %d" % i}]}).encode()
    req = urllib.request.Request("http://%s:8001/v1/chat/completions" % host["ip"], data=body,
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def _sent_lines(data, title):
    """{legend: whether a point is above 0} of the panel TITLE in plot.collect's DATA."""
    return {legend: any(v > 0 for _t, v in points) for panel, _u, lines in data if panel == title for legend, points in lines}


def test_every_target_is_up_and_every_main_panel_has_data_after_requests(converged):
    name = converged["name"]
    deadline = time.monotonic() + 90
    while True:
        targets = _api(converged, "targets")["activeTargets"]
        health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
        if set(health.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert health == {(job, name): "up" for job in ("prometheus", "node", "gpu", "vllm", "ai_server")}, targets
    # Prometheus has scraped the AI server's counters at 0 (the app creates each model's series at start): the chats
    # below are increases. Through the AI server: the base model, each adapter, and twice a task it does not know
    # (422, model none: that series starts at the first one, at 1, so only the second is an increase a rate sees);
    # to vLLM directly: four chats. One scrape interval (2 s) apart.
    start = time.time() - 20
    for i, task in enumerate((None, "easycontract", "checklist", "easycontract", None)):
        status, text = _ai(converged, "/v1/chat", {"task": task, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, (task, status, text)
        if i < 4:
            _vllm_chat(converged, i)
        time.sleep(2)
    for _attempt in range(2):
        assert _ai(converged, "/v1/chat", {"task": "nope", "messages": []})[0] == 422
        time.sleep(2)
    status, metrics = _ai(converged, "/metrics")
    assert status == 200, metrics
    counts = {k: v for k, v in re.findall(r'^ai_server_chat_requests_total\{(.*)\} (\S+)$', metrics, re.M) if v != "0.0"}
    assert counts == {'model="%s",status="200"' % BASE: "2.0", 'model="easycontract",status="200"': "2.0",
                      'model="checklist",status="200"': "1.0", 'model="none",status="422"': "2.0"}, metrics
    _save_ai_server_fixture(metrics)
    deadline = time.monotonic() + 60
    while True:
        done = _api(converged, "query", query="sum(vllm:request_success_total)")["result"]
        if (done and float(done[0]["value"][1]) >= 4) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert done and float(done[0]["value"][1]) >= 4, done
    # (the package's own prometheus.yml, in force for the seconds between the install and the role's configuration,
    # scraped localhost:9100 as job node: those samples are the only ones without the inventory name)
    by_job = _api(converged, "query", query='count by (job, instance) ({__name__=~"vllm:num_requests_running|gpu_utilization_Percentage|node_load1'
                                            '|ai_server_chat_requests_total",instance!~"localhost:.*"})')
    assert {(r["metric"]["job"], r["metric"]["instance"]) for r in by_job["result"]} == {
        ("vllm", name), ("gpu", name), ("node", name), ("ai_server", name)}
    gpu = _api(converged, "query", query='gpu_utilization_Percentage{instance="%s"}' % name)["result"]
    assert gpu and gpu[0]["value"][1] == "99"
    # the dashboard's main panels as Prometheus recorded them (docs/monitoring.md's figure): wait until every panel
    # has a point and the per-adapter rates have risen (the recording rules run every 2 s), then 10 s more
    sys.path.insert(0, str(ROOT))
    from tests.monitoring import plot  # noqa: PLC0415 (matplotlib is imported only when it draws)

    sent = {"%s %s 200" % (name, m) for m in (BASE, "easycontract", "checklist")} | {"%s none 422" % name}
    deadline = time.monotonic() + 60
    while True:
        data = plot.collect("http://%s:9090" % converged["ip"], start, time.time(), step=2, instance=re.escape(name))
        rising = {legend for legend, up in _sent_lines(data, "Requests per adapter").items() if up}
        if (not plot.empty(data) and rising == sent) or time.monotonic() > deadline:
            break
        time.sleep(2)
    time.sleep(10)
    end = time.time()
    data = plot.collect("http://%s:9090" % converged["ip"], start, end, step=2, instance=re.escape(name))
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot.save(data, RESULTS / "panels.json", "Main panels of the dashboard as Prometheus recorded them in test_monitoring.py "
              "(vLLM and the GPU exporter are stand-ins)", host=name, start=start, end=end, timings=converged["timings"])
    assert plot.empty(data) == [], "main panels without data: %s" % plot.empty(data)
    lines = _sent_lines(data, "Requests per adapter")
    # a line above 0 for each model and status sent; the others are the app's zeros (500 and 502 of each model)
    assert {legend for legend, up in lines.items() if up} == sent, lines
    assert set(lines) - sent == {"%s %s %s" % (name, m, code) for m in (BASE, "easycontract", "checklist") for code in ("200", "500", "502")} - sent, lines


def _checks(host, inventories=None):
    out = host["state"] / "checks.json"
    if out.exists():
        out.unlink()
    res = _play(host, CHECKS, inventories, checklist_monitoring_out=str(out))
    assert res.returncode == 0, res.stdout[-4000:]
    return {c["name"]: c for c in json.loads(out.read_text())}


def test_checklist_monitoring_checks_pass_and_name_a_stopped_exporter(converged):
    name = converged["name"]
    checks = _checks(converged)
    assert sorted(checks) == ["checklist_monitoring_gpu", "checklist_monitoring_node", "checklist_monitoring_targets"]
    assert all(c["ok"] is True for c in checks.values()), checks
    assert checks["checklist_monitoring_gpu"]["check"] == "GPU exporter :9400/metrics answers from Prometheus on %s" % name
    assert checks["checklist_monitoring_gpu"]["detail"] == "http://%s:9400/metrics: up" % converged["ip"]
    assert checks["checklist_monitoring_targets"]["detail"] == "gpu up, node up, vllm up"
    _sh(converged, "systemctl stop nvitop-exporter")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            gpu = [t for t in _api(converged, "targets")["activeTargets"] if t["labels"]["job"] == "gpu"]
            if gpu and gpu[0]["health"] == "down":
                break
            time.sleep(1)
        checks = _checks(converged)
        assert checks["checklist_monitoring_gpu"]["ok"] is False and checks["checklist_monitoring_targets"]["ok"] is False
        assert "http://%s:9400/metrics: down, " % converged["ip"] in checks["checklist_monitoring_gpu"]["detail"]
        assert "connection refused" in checks["checklist_monitoring_gpu"]["detail"]
        assert checks["checklist_monitoring_targets"]["detail"] == "gpu down, node up, vllm up"
        assert checks["checklist_monitoring_node"]["ok"] is True
        # no Prometheus host in the inventory: the exporters are asked on the VM itself, and there is no targets check
        groups = converged["state"] / "groups-no-prometheus.yml"
        groups.write_text(json.dumps({g: {"hosts": {name: None}} for g in ("monitoring", "ai_server")}))
        local = _checks(converged, [converged["inventories"][0], groups])
        assert sorted(local) == ["checklist_monitoring_gpu", "checklist_monitoring_node"]
        assert local["checklist_monitoring_node"]["ok"] is True and local["checklist_monitoring_gpu"]["ok"] is False
        assert local["checklist_monitoring_node"]["detail"] == "http://127.0.0.1:9100/metrics: HTTP 200"
        assert local["checklist_monitoring_gpu"]["check"] == "GPU exporter :9400/metrics answers on the VM (no host in group prometheus)"
    finally:
        _sh(converged, "systemctl start nvitop-exporter")

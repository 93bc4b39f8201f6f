"""Observability on a real systemd test host (issue 12): the exporters role, the prometheus role, and Prometheus
scraping the host's vLLM (the stand-in, behind the authenticating proxy, with the key from a credentials file),
node_exporter (Debian's real prometheus-node-exporter, systemd collector on) and the GPU exporter (the stand-in
wheel serving the real H200 capture, in the role's venv and hardened unit).

One host (Debian 12) runs everything: vllm_host.yml (gpu_host, vllm_server) once, then playbooks/monitoring.yml twice
(the second run changes nothing).
Then a few chat completions go to vLLM, and the test asserts every target is up and that PromQL over vLLM's,
node_exporter's and the GPU exporter's series returns data. The recorded series (query_range) go to
results/monitoring/series.json, from which scripts/render_monitoring_png.py draws docs/monitoring.png by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin"
VLLM_HOST = Path(__file__).with_name("vllm_host.yml")
PLAYBOOK = ROOT / "playbooks" / "monitoring.yml"
CHECKS = Path(__file__).with_name("monitoring_checks.yml")
VLLM_WHEEL = "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl"
GPU_WHEEL = "/opt/standin/nvitop_exporter_standin-1.7.2-py3-none-any.whl"
KEY = "k3y-" + os.urandom(16).hex()
RESULTS = ROOT / "results" / "monitoring"
# the series docs/monitoring.md shows (the dashboard's main panels)
SERIES = {
    "vLLM requests finished per second": 'sum by (instance) (rate(vllm:request_success_total[15s]))',
    "vLLM requests running": 'sum by (instance) (vllm:num_requests_running)',
    "vLLM generation tokens per second": 'sum by (instance) (rate(vllm:generation_tokens_total[15s]))',
    "GPU utilisation (%)": 'gpu_utilization_Percentage',
    "GPU memory used (MiB)": 'gpu_memory_used_MiB',
    "GPU power (W)": 'gpu_power_usage_W',
    "node CPU busy (%)": '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[15s])))',
    "node memory available (MiB)": 'node_memory_MemAvailable_bytes / 1048576',
}


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
        "vllm_server_api_key": KEY, "exporters_gpu_pip_specs": [GPU_WHEEL], "exporters_gpu_interval": 1,
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
    for playbook in (VLLM_HOST, PLAYBOOK, PLAYBOOK):
        res = _play(host, playbook)
        assert res.returncode == 0, res.stdout[-6000:]
        times.append(time.monotonic())
    recap = [line for line in res.stdout.splitlines() if line.startswith(host["name"]) and "ok=" in line]
    host["timings"] = dict(zip(("vllm_host_s", "monitoring_first_s", "monitoring_second_s"),
                               (round(b - a, 1) for a, b in zip(times, times[1:]))))
    print("timings", host["timings"])
    assert recap and "changed=0" in recap[-1], "\n".join(recap) + res.stdout[-4000:]
    assert KEY not in res.stdout
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


def test_the_key_is_in_a_credentials_file_only(converged):
    listing = _sh(converged, "stat -c '%a %U %G %n' /etc/prometheus/llmops/*.key /etc/prometheus/prometheus.yml")
    assert listing.split("\n")[:2] == ["640 root prometheus /etc/prometheus/llmops/vllm-%s.key" % converged["name"],
                                       "640 root prometheus /etc/prometheus/prometheus.yml"], listing
    config = _sh(converged, "cat /etc/prometheus/prometheus.yml")
    assert KEY not in config and "credentials_file: \"/etc/prometheus/llmops/vllm-%s.key\"" % converged["name"] in config
    assert _sh(converged, "cat /etc/prometheus/llmops/vllm-%s.key" % converged["name"]) == KEY
    # without the key, the proxy refuses vLLM's /metrics: Prometheus must send it
    req = urllib.request.Request("http://%s:8001/metrics" % converged["ip"])
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


def test_every_target_is_up_and_vllm_series_have_data_after_requests(converged):
    for i in range(4):
        body = json.dumps({"model": "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct", "max_tokens": 8 + i,
                           "messages": [{"role": "user", "content": "hello %d" % i}]}).encode()
        req = urllib.request.Request("http://%s:8001/v1/chat/completions" % converged["ip"], data=body,
                                     headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
        time.sleep(1)
    deadline = time.monotonic() + 90
    while True:
        targets = _api(converged, "targets")["activeTargets"]
        health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
        if set(health.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    name = converged["name"]
    assert health == {(job, name): "up" for job in ("prometheus", "node", "gpu", "vllm")}, targets
    deadline = time.monotonic() + 60
    while True:
        done = _api(converged, "query", query="sum(vllm:request_success_total)")["result"]
        if (done and float(done[0]["value"][1]) >= 4) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert done and float(done[0]["value"][1]) >= 4, done
    # (the package's own prometheus.yml, in force for the seconds between the install and the role's configuration,
    # scraped localhost:9100 as job node: those samples are the only ones without the inventory name)
    by_job = _api(converged, "query", query='count by (job, instance) ({__name__=~"vllm:num_requests_running|gpu_utilization_Percentage|node_load1",'
                                            'instance!~"localhost:.*"})')
    assert {(r["metric"]["job"], r["metric"]["instance"]) for r in by_job["result"]} == {("vllm", name), ("gpu", name), ("node", name)}
    gpu = _api(converged, "query", query='gpu_utilization_Percentage{instance="%s"}' % name)["result"]
    assert gpu and gpu[0]["value"][1] == "99"
    # the main series as Prometheus recorded them, for docs/monitoring.md's figure
    end = time.time()
    recorded = {}
    for title, expr in SERIES.items():
        recorded[title] = {"expr": expr, "result": _api(converged, "query_range", query=expr, start=end - 90, end=end, step=2)["result"]}
        assert recorded[title]["result"], (title, expr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "series.json").write_text(json.dumps({"host": name, "end": end, "timings": converged["timings"],
                                                     "series": recorded}, indent=1))


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

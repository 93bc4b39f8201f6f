"""The GPU exporter stand-in (tests/standin/nvitop_exporter_standin) against the real capture it serves.

Its fidelity: from the wheel as the roles install it, `nvitop-exporter --hostname h200` answers exactly the
/metrics body nvitop-exporter 1.7.2 answered on the H200 (tests/fixtures/gpu/nvitop-exporter-1.7.2-h200-2026-12-02.prom)
with the recorded Content-Type; with another --hostname only the hostname label differs; the body is valid
Prometheus text exposition (every sample of a family with HELP and TYPE) and holds the GPU series the rules and
the dashboard use. The CLI refuses what 1.7.2 refuses.
"""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "gpu" / "nvitop-exporter-1.7.2-h200-2026-12-02.prom"
HEADERS = ROOT / "tests" / "fixtures" / "gpu" / "nvitop-exporter-1.7.2-h200-2026-12-02" / "headers.txt"
sys.path.insert(0, str(ROOT / "tests" / "standin"))
import build_wheel  # noqa: E402  pylint: disable=wrong-import-position

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
# the GPU series the monitoring (rules, dashboard, docs/monitoring.md) reads
GPU_SERIES = ["gpu_utilization_Percentage", "gpu_memory_used_MiB", "gpu_memory_total_MiB", "gpu_memory_percent_Percentage",
              "gpu_temperature_C", "gpu_power_usage_W", "gpu_power_limit_W", "nvitop_info"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _installed(tmp_path):
    wheel = build_wheel.build(str(tmp_path / "wheel"), "nvitop_exporter_standin")
    assert os.path.basename(wheel) == "nvitop_exporter_standin-1.7.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
        assert "nvitop-exporter = nvitop_exporter_standin.cli:main" in zf.read(
            "nvitop_exporter_standin-1.7.2.dist-info/entry_points.txt").decode()
    return tmp_path / "site"


def _serve(site, *args):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("NVITOP_EXPORTER_STANDIN_FIXTURE", None)
    proc = subprocess.Popen([sys.executable, "-m", "nvitop_exporter_standin", "--bind-address", "127.0.0.1",
                             "--port", str(port), *args], env=env, stderr=subprocess.PIPE)
    for _attempt in range(100):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as resp:
                return proc, resp.read().decode(), resp.headers["Content-Type"]
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the stand-in did not answer: %s" % proc.stderr.read())


def _stop(proc):
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    return proc.stderr.read().decode()


def test_serves_the_real_capture_byte_for_byte_with_its_content_type(tmp_path):
    proc, body, ctype = _serve(_installed(tmp_path), "--hostname", "h200", "--interval", "1")
    err = _stop(proc)
    assert body == FIXTURE.read_text()
    recorded = [line.split(": ", 1)[1] for line in HEADERS.read_text().splitlines() if line.startswith("# HTTP-HEADER Content-Type")]
    assert [ctype] == recorded == ["text/plain; version=0.0.4; charset=utf-8"]
    assert "Start the exporter on h200 at http://127.0.0.1:" in err


def test_hostname_label_follows_the_flag_and_nothing_else_changes(tmp_path):
    proc, body, _ctype = _serve(_installed(tmp_path), "--hostname", "ai-server-l4")
    _stop(proc)
    real = FIXTURE.read_text()
    assert real.count('hostname="h200"') > 50
    assert body == real.replace('hostname="h200"', 'hostname="ai-server-l4"')


def test_the_capture_is_valid_exposition_with_the_gpu_series():
    families, samples = {}, {}
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name = line.split(" ", 3)[1:3]
            families.setdefault(name, set()).add(kind)
            continue
        match = SAMPLE.match(line)
        assert match, line
        float(match.group(3))   # NaN included, as the real exporter writes unsupported fields
        samples.setdefault(match.group(1), []).append(line)
    for name in samples:
        family = re.sub(r"_(total|created|bucket|sum|count)$", "", name)
        assert families.get(name, families.get(family)) == {"HELP", "TYPE"}, name
    for name in GPU_SERIES:
        assert samples.get(name), name
    # a real GPU under load: utilisation and power are not idle values
    util = float(samples["gpu_utilization_Percentage"][0].rsplit(" ", 1)[1])
    power = float(samples["gpu_power_usage_W"][0].rsplit(" ", 1)[1])
    assert util > 50 and power > 300, (util, power)
    assert 'devicename="NVIDIA H200"' in samples["gpu_utilization_Percentage"][0]


def test_cli_refuses_what_the_real_one_refuses(tmp_path):
    site = _installed(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(site))
    for args, words in ((["--interval", "0.1"], "too short"), (["--certfile", "/x"], "must be specified together"),
                        (["--port", "x"], "invalid int value")):
        res = subprocess.run([sys.executable, "-m", "nvitop_exporter_standin", *args], env=env, capture_output=True,
                             text=True, timeout=30, check=False)
        assert res.returncode == 2 and words in res.stderr, (args, res.stderr)

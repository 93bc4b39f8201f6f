"""vLLM reaches the GPU under its sandbox (issue 14, part 2), on the converged test host.

1. A probe inside the real vllm.service sandbox (the deployed unit, ExecStart replaced by the probe) opens
   harness-made NVIDIA-like device nodes (the majors of a real driver 580 host) as CUDA does and expects
   ENXIO (the device policy allows the node, no driver answers), never EPERM (the policy denies it) or
   ENOENT (a private /dev); it also uses POSIX shared memory (/dev/shm) as vLLM's processes do.
   A control run of the same unit with an allow-list without the NVIDIA groups tells whether this host
   enforces device policies at all. Today's test hosts do not (their cgroup controllers are mounted
   read-only): then the EPERM half of the probe cannot fail here, and the report says so. For the day a host
   does enforce, the probe shows systemd the driver's /proc/devices names (a bind mount inside the host), so
   that DeviceAllow=char-nvidia... resolves as on a real VM.
2. vLLM dying with a CUDA initialisation error: the configure run's failure names the unit's DevicePolicy and
   DeviceAllow and the fix (roles/vllm_server/tasks/verify.yml).
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.reliability import lib

UNIT = "/etc/systemd/system/vllm.service"
PROBE_DIR = "/run/llmops-gpu-probe"
# (node, major, minor, mode, how CUDA/the driver opens it)
NODES = [
    ("/dev/nvidiactl", 195, 255, "0666", "rw"),
    ("/dev/nvidia0", 195, 0, "0666", "rw"),
    ("/dev/nvidia-uvm", 238, 0, "0666", "rw"),
    ("/dev/nvidia-uvm-tools", 238, 1, "0666", "rw"),
    # the capability nodes' real modes are the driver's (nvidia-modprobe -f); here readable for everyone, since
    # what is under test is the device policy, not their modes
    ("/dev/nvidia-caps/nvidia-cap1", 241, 1, "0444", "r"),
    ("/dev/nvidia-caps/nvidia-cap2", 241, 2, "0444", "r"),
]
DRIVER_NAMES = [(195, "nvidia"), (195, "nvidiactl"), (238, "nvidia-uvm"), (241, "nvidia-caps")]

PROBE = r"""
import errno, json, os, sys
from multiprocessing import shared_memory
out = {"uid": os.getuid(), "nodes": {}}
for node, acc in json.loads(sys.argv[1]):
    try:
        os.close(os.open(node, os.O_RDWR if acc == "rw" else os.O_RDONLY))
        out["nodes"][node] = "opened"
    except OSError as e:
        out["nodes"][node] = errno.errorcode.get(e.errno, str(e.errno))
try:
    shm = shared_memory.SharedMemory(create=True, size=1 << 20)
    shm.buf[:4] = b"vllm"
    out["shm"] = "ok:" + shm.name
    shm.close()
    shm.unlink()
except OSError as e:
    out["shm"] = "%s: %s" % (errno.errorcode.get(e.errno, e.errno), e)
print(json.dumps(out))
"""


def probe_unit(deployed: str, output: str, extra: str = "") -> str:
    """The deployed vllm.service with the probe as its only process (same [Unit], sandbox, user, env)."""
    lines, skip = [], False
    for line in deployed.splitlines():
        if skip:
            skip = line.rstrip().endswith("\\")
            continue
        key = line.split("=", 1)[0].strip()
        if key == "ExecStart":
            skip = line.rstrip().endswith("\\")
            continue
        if key in ("Type", "Restart", "RestartSec", "TimeoutStartSec"):
            continue
        if line.strip() == "[Install]":
            break
        lines.append(line)
        if line.strip() == "[Service]":
            nodes = json.dumps([[n[0], n[4]] for n in NODES])
            lines += ["Type=oneshot", "StandardOutput=file:%s" % output,
                      "ExecStart=/usr/bin/python3 %s/probe.py %s" % (PROBE_DIR, shlex.quote(nodes).replace("%", "%%"))]
            lines += extra.splitlines()
    return "\n".join(lines) + "\n"


def _run_probe(host, name, text, output):
    host.sh("cat > /run/systemd/system/%s" % name, input=text)
    host.sh("systemctl daemon-reload")
    res = host.sh("systemctl start %s" % name, check=False)
    assert res.returncode == 0, "the probe unit failed:\n%s%s\n%s" % (
        res.stdout, res.stderr, host.sh("journalctl -u %s -n 30 --no-pager" % name, check=False).stdout)
    return json.loads(host.read(output).strip().splitlines()[-1])


@pytest.fixture
def nvidia_nodes(converged):
    """NVIDIA-like nodes in the host's /dev and the driver's names in the /proc/devices the host's systemd reads."""
    host = converged.host
    proc_devices = host.read("/proc/devices")
    char = proc_devices.split("Block devices:")[0].splitlines()[1:]
    majors = {int(line.split()[0]) for line in char if line.split() and line.split()[0].isdigit()}
    taken = majors & {pair[0] for pair in DRIVER_NAMES}
    if taken:
        pytest.skip("this machine's kernel has character majors %s registered: nodes made here would reach a "
                    "real driver" % sorted(set(taken)))
    script = ["set -e", "mkdir -p %s /dev/nvidia-caps" % PROBE_DIR, "chmod 0755 %s" % PROBE_DIR]
    script += ["[ -e {0} ] || mknod -m {3} {0} c {1} {2}".format(n, ma, mi, mode) for n, ma, mi, mode, _acc in NODES]
    host.sh("\n".join(script))
    host.sh("cat > %s/probe.py && chmod 0644 %s/probe.py" % (PROBE_DIR, PROBE_DIR), input=PROBE)
    fake = proc_devices.replace("Character devices:\n", "Character devices:\n" + "".join(
        "%3d %s\n" % pair for pair in DRIVER_NAMES), 1)
    host.sh("cat > %s/devices" % PROBE_DIR, input=fake)
    mounted = host.sh("mount --bind %s/devices /proc/devices" % PROBE_DIR, check=False).returncode == 0
    try:
        yield {"proc_devices_mounted": mounted}
    finally:
        host.sh("umount /proc/devices 2>/dev/null || true; rm -f /run/systemd/system/vllm-gpu-probe*.service; "
                "rm -rf /run/systemd/system/vllm-gpu-probe-control.service.d %s; rm -f %s; rmdir /dev/nvidia-caps "
                "2>/dev/null || true; systemctl daemon-reload" % (PROBE_DIR, " ".join(n[0] for n in NODES)),
                check=False)


def test_vllm_sandbox_opens_the_nvidia_nodes_as_cuda_does(converged, nvidia_nodes):
    host = converged.host
    deployed = host.read(UNIT)
    got = _run_probe(host, "vllm-gpu-probe.service", probe_unit(deployed, PROBE_DIR + "/out.json"),
                     PROBE_DIR + "/out.json")
    # control: the same unit under an allow-list that lacks the NVIDIA groups (what ProtectClock=yes alone gave)
    control = _run_probe(host, "vllm-gpu-probe-control.service",
                         probe_unit(deployed, PROBE_DIR + "/control.json", "DeviceAllow=\nDevicePolicy=closed"),
                         PROBE_DIR + "/control.json")
    enforced = control["nodes"]["/dev/nvidiactl"] == "EPERM"
    shown = host.sh("systemctl show vllm.service --property=DevicePolicy --property=DeviceAllow").stdout.split("\n")
    policy = "; ".join(line for line in shown if line)
    wrong = {n: e for n, e in got["nodes"].items() if e != "ENXIO"}
    ok = not wrong and got["shm"].startswith("ok:") and got["uid"] != 0
    lib.RESULTS.setdefault("gpu_sandbox", []).append({
        "check": "vllm.service's sandbox opens the NVIDIA device nodes (O_RDWR; caps O_RDONLY) and /dev/shm",
        "unit_policy": policy,
        "observed": ", ".join("%s %s" % (n.rsplit("/", 1)[-1], e) for n, e in got["nodes"].items())
                    + "; shm " + got["shm"].split(":")[0],
        "enforced": enforced,
        "control": ", ".join("%s %s" % (n.rsplit("/", 1)[-1], e) for n, e in control["nodes"].items()),
        "proc_devices_names": nvidia_nodes["proc_devices_mounted"],
        "passed": ok,
    })
    if not enforced:
        lib.RESULTS["notes"].append(
            "GPU sandbox probe: this test host does not enforce device policies (the control unit, an allow-list "
            "without the NVIDIA groups, opened /dev/nvidiactl with %s, not EPERM): the probe's EPERM check could not "
            "fail here; its ENOENT (private /dev) and /dev/shm checks could. tests/unit/test_unit_sandbox.py checks "
            "the allow-list against systemd's rules." % control["nodes"]["/dev/nvidiactl"])
    assert got["uid"] != 0, "the probe ran as root: not the unit's sandbox"
    assert not wrong, "vllm.service's sandbox: %s (ENXIO expected: allowed, no driver); unit %s" % (wrong, policy)
    assert got["shm"].startswith("ok:"), "POSIX shared memory fails in vllm.service's sandbox: %s" % got["shm"]


CUDA_INIT_FAILURE = r"""#!/bin/sh
# Stand-in for vLLM dying because CUDA cannot open /dev/nvidia* (what EPERM from the device policy gives)
cat >&2 <<'EOF'
INFO 12-01 10:00:00 [__init__.py:239] No platform detected, vLLM is running on UnspecifiedPlatform
ERROR 12-01 10:00:03 [core.py:708] EngineCore failed to start.
RuntimeError: CUDA driver initialization failed, you might not have a CUDA gpu.
RuntimeError: Engine process failed to start. See stack trace for the root cause.
EOF
exit 1
"""


def test_cuda_init_failure_names_the_units_device_policy(converged):
    host = converged.host
    dropin = "/run/systemd/system/vllm.service.d"
    host.sh("mkdir -p %s /run/llmops-cuda-fail && cat > /run/llmops-cuda-fail/vllm && chmod 0755 "
            "/run/llmops-cuda-fail /run/llmops-cuda-fail/vllm" % dropin, input=CUDA_INIT_FAILURE)
    host.sh("printf '[Service]\\nExecStart=\\nExecStart=/run/llmops-cuda-fail/vllm\\n' > %s/cuda-fail.conf && "
            "systemctl daemon-reload && systemctl restart vllm.service" % dropin)
    try:
        # 2 journal lines shown: the CUDA error sits above them and must still be found, from the same one read
        res = converged.configure({"vllm_server_health_timeout": 8, "vllm_server_journal_lines": 2}, name="cuda-init-failure")
    finally:
        host.sh("rm -rf %s/cuda-fail.conf /run/llmops-cuda-fail; systemctl daemon-reload; systemctl restart vllm.service"
                % dropin, check=False)
    named = all(w in res.flat for w in ("CUDA could not initialise", "DevicePolicy=", "DeviceAllow=",
                                        "char-nvidia-uvm", "nvidia-device-nodes.service", "/proc/devices"))
    oom_hint = "OOM at start" in res.out
    # the failure path's own reads of the journal; the start-up timing (every verify, success or failure, for the
    # checklist's phase table) reads only the current start's lines and is not part of it
    journal_reads = [t for t in re.findall(r"TASK \[llmops\.gce_vllm\.vllm_server : [^\]]*journal[^\]]*\]", res.out)
                     if "start-up phases" not in t]
    lib.record("faults", fault="vLLM dies with a CUDA initialisation error (device policy)",
               injected="drop-in ExecStart printing vLLM's CUDA init failure, exit 1",
               expected="configure fails naming the unit's DevicePolicy/DeviceAllow and the fix",
               observed="rc=%d; device policy and fix named: %s; OOM hint shown instead: %s" % (res.rc, named, oom_hint),
               survived=res.rc != 0 and named and not oom_hint)
    assert res.rc != 0, res.tail()
    assert named and not oom_hint, res.tail(6000)
    assert len(journal_reads) == 1, "the failure path read the journal %d times: %s" % (len(journal_reads), journal_reads)
    assert converged.healthy(timeout=60), "vLLM did not come back after the drop-in was removed"

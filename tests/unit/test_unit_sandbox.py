"""vllm.service's sandbox against systemd's documented device rules and what CUDA needs (issue 14, part 2).

The test hosts do not enforce device policies (their cgroup controllers are read-only: see
tests/reliability/test_5_gpu_sandbox.py), so this checks the unit as rendered by Ansible from the role's own
template and defaults, against the rules of systemd.resource-control(5) and systemd.exec(5):

- DevicePolicy=auto (the default) allows every device only while no DeviceAllow= exists; closed/strict, any
  DeviceAllow=, and directives that imply one (ProtectClock=yes: char-rtc r; PrivateDevices=yes: closed and a
  private /dev; RootImage=/MountImages=/ExtensionImages=: loop devices) make it an allow-list.
- DeviceAllow= takes a /dev/ path or char-/block- plus a group name matched (fnmatch) against /proc/devices;
  access letters r, w, m. An empty assignment resets the list.
- The group names are resolved when systemd sets up the unit's cgroup, before ExecStartPre runs.

The NVIDIA facts are those of a real host with driver 580 (issue 14).
"""
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROLE = os.path.join(ROOT, "roles", "vllm_server")
NVIDIA_DEVICES_TASKS = os.path.join(ROOT, "roles", "gpu_host", "tasks", "nvidia_devices.yml")
GPU_HOST_TEMPLATES = os.path.join(ROOT, "roles", "gpu_host", "templates")

# /proc/devices of a real NVIDIA host (driver 580): name -> major (nvidia-uvm's major is dynamic)
PROC_DEVICES = {"nvidia": 195, "nvidiactl": 195, "nvidia-uvm": 238, "nvidia-caps": 241}
# the nodes CUDA/the driver open, with the access they need (the capability nodes are checked by read access)
NVIDIA_NODES = [
    ("/dev/nvidiactl", 195, 255, "rw"),
    ("/dev/nvidia0", 195, 0, "rw"),
    ("/dev/nvidia-uvm", 238, 0, "rw"),
    ("/dev/nvidia-uvm-tools", 238, 1, "rw"),
    ("/dev/nvidia-caps/nvidia-cap1", 241, 1, "r"),
    ("/dev/nvidia-caps/nvidia-cap2", 241, 2, "r"),
]
# what CUDA, NCCL and torch call beyond @default (strace of a CUDA process; the NUMA calls come from libnuma/torch)
CUDA_SYSCALLS = ["ioctl", "mmap", "mremap", "munmap", "madvise", "mlock", "munlock", "mbind", "get_mempolicy",
                 "set_mempolicy", "sched_setaffinity", "sched_getaffinity", "memfd_create", "process_vm_readv",
                 "eventfd2", "futex", "clone3", "shmget", "shmat"]
YES = ("1", "yes", "true", "on")


# --------------------------------------------------------------------------------------------------
# Rendering and parsing


def render_vllm_unit(tmp_dir, extra_vars=None):
    """Render roles/vllm_server/templates/vllm.service.j2 with the role's defaults and vars (and extra_vars), by Ansible."""
    out = os.path.join(tmp_dir, "vllm.service")
    extra = os.path.join(tmp_dir, "extra.json")
    with open(extra, "w", encoding="utf-8") as f:
        json.dump(extra_vars or {}, f)
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [os.path.join(ROLE, "defaults", "main.yml"), os.path.join(ROLE, "vars", "main.yml")],
        "tasks": [{"name": "Render the unit", "ansible.builtin.template": {
            "src": os.path.join(ROLE, "templates", "vllm.service.j2"), "dest": out, "mode": "0644"}}],
    }]
    playbook = os.path.join(tmp_dir, "render.yml")
    with open(playbook, "w", encoding="utf-8") as f:
        yaml.safe_dump(play, f)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-e", "ansible_python_interpreter=" + sys.executable, "-e", "@" + extra, playbook],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        return f.read()


def parse_unit(text):
    """{section: [(key, value), ...]} in file order; continuation lines joined, comments dropped."""
    sections, current, pending = {}, None, ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            current.append((key.strip(), value.strip()))
    return sections


def _last(items, key, default=""):
    values = [v for k, v in items if k == key]
    return values[-1] if values else default


def device_policy(service):
    """(policy, allow-list in force?, [(specifier, access)]) as systemd derives them from [Service]."""
    policy, entries = "auto", []
    for key, value in service:
        if key == "DevicePolicy":
            policy = value or "auto"
        elif key == "DeviceAllow":
            if not value:
                entries = []
            else:
                spec, access = (value.split(None, 1) + [""])[:2]
                entries.append((spec, access.strip() or "rwm"))
    if _last(service, "ProtectClock").lower() in YES:
        entries.append(("char-rtc", "r"))
    if _last(service, "PrivateDevices").lower() in YES and policy == "auto":
        policy = "closed"
    if any(_last(service, k) for k in ("RootImage", "MountImages", "ExtensionImages")):
        entries += [("/dev/loop-control", "rw"), ("block-loop", "rwm"), ("block-blkext", "rwm")]
    return policy, policy in ("closed", "strict") or bool(entries), entries


def allowing_entries(entries, node, major, access):
    """The entries that allow `access` on the node (by its path, or by a /proc/devices group of its major)."""
    names = [n for n, m in PROC_DEVICES.items() if m == major]
    found = []
    for spec, acc in entries:
        if spec.startswith("char-"):
            matches = any(fnmatch.fnmatchcase(n, spec[len("char-"):]) for n in names)
        else:
            matches = spec == node
        if matches and set(access) <= set(acc):
            found.append(spec)
    return found


def denied_nvidia_nodes(service):
    policy, allow_list, entries = device_policy(service)
    if _last(service, "PrivateDevices").lower() in YES:
        return [(node, "PrivateDevices=yes: the private /dev has no NVIDIA nodes") for node, *_rest in NVIDIA_NODES]
    if not allow_list:
        return []
    return [(node, "needs %s under DevicePolicy=%s with DeviceAllow=%s" % (acc, policy, entries))
            for node, major, _minor, acc in NVIDIA_NODES if not allowing_entries(entries, node, major, acc)]


@pytest.fixture(scope="module")
def vllm_unit(tmp_path_factory):
    return parse_unit(render_vllm_unit(str(tmp_path_factory.mktemp("unit"))))


# --------------------------------------------------------------------------------------------------
# The rules themselves (they must be able to fail)


@pytest.mark.parametrize("service, denied", [
    ("", []),                                                         # auto, no list: everything allowed
    ("ProtectClock=yes", [n[0] for n in NVIDIA_NODES]),              # the trap of issue 14
    ("ProtectClock=yes\nDeviceAllow=/dev/nvidia0 rw", [n[0] for n in NVIDIA_NODES if n[0] != "/dev/nvidia0"]),
    ("DevicePolicy=closed\nDeviceAllow=char-nvidia* rw", []),        # a glob over the group names
    ("DeviceAllow=char-nvidia r", [n[0] for n in NVIDIA_NODES]),     # read only on 195; 238/241 not listed
    ("DeviceAllow=char-nvidia-uvm rw\nDeviceAllow=", []),             # an empty assignment resets the list
    ("PrivateDevices=yes", [n[0] for n in NVIDIA_NODES]),
])
def test_the_device_rules_tell_allowed_from_denied(service, denied):
    got = [node for node, _why in denied_nvidia_nodes(parse_unit("[Service]\n" + service)["Service"])]
    assert got == denied


# --------------------------------------------------------------------------------------------------
# The role's unit


def test_vllm_unit_allows_every_nvidia_device_cuda_opens(vllm_unit):
    denied = denied_nvidia_nodes(vllm_unit["Service"])
    assert not denied, ("vllm.service would answer open() of these NVIDIA nodes with EPERM on a real VM "
                        "(CUDA cannot initialise): %s" % denied)


def test_nvidia_uvm_is_registered_before_the_unit_resolves_its_allow_list(vllm_unit):
    """char-nvidia-uvm (dynamic major) is looked up in /proc/devices when the cgroup is set up, before
    ExecStartPre: a module that only the unit's own ExecStartPre loads is not in that start's allow-list."""
    service = vllm_unit["Service"]
    _policy, allow_list, entries = device_policy(service)
    if not allow_list:
        pytest.skip("no allow-list: nothing to resolve")
    assert allowing_entries(entries, "/dev/nvidia-uvm", 238, "rw")
    with open(NVIDIA_DEVICES_TASKS, encoding="utf-8") as f:
        tasks = yaml.safe_load(f)
    units = {}
    for task in tasks:   # the units gpu_host templates into /etc/systemd/system (the managed-by line dropped)
        tpl = task.get("ansible.builtin.template", {})
        if tpl.get("dest", "").startswith("/etc/systemd/system/"):
            with open(os.path.join(GPU_HOST_TEMPLATES, tpl["src"]), encoding="utf-8") as f:
                units[os.path.basename(tpl["dest"])] = "".join(l for l in f if not l.startswith("{{"))
    loaders = {name: parse_unit(text) for name, text in units.items()
               if re.search(r"nvidia-modprobe\s.*-u\b", _last(parse_unit(text).get("Service", []), "ExecStart"))}
    assert loaders, "gpu_host installs no unit that loads nvidia-uvm (nvidia-modprobe -u) at boot"
    after = " ".join(v for k, v in vllm_unit["Unit"] if k == "After").split()
    wants = " ".join(v for k, v in vllm_unit["Unit"] if k in ("Wants", "Requires")).split()
    ordered = [n for n in loaders if n in after and n in wants]
    assert ordered, "vllm.service is not After=+Wants= the unit that loads nvidia-uvm (%s); After=%s" % (
        sorted(loaders), after)
    for name in ordered:   # the loader itself must not sit behind a device allow-list
        assert not device_policy(loaders[name].get("Service", []))[1], name


def test_no_sandbox_directive_hides_what_cuda_needs(vllm_unit):
    service = vllm_unit["Service"]
    problems = []
    if _last(service, "ProcSubset") == "pid":
        problems.append("ProcSubset=pid hides /proc/driver/nvidia (NVML)")
    if _last(service, "MemoryDenyWriteExecute").lower() in YES:
        problems.append("MemoryDenyWriteExecute=yes breaks CUDA's PTX JIT, Triton and torch.compile")
    if _last(service, "PrivateDevices").lower() in YES:
        problems.append("PrivateDevices=yes: no /dev/nvidia* in the unit")
    assert not problems, problems


def _syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                         check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(name, groups, seen=None):
    seen = set() if seen is None else seen
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    return set().union(*[_expand(x, groups, seen) for x in groups.get(name, [])])


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is missing")
def test_system_call_filter_allows_what_cuda_calls(vllm_unit):
    groups = _syscall_groups()
    allowed, filters = set(), [v for k, v in vllm_unit["Service"] if k == "SystemCallFilter"]
    assert filters, "no SystemCallFilter: nothing to check"
    for value in filters:
        deny = value.startswith("~")
        names = set().union(*[_expand(x, groups) for x in value.lstrip("~").split()])
        allowed = allowed - names if deny else allowed | names
    missing = [c for c in CUDA_SYSCALLS if c not in allowed]
    assert not missing, "SystemCallFilter= (%s) blocks %s" % (filters, missing)


# --------------------------------------------------------------------------------------------------
# The checklist's recognition of a CUDA initialisation failure (roles/vllm_server/tasks/verify.yml)


def _tasks(tasks):
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key) or [])


def _cuda_init_re():
    with open(os.path.join(ROLE, "tasks", "verify.yml"), encoding="utf-8") as f:
        fails = [t for t in _tasks(yaml.safe_load(f)) if "ansible.builtin.fail" in t]
    assert len(fails) == 1, fails
    fail = fails[0]
    assert fail["vars"]["_vllm_server_cuda_init_re"] == "(?i)({{ _vllm_server_cuda_init_patterns | join('|') }})"
    return re.compile("(?i)(%s)" % "|".join(fail["vars"]["_vllm_server_cuda_init_patterns"]))


@pytest.mark.parametrize("journal, cuda_init", [
    ("RuntimeError: CUDA driver initialization failed, you might not have a CUDA gpu.", True),
    ("RuntimeError: No CUDA GPUs are available", True),
    ("RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions before?", True),
    ("Failed to initialize NVML: Insufficient Permissions", True),
    ("PermissionError: [Errno 1] Operation not permitted: '/dev/nvidiactl'", True),
    ("RuntimeError: Failed to infer device type", True),
    # the stand-in's OOM crash (tests/standin): must keep the OOM hints, not the device-policy ones
    ("ERROR [core.py:708] EngineCore failed to start.\ntorch.OutOfMemoryError: CUDA out of memory. Tried to "
     "allocate 2.00 GiB.\nRuntimeError: Engine core initialization failed. See root cause above.", False),
    ("vllm: error: argument --max-lora-rank: invalid choice: 7", False),
])
def test_checklist_tells_a_cuda_init_failure_from_other_deaths(journal, cuda_init):
    assert bool(_cuda_init_re().search(journal)) is cuda_init

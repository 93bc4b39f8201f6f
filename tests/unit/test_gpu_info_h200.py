"""gpu_info against output recorded on a real NVIDIA H200 (tests/fixtures/gpu/h200-2026-12-01/README.md).

The module ran there (driver 580.159.04, CUDA 13.0, Ubuntu 24.04) and its result was saved next to the raw
nvidia-smi and `ldconfig -p` output of the same run. These tests replay that raw output, for the exact commands
the module runs, and require the same result; libcuda.so.1 is where that host's linker found it.
"""
import json
import os
import subprocess
import sys

from module_helpers import ROOT, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.modules import gpu_info

FIX = os.path.join(ROOT, "tests", "fixtures", "gpu", "h200-2026-12-01")
with open(os.path.join(FIX, "gpu_info-result.json")) as _handle:
    RECORDED = json.load(_handle)
QUERY = ["--query-gpu=" + ",".join(gpu_info.QUERY_FIELDS), "--format=csv,noheader,nounits"]


def replays(tmp_path):
    """nvidia-smi and ldconfig programs that print the recorded bytes for the commands the module runs (else exit 99)."""
    smi, ldc = tmp_path / "nvidia-smi", tmp_path / "ldconfig"
    smi.write_text("#!%s\nimport sys\nfix = %r\nargs = sys.argv[1:]\n"
                   "name = 'query.csv' if args == %r else 'banner.txt' if not args else sys.exit(99)\n"
                   "sys.stdout.write(open(fix + '/' + name).read())\n" % (sys.executable, FIX, QUERY))
    ldc.write_text("#!%s\nimport sys\nsys.exit(99) if sys.argv[1:] != ['-p'] else None\n"
                   "sys.stdout.write(open(%r).read())\n" % (sys.executable, os.path.join(FIX, "ldconfig-p.txt")))
    for prog in (smi, ldc):
        prog.chmod(0o755)
    return str(smi), str(ldc)


def test_the_recorded_result_is_the_h200_and_its_drivers_libcuda():
    assert RECORDED["names"] == ["NVIDIA H200"] and RECORDED["gpus"][0]["memory_total_mib"] == 143771
    assert RECORDED["libcuda"]["path"] == "/usr/local/nvidia/lib64/libcuda.so.1"
    assert RECORDED["libcuda"]["cache"] == ["/usr/local/nvidia/lib64/libcuda.so.1", "/lib/libcuda.so.1"]


def test_parsers_reproduce_the_recorded_result():
    def read(name):
        with open(os.path.join(FIX, name)) as handle:
            return handle.read()

    result = gpu_info.summarize(gpu_info.parse_query(read("query.csv")), gpu_info.parse_cuda_version(read("banner.txt")))
    assert result == {k: v for k, v in RECORDED.items() if k not in ("changed", "nvidia_smi", "libcuda")}


def test_module_end_to_end_on_replayed_real_output(tmp_path):
    """The module file itself, in a subprocess, on the replayed nvidia-smi and ldconfig of the H200."""
    smi, ldc = replays(tmp_path)
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"nvidia_smi": smi, "ldconfig": ldc}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-m", "ansible_collections.llmops.gce_vllm.plugins.modules.gpu_info",
                          str(args)], capture_output=True, text=True, env=env, check=False)
    result = json.loads(out.stdout)
    assert not result.get("failed"), result
    for key in ("count", "names", "driver_version", "driver_major", "cuda_version", "cuda_major", "gpus"):
        assert result[key] == RECORDED[key], key
    assert result["libcuda"] == dict(RECORDED["libcuda"], ldconfig=ldc)


def test_libcuda_dir_is_checked_in_the_same_call(tmp_path):
    smi, ldc = replays(tmp_path)
    lib = tmp_path / "lib64"
    lib.mkdir()
    failed, result = run_module(gpu_info, {"nvidia_smi": smi, "ldconfig": ldc, "libcuda_dir": str(lib)})
    assert not failed and result["libcuda"]["dir"] == str(lib) and result["libcuda"]["in_dir"] is False
    (lib / "libcuda.so.1").write_bytes(b"")
    failed, result = run_module(gpu_info, {"nvidia_smi": smi, "ldconfig": ldc, "libcuda_dir": str(lib)}, check_mode=True)
    assert not failed and result["libcuda"]["in_dir"] is True
    # the linker's own answer is unchanged by libcuda_dir
    assert result["libcuda"]["path"] == "/usr/local/nvidia/lib64/libcuda.so.1"


def test_a_failing_nvidia_smi_still_says_where_libcuda_is(tmp_path):
    smi, ldc = replays(tmp_path)
    failed, result = run_module(gpu_info, {"nvidia_smi": str(tmp_path / "nope"), "ldconfig": ldc})
    assert failed and "does not exist or is not executable" in result["msg"]
    assert result["libcuda"]["path"] == "/usr/local/nvidia/lib64/libcuda.so.1"


def test_a_failing_ldconfig_leaves_only_the_system_directories(tmp_path):
    smi, dummy = replays(tmp_path)
    broken = tmp_path / "ldconfig-broken"
    broken.write_text("#!/bin/sh\necho 'ldconfig: Cannot open cache file' >&2\nexit 1\n")
    broken.chmod(0o755)
    failed, result = run_module(gpu_info, {"nvidia_smi": smi, "ldconfig": str(broken)})
    assert not failed and result["libcuda"]["ldconfig"] is None and result["libcuda"]["cache"] == []
    # on this controller: whatever its system directories hold (normally nothing)
    expected = next((os.path.join(d, "libcuda.so.1") for d in ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"]
                     if os.path.exists(os.path.join(d, "libcuda.so.1"))), None)
    assert result["libcuda"]["path"] == expected

"""gpu_info against output recorded on a real GPU (tests/fixtures/gpu/h100-2026-11-24/README.md).

The module ran on a lent NVIDIA H100 (driver 580.159.04, CUDA 13.0) and its result was saved next to the
raw nvidia-smi output of the same run. These tests replay that raw output and require the same result.
"""
import json
import os
import subprocess
import sys

from ansible_collections.llmops.gce_vllm.plugins.modules import gpu_info

FIX = os.path.join(os.path.dirname(__file__), "..", "fixtures", "gpu", "h100-2026-11-24")


def _read(name):
    with open(os.path.join(FIX, name)) as handle:
        return handle.read()


RECORDED = json.loads(_read("gpu_info-result.json"))


def test_parser_reproduces_the_result_recorded_on_the_real_gpu():
    result = gpu_info.summarize(gpu_info.parse_query(_read("query.csv")), gpu_info.parse_cuda_version(_read("banner.txt")))
    expected = {k: v for k, v in RECORDED.items() if k not in ("changed", "nvidia_smi")}
    assert result == expected
    assert result["names"] == ["NVIDIA H100 80GB HBM3"]
    assert result["gpus"][0]["memory_total_mib"] == 81559
    assert (result["driver_major"], result["cuda_version"]) == (580, "13.0")


def test_module_end_to_end_on_replayed_real_output(tmp_path):
    """Run the module file itself with an nvidia-smi that replays the recorded bytes."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!%s\nimport sys\nfix = %r\n"
        "name = 'query.csv' if any(a.startswith('--query-gpu=') for a in sys.argv[1:]) else 'banner.txt'\n"
        "sys.stdout.write(open(fix + '/' + name).read())\n" % (sys.executable, os.path.abspath(FIX)))
    smi.chmod(0o755)
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"nvidia_smi": str(smi)}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-m", "ansible_collections.llmops.gce_vllm.plugins.modules.gpu_info",
                          str(args)], capture_output=True, text=True, env=env, check=False)
    result = json.loads(out.stdout)
    assert not result.get("failed"), result
    for key in ("count", "names", "driver_version", "driver_major", "cuda_version", "cuda_major", "gpus"):
        assert result[key] == RECORDED[key], key

"""llmops.gce_vllm.gpu_info: the L4 stand-in, the REAL H100 capture, and the failure paths."""
import os
import re
import subprocess
import sys

import pytest

from module_helpers import H100_CAPTURE, NVIDIA_SMI, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.modules import gpu_info

SMI_ENV = [k for k in os.environ if k.startswith("NVIDIA_SMI_STANDIN_")]


def capture_sections():
    """The real capture: date line, then sections separated by '===' lines."""
    with open(H100_CAPTURE) as handle:
        text = handle.read()
    return text.split("\n===\n")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in SMI_ENV:
        monkeypatch.delenv(key, raising=False)


def smi(*args, **env):
    full = dict(os.environ)
    full.update(env)
    return subprocess.run([NVIDIA_SMI] + list(args), env=full, capture_output=True, text=True, check=False)


# --- the real H100 capture ------------------------------------------------------------------------------
def test_parses_the_real_h100_capture():
    sections = capture_sections()
    banner, query_line = sections[0], sections[1]
    gpus = gpu_info.parse_query(query_line, gpu_info.QUERY_FIELDS)
    assert gpus == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559,
                     "driver_version": "580.159.04", "compute_cap": "9.0",
                     "uuid": "GPU-a764fc88-d7a8-ffd6-863f-cdb649c54382", "pci_bus_id": "00000000:00:06.0"}]
    assert gpu_info.parse_cuda_version(banner) == "13.0"
    summary = gpu_info.summarize(gpus, gpu_info.parse_cuda_version(banner))
    assert summary["driver_major"] == 580 and summary["cuda_major"] == 13 and summary["count"] == 1
    # -q carries the CUDA version too
    assert gpu_info.parse_cuda_version(sections[4]) == "13.0"


def test_module_on_a_replay_of_the_real_h100_capture(tmp_path):
    """Run the module end to end on the recorded real output (replayed for the exact commands it runs)."""
    sections = capture_sections()
    replay = tmp_path / "nvidia-smi"
    replay.write_text(
        "#!%s\nimport sys\nargs = sys.argv[1:]\nsections = open(%r).read().split('\\n===\\n')\n"
        "if not args:\n    sys.stdout.write(sections[0].split('\\n', 1)[1] + '\\n')\n"
        "elif args == ['--query-gpu=%s', '--format=csv,noheader,nounits']:\n    sys.stdout.write(sections[1] + '\\n')\n"
        "else:\n    sys.exit(99)\n" % (sys.executable, H100_CAPTURE, ",".join(gpu_info.QUERY_FIELDS)))
    replay.chmod(0o755)
    assert sections[1].startswith("NVIDIA H100")
    failed, result = run_module(gpu_info, {"nvidia_smi": str(replay)})
    assert not failed, result
    assert result["names"] == ["NVIDIA H100 80GB HBM3"] and result["gpus"][0]["memory_total_mib"] == 81559
    assert result["driver_version"] == "580.159.04" and result["driver_major"] == 580
    assert result["cuda_version"] == "13.0" and result["count"] == 1


def test_standin_banner_has_the_real_column_layout():
    real = capture_sections()[0].splitlines()[2:14]
    ours = smi(NVIDIA_SMI_STANDIN_NAME="NVIDIA H100 80GB HBM3", NVIDIA_SMI_STANDIN_MEMORY_MIB="81559",
               NVIDIA_SMI_STANDIN_DRIVER="580.159.04").stdout.splitlines()[1:13]
    assert len(real) == len(ours) == 12
    for real_line, our_line in zip(real, ours):
        assert [m.start() for m in re.finditer(r"\|", real_line)] == [m.start() for m in re.finditer(r"\|", our_line)]
        assert len(real_line) == len(our_line)
    for index in (0, 1, 2, 3, 4, 5, 6, 7, 11):  # static lines and the GPU name/bus line are identical
        if index == 7:
            assert ours[index].replace("00:03.0", "00:06.0") == real[index]
        else:
            assert ours[index] == real[index]


def test_standin_csv_header_and_units_match_the_real_capture():
    real = capture_sections()[2].strip()
    ours = smi("--query-gpu=name,memory.total,driver_version,count", "--format=csv",
               NVIDIA_SMI_STANDIN_NAME="NVIDIA H100 80GB HBM3", NVIDIA_SMI_STANDIN_MEMORY_MIB="81559",
               NVIDIA_SMI_STANDIN_DRIVER="580.159.04").stdout.strip()
    assert ours == real


def test_standin_unknown_field_is_the_real_error():
    proc = smi("--query-gpu=name,cuda_version", "--format=csv,noheader")
    assert proc.returncode == 2 and proc.stdout == 'Field "cuda_version" is not a valid field to query.\n\n'


# --- the L4 stand-in ------------------------------------------------------------------------------------
def test_l4_standin():
    failed, result = run_module(gpu_info, {"nvidia_smi": NVIDIA_SMI})
    assert not failed, result
    assert result["gpus"] == [{"index": 0, "name": "NVIDIA L4", "memory_total_mib": 23034,
                               "driver_version": "580.95.05", "compute_cap": "8.9",
                               "uuid": "GPU-6b1f2e3a-9c4d-5e7f-8a0b-1c2d3e4f5a60", "pci_bus_id": "00000000:00:03.0"}]
    assert result["count"] == 1 and result["driver_major"] == 580 and result["cuda_version"] == "13.0"
    assert result["changed"] is False and result["nvidia_smi"] == NVIDIA_SMI


def test_found_in_path_and_check_mode(tmp_path, monkeypatch):
    os.symlink(NVIDIA_SMI, str(tmp_path / "nvidia-smi"))
    monkeypatch.setenv("PATH", "%s:%s" % (tmp_path, os.environ["PATH"]))
    failed, result = run_module(gpu_info, {}, check_mode=True)
    assert not failed and result["nvidia_smi"] == str(tmp_path / "nvidia-smi") and result["names"] == ["NVIDIA L4"]


def test_two_gpus_and_a_wrong_gpu(monkeypatch):
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_COUNT", "2")
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_NAME", "Tesla T4")
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_MEMORY_MIB", "15360")
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_DRIVER", "535.183.01")
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_CUDA", "12.2")
    failed, result = run_module(gpu_info, {"nvidia_smi": NVIDIA_SMI})
    assert not failed
    assert [g["index"] for g in result["gpus"]] == [0, 1] and result["names"] == ["Tesla T4", "Tesla T4"]
    assert result["gpus"][1]["pci_bus_id"] == "00000000:00:04.0"
    assert result["driver_major"] == 535 and result["cuda_version"] == "12.2" and result["count"] == 2


def test_no_devices(monkeypatch):
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_COUNT", "0")
    failed, result = run_module(gpu_info, {"nvidia_smi": NVIDIA_SMI})
    assert not failed and result["count"] == 0 and result["gpus"] == [] and result["driver_major"] is None


def test_driver_not_loaded_fails_with_nvidia_smi_message(monkeypatch):
    monkeypatch.setenv("NVIDIA_SMI_STANDIN_FAIL", "1")
    failed, result = run_module(gpu_info, {"nvidia_smi": NVIDIA_SMI})
    assert failed and "exit status 9" in result["msg"] and "couldn't communicate with the NVIDIA driver" in result["msg"]


def test_missing_nvidia_smi(tmp_path, monkeypatch):
    failed, result = run_module(gpu_info, {"nvidia_smi": str(tmp_path / "nope")})
    assert failed and "does not exist or is not executable" in result["msg"]
    if any(os.path.exists(os.path.join(d, "nvidia-smi")) for d in gpu_info.SEARCH_DIRS):
        pytest.skip("this machine has a real nvidia-smi")
    monkeypatch.setenv("PATH", str(tmp_path))
    failed, result = run_module(gpu_info, {})
    assert failed and "nvidia-smi was not found" in result["msg"] and "set nvidia_smi" in result["msg"]


def test_old_driver_without_compute_cap(tmp_path):
    old = tmp_path / "nvidia-smi"
    old.write_text("#!/bin/sh\ncase \"$1\" in *compute_cap*) printf 'Field \"compute_cap\" is not a valid field "
                   "to query.\\n\\n'; exit 2;; esac\nexec %s \"$@\"\n" % NVIDIA_SMI)
    old.chmod(0o755)
    failed, result = run_module(gpu_info, {"nvidia_smi": str(old)})
    assert not failed and result["gpus"][0]["compute_cap"] is None and result["gpus"][0]["memory_total_mib"] == 23034


@pytest.mark.parametrize("text, fields, expected", [
    ("NVIDIA L4, [N/A], 580.95.05, 1, [N/A], GPU-x, 00000000:00:03.0\n", gpu_info.QUERY_FIELDS,
     {"memory_total_mib": None, "compute_cap": None, "name": "NVIDIA L4"}),
    ("\nNVIDIA L4,23034,580.95.05,1,8.9,GPU-x,00000000:00:03.0\n\n", gpu_info.QUERY_FIELDS,
     {"memory_total_mib": 23034, "compute_cap": "8.9"}),
])
def test_parse_is_robust(text, fields, expected):
    gpu = gpu_info.parse_query(text, fields)[0]
    for key, value in expected.items():
        assert gpu[key] == value


def test_parse_rejects_a_wrong_column_count():
    with pytest.raises(ValueError, match="expected 7 comma-separated values"):
        gpu_info.parse_query("NVIDIA L4, 23034\n")

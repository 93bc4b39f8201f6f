"""llmops.gce_vllm.env_file: a KEY=VALUE file written 0600, its diff showing the plain keys and never a secret value.

Run in-process on files under tmp_path (the module only touches the file it is given)."""
import json
import os
import stat

from module_helpers import run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.module_utils import env_file as ef
from ansible_collections.llmops.gce_vllm.plugins.modules import env_file

OLD_KEY = "old-secret-" + os.urandom(6).hex()
NEW_KEY = "new-secret-" + os.urandom(6).hex()
TOKEN = "tok-" + os.urandom(6).hex()


def _content(key, max_len="8192", extra=""):
    return (f"# managed\nVLLM_API_KEY=\"{key}\"\nBACKEND_INTERNAL_TOKEN={TOKEN}\nVLLM_MAX_MODEL_LEN={max_len}\n{extra}")


def _run(path, content, check_mode=False, diff=True, **kw):
    args = {"path": str(path), "content": content, "secret_keys": ["VLLM_API_KEY", "BACKEND_INTERNAL_TOKEN"],
            "_ansible_diff": diff, **kw}
    return run_module(env_file, args, check_mode=check_mode)


def test_new_file_is_0600_and_its_diff_masks_the_secrets(tmp_path):
    path = tmp_path / "vllm.env"
    failed, res = _run(path, _content(NEW_KEY))
    assert not failed and res["changed"], res
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == _content(NEW_KEY)
    text = json.dumps(res)
    assert NEW_KEY not in text and TOKEN not in text
    assert "VLLM_MAX_MODEL_LEN=8192" in res["diff"]["after"]
    assert "VLLM_API_KEY=******** (changed)" in res["diff"]["after"]
    assert res["diff"]["before"] == ""
    assert res["changed_keys"] == ["BACKEND_INTERNAL_TOKEN", "VLLM_API_KEY", "VLLM_MAX_MODEL_LEN"]


def test_a_plain_change_shows_its_values_and_the_unchanged_secret_masked(tmp_path):
    path = tmp_path / "vllm.env"
    _run(path, _content(OLD_KEY))
    failed, res = _run(path, _content(OLD_KEY, max_len="4096"))
    assert not failed and res["changed"]
    assert res["changed_keys"] == ["VLLM_MAX_MODEL_LEN"]
    assert "VLLM_MAX_MODEL_LEN=8192" in res["diff"]["before"] and "VLLM_MAX_MODEL_LEN=4096" in res["diff"]["after"]
    # an unchanged secret: the same masked line on both sides (no diff line for it)
    assert "VLLM_API_KEY=********\n" in res["diff"]["before"] and "VLLM_API_KEY=********\n" in res["diff"]["after"]
    assert OLD_KEY not in json.dumps(res)


def test_a_secret_rotation_is_visible_but_neither_value_is(tmp_path):
    path = tmp_path / "vllm.env"
    _run(path, _content(OLD_KEY))
    failed, res = _run(path, _content(NEW_KEY))
    assert not failed and res["changed"] and res["changed_keys"] == ["VLLM_API_KEY"]
    assert res["diff"]["before"] != res["diff"]["after"]
    text = json.dumps(res)
    assert OLD_KEY not in text and NEW_KEY not in text


def test_same_content_is_unchanged(tmp_path):
    path = tmp_path / "vllm.env"
    _run(path, _content(OLD_KEY))
    failed, res = _run(path, _content(OLD_KEY))
    assert not failed and not res["changed"] and res["changed_keys"] == []


def test_check_mode_reports_the_diff_and_writes_nothing(tmp_path):
    path = tmp_path / "vllm.env"
    failed, res = _run(path, _content(OLD_KEY), check_mode=True)
    assert not failed and res["changed"] and not path.exists()
    _run(path, _content(OLD_KEY))
    before = path.read_text()
    failed, res = _run(path, _content(OLD_KEY, extra="EXTRA_FLAG=1\n"), check_mode=True)
    assert not failed and res["changed"] and res["changed_keys"] == ["EXTRA_FLAG"]
    assert path.read_text() == before


def test_a_wrong_mode_is_set_right(tmp_path):
    path = tmp_path / "vllm.env"
    _run(path, _content(OLD_KEY))
    path.chmod(0o644)
    failed, res = _run(path, _content(OLD_KEY))
    assert not failed and res["changed"] and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_masked_keeps_comments_quotes_and_export():
    text = "# VLLM_API_KEY=not-a-value\nexport VLLM_API_KEY='abc12345'\nA=1\n"
    out = ef.masked(text, ["VLLM_API_KEY"])
    assert out == "# VLLM_API_KEY=not-a-value\nexport VLLM_API_KEY=********\nA=1\n"
    assert ef.secret_values(text, ["VLLM_API_KEY"]) == ["'abc12345'", "abc12345"]


def test_a_file_without_secrets_still_shows_its_diff(tmp_path):
    """vllm.env behind the proxy holds no secret: the masked text is the content itself, which must still show
    (the content parameter is no_log: ansible-core would print VALUE_SPECIFIED_IN_NO_LOG_PARAMETER instead)."""
    path = tmp_path / "vllm.env"
    _run(path, "# managed\nVLLM_STANDIN_STARTUP_DELAY=\"2\"\n")
    failed, res = _run(path, "# managed\nVLLM_STANDIN_STARTUP_DELAY=\"1\"\n")
    assert not failed and res["changed_keys"] == ["VLLM_STANDIN_STARTUP_DELAY"]
    assert res["diff"]["after"] == "# managed\nVLLM_STANDIN_STARTUP_DELAY=\"1\"\n", res["diff"]
    assert res["diff"]["before"] == "# managed\nVLLM_STANDIN_STARTUP_DELAY=\"2\"\n", res["diff"]

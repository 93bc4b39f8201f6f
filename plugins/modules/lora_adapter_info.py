#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: lora_adapter_info
short_description: Read LoRA adapters' adapter_config.json where vLLM reads them and check what vLLM would refuse
version_added: "0.1.0"
description:
  - For each adapter, reads its C(adapter_config.json) from where vLLM will read it on this host, before vLLM is
    (re)started with it - a local directory, or for a Hugging Face repo id the hub over HTTPS
    (C({endpoint}/{repo_id}/resolve/main/adapter_config.json), the revision C(huggingface_hub.snapshot_download)
    takes when vLLM gives none), with O(hf_token) as a Bearer token.
  - Paths are told apart as vLLM does (C(vllm/lora/utils.py) C(get_adapter_absolute_path)) - absolute paths and
    C(~) (the service's home) are directories, a relative path that exists from O(working_dir) is a directory,
    anything else is a repo id.
  - Checks each against vLLM's own rules (C(vllm/lora/peft_helper.py) C(PEFTHelper.validate_legal), vLLM 0.15 to
    0.32) - rank C(r) (and C(rank_pattern)) not above O(max_lora_rank), C(modules_to_save) null, no DoRA, no bias,
    no PiSSA/OLoRA/LoftQ-style init, no aLoRA, layer replication, BD-LoRA or QALoRA, the required fields present;
    embedding/output layers in C(target_modules) only where O(embedding_modules) lists them.
  - A missing or unreadable C(adapter_config.json) (a path that is not a PEFT adapter; a repo that does not
    exist, is private or gated without a token that may read it) is a problem too.
  - Fails naming every refused adapter, what vLLM would say and the fix, unless O(fail_on_problems) is false.
    Warns when an adapter was trained on another base model than O(base_model), or when the hub cannot be
    reached (then the copy in the Hugging Face cache under O(hf_home) is checked, as vLLM would use it).
  - Read-only; runs in check mode too.
author:
  - llmops team (@llmops)
options:
  adapters:
    description: The adapters, as vLLM's C(--lora-modules) takes them.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The name the adapter is served under.
        type: str
        required: true
      path:
        description: A directory on this host or a Hugging Face repo id.
        type: str
        required: true
      base_model_name:
        description: Ignored here (vLLM's own field of C(--lora-modules)).
        type: str
  max_lora_rank:
    description: vLLM's C(--max-lora-rank).
    type: int
    required: true
  base_model:
    description: The served base model (vLLM's model argument); an adapter trained on another one is a warning.
    type: str
  embedding_modules:
    description:
      - The embedding/output modules the served model's vLLM class serves LoRA on (its C(embedding_modules)), for
        example V([wte, lm_head]) for C(ExaoneForCausalLM). An adapter targeting another embedding/output layer is refused.
      - Omitted, such targets are a warning (whether vLLM serves them depends on the model class).
    type: list
    elements: str
  hidden_paths:
    description:
      - Directories the service cannot see (its unit's C(ProtectHome=yes) hides C(/home), C(/root), C(/run/user);
        C(PrivateTmp=yes) gives it its own C(/tmp) and C(/var/tmp)). An adapter directory under one is refused.
    type: list
    elements: path
    default: []
  working_dir:
    description: The service's working directory (relative adapter paths are resolved from it, as vLLM does).
    type: path
    default: /
  home:
    description: The service's C(HOME) (for C(~) in adapter paths).
    type: path
    default: /
  hf_home:
    description: The service's C(HF_HOME); its C(hub) cache is read when the hub cannot be reached or O(offline) is set.
    type: path
  hf_endpoint:
    description: The hub (E(HF_ENDPOINT) of the service). An http(s) URL.
    type: str
    default: https://huggingface.co
  hf_token:
    description: The service's E(HF_TOKEN), sent as C(Authorization Bearer) to the hub only (dropped on a redirect to another host). Never logged or returned.
    type: str
  offline:
    description: The service runs with E(HF_HUB_OFFLINE) set, so vLLM reads repo ids from the cache only; so does this.
    type: bool
    default: false
  timeout:
    description: Seconds for each hub request.
    type: float
    default: 15
  validate_certs:
    description: Verify the hub's TLS certificate.
    type: bool
    default: true
  variable:
    description: The variable that holds O(adapters), named in messages.
    type: str
    default: adapters
  rank_variable:
    description: The variable that holds O(max_lora_rank), named in messages.
    type: str
    default: max_lora_rank
  fail_on_problems:
    description: Fail when an adapter has a problem (else they are only returned).
    type: bool
    default: true
extends_documentation_fragment:
  - llmops.gce_vllm.read_only
notes:
  - The hub answers C(401) for a repo that does not exist as for a private or gated one without a valid token
    (huggingface_hub C(hf_raise_for_status) - "401 is misleading as it is returned for private and gated repos if
    user is not authenticated, missing repos"); its C(X-Error-Code) header (C(RepoNotFound), C(GatedRepo),
    C(EntryNotFound), C(RevisionNotFound)) tells the cases apart where it is sent.
seealso:
  - name: vLLM PEFTHelper
    description: The rules vLLM applies to adapter_config.json before it loads an adapter.
    link: https://github.com/vllm-project/vllm/blob/main/vllm/lora/peft_helper.py
  - name: Hugging Face resolve URL
    description: C(https://huggingface.co/{namespace}/{repository}/resolve/{branch}/{filepath}), fetched with the Hub token.
    link: https://huggingface.co/docs/xet/file-id
'''

EXAMPLES = r'''
- name: Check the LoRA adapters before the vLLM unit changes
  llmops.gce_vllm.lora_adapter_info:
    adapters:
      - {name: easycontract, path: temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1}
      - {name: local, path: /srv/adapters/local}
    max_lora_rank: 16
    base_model: LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct
    working_dir: /app/vllm-server
    home: /app/vllm-server
    hf_home: /app/vllm-server/.cache/huggingface
    hf_token: "{{ vllm_server_hf_token | default(omit, true) }}"
    variable: vllm_server_lora_adapters
    rank_variable: vllm_server_max_lora_rank
  register: adapters

- name: Show the ranks
  ansible.builtin.debug:
    msg: "{{ adapters.adapters | items2dict(key_name='name', value_name='r') }}"
'''

RETURN = r'''
adapters:
  description: Per adapter, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The served name.
      type: str
    path:
      description: The path as given.
      type: str
    source:
      description: Where the config was read - V(dir), V(hub) or V(cache) (the hub's copy in the HF cache); null when it could not be read.
      type: str
    location:
      description: The file or URL read.
      type: str
    r:
      description: The adapter's rank.
      type: int
    max_rank:
      description: The largest of C(r) and the C(rank_pattern) values.
      type: int
    lora_alpha:
      description: Its C(lora_alpha).
      type: raw
    target_modules:
      description: Its C(target_modules) (a list, or a regex string).
      type: raw
    modules_to_save:
      description: Its C(modules_to_save).
      type: raw
    base_model_name_or_path:
      description: The model it was trained on.
      type: str
    problems:
      description: What vLLM would refuse.
      type: list
      elements: str
    warnings:
      description: What may be wrong but does not stop vLLM.
      type: list
      elements: str
  sample:
    - {name: big, path: /srv/adapters/big, source: dir, location: /srv/adapters/big/adapter_config.json, r: 32, max_rank: 32,
       lora_alpha: 64, target_modules: [q_proj, v_proj], modules_to_save: null, base_model_name_or_path: tiny-llama,
       problems: ["its rank r = 32 is greater than vllm_server_max_lora_rank 16 (...)"], warnings: []}
problems:
  description: Every problem, prefixed with its adapter's name.
  returned: always
  type: list
  elements: str
'''

import os
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.llmops.gce_vllm.plugins.module_utils import lora_rules as rules

MAX_CONFIG_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
RANK_CHOICES = (1, 8, 16, 32, 64, 128, 256, 320, 512)   # vllm/config/lora.py MaxLoRARanks (0.15.1 and 0.32.0)


class Unreachable(Exception):
    """The hub did not answer (network, TLS, 5xx, 429): vLLM would fall back to its cache."""


def _hub_get(url, token, timeout, validate_certs):
    """GET url, following redirects ourselves so that the token goes to the hub's host only.
    Returns the body; AdapterError for an answer that says the file is not there; Unreachable otherwise."""
    host = urlsplit(url).netloc
    for _hop in range(MAX_REDIRECTS + 1):
        headers = {"Accept": "application/json", "User-Agent": "llmops.gce_vllm.lora_adapter_info"}
        if token and urlsplit(url).netloc == host:
            headers["Authorization"] = "Bearer " + token
        try:
            resp = open_url(url, method="GET", headers=headers, timeout=timeout, validate_certs=validate_certs,
                            follow_redirects="none", use_proxy=True)
            try:
                return resp.read(MAX_CONFIG_BYTES + 1)
            finally:
                resp.close()
        except HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                url = urljoin(url, exc.headers["Location"])
                continue
            code, msg = exc.headers.get("X-Error-Code", ""), exc.headers.get("X-Error-Message", "")
            if exc.code == 429 or exc.code >= 500:
                raise Unreachable("HTTP %d" % exc.code)
            if code == "EntryNotFound" or (exc.code == 404 and code not in ("RepoNotFound", "RevisionNotFound")):
                raise rules.AdapterError("the repo has no %s at revision %s (HTTP %d%s): it is not a PEFT adapter repo"
                                         % (rules.CONFIG_NAME, rules.HUB_REVISION, exc.code, ", " + code if code else ""))
            if code == "RevisionNotFound":
                raise rules.AdapterError("the repo has no revision %s (HTTP %d, RevisionNotFound)" % (rules.HUB_REVISION, exc.code))
            if code == "GatedRepo":
                raise rules.AdapterError("the repo is gated and vllm_server_hf_token %s (HTTP %d, GatedRepo): accept its conditions on "
                                         "the hub with the token's account, or set vllm_server_hf_token"
                                         % ("may not read it" if token else "is empty", exc.code))
            if exc.code == 401 and msg == "Invalid credentials in Authorization header":
                raise rules.AdapterError("the hub refused vllm_server_hf_token (HTTP 401, %s): set a valid token" % msg)
            if exc.code in (401, 403, 404):
                raise rules.AdapterError("the hub says the repo does not exist, or is private or gated and %s (HTTP %d%s): check the "
                                         "repo id, or set vllm_server_hf_token to a token that may read it"
                                         % ("vllm_server_hf_token may not read it" if token else "vllm_server_hf_token is empty",
                                            exc.code, ", " + code if code else ""))
            raise rules.AdapterError("the hub answered HTTP %d for it" % exc.code)
        except (URLError, OSError, ValueError) as exc:
            raise Unreachable(str(getattr(exc, "reason", exc)))
        except Exception as exc:  # pylint: disable=broad-except
            # http.client.RemoteDisconnected, BadStatusLine and friends
            raise Unreachable("%s: %s" % (type(exc).__name__, exc))
    raise Unreachable("more than %d redirects" % MAX_REDIRECTS)


def _read_file(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise rules.AdapterError("cannot read %s: %s" % (path, exc.strerror or exc))


def _read_dir(path):
    config = os.path.join(path, rules.CONFIG_NAME)
    if not os.path.isdir(path):
        raise rules.AdapterError("%s is not a directory on this host (vLLM reads an absolute path as a local directory)" % path)
    if not os.path.isfile(config):
        raise rules.AdapterError("%s has no %s: it is not a PEFT adapter directory" % (path, rules.CONFIG_NAME))
    return _read_file(config), config


def read_config(kind, where, p, warn):
    """(raw bytes, source, location) of one adapter's config; AdapterError when it cannot be served."""
    if kind == "dir":
        real = os.path.realpath(where)
        for hidden in p["hidden_paths"]:
            if real == hidden.rstrip("/") or real.startswith(hidden.rstrip("/") + "/"):
                raise rules.AdapterError("%s is under %s, which the vLLM unit's sandbox hides from vLLM (ProtectHome=yes: /home, /root, "
                                         "/run/user; PrivateTmp=yes: /tmp, /var/tmp): put the adapter in a directory vLLM can read, "
                                         "e.g. under vllm_server_dir" % (where, hidden))
        raw, location = _read_dir(where)
        return raw, "dir", location
    if not rules.valid_repo_id(where):
        raise rules.AdapterError("%r is neither an existing directory on this host nor a Hugging Face repo id (namespace/name)" % where)
    cached = rules.cache_path(p["hf_home"], where) if p["hf_home"] else None
    if p["offline"]:
        if not cached:
            raise rules.AdapterError("HF_HUB_OFFLINE is set and the Hugging Face cache %s has no copy of it (refs/%s): vLLM could not "
                                     "load it" % (os.path.join(p["hf_home"] or "(HF_HOME unset)", "hub"), rules.HUB_REVISION))
        return _read_file(cached), "cache", cached
    url = rules.resolve_url(p["hf_endpoint"], where)
    try:
        return _hub_get(url, p["hf_token"], p["timeout"], p["validate_certs"]), "hub", url
    except Unreachable as exc:
        if cached:
            warn("%s: the hub did not answer for %s (%s); checked the copy vLLM would use from its cache, %s" % (where, url, exc, cached))
            return _read_file(cached), "cache", cached
        warn("%s: the hub did not answer for %s (%s) and the Hugging Face cache has no copy: not checked; vLLM will download it at "
             "start" % (where, url, exc))
        return None, None, url


def rank_fix(rank, variable):
    fits = [c for c in RANK_CHOICES if c >= rank]
    if fits:
        return "set %s to %d (vLLM's --max-lora-rank choices: %s) or serve an adapter of rank <= the current value" % (
            variable, fits[0], ", ".join(str(c) for c in RANK_CHOICES))
    return "serve an adapter of rank <= %d (vLLM's largest --max-lora-rank)" % RANK_CHOICES[-1]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            adapters=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                path=dict(type="str", required=True),
                base_model_name=dict(type="str"),
            )),
            max_lora_rank=dict(type="int", required=True),
            base_model=dict(type="str"),
            embedding_modules=dict(type="list", elements="str"),
            hidden_paths=dict(type="list", elements="path", default=[]),
            working_dir=dict(type="path", default="/"),
            home=dict(type="path", default="/"),
            hf_home=dict(type="path"),
            hf_endpoint=dict(type="str", default=rules.DEFAULT_ENDPOINT),
            hf_token=dict(type="str", no_log=True),
            offline=dict(type="bool", default=False),
            timeout=dict(type="float", default=15.0),
            validate_certs=dict(type="bool", default=True),
            variable=dict(type="str", default="adapters"),
            rank_variable=dict(type="str", default="max_lora_rank"),
            fail_on_problems=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    parts = urlsplit(p["hf_endpoint"])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        module.fail_json(msg="Invalid parameters: hf_endpoint must be an http(s) URL, e.g. %s (got %r)." % (rules.DEFAULT_ENDPOINT, p["hf_endpoint"]))
    if p["max_lora_rank"] <= 0 or p["timeout"] <= 0:
        module.fail_json(msg="Invalid parameters: max_lora_rank (%s) and timeout (%s) must be positive." % (p["max_lora_rank"], p["timeout"]))
    if p["hf_token"] is not None and not p["hf_token"].strip():
        p["hf_token"] = None   # an empty token: public repos only, as huggingface_hub with HF_TOKEN=""
    if p["hf_token"] and any(c in p["hf_token"] for c in "\r\n"):
        module.fail_json(msg="Invalid parameters: hf_token contains a line break.")

    results, all_problems, fixes = [], [], []
    for adapter in p["adapters"]:
        name, path = adapter["name"], adapter["path"]
        entry = dict(name=name, path=path, source=None, location=None, r=None, max_rank=None, lora_alpha=None,
                     target_modules=None, modules_to_save=None, base_model_name_or_path=None, problems=[], warnings=[])
        kind, where = rules.locate(path, p["working_dir"], p["home"])
        try:
            raw, source, location = read_config(kind, where, p, entry["warnings"].append)
            entry.update(source=source, location=location)
            if raw is not None:
                if len(raw) > MAX_CONFIG_BYTES:
                    raise rules.AdapterError("%s is larger than %d bytes: not an adapter_config.json" % (location, MAX_CONFIG_BYTES))
                config = rules.parse_config(raw.decode("utf-8", "replace"), location)
                facts, problems, warnings = rules.check(config, p["max_lora_rank"], p["base_model"], p["embedding_modules"])
                facts.pop("peft_type", None)
                facts.pop("rank_pattern", None)
                entry.update(facts)
                entry["problems"].extend(problems)
                entry["warnings"].extend(warnings)
                if entry["max_rank"] and entry["max_rank"] > p["max_lora_rank"]:
                    fixes.append("%s: %s" % (name, rank_fix(entry["max_rank"], p["rank_variable"])))
        except rules.AdapterError as exc:
            entry["problems"].append(str(exc))
        for text in entry["problems"]:
            all_problems.append("%s (%s): %s" % (name, path, text))
        for text in entry["warnings"]:
            module.warn("LoRA adapter %s (%s in %s): %s" % (name, path, p["variable"], text))
        results.append(entry)

    result = dict(changed=False, adapters=results, problems=all_problems)
    if all_problems and p["fail_on_problems"]:
        bad = [e for e in results if e["problems"]]
        msg = ("vLLM would refuse %s of %s and so fail to start: %s. Fix: %s. Nothing was changed; the running service was not touched."
               % ("LoRA adapter " + bad[0]["name"] if len(bad) == 1 else "the LoRA adapters " + ", ".join(e["name"] for e in bad),
                  p["variable"], "; ".join(all_problems),
                  "; ".join(fixes + ["correct or remove the adapter in %s" % p["variable"]] if len(fixes) < len(all_problems)
                            else fixes)))
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

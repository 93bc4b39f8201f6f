#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: vllm_lora_update
short_description: Load and unload LoRA adapters in a running vLLM, when only its adapter list changed
version_added: "0.1.0"
description:
  - Decides whether a running vLLM can take a new adapter list at runtime, and if so applies it with vLLM's
    C(POST /v1/unload_lora_adapter) and C(POST /v1/load_lora_adapter) (routes that exist only when the server runs
    with C(VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)), then reads C(/v1/models) to confirm it serves exactly O(adapters).
  - "The running vLLM qualifies when all of these hold: the unit O(name) is active; its main process was started
    with O(digest) in its environment variable O(digest_key) (the calling role's digest of everything in the unit but
    the adapter list: a process started with another digest runs another configuration and must restart); none of
    O(restart_files) and no C(site-packages) of O(restart_venvs) changed after it started; it answers C(/v1/models)."
  - Otherwise it changes nothing and returns RV(runtime) false with the RV(reason); the caller restarts the service.
  - Adapters with the same name and path are not touched (requests to them keep being served). A removed adapter is
    unloaded; a new one loaded; one whose path changed is unloaded, then loaded from the new path (vLLM refuses a
    second load of a loaded name, and an in-place load keeps prefix-cache blocks of the old weights).
  - The environment of the process is read from C(/proc/PID/environ) (needs root); only O(digest_key) is decoded.
author:
  - llmops team (@llmops)
options:
  name:
    description: The systemd unit of vLLM, with or without C(.service).
    type: str
    required: true
  digest:
    description: The digest of the unit as it should be, without its adapter list (the calling role computes it).
    type: str
    required: true
  digest_key:
    description: The environment variable the unit sets to its digest.
    type: str
    default: LLMOPS_VLLM_UNIT_DIGEST
  base_url:
    description: vLLM itself (not a proxy in front of it), e.g. C(http://127.0.0.1:18001).
    type: str
    required: true
  api_key:
    description: The key vLLM was started with (C(VLLM_API_KEY)); omit for a vLLM without a key (behind its proxy).
    type: str
  adapters:
    description: The adapters the unit names (what vLLM should serve).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The name it is served under.
        type: str
        required: true
      path:
        description: Its local directory or Hugging Face repo id.
        type: str
        required: true
      base_model_name:
        description: Accepted for symmetry with C(--lora-modules); not sent (vLLM's load route takes no base model).
        type: str
  restart_files:
    description: Files whose change after the start means a restart (the environment file); then nothing is done here.
    type: list
    elements: path
    default: []
  restart_venvs:
    description: Venvs whose C(site-packages) change after the start means a restart.
    type: list
    elements: path
    default: []
  timeout:
    description: Seconds each request may take (a load reads the adapter's weights).
    type: float
    default: 120
attributes:
  check_mode:
    support: full
    description: Reads the unit, the process and C(/v1/models), and returns what it would load and unload.
  diff_mode:
    support: none
    description: No diff.
notes:
  - Anyone who can reach vLLM's port with the key can use the same routes, to load an adapter from any path the
    service's user can read or any hub repo. In the collection the port is loopback, behind the authenticating proxy.
seealso:
  - module: llmops.gce_vllm.vllm_models
  - module: llmops.gce_vllm.lora_adapter_info
'''

EXAMPLES = r'''
- name: Apply an adapter-only change at runtime
  llmops.gce_vllm.vllm_lora_update:
    name: vllm
    digest: "{{ unit_digest }}"
    base_url: http://127.0.0.1:18001
    adapters:
      - {name: easycontract, path: temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1}
    restart_files: [/app/vllm-server/vllm.env]
    restart_venvs: [/app/vllm-server/venv]
  register: lora_update

- name: Restart only when the change could not be applied at runtime
  ansible.builtin.systemd_service:
    name: vllm
    state: restarted
  when: not lora_update.runtime
'''

RETURN = r'''
runtime:
  description: The running vLLM takes the adapter list at runtime (then a changed unit needs no restart).
  returned: always
  type: bool
  sample: true
reason:
  description: Why it does not (empty when it does).
  returned: always
  type: str
  sample: "the running vLLM was started from another configuration (digest abc..., the unit's is def...)"
need_daemon_reload:
  description: systemd reports the unit file changed since its last daemon-reload.
  returned: always
  type: bool
  sample: true
loaded:
  description: Names loaded (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [checklist]
unloaded:
  description: Names unloaded (or, in check mode, that would be); a changed path is in both lists.
  returned: always
  type: list
  elements: str
  sample: []
kept:
  description: Names served before and after with the same path, not touched.
  returned: always
  type: list
  elements: str
  sample: [easycontract]
served:
  description: The adapters served at the end, name -> path (read from C(/v1/models)).
  returned: when runtime
  type: dict
  sample: {"easycontract": "temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1"}
'''

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils import service_state as ss
from ansible_collections.llmops.gce_vllm.plugins.module_utils.http_poll import http_request
from ansible_collections.llmops.gce_vllm.plugins.module_utils.lora_rules import environ_value, runtime_plan

PROPERTIES = ss.UNIT_PROPERTIES + ("NRestarts",)


def _headers(api_key, body=False):
    hdrs = {"Accept": "application/json"}
    if api_key:
        hdrs["Authorization"] = "Bearer " + api_key
    if body:
        hdrs["Content-Type"] = "application/json"
    return hdrs


def served_cards(base, api_key, timeout):
    """(cards, None) from GET /v1/models, or (None, why)."""
    res = http_request(base + "/v1/models", "GET", None, _headers(api_key), timeout)
    if res.status != 200:
        return None, "GET /v1/models: %s" % res.describe()
    try:
        return [c for c in res.json()["data"] if isinstance(c, dict)], None
    except (ValueError, KeyError, TypeError):
        return None, "GET /v1/models: not a model list: %r" % res.text[:200]


def post(module, base, api_key, route, body, timeout):
    res = http_request(base + route, "POST", json.dumps(body).encode(), _headers(api_key, True), timeout)
    if res.status != 200:
        try:
            said = res.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            said = res.text[:300] if res.status else ""
        module.fail_json(msg="POST %s %s failed: %s%s. vLLM keeps serving; the unit on the host already names the new "
                             "adapters, so the next run retries (or a restart loads them)." % (
                                 route, json.dumps(body), res.describe(), (": " + said) if said else ""))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            digest=dict(type="str", required=True),
            digest_key=dict(type="str", default="LLMOPS_VLLM_UNIT_DIGEST", no_log=False),
            base_url=dict(type="str", required=True),
            api_key=dict(type="str", no_log=True),
            adapters=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                path=dict(type="str", required=True),
                base_model_name=dict(type="str"),
            )),
            restart_files=dict(type="list", elements="path", default=[]),
            restart_venvs=dict(type="list", elements="path", default=[]),
            timeout=dict(type="float", default=120.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    base = p["base_url"].strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    if not base.startswith(("http://", "https://")):
        module.fail_json(msg="base_url must be an http:// or https:// URL of vLLM itself, e.g. http://127.0.0.1:18001 (got %r)"
                             % p["base_url"])
    names = [a["name"] for a in p["adapters"]]
    if len(names) != len(set(names)):
        module.fail_json(msg="adapters: duplicate names %s" % ", ".join(sorted(set(n for n in names if names.count(n) > 1))))
    unit = p["name"] if "." in p["name"] else p["name"] + ".service"
    systemctl = module.get_bin_path("systemctl", required=True)
    rc, out, err = module.run_command([systemctl, "show", unit, "--property=" + ",".join(PROPERTIES)],
                                      environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(msg="systemctl show %s failed (rc=%d): %s" % (unit, rc, err.strip()))
    props = ss.parse_show(out)
    result = dict(changed=False, runtime=False, reason="", need_daemon_reload=props.get("NeedDaemonReload") == "yes",
                  loaded=[], unloaded=[], kept=[])

    def not_runtime(why):
        result["reason"] = why
        module.exit_json(**result)

    pid = props.get("MainPID") or "0"
    if props.get("ActiveState") != "active" or not pid.isdigit() or int(pid) == 0:
        not_runtime("%s is not running (ActiveState %s)" % (unit, props.get("ActiveState")))
    try:
        with open("/proc/%s/environ" % pid, "rb") as fh:
            running = environ_value(fh.read(), p["digest_key"])
    except OSError as exc:
        not_runtime("cannot read the environment of %s's main process %s: %s" % (unit, pid, exc))
    if running != p["digest"]:
        not_runtime("the running vLLM was started from another configuration than the unit's, apart from the adapters "
                    "(%s %s, the unit's %s)" % (p["digest_key"], running or "unset", p["digest"]))
    state = ss.service_state(props, p["restart_files"], p["restart_venvs"])
    if state["changed_since_start"]:
        not_runtime("changed after the running vLLM started: %s" % ", ".join(state["changed_since_start"]))
    cards, why = served_cards(base, p["api_key"], p["timeout"])
    if cards is None:
        not_runtime("vLLM does not list its models yet (%s)" % why)

    plan = runtime_plan(cards, p["adapters"])
    result.update(runtime=True, kept=plan["keep"], unloaded=plan["unload"], loaded=[a["name"] for a in plan["load"]])
    result["changed"] = bool(plan["unload"] or plan["load"])
    if module.check_mode or not result["changed"]:
        result["served"] = plan["served"]
        module.exit_json(**result)
    for name in plan["unload"]:
        post(module, base, p["api_key"], "/v1/unload_lora_adapter", {"lora_name": name}, p["timeout"])
    for adapter in plan["load"]:
        post(module, base, p["api_key"], "/v1/load_lora_adapter",
             {"lora_name": adapter["name"], "lora_path": adapter["path"]}, p["timeout"])
    cards, why = served_cards(base, p["api_key"], p["timeout"])
    if cards is None:
        module.fail_json(msg="after the adapter changes: %s" % why, **result)
    after = runtime_plan(cards, p["adapters"])
    result["served"] = after["served"]
    if after["unload"] or after["load"]:
        module.fail_json(msg="after the adapter changes vLLM serves %s, not the unit's %s" % (
            json.dumps(after["served"], sort_keys=True),
            json.dumps(dict((a["name"], a["path"]) for a in p["adapters"]), sort_keys=True)), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

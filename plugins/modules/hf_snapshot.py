#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: hf_snapshot
short_description: Stage Hugging Face hub snapshots in a service's HF_HOME, with the huggingface_hub of its venv
version_added: "0.1.0"
description:
  - For the model (O(model), O(revision)) and each adapter of O(adapters) that is a repo id, asks
    C(huggingface_hub.snapshot_download) of the interpreter O(python) (the vLLM venv's;
    huggingface_hub ships with vLLM) whether the snapshot of that revision is in the cache under O(hf_home) with
    C(local_files_only=True) - the very call vLLM makes when E(HF_HUB_OFFLINE) is set (C(get_model_path) for the model,
    C(get_adapter_absolute_path) for a LoRA adapter) - and downloads the missing ones with the same function, whole
    (no file patterns, since vLLM's offline call checks the snapshot against the hub's cached file list), before the service
    is (re)started.
  - A present snapshot is never downloaded again and the hub is not asked; the presence check makes no network request.
    A revision that is a branch or tag is resolved once, through the cache's C(refs/<revision>) file; pin a commit to
    move to a newer one.
  - A snapshot with a C(blobs/*.incomplete) file (an interrupted download) counts as missing, also with huggingface_hub
    releases that keep no file list of the snapshot.
  - Progress of a download goes to O(log) (one line every O(log_interval) seconds with the bytes so far and the rate), for the user to
    follow with C(tail -f) while the task runs asynchronously; Ansible itself shows only the async polls.
  - The token (O(token)) reaches huggingface_hub as E(HF_TOKEN) in the environment of the interpreter, never on a
    command line; it is never logged or returned.
author:
  - llmops team (@llmops)
options:
  python:
    description: The interpreter whose C(huggingface_hub) is used (the vLLM venv's C(bin/python)).
    type: path
    required: true
  hf_home:
    description: The service's E(HF_HOME); the hub cache is its C(hub) directory.
    type: path
    required: true
  model:
    description:
      - The model as vLLM is given it (C(vllm serve MODEL)), a repo id or a directory (then nothing is staged for it).
    type: str
  revision:
    description: The model's commit, branch or tag (C(--revision)); empty is C(main), what vLLM resolves without it.
    type: str
    default: ''
  adapters:
    description:
      - The LoRA adapters' paths as vLLM is given them, repo ids (staged at C(main), the revision vLLM's
        C(snapshot_download(repo_id=lora_path)) resolves), or directories (skipped).
      - Where vLLM reads a path (C(lora_rules.locate)) - absolute, C(~), relative to O(working_dir) when it exists,
        else a repo id - decides which is which; the model follows the same rule.
    type: list
    elements: str
    default: []
  working_dir:
    description: The service's working directory, against which vLLM resolves a relative path.
    type: path
    required: true
  home:
    description: The service's E(HOME), for a C(~) path.
    type: path
    required: true
  download:
    description:
      - Download the snapshots that are missing.
      - V(false) only reads the cache and reports them (RV(missing)); such a run changes nothing and makes no network
        request (a no-op converge's check).
    type: bool
    default: false
  endpoint:
    description: The hub (E(HF_ENDPOINT) of the service); empty is huggingface_hub's default.
    type: str
    default: ''
  token:
    description: The service's E(HF_TOKEN), for private or gated repos.
    type: str
  environment:
    description:
      - Further environment of the service that huggingface_hub reads (E(HTTPS_PROXY), E(HF_HUB_ETAG_TIMEOUT), ...).
      - With E(HF_HUB_OFFLINE) set to a true value here, nothing is downloaded and a missing snapshot is an error.
    type: dict
    default: {}
  log:
    description: The progress log of downloads (appended to); empty for none.
    type: path
  log_interval:
    description: Seconds between two progress lines in O(log).
    type: int
    default: 10
  variable:
    description: The variables that name the model and the adapters, used in messages.
    type: str
    default: the model and its adapters
attributes:
  check_mode:
    support: full
    description: Runs the presence check (read-only) and reports what a run would download, without downloading.
  diff_mode:
    support: none
    description: Nothing to diff.
notes:
  - Run it as the service's user (C(become_user)), so the cache stays that user's.
seealso:
  - name: huggingface_hub, snapshot_download
    description: Downloading a repo snapshot into the cache; C(local_files_only).
    link: https://huggingface.co/docs/huggingface_hub/guides/download
  - name: huggingface_hub, the cache layout
    description: C(models--ORG--NAME/refs/<revision>), C(snapshots/<commit>/), C(blobs/).
    link: https://huggingface.co/docs/huggingface_hub/guides/manage-cache
'''

EXAMPLES = r'''
- name: Stage the model and one adapter before vLLM (re)starts
  llmops.gce_vllm.hf_snapshot:
    python: /app/vllm-server/venv/bin/python
    hf_home: /app/vllm-server/.cache/huggingface
    model: LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct
    revision: e949c91dec92095908d34e6b560af77dd0c993f8
    adapters: [temdy/exaone-3.5-2.4b-easycontract-qlora-v1.1, /srv/adapters/local-one]
    working_dir: /app/vllm-server
    home: /app/vllm-server
    log: /app/vllm-server/.cache/huggingface/stage.log
    download: true
  become: true
  become_user: vllm
  async: 7200
  poll: 10
'''

RETURN = r'''
snapshots:
  description: One entry per repo id (the model first, then the adapters; directories are left out).
  returned: always
  type: list
  elements: dict
  contains:
    repo_id:
      description: The repo id.
      type: str
    revision:
      description: The revision asked for (C(main) when empty).
      type: str
    present:
      description: Whether the snapshot was in the cache before this run.
      type: bool
    downloaded:
      description: Whether this run downloaded it (false in check mode).
      type: bool
    path:
      description: The snapshot directory (C(.../snapshots/<commit>)); null when missing (check mode).
      type: str
    commit:
      description: The commit of the snapshot; null when missing (check mode).
      type: str
    bytes:
      description: Bytes the snapshot directory holds (following the links into C(blobs/)); 0 when missing.
      type: int
    seconds:
      description: Seconds the download took; 0 when nothing was downloaded.
      type: float
missing:
  description: The repo ids (C(repo@revision)) that were not in the cache before this run.
  returned: always
  type: list
  elements: str
huggingface_hub:
  description: The version of huggingface_hub of O(python).
  returned: always
  type: str
  sample: 1.33.0
'''

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils import lora_rules as rules

# Runs under O(python) (the vLLM venv): reads the request on stdin, prints one JSON line. The check is vLLM's own offline
# call; the download is huggingface_hub's own downloader. Kept here, not in module_utils: it runs in another interpreter.
HELPER = r'''
import json, os, sys, threading, time

req = json.load(sys.stdin)
os.environ["HF_HOME"] = req["hf_home"]
import huggingface_hub
from huggingface_hub import snapshot_download
from huggingface_hub.utils import LocalEntryNotFoundError

try:
    from huggingface_hub.errors import IncompleteSnapshotError
except ImportError:
    IncompleteSnapshotError = LocalEntryNotFoundError


def storage(repo_id):
    return os.path.join(huggingface_hub.constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))


def interrupted(repo_id):
    blobs = os.path.join(storage(repo_id), "blobs")
    return os.path.isdir(blobs) and any(n.endswith(".incomplete") for n in os.listdir(blobs))


def size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def local(repo_id, revision):
    if interrupted(repo_id):
        return None
    try:
        return snapshot_download(repo_id=repo_id, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, IncompleteSnapshotError, OSError):
        return None


def progress(repo_id, revision, stop, log, interval):
    t0 = time.monotonic()
    while not stop.wait(interval):
        done = size(os.path.join(storage(repo_id), "blobs"))
        rate = done / max(time.monotonic() - t0, 0.001)
        log.write("%s %s@%s: %.1f MB so far, %.1f MB/s\n" % (time.strftime("%H:%M:%S"), repo_id, revision,
                                                              done / 1e6, rate / 1e6))
        log.flush()


out = {"huggingface_hub": huggingface_hub.__version__, "snapshots": [], "error": None}
log = None   # opened at the first download only: a check writes nothing
for repo in req["repos"]:
    repo_id, revision = repo["repo_id"], repo.get("revision") or "main"
    entry = {"repo_id": repo_id, "revision": revision, "present": False, "downloaded": False, "path": None,
             "commit": None, "bytes": 0, "seconds": 0.0}
    out["snapshots"].append(entry)
    path = local(repo_id, revision)
    if path:
        entry.update(present=True, path=path)
    elif req["download"] and not req["check_mode"]:
        if req["offline"]:
            out["error"] = ("%s (revision %s) is not in the Hugging Face cache %s and HF_HUB_OFFLINE is set in the service's "
                            "environment: nothing can be downloaded" % (repo_id, revision, huggingface_hub.constants.HF_HUB_CACHE))
            break
        stop = threading.Event()
        watcher = None
        if req.get("log") and log is None:
            log = open(req["log"], "a")
        if log:
            log.write("%s downloading %s@%s into %s\n" % (time.strftime("%H:%M:%S"), repo_id, revision, storage(repo_id)))
            log.flush()
            watcher = threading.Thread(target=progress, args=(repo_id, revision, stop, log, req["log_interval"]), daemon=True)
            watcher.start()
        t0 = time.monotonic()
        try:
            path = snapshot_download(repo_id=repo_id, revision=revision)
        except Exception as exc:  # every failure of the hub or the network, reported to the user
            out["error"] = "downloading %s (revision %s) failed: %s: %s" % (repo_id, revision, type(exc).__name__, exc)
            break
        finally:
            stop.set()
            if watcher:
                watcher.join(5)
        entry.update(downloaded=True, path=path, seconds=round(time.monotonic() - t0, 1))
        if log:
            log.write("%s done %s@%s: %s in %.1f s\n" % (time.strftime("%H:%M:%S"), repo_id, revision, path, entry["seconds"]))
            log.flush()
    if entry["path"]:
        entry.update(commit=os.path.basename(entry["path"].rstrip("/")), bytes=size(entry["path"]))
print(json.dumps(out))
'''

_TRUE = ("1", "ON", "YES", "TRUE")


def repos_to_stage(p):
    """[(repo id, revision)] of the model and the adapters that vLLM would fetch from the hub; ValueError for a path that
    is neither a directory nor a repo id."""
    wanted = ([(p["model"], p["revision"] or rules.HUB_REVISION)] if p["model"] else []) + [
        (path, rules.HUB_REVISION) for path in p["adapters"]]
    repos, bad = [], []
    for path, revision in wanted:
        kind, where = rules.locate(path, p["working_dir"], p["home"])
        if kind != "hub":
            continue
        if not rules.valid_repo_id(where):
            bad.append(where)
        elif (where, revision) not in repos:
            repos.append((where, revision))
    if bad:
        raise ValueError("neither a directory on this host nor a Hugging Face repo id (namespace/name): %s" % ", ".join(bad))
    return repos


def main():
    module = AnsibleModule(
        argument_spec=dict(
            python=dict(type="path", required=True),
            hf_home=dict(type="path", required=True),
            model=dict(type="str"),
            revision=dict(type="str", default=""),
            adapters=dict(type="list", elements="str", default=[]),
            working_dir=dict(type="path", required=True),
            home=dict(type="path", required=True),
            download=dict(type="bool", default=False),
            endpoint=dict(type="str", default=""),
            token=dict(type="str", no_log=True),
            environment=dict(type="dict", default={}, no_log=True),
            log=dict(type="path"),
            log_interval=dict(type="int", default=10),
            variable=dict(type="str", default="the model and its adapters"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        repos = repos_to_stage(p)
    except ValueError as exc:
        module.fail_json(msg="%s: %s" % (p["variable"], exc))
    if not repos:
        module.exit_json(changed=False, snapshots=[], missing=[], huggingface_hub="")
    if not os.access(p["python"], os.X_OK):
        if module.check_mode:   # the venv is made by the run this check mode previews
            module.exit_json(changed=True, huggingface_hub="", missing=["%s@%s" % r for r in repos], snapshots=[
                dict(repo_id=r, revision=v, present=False, downloaded=False, path=None, commit=None, bytes=0, seconds=0.0)
                for r, v in repos])
        module.fail_json(msg="%s is not an executable interpreter: the venv with huggingface_hub (vLLM's) must exist "
                             "before its models are staged" % p["python"])
    env = {str(k): str(v) for k, v in p["environment"].items()}
    offline = env.get("HF_HUB_OFFLINE", "").upper() in _TRUE
    env.pop("HF_HUB_OFFLINE", None)   # the presence check never asks the hub anyway (local_files_only)
    env["HF_HOME"] = p["hf_home"]
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"   # progress goes to the log, as lines
    if p["endpoint"]:
        env["HF_ENDPOINT"] = p["endpoint"]
    if p["token"]:
        env["HF_TOKEN"] = p["token"]
    request = dict(hf_home=p["hf_home"], repos=[dict(repo_id=r, revision=v) for r, v in repos], download=p["download"],
                   check_mode=module.check_mode, offline=offline, log=p["log"], log_interval=max(p["log_interval"], 1))
    rc, out, err = module.run_command([p["python"], "-c", HELPER], data=json.dumps(request), environ_update=env,
                                      binary_data=True, cwd=p["working_dir"])
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        module.fail_json(msg="%s could not run huggingface_hub (rc=%d): %s" % (p["python"], rc, (err or out)[-2000:]))
    snapshots = result["snapshots"]
    missing = ["%s@%s" % (s["repo_id"], s["revision"]) for s in snapshots if not s["present"]]
    if result["error"]:
        module.fail_json(msg="%s: %s." % (p["variable"], result["error"]), snapshots=snapshots, missing=missing,
                         huggingface_hub=result["huggingface_hub"])
    module.exit_json(changed=bool(missing) and p["download"], snapshots=snapshots, missing=missing,
                     huggingface_hub=result["huggingface_hub"])


if __name__ == "__main__":
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: env_file
short_description: Write a KEY=VALUE environment file holding secrets, with a diff that masks them
version_added: "0.2.0"
description:
  - Writes O(content) (a systemd C(EnvironmentFile) or a python-dotenv C(.env), for example a rendered template) to
    O(path), atomically, with the given owner, group and mode (default V(0600)); a new file never exists with
    another mode than O(mode).
  - Unlike M(ansible.builtin.template) with C(no_log), a change stays visible. In diff mode the diff shows every
    line, but the value of each key in O(secret_keys) as C(********), followed by the word changed in parentheses
    on the after side when that value changed; RV(changed_keys) names the keys that changed. O(content) is never
    logged and the secret values (old and new) are masked in anything the module returns.
author:
  - llmops team (@llmops)
options:
  path:
    description: The file to write.
    type: path
    required: true
  content:
    description:
      - The file's whole text. Lines C(KEY=VALUE) (C(export KEY=VALUE) too), comments (C(#)) and blank lines.
      - Never logged.
    type: str
    required: true
  secret_keys:
    description: Keys whose values never appear in the diff or the result.
    type: list
    elements: str
    default: []
  mode:
    description: The file's mode.
    type: raw
    default: "0600"
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Reports the change and its diff, writes nothing.
  diff_mode:
    support: full
    description: The file before and after, with the values of O(secret_keys) masked.
notes:
  - A key in O(secret_keys) that the file does not hold is ignored.
seealso:
  - module: ansible.builtin.template
'''

EXAMPLES = r'''
- name: Write vllm.env (the API key masked in --diff)
  llmops.gce_vllm.env_file:
    path: /app/vllm-server/vllm.env
    content: "{{ lookup('ansible.builtin.template', 'vllm.env.j2') }}"
    secret_keys: [VLLM_API_KEY, HF_TOKEN]
    owner: root
    group: root
    mode: "0600"
'''

RETURN = r'''
changed_keys:
  description: Keys added, removed or given another value (names only, secret ones included), sorted.
  returned: always
  type: list
  elements: str
  sample: [VLLM_API_KEY, VLLM_MAX_MODEL_LEN]
'''

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text

from ansible_collections.llmops.gce_vllm.plugins.module_utils import env_file as ef


def _read(path):
    try:
        with open(path, "rb") as handle:
            return to_text(handle.read(), errors="surrogate_or_strict")
    except FileNotFoundError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", required=True, no_log=True),
            secret_keys=dict(type="list", elements="str", default=[], no_log=False),
            mode=dict(type="raw", default="0600"),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    path, content, secret_keys = module.params["path"], module.params["content"], module.params["secret_keys"]
    try:
        before = _read(path)
    except (OSError, UnicodeError) as exc:
        module.fail_json(msg="Cannot read %s: %s" % (path, to_native(exc)))
    if before is not None and os.path.isdir(path):
        module.fail_json(msg="%s is a directory" % path)
    # What is masked in whatever this module returns: the old and new secret values, not the whole content (no_log
    # only so that ansible-core never logs it, the journal included): a diff of a file without secrets is the
    # content itself and would print as VALUE_SPECIFIED_IN_NO_LOG_PARAMETER.
    module.no_log_values.discard(content)
    module.no_log_values.update(ef.secret_values(before or "", secret_keys) + ef.secret_values(content, secret_keys))

    keys = ef.changed_keys(before or "", content)
    content_changed = before != content
    result = dict(changed=content_changed, changed_keys=keys)
    if module._diff:
        result["diff"] = dict(before_header=path, after_header=path,
                              before=ef.masked(before or "", secret_keys),
                              after=ef.masked(content, secret_keys, keys))
    file_args = module.load_file_common_arguments(module.params)
    if module.check_mode:
        # set_fs_attributes_if_different only reports in check mode
        result["changed"] = content_changed or module.set_fs_attributes_if_different(file_args, False)
        module.exit_json(**result)

    if content_changed:
        directory = os.path.dirname(path) or "."
        if before is None:
            # created empty with mode 0600 first: atomic_move gives a new file the umask's mode (0644) until the
            # attributes are set, the moved file takes this one's owner and mode
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                module.fail_json(msg="Cannot create %s: %s" % (path, to_native(exc)))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(to_bytes(content, errors="surrogate_or_strict"))
        except OSError as exc:
            os.unlink(tmp)
            module.fail_json(msg="Cannot write %s: %s" % (tmp, to_native(exc)))
        module.atomic_move(tmp, path, unsafe_writes=module.params["unsafe_writes"])
    result["changed"] = module.set_fs_attributes_if_different(file_args, content_changed)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

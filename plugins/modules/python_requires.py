#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: python_requires
short_description: Check that a host's Python interpreter satisfies the Requires-Python of pinned packages
version_added: "0.1.0"
description:
  - Reads the C(Requires-Python) of each pinned requirement where pip reads it, before pip runs, and checks
    the interpreter a virtual environment will be made with against it. Fails with a message naming the
    interpreter found, its version, the version needed and the variable that fixes it.
  - A wheel path is read from the wheel's C(METADATA). A pin C(name==version) is looked up first in the
    find-links directories, then on the simple index (PEP 691 JSON or PEP 503 HTML with
    C(data-requires-python)), as pip would. Index, extra indexes, find-links and C(--no-index) are taken from
    the host's global pip configuration, E(PIP_INDEX_URL)-style environment variables and O(pip_args).
  - Like pip, a release is installable when at least one of its files allows the interpreter, and only the
    interpreter's release numbers count (3.11.0rc1 is 3.11.0).
  - An interpreter that is not installed yet but is an APT package (for example C(python3.11) on Ubuntu
    22.04) is judged by the version the package would install.
  - Requirements that are not exact pins (ranges, URLs, directories) cannot be judged before pip resolves
    them; they are returned in RV(unchecked).
  - Read-only; runs in check mode too.
author:
  - llmops team (@llmops)
options:
  python:
    description:
      - The interpreter, as a command name looked up in E(PATH) (C(python3), C(python3.11)) or an absolute path.
    type: str
    required: true
  requirements:
    description:
      - Pinned requirements (C(vllm==0.15.1)) or paths of wheel files on the host.
    type: list
    elements: str
    required: true
  pip_args:
    description:
      - The extra pip arguments the install will use; C(--index-url), C(--extra-index-url), C(--find-links)
        and C(--no-index) (and their short forms) are honoured.
    type: list
    elements: str
    default: []
  pip_config_files:
    description:
      - Global pip configuration files to read, lowest precedence first (their C([global]) and C([install])
        sections).
    type: list
    elements: path
    default: [/etc/xdg/pip/pip.conf, /etc/pip.conf]
  python_variable:
    description:
      - The variable that sets O(python), named in the failure message.
    type: str
    default: python
  timeout:
    description:
      - Seconds for each index request.
    type: int
    default: 30
  check_index:
    description:
      - Read each requirement's Requires-Python (package index, find-links, wheel) and compare it with O(python).
      - V(false) checks only that O(python) exists (or that an APT package of that name would install it), with no
        index request; for example when the virtual environment already holds the requirements.
    type: bool
    default: true
extends_documentation_fragment:
  - llmops.gce_vllm.read_only
notes:
  - A user-level pip configuration of the account that runs pip is not read.
seealso:
  - name: Python Packaging User Guide, Requires-Python
    description: The core metadata field and how installers use it.
    link: https://packaging.python.org/en/latest/specifications/core-metadata/#requires-python
  - name: PEP 691
    description: The JSON simple repository API.
    link: https://peps.python.org/pep-0691/
'''

EXAMPLES = r'''
- name: Check the venv's interpreter against vLLM's Requires-Python before anything changes
  llmops.gce_vllm.python_requires:
    python: "{{ vllm_server_python }}"
    requirements: ["vllm==0.15.1"]
    python_variable: vllm_server_python

- name: Check against a wheel in a wheelhouse
  llmops.gce_vllm.python_requires:
    python: python3.12
    requirements: [/opt/wheelhouse/vllm-0.15.1-cp38-abi3-manylinux_2_31_x86_64.whl]
'''

RETURN = r'''
python:
  description: The interpreter as given.
  returned: always
  type: str
  sample: python3
path:
  description: Its absolute path; null when it is not installed yet.
  returned: always
  type: str
  sample: /usr/bin/python3
version:
  description: Its version (release numbers; from the APT package when it is not installed yet).
  returned: when the interpreter was found
  type: str
  sample: 3.10.12
installed:
  description: Whether the interpreter is installed; false when it was judged from its APT package.
  returned: always
  type: bool
requirements:
  description: What was read for each checked requirement.
  returned: always
  type: list
  elements: dict
  contains:
    spec:
      description: The requirement as given.
      type: str
    requires_python:
      description: The Requires-Python of each file of that release (empty string = none declared).
      type: list
      elements: str
    source:
      description: Where it was read (an index page URL, a directory or a wheel path).
      type: str
    allowed:
      description: Whether the interpreter may install it.
      type: bool
unchecked:
  description: Requirements that are not exact pins and could not be judged before pip runs.
  returned: always
  type: list
  elements: str
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.llmops.gce_vllm.plugins.module_utils import python_requires as pr

_VERSION_CODE = "import sys; print('.'.join(map(str, sys.version_info[:3])))"


def _interpreter_version(module, path):
    rc, out, err = module.run_command([path, "-c", _VERSION_CODE])
    if rc != 0:
        module.fail_json(msg="%s does not run (rc=%d): %s" % (path, rc, (err or out).strip()))
    return out.strip()


def _apt_version(module, package):
    """Version the APT package would install ('3.11.0~rc1'), or None."""
    apt_cache = module.get_bin_path("apt-cache")
    if not apt_cache:
        return None
    rc, out, _err = module.run_command([apt_cache, "show", "--no-all-versions", package])
    if rc != 0:
        return None
    m = re.search(r"^Version:\s*(?:\d+:)?([0-9][^-\s]*)", out, re.MULTILINE)
    return m.group(1) if m else None


def _other_interpreters(module, exclude):
    """'name version (how)' for each python3.N on PATH or installable from APT, newest first."""
    found = {}
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if re.match(r"^python3\.\d+$", name) and name not in found and name != exclude:
                path = os.path.join(d, name)
                if os.access(path, os.X_OK):
                    found[name] = (_interpreter_version(module, path), "installed at %s" % path)
    apt_cache = module.get_bin_path("apt-cache")
    if apt_cache:
        rc, out, _err = module.run_command([apt_cache, "pkgnames", "python3."])
        if rc == 0:
            for name in sorted(set(out.split())):
                if re.match(r"^python3\.\d+$", name) and name not in found and name != exclude:
                    version = _apt_version(module, name)
                    if version:
                        found[name] = (version, "APT package %s" % name)
    return sorted(((n, v, how) for n, (v, how) in found.items()),
                  key=lambda item: pr.release(item[1]), reverse=True)


def _read_requirement(spec, sources, timeout):
    """(requires_python values, source) of one requirement, or None when it is not an exact pin."""
    if spec.endswith(".whl") and "://" not in spec:
        if not os.path.isfile(spec):
            raise pr.RequiresPythonError("the wheel %s does not exist on this host" % spec)
        return [pr.wheel_requires_python(spec)], spec
    pin = pr.parse_pin(spec)
    if not pin:
        return None
    name, version = pin
    local = pr.find_links_requires_python(sources["find_links"], name, version)
    if local:
        return local
    if sources["no_index"]:
        raise pr.RequiresPythonError("%s is in none of the find-links directories (%s) and pip is told --no-index"
                                     % (spec, ", ".join(sources["find_links"]) or "none"))
    errors = []
    for index in [sources["index_url"]] + sources["extra_index_urls"]:
        try:
            return pr.index_requires_python(index, name, version, timeout)
        except pr.RequiresPythonError as exc:
            errors.append(str(exc))
    raise pr.RequiresPythonError("cannot read the Requires-Python of %s: %s" % (spec, "; ".join(errors)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            python=dict(type="str", required=True),
            requirements=dict(type="list", elements="str", required=True),
            pip_args=dict(type="list", elements="str", default=[]),
            pip_config_files=dict(type="list", elements="path",
                                  default=["/etc/xdg/pip/pip.conf", "/etc/pip.conf"]),
            python_variable=dict(type="str", default="python"),
            timeout=dict(type="int", default=30),
            check_index=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    python, var = p["python"], p["python_variable"]
    result = dict(changed=False, python=python, path=None, installed=False, requirements=[], unchecked=[])

    path = python if "/" in python else module.get_bin_path(python)
    if path and os.access(path, os.X_OK):
        result.update(path=path, installed=True, version=_interpreter_version(module, path))
        found = "%s is Python %s (%s)" % (python, result["version"], path)
    else:
        apt = None if "/" in python else _apt_version(module, python)
        if not apt:
            module.fail_json(msg="%s=%s: no such interpreter on this host, and no APT package of that name. Set %s to an "
                                 "installed interpreter (python3, python3.N) or the name of the distribution's python3.N "
                                 "package." % (var, python, var), **result)
        result["version"] = ".".join(str(x) for x in pr.release(apt)[:3])
        found = "%s is not installed; its APT package would install Python %s" % (python, apt)

    if not p["check_index"]:
        module.exit_json(**result)

    texts = []
    for cfg in p["pip_config_files"]:
        try:
            with open(cfg) as fh:
                texts.append(fh.read())
        except OSError:
            pass
    sources = pr.read_pip_sources(texts, os.environ, p["pip_args"])

    refused = []
    try:
        for spec in p["requirements"]:
            read = _read_requirement(spec, sources, p["timeout"])
            if read is None:
                result["unchecked"].append(spec)
                continue
            values, source = read
            allowed = pr.allowed_by_any(result["version"], values)
            result["requirements"].append(dict(spec=spec, requires_python=values, source=source, allowed=allowed))
            if not allowed:
                refused.append((spec, values, source))
    except pr.RequiresPythonError as exc:
        module.fail_json(msg="%s (checking %s=%s before any change). Check the package index (pip_args, "
                             "/etc/pip.conf) or point the pip spec at a wheel on the host." % (exc, var, python), **result)

    if refused:
        needed = "; ".join("%s needs Python %s (Requires-Python from %s)"
                           % (spec, " or ".join(sorted(set(v or "any" for v in values))), source)
                           for spec, values, source in refused)
        fits = [(n, v, how) for n, v, how in _other_interpreters(module, python)
                if all(pr.allowed_by_any(v, vals) for _s, vals, _src in refused)]
        hint = ("; interpreters that satisfy it: " + ", ".join("%s %s (%s)" % f for f in fits)) if fits \
            else "; no other interpreter on this host or in its APT sources satisfies it"
        module.fail_json(
            msg="Requires-Python not satisfied: %s, but %s%s. Set %s to an interpreter that satisfies it, use an OS "
                "image whose python3 does (Ubuntu 24.04: 3.12), or pin a release that supports Python %s. Nothing was "
                "changed." % (found, needed, hint, var, result["version"]), **result)
    if result["unchecked"]:
        module.warn("not exact pins, not checked against %s's Requires-Python: %s" % (python, ", ".join(result["unchecked"])))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

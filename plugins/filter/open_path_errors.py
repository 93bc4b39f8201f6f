# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
name: open_path_errors
short_description: What is wrong with a list of paths an authenticating proxy lets through without the key
version_added: "0.1.0"
author:
  - llmops.gce_vllm contributors
description:
  - The one check of the C(*_open_paths) variables of the service roles (the internal role C(auth_proxy) writes them
    into HAProxy ACLs), returning one message per problem, so that a run with several bad entries names them all.
  - Each entry needs C(path), an exact path of C([A-Za-z0-9._~/-]) starting with C(/) (no prefix, no pattern, no
    C(..) segment, no query string), and C(sources), a non-empty list of IPv4/IPv6 addresses or CIDR ranges (host
    bits must be zero, as HAProxy reads them). Paths the caller always opens (its health checks) are refused as
    duplicates.
options:
  _input:
    description: The open paths, a list of C({path, sources}).
    type: list
    elements: dict
    required: true
  variable:
    description: The variable's name, for the messages.
    type: str
    default: open_paths
  always_open:
    description: Paths that are open anyway (the caller's health paths).
    type: list
    elements: str
    default: []
'''

EXAMPLES = r'''
- name: Check vllm_server_open_paths
  ansible.builtin.assert:
    that: vllm_server_open_paths | llmops.gce_vllm.open_path_errors(variable='vllm_server_open_paths') | length == 0
    fail_msg: "{{ vllm_server_open_paths | llmops.gce_vllm.open_path_errors(variable='vllm_server_open_paths') | join(' ') }}"
'''

RETURN = r'''
_value:
  description: One message per problem; empty when every entry is good.
  type: list
  elements: str
'''

import ipaddress
import re

from ansible.errors import AnsibleFilterError

_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def open_path_errors(entries, variable="open_paths", always_open=()):
    if entries is None:
        return []
    if not isinstance(entries, (list, tuple)):
        raise AnsibleFilterError("open_path_errors: %s must be a list, got %s" % (variable, type(entries).__name__))
    errors, seen = [], set()
    for i, entry in enumerate(entries):
        where = "%s[%d]" % (variable, i)
        if not isinstance(entry, dict):
            errors.append("%s must be a dict {path, sources}, got %r." % (where, entry))
            continue
        extra = sorted(set(entry) - {"path", "sources"})
        if extra:
            errors.append("%s has unknown keys %s (only path and sources)." % (where, ", ".join(map(str, extra))))
        path = entry.get("path")
        if not isinstance(path, str) or not _PATH.match(path) or "/../" in path + "/" or "/./" in path + "/":
            errors.append("%s: path %r must be an exact path of [A-Za-z0-9._~/-] starting with / (e.g. /metrics), without "
                          ". or .. segments." % (where, path))
        elif path in always_open:
            errors.append("%s: path %s is open anyway (a health check)." % (where, path))
        elif path in seen:
            errors.append("%s: path %s is listed twice; give one entry all its sources." % (where, path))
        else:
            seen.add(path)
        sources = entry.get("sources")
        if not isinstance(sources, (list, tuple)) or not sources:
            errors.append("%s: sources must be a non-empty list of addresses or CIDR ranges (e.g. [10.128.0.0/9])." % where)
            continue
        for source in sources:
            try:
                ipaddress.ip_network(str(source), strict=True)
            except ValueError as exc:
                errors.append("%s: source %r is no IPv4/IPv6 address or CIDR range (%s)." % (where, source, exc))
    return errors


class FilterModule:
    """The collection's open path check."""

    def filters(self):
        return {"open_path_errors": open_path_errors}

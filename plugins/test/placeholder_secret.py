# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from urllib.parse import urlsplit

DOCUMENTATION = r'''
---
name: placeholder_secret
short_description: Is a secret one of the placeholders the runbook and sample files use?
version_added: "0.1.0"
author:
  - llmops.gce_vllm contributors
description:
  - True when the value, compared lower-cased and without surrounding blanks, is a known placeholder
    (C(your-vllm-api-key), C(your-internal-token), C(changeme), C(secret), C(token), C(none), ...) or starts
    with C(your-) or C(your_) (the runbook's C(your-...) examples).
  - The one list of placeholders of the collection; the host roles refuse such secrets before any change.
  - An empty value is not a placeholder (test emptiness separately); a value that is not a string is not one either.
options:
  _input:
    description: The secret to test.
    type: raw
    required: true
'''

EXAMPLES = r'''
- name: Refuse a placeholder API key
  ansible.builtin.assert:
    that:
      - vllm_server_api_key is not llmops.gce_vllm.placeholder_secret
    fail_msg: vllm_server_api_key is a placeholder; set it from vault.
  no_log: true
'''

RETURN = r'''
_value:
  description: Whether the value is a placeholder secret.
  type: bool
'''

# Placeholders from the runbook and the usual suspects (compared lower-cased).
PLACEHOLDERS = frozenset((
    "your-vllm-api-key",
    "your-api-key",
    "your-internal-token",
    "your-backend-internal-token",
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "token",
    "apikey",
    "api-key",
    "xxx",
    "todo",
    "none",
    "null",
))
PLACEHOLDER_PREFIXES = ("your-", "your_")
# Domains reserved for documentation and testing (RFC 2606, RFC 6761): no real backend lives under them.
PLACEHOLDER_DOMAINS = ("example.com", "example.net", "example.org")
PLACEHOLDER_TLDS = ("example", "invalid", "test")


def placeholder_secret(value):
    """True when value is a placeholder secret (see DOCUMENTATION)."""
    if not isinstance(value, str):
        return False
    word = value.strip().lower()
    return word in PLACEHOLDERS or word.startswith(PLACEHOLDER_PREFIXES)


def placeholder_url(value):
    """True when the URL's host is a placeholder: under example.com/.net/.org, a .example, .invalid or .test name,
    or a your-... name (the runbook's your-backend.example.com). See placeholder_url.yml."""
    if not isinstance(value, str):
        return False
    try:
        host = (urlsplit(value.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if not host:
        return False
    labels = host.split(".")
    return (any(host == d or host.endswith("." + d) for d in PLACEHOLDER_DOMAINS)
            or labels[-1] in PLACEHOLDER_TLDS
            or any(label.startswith(PLACEHOLDER_PREFIXES) for label in labels))


class TestModule:
    """The collection's test plugins."""

    def tests(self):
        return {"placeholder_secret": placeholder_secret, "placeholder_url": placeholder_url}

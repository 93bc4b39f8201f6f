# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""KEY=VALUE environment files (systemd EnvironmentFile, python-dotenv .env): their keys, and their text with the
values of secret keys masked, so a diff can show what changed without showing a secret."""

from __future__ import annotations

import re

MASK = "********"
# KEY=VALUE, optionally after `export ` (python-dotenv accepts it; systemd does not write it)
_LINE = re.compile(r"^(\s*(?:export\s+)?)([A-Za-z_][A-Za-z0-9_]*)(\s*=)(.*)$")


def parse(text):
    """{key: raw value (quotes kept)} of the KEY=VALUE lines of `text`; comments and blank lines are skipped."""
    values = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match:
            values[match.group(2)] = match.group(4)
    return values


def changed_keys(before, after):
    """Keys added, removed or given another value from text `before` to text `after`, sorted."""
    old, new = parse(before), parse(after)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def masked(text, secret_keys, changed=()):
    """`text` with the value of every key in `secret_keys` replaced by MASK; a secret key in `changed` gets
    MASK + ' (changed)' (the after side of a diff: the line shows as changed, never the value)."""
    secret_keys, changed = set(secret_keys), set(changed)
    lines = []
    for line in text.splitlines(True):
        match = None if line.lstrip().startswith("#") else _LINE.match(line.rstrip("\r\n"))
        if match and match.group(2) in secret_keys:
            end = line[len(line.rstrip("\r\n")):]
            mark = MASK + (" (changed)" if match.group(2) in changed else "")
            line = match.group(1) + match.group(2) + match.group(3) + mark + end
        lines.append(line)
    return "".join(lines)


def secret_values(text, secret_keys):
    """The non-empty values (quoted and unquoted) of the secret keys in `text`: to mask wherever they might appear."""
    found = set()
    for key, value in parse(text).items():
        if key in secret_keys and value.strip():
            found.add(value.strip())
            found.add(value.strip().strip('"\''))
    return sorted(v for v in found if v)

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes of the collection's modules that only read (check mode runs them as they are; nothing to diff)."""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r'''
attributes:
  check_mode:
    support: full
    description: Read-only.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
'''

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes of the collection's modules that only read (check mode runs them as they are; nothing to diff), and
(CONTROLLER: llmops.gce_vllm.read_only.controller) of its checks that run on the controller only."""

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

    # llmops.gce_vllm.read_only.controller: the action plugins that check inputs on the controller
    CONTROLLER = r'''
attributes:
  action:
    support: full
    description: Runs on the controller; it never connects to a host.
  check_mode:
    support: full
    description: Changes nothing.
  diff_mode:
    support: none
    description: There is nothing to diff.
'''

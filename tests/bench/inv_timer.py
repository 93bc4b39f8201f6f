"""make bench: parse one inventory source in-process and print how long the plugin took (JSON).

Run with the interpreter of the venv whose ansible should parse it (ours: .venv; google.cloud:
.venv-bench-gcp). Excludes interpreter and ansible start-up, which `ansible-inventory` also pays.
Usage: inv_timer.py SOURCE [GROUP]
"""
import json
import sys
import time

from ansible import context
from ansible.module_utils.common.collections import ImmutableDict
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader

context.CLIARGS = ImmutableDict({})
init_plugin_loader()
from ansible.inventory.manager import InventoryManager  # noqa: E402 pylint: disable=wrong-import-position

source = sys.argv[1]
group = sys.argv[2] if len(sys.argv) > 2 else "ai_server"
t0 = time.perf_counter()
inv = InventoryManager(loader=DataLoader(), sources=[source])
secs = time.perf_counter() - t0
print(json.dumps({"parse_s": round(secs, 4), "hosts": len(inv.hosts), "groups": len(inv.groups),
                  "group_hosts": len(inv.groups[group].get_hosts()) if group in inv.groups else None}))

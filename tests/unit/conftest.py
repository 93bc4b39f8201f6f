"""Shared pytest setup: import this checkout as ansible_collections.llmops.gce_vllm."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "llmops", "gce_vllm")
if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(os.path.join("..", "..", "..", ".."), LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

# Install ansible's collection loader before any test module imports ansible_collections.* (otherwise the
# result depends on test order: plugins loaded later find no collection metadata).
from ansible.utils.collection_loader import AnsibleCollectionConfig  # noqa: E402
from ansible.plugins.loader import init_plugin_loader  # noqa: E402

if not AnsibleCollectionConfig.collection_finder:
    init_plugin_loader([COLLECTIONS])

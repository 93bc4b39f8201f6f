"""The roles derive restarts and installs from the host's state (llmops.gce_vllm.service_info), never from records
they keep on the host themselves (issue 8)."""
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("role", ["vllm_server", "ai_server", "gpu_host", "venv_service"])
def test_roles_keep_no_marker_files_and_no_notify_by_debug(role):
    """Restarts follow from the host's state: no .llmops-* records written, no handler-notifying debug tasks."""
    for path in (pathlib.Path(ROOT) / "roles" / role / "tasks").glob("*.yml"):
        tasks = yaml.safe_load(path.read_text()) or []
        for task in tasks:
            for key in ("ansible.builtin.copy", "ansible.builtin.template", "ansible.builtin.file"):
                dest = str((task.get(key) or {}).get("dest", "")) + str((task.get(key) or {}).get("path", ""))
                assert ".llmops-" not in dest or (task.get(key) or {}).get("state") == "absent", (path, task["name"])
            if "ansible.builtin.debug" in task:
                assert str(task.get("changed_when", "false")).lower() != "true", (path, task["name"])

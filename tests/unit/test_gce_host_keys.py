"""gce_host_keys: the VM's SSH host keys read through the (local) Compute API's guest attributes and written to a
known_hosts file; the stand-in's getGuestAttributes answers as the real API does (404 until published)."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.compute_api.testing import PROJECT, ComputeApiServer, auth_args, run_module  # noqa: E402

from ansible_collections.llmops.gce_vllm.plugins.module_utils import gce  # noqa: E402
from ansible_collections.llmops.gce_vllm.plugins.modules import gce_host_keys, gce_instance  # noqa: E402

ZONE = "asia-northeast3-a"
ADDR = "10.231.77.2"


def real_key(tmp_path, name):
    """A real ed25519 public key (ssh-keygen), as a test host's /etc/ssh/ssh_host_ed25519_key.pub holds one."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    return (tmp_path / (name + ".pub")).read_text().split()[:2]


@pytest.fixture
def server():
    srv = ComputeApiServer(op_polls=0, host_pool=[ADDR]).start()
    yield srv
    srv.stop()


def create_vm(server, metadata=None):
    args = auth_args(server, name="ai-server-l4", zone=ZONE, machine_type="g2-standard-4",
                     boot_disk={"image_family": "ubuntu-accelerator-2204-amd64-with-nvidia-580",
                                "image_project": "ubuntu-os-accelerator-images", "size_gb": 200, "type": "pd-ssd"},
                     scheduling={"on_host_maintenance": "TERMINATE", "automatic_restart": True},
                     metadata={"enable-guest-attributes": "TRUE"} if metadata is None else metadata)
    r = run_module(gce_instance.main, args)
    assert not r.get("failed"), r
    return r


def publish(server, keys, delay=1):
    server.api.host_keys[ADDR] = dict(keys)
    server.api.host_keys_delay = delay


def keys_args(server, path, **kw):
    args = auth_args(server, name="ai-server-l4", zone=ZONE, known_hosts_file=str(path), interval=1, timeout=20)
    args.update(kw)
    return args


def test_the_stand_in_answers_not_found_until_the_agent_published_them(server, tmp_path):
    create_vm(server)
    key_type, key = real_key(tmp_path, "host")
    publish(server, {key_type: key}, delay=2)
    client = gce.GceClient(**gce.client_kwargs(auth_args(server)))
    assert gce.guest_host_keys(client, ZONE, "ai-server-l4") is None
    assert gce.guest_host_keys(client, ZONE, "ai-server-l4") is None
    assert gce.guest_host_keys(client, ZONE, "ai-server-l4") == {key_type: key}
    statuses = [r["status"] for r in server.requests(r"getGuestAttributes")]
    assert statuses == [404, 404, 200], statuses


def test_keys_are_written_keyed_by_both_addresses_then_idempotent(server, tmp_path):
    create_vm(server)
    key_type, key = real_key(tmp_path, "host")
    publish(server, {key_type: key})
    path = tmp_path / "ssh" / "known_hosts"
    r = run_module(gce_host_keys.main, keys_args(server, path))
    assert r["changed"] and r["host_keys"] == {key_type: key} and r["attempts"] == 2, r
    assert r["hosts"] == [ADDR] and path.read_text() == "%s %s %s\n" % (ADDR, key_type, key)
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    # ssh itself finds the key for the address in that file
    found = subprocess.run(["ssh-keygen", "-F", ADDR, "-f", str(path)], capture_output=True, text=True, check=False)
    assert found.returncode == 0 and key in found.stdout, found
    again = run_module(gce_host_keys.main, keys_args(server, path))
    assert not again["changed"], again


def test_a_recreated_vm_replaces_its_lines_and_keeps_the_others(server, tmp_path):
    create_vm(server)
    old_type, old = real_key(tmp_path, "old")
    new_type, new = real_key(tmp_path, "new")
    path = tmp_path / "known_hosts"
    other = "192.0.2.9 %s %s" % (old_type, old)
    path.write_text(other + "\n")
    # a hashed line for the same address too (ssh -o HashKnownHosts=yes writes these)
    hashed = tmp_path / "hashed"
    hashed.write_text("%s %s %s\n" % (ADDR, old_type, old))
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    path.write_text(other + "\n" + hashed.read_text() + "[%s]:22 %s %s\n" % (ADDR, old_type, old))
    publish(server, {new_type: new}, delay=0)
    r = run_module(gce_host_keys.main, keys_args(server, path))
    assert r["changed"], r
    lines = path.read_text().splitlines()
    assert lines[0] == other and len(lines) == 2 and lines[1].endswith(new) and old not in lines[1], lines


def test_check_mode_and_diff_write_nothing(server, tmp_path):
    create_vm(server)
    key_type, key = real_key(tmp_path, "host")
    publish(server, {key_type: key}, delay=0)
    path = tmp_path / "known_hosts"
    r = run_module(gce_host_keys.main, keys_args(server, path), check_mode=True, diff=True)
    assert r["changed"] and key in r["diff"]["after"] and not path.exists(), r


def test_no_keys_within_the_timeout_says_why(server, tmp_path):
    create_vm(server, metadata={})
    key_type, key = real_key(tmp_path, "host")
    publish(server, {key_type: key}, delay=0)   # published, but guest attributes are off: the API never has them
    r = run_module(gce_host_keys.main, keys_args(server, tmp_path / "kh", timeout=2))
    assert r["failed"] and "published no SSH host keys within 2 s" in r["msg"], r
    assert "enable-guest-attributes=TRUE" in r["msg"] and "no such key" in r["msg"], r["msg"]


def test_guest_attributes_turned_off_fails_at_once(server, tmp_path):
    create_vm(server, metadata={"enable-guest-attributes": "FALSE"})
    r = run_module(gce_host_keys.main, keys_args(server, tmp_path / "kh"))
    assert r["failed"] and "enable-guest-attributes=FALSE" in r["msg"] and r["attempts"] == 0, r


def test_a_stopped_or_missing_vm_fails_at_once(server, tmp_path):
    r = run_module(gce_host_keys.main, keys_args(server, tmp_path / "kh"))
    assert r["failed"] and "does not exist" in r["msg"], r
    create_vm(server)
    server.api.dump()  # settle
    inst = server.api.state.projects[PROJECT]["instances"][ZONE]["ai-server-l4"]
    inst["status"] = "TERMINATED"
    r = run_module(gce_host_keys.main, keys_args(server, tmp_path / "kh"))
    assert r["failed"] and "is TERMINATED" in r["msg"], r


def test_values_that_are_not_one_base64_key_are_dropped(server, tmp_path):
    create_vm(server)
    key_type, key = real_key(tmp_path, "host")
    publish(server, {key_type: key, "ssh-rsa": "not base64!", "ssh-dss": key}, delay=0)
    client = gce.GceClient(**gce.client_kwargs(auth_args(server)))
    assert gce.guest_host_keys(client, ZONE, "ai-server-l4") == {key_type: key}


def test_the_shipped_inventory_points_ssh_at_the_file_provision_writes():
    """inventories/gce (what a user copies out of the installed collection) gives ssh the role's known_hosts file
    with strict checking, and sets gce_vllm_known_hosts_file to the role's default; nothing turns checking off."""
    import yaml  # noqa: PLC0415

    root = pathlib.Path(ROOT)
    inv = yaml.safe_load((root / "inventories/gce/group_vars/all/vars.yml").read_text())
    defaults = yaml.safe_load((root / "roles/gce_vllm/defaults/main.yml").read_text())
    assert inv["gce_vllm_known_hosts_file"] == defaults["gce_vllm_known_hosts_file"]
    args = " ".join(inv["ansible_ssh_common_args"].split())
    assert "-o UserKnownHostsFile={{ gce_vllm_known_hosts_file | expanduser | quote }}" in args, args
    assert "-o StrictHostKeyChecking=yes" in args, args
    for path in (root / "inventories").rglob("*.yml"):
        text = path.read_text()
        assert "StrictHostKeyChecking=no" not in text and "UserKnownHostsFile=/dev/null" not in text, path


def test_known_hosts_update_keeps_the_order_of_a_fleet():
    """Three VMs in one file: re-reading the first VM's unchanged keys is no change (its lines keep their place);
    a new key replaces the old line where it was."""
    text = "".join("10.0.0.%d ssh-ed25519 KEY%d\n" % (i, i) for i in (1, 2, 3))
    assert gce.known_hosts_update(text, ["10.0.0.1"], {"ssh-ed25519": "KEY1"}) == text
    changed = gce.known_hosts_update(text, ["10.0.0.2"], {"ssh-ed25519": "NEW2"})
    assert changed.splitlines() == ["10.0.0.1 ssh-ed25519 KEY1", "10.0.0.2 ssh-ed25519 NEW2",
                                    "10.0.0.3 ssh-ed25519 KEY3"]
    assert gce.known_hosts_update(text, ["10.0.0.4"], {"ssh-ed25519": "KEY4"}).endswith("10.0.0.4 ssh-ed25519 KEY4\n")

"""The first SSH connection to a new VM (issue 15, item 1 and its "Done when"), on one real systemd test host.

1. Real `ssh` against the host's real sshd, with the errors a new user meets (a known_hosts file without or
   with another key for the host, a private key that is too open or missing, a name that does not resolve, a
   user without the key): wait_for_login's classification of each real message.
2. wait_for_login itself: a host key mismatch ends the wait at once with what to do; a refused key stays a
   bounded wait.
3. The README's real-GCP quick start from the collection as a user gets it: `ansible-galaxy collection build`,
   installed into a fresh ~/.ansible/collections, run from a directory outside the repository with no
   ansible.cfg (ANSIBLE_CONFIG and ANSIBLE_HOST_KEY_CHECKING unset) with the installed `inventories/gce`,
   against the local Compute API and this host: site.yml passes, the first connection verified against the
   host keys the API served (the test host's own); the same run with another key served fails at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
COLLECTIONS = ROOT / "build" / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.llmops.gce_vllm.plugins.action.wait_for_login import classify  # noqa: E402


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    from tests.harness import testhosts as th  # noqa: PLC0415 (imported only when the suite runs)

    state = tmp_path_factory.mktemp("login-hosts")
    try:
        th.create(str(state), count=1, prefix="login")
        h = th.load_state(str(state))["hosts"][0]
        pub = (Path(h["root"]) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        yield {"th": th, "state": state, "name": h["name"], "ip": h["ip"], "root": h["root"],
               "key": str(state / "id_ed25519"), "host_key": (pub[0], pub[1])}
    finally:
        th.destroy(str(state))


def other_key(tmp_path, name="other"):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    return (tmp_path / (name + ".pub")).read_text().split()[:2]


def ssh(host, known_hosts, user="ansible", target=None, key=None):
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "UserKnownHostsFile=%s" % known_hosts,
           "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", key or host["key"],
           "%s@%s" % (user, target or host["ip"]), "true"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


# ------------------------------------------------------------------------------------------ 1. real ssh output
def test_real_ssh_errors_are_told_apart(host, tmp_path):
    good = tmp_path / "good"
    good.write_text("%s %s %s\n" % (host["ip"], *host["host_key"]))
    wrong = tmp_path / "wrong"
    wrong.write_text("%s %s %s\n" % (host["ip"], *other_key(tmp_path)))
    empty = tmp_path / "empty"
    empty.write_text("")
    open_key = tmp_path / "open_key"
    shutil.copy(host["key"], open_key)
    open_key.chmod(0o644)

    control = ssh(host, good)
    assert control.returncode == 0, control.stderr          # the right key in known_hosts: logged in
    cases = {
        "changed host key": (ssh(host, wrong), "host_key", "REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "unknown host key": (ssh(host, empty), "host_key", "Host key verification failed"),
        "key file too open": (ssh(host, good, key=str(open_key)), "key_file", "UNPROTECTED PRIVATE KEY FILE"),
        "key file missing": (ssh(host, good, key=str(tmp_path / "nonexistent")), "key_file", "not accessible"),
        "unresolvable name": (ssh(host, good, target="no-such-vm.invalid"), "unresolvable", "Could not resolve"),
        "user without the key": (ssh(host, good, user="nobody"), "key_refused", "Permission denied (publickey"),
    }
    for what, (res, kind, words) in cases.items():
        assert res.returncode == 255 and words in res.stderr, (what, res.stderr)
        # as Ansible reports it: "Failed to connect to the host via ssh: <stderr>"
        got = classify("Failed to connect to the host via ssh: " + " ".join(res.stderr.split()))[0]
        assert got == kind, (what, got, res.stderr)


# ------------------------------------------------------------------------------------------ 2. the wait
def _env_without_config(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ANSIBLE_") and k not in ("GCE_API_ENDPOINT", "GCP_PROJECT", "GCP_AUTH_KIND",
                                                         "GCP_ACCESS_TOKEN", "GCP_SERVICE_ACCOUNT_FILE")}
    env.update(PATH="%s:%s" % (VENV_BIN, env.get("PATH", "")), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.update(extra)
    return env


def _wait_play(host, tmp_path, known_hosts, timeout, user="ansible"):
    (tmp_path / "inventory.yml").write_text(json.dumps({"all": {"hosts": {"vm": {
        "ansible_host": host["ip"], "ansible_user": user, "ansible_ssh_private_key_file": host["key"],
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % known_hosts}}}}))
    (tmp_path / "play.yml").write_text(json.dumps([{
        "name": "wait", "hosts": "vm", "gather_facts": False, "become": True,
        "tasks": [{"name": "wait for the login", "llmops.gce_vllm.wait_for_login": {
            "timeout": timeout, "sleep": 2, "host_key_hint": "HINT: run provision again."}}]}]))
    t0 = time.monotonic()
    res = subprocess.run(["ansible-playbook", "-i", "inventory.yml", "play.yml"], cwd=tmp_path,
                         env=_env_without_config(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                                                 HOME=str(tmp_path)),
                         capture_output=True, text=True, timeout=timeout + 120, check=False)
    return res.returncode, res.stdout + res.stderr, time.monotonic() - t0


def test_a_wrong_host_key_ends_the_wait_at_once(host, tmp_path):
    wrong = tmp_path / "known_hosts"
    wrong.write_text("%s %s %s\n" % (host["ip"], *other_key(tmp_path)))
    rc, out, wall = _wait_play(host, tmp_path, wrong, timeout=120)
    flat = " ".join(out.split())
    assert rc != 0, out
    assert wall < 45, "the wait went on for %d s of its 120 s after a host key mismatch:\n%s" % (wall, out[-3000:])
    assert "failed at once" in flat and "host key does not match known_hosts" in flat, out[-3000:]
    assert str(wrong) in flat and "HINT: run provision again." in flat, out[-3000:]


def test_a_refused_key_stays_a_bounded_wait(host, tmp_path):
    good = tmp_path / "known_hosts"
    good.write_text("%s %s %s\n" % (host["ip"], *host["host_key"]))
    rc, out, wall = _wait_play(host, tmp_path, good, timeout=6, user="nobody")
    flat = " ".join(out.split())
    assert rc != 0 and wall >= 6, (wall, out[-3000:])
    assert "answered but the key was refused for" in flat and "failed at once" not in flat, out[-3000:]


# ------------------------------------------------------------------------------------------ 3. Done when
def _run(cmd, cwd, env, timeout=900):
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    print("%5.1f s  %s" % (wall, " ".join(str(c) for c in cmd[:3])), flush=True)
    return res.returncode, res.stdout + res.stderr, wall


@pytest.mark.skipif(os.environ.get("LLMOPS_SKIP_DEMO") == "1", reason="LLMOPS_SKIP_DEMO=1 (the end-to-end runs)")
def test_the_readme_quick_start_from_the_installed_collection(host, tmp_path):
    from tests.compute_api.server import ComputeApiServer  # noqa: PLC0415

    home, user_dir = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    user_dir.mkdir()
    env = _env_without_config(HOME=str(home))
    # the collection as a user gets it
    rc, out, _wall = _run(["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(tmp_path)],
                          tmp_path, env, timeout=300)
    assert rc == 0, out
    tarball = next(tmp_path.glob("llmops-gce_vllm-*.tar.gz"))
    rc, out, _wall = _run(["ansible-galaxy", "collection", "install", str(tarball)], tmp_path, env, timeout=300)
    assert rc == 0, out
    installed = home / ".ansible/collections/ansible_collections/llmops/gce_vllm"
    assert (installed / "MANIFEST.json").is_file(), out
    assert not (user_dir / "ansible.cfg").exists() and "ANSIBLE_CONFIG" not in env

    # what the image gives the VM (nvidia-smi, libcuda) and the vLLM stand-in wheel: test setup, from the checkout
    rc, out, _wall = _run([str(VENV_BIN / "ansible-playbook"), "-i", str(host["state"] / "inventory.yml"),
                           "molecule/default/prepare.yml"], ROOT,
                          dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")), timeout=600)
    assert rc == 0, out[-3000:]

    # README step 2: the inventory out of the installed collection, the vault file from vault.yml.example
    inv = user_dir / "inventories" / "gce"
    shutil.copytree(installed / "inventories" / "gce", inv)
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text(os.urandom(16).hex())
    vault_pass.chmod(0o600)
    vault = inv / "group_vars" / "ai_server" / "vault.yml"
    vault.write_text("".join("%s: %s\n" % (k, os.urandom(16).hex()) for k in (
        "vault_vllm_server_api_key", "vault_ai_server_backend_internal_token", "vault_ai_server_api_key")))
    rc, out, _wall = _run(["ansible-vault", "encrypt", "--vault-password-file", str(vault_pass), str(vault)],
                          user_dir, env, timeout=120)
    assert rc == 0, out
    vars_file = inv / "group_vars" / "ai_server" / "vars.yml"
    vars_file.write_text(re.sub(r"(?m)^ai_server_backend_callback_base_url: .*$",
                                "ai_server_backend_callback_base_url: http://127.0.0.1:9/api", vars_file.read_text()))
    # what only the stand-ins need (inventories/local/group_vars/ai_server.yml has the same)
    standins = user_dir / "standins.yml"
    standins.write_text(json.dumps({
        "vllm_server_pip_spec": "/opt/standin/vllm_standin-0.33.0-py3-none-any.whl",
        "vllm_server_stage_models": False,   # the stand-in's venv has no huggingface_hub, no hub is reachable
        "vllm_server_extra_env": {"VLLM_STANDIN_STARTUP_DELAY": "2"}, "vllm_server_health_timeout": 120,
        "gce_vllm_instance_name": "ai-server-l4"}))

    api = ComputeApiServer(host_pool=[host["ip"]], op_polls=1, op_seconds=2.0).start()
    api.api.host_key_roots[host["ip"]] = host["root"]   # the VM publishes the test host's real host keys
    known_hosts = home / ".ssh" / "llmops_gce_vllm_known_hosts"
    try:
        run_env = dict(env, GCP_PROJECT="llmops-demo", GCP_AUTH_KIND="accesstoken",
                       GCP_ACCESS_TOKEN="local-" + os.urandom(8).hex(), GCE_API_ENDPOINT=api.endpoint,
                       GCE_SSH_USER="ansible")
        # README step 4 (--vault-password-file for --ask-vault-pass; --private-key: the harness's key is not
        # ~/.ssh/id_ed25519); the playbook by FQCN, as the README's installed-collection line says.
        site = [str(VENV_BIN / "ansible-playbook"), "llmops.gce_vllm.site", "-i", "inventories/gce",
                "--vault-password-file", str(vault_pass), "--private-key", host["key"],
                "-e", json.dumps({"gce_vllm_ai_source_ranges": ["10.231.0.0/16"]}),
                "-e", "gce_vllm_ssh_public_key_file=%s.pub" % host["key"], "-e", "@standins.yml"]
        rc, out, wall = _run(site, user_dir, run_env)
        assert rc == 0, "the quick start failed (%d s):\n%s" % (wall, out[-6000:])
        assert "Host key verification failed" not in out and "Permanently added" not in out, out[-3000:]
        lines = known_hosts.read_text().splitlines()
        assert lines == ["%s %s %s" % (host["ip"], *host["host_key"])], lines
        assert oct(known_hosts.stat().st_mode & 0o777) == "0o600"

        # the same run with another key served: the file is rewritten with it and the first login fails at once
        api.api.host_keys[host["ip"]] = dict([other_key(tmp_path)])
        rc, out, wall = _run(site, user_dir, run_env)
        flat = " ".join(out.split())
        assert rc != 0, out[-3000:]
        assert "failed at once" in flat and "host key does not match known_hosts" in flat, out[-4000:]
        assert str(known_hosts) in flat and "gce_vllm_known_hosts_file" in flat, out[-4000:]
        assert wall < 240, "the wrong-key run took %d s (gce_vllm_connect_timeout is 900)" % wall
    finally:
        api.stop()

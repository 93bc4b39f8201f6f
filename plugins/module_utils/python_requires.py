# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Requires-Python of pinned Python packages, read where pip reads it, and whether an interpreter fits.

Used by llmops.gce_vllm.python_requires on the managed host (Python 3.9+, standard library plus
ansible.module_utils). What pip does, and what this follows:

- pip skips every file of a release whose ``Requires-Python`` the interpreter does not satisfy
  (``pip/_internal/index/package_finder.py``, ``check_requires_python``); it compares the interpreter's
  ``sys.version_info[:3]`` only, so a pre-release interpreter (3.11.0rc1) counts as 3.11.0.
- A simple index announces a file's ``Requires-Python`` before download: PEP 691 JSON
  (``application/vnd.pypi.simple.v1+json``, key ``requires-python``) or PEP 503 HTML with the PEP 345/503
  ``data-requires-python`` attribute (HTML-escaped, e.g. ``&gt;=3.10``).
- A wheel carries it in ``*.dist-info/METADATA`` (header ``Requires-Python``).
- The specifier grammar is PEP 440's: comma-separated clauses of ``~=``, ``==``, ``!=``, ``<=``, ``>=``,
  ``<``, ``>``, ``===``, with ``.*`` wildcards for ``==`` and ``!=``.
"""

from __future__ import annotations

import html
import json
import os
import re
import zipfile
from html.parser import HTMLParser

from ansible.module_utils.urls import open_url

PYPI_SIMPLE = "https://pypi.org/simple"
SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_CLAUSE = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*([0-9][0-9A-Za-z.*+!-]*)\s*$")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([0-9][0-9A-Za-z.+!-]*)\s*(?:;.*)?$")


class RequiresPythonError(Exception):
    """A failure with a message meant for the user."""


def normalize(name):
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version):
    """The release tuple of a version string: '3.11.0rc1' -> (3, 11, 0); '3.10' -> (3, 10)."""
    version = version.strip().lstrip("vV")
    if "!" in version:
        version = version.split("!", 1)[1]
    m = re.match(r"^(\d+(?:\.\d+)*)", version)
    if not m:
        raise RequiresPythonError("not a version: %r" % version)
    return tuple(int(x) for x in m.group(1).split("."))


def _pad(a, b):
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)), b + (0,) * (n - len(b))


def _cmp(a, b):
    a, b = _pad(a, b)
    return (a > b) - (a < b)


def _clause_ok(op, ver, py):
    if op in ("==", "!=") and ver.endswith(".*"):
        prefix = release(ver[:-2])
        padded = py + (0,) * max(0, len(prefix) - len(py))
        match = padded[:len(prefix)] == prefix
        return match if op == "==" else not match
    if op == "===":
        return ".".join(str(x) for x in py) == ver
    want = release(ver)
    c = _cmp(py, want)
    if op == "==":
        return c == 0
    if op == "!=":
        return c != 0
    if op == ">=":
        return c >= 0
    if op == "<=":
        return c <= 0
    if op == ">":
        return c > 0
    if op == "<":
        return c < 0
    # ~=X.Y.Z: >= X.Y.Z and == X.Y.*
    if len(want) < 2:
        raise RequiresPythonError("~= needs at least two release numbers: %r" % ver)
    return c >= 0 and py[:len(want) - 1] == want[:-1]


def satisfies(python_version, specifier):
    """True when the interpreter version (a string like '3.10.12') satisfies the Requires-Python
    specifier (like '<3.14,>=3.10'); an empty specifier allows every interpreter."""
    py = release(python_version)[:3]
    for clause in (specifier or "").split(","):
        if not clause.strip():
            continue
        m = _CLAUSE.match(clause)
        if not m:
            raise RequiresPythonError("cannot read the Requires-Python clause %r" % clause.strip())
        if not _clause_ok(m.group(1), m.group(2), py):
            return False
    return True


def parse_pin(spec):
    """(name, version) of an exact pin 'name==1.2.3' ('name[extra]==1.2.3 ; marker' too); None otherwise."""
    m = _PIN.match(spec)
    return (m.group(1), m.group(2)) if m else None


def _metadata_requires_python(text):
    for line in text.splitlines():
        if not line.strip():
            break   # the headers end at the first empty line; the description follows
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "requires-python":
            return value.strip()
    return ""


def wheel_requires_python(path):
    """Requires-Python of a wheel file ('' when it declares none)."""
    try:
        with zipfile.ZipFile(path) as whl:
            names = [n for n in whl.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n)]
            if not names:
                raise RequiresPythonError("%s has no *.dist-info/METADATA: not a wheel" % path)
            return _metadata_requires_python(whl.read(names[0]).decode("utf-8", "replace"))
    except (OSError, zipfile.BadZipFile) as exc:
        raise RequiresPythonError("cannot read the wheel %s: %s" % (path, exc)) from exc


def _file_version(filename, name):
    """The version in a distribution file name of project `name`, or None for another project."""
    norm = normalize(name).replace("-", "_")
    base = filename
    for ext in (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz"):
        if base.endswith(ext):
            base = base[:-len(ext)]
            break
    else:
        return None
    if filename.endswith(".whl"):
        parts = base.split("-")
        if len(parts) < 5:
            return None
        project, version = parts[0], parts[1]
    else:
        project, _sep, version = base.rpartition("-")
    if normalize(project).replace("-", "_") != norm:
        return None
    return version


class _Anchors(HTMLParser):
    def __init__(self):
        HTMLParser.__init__(self, convert_charrefs=True)
        self.files = []
        self._attrs = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._attrs = dict(attrs)
            self._text = []

    def handle_data(self, data):
        if self._attrs is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._attrs is not None:
            href = self._attrs.get("href") or ""
            name = "".join(self._text).strip() or href.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            rp = self._attrs.get("data-requires-python")
            self.files.append({"filename": name, "requires-python": html.unescape(rp) if rp else ""})
            self._attrs = None


def parse_simple_page(body, content_type):
    """Files of a simple-index project page: [{'filename', 'requires-python'}] (PEP 691 JSON or PEP 503 HTML)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "json" in (content_type or "") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RequiresPythonError("the index answered JSON it cannot parse: %s" % exc) from exc
        return [{"filename": f.get("filename", ""), "requires-python": f.get("requires-python") or ""}
                for f in data.get("files", [])]
    parser = _Anchors()
    parser.feed(text)
    return parser.files


def _read_url(url, timeout):
    if url.startswith("file://"):
        path = url[len("file://"):]
        if os.path.isdir(path):
            path = os.path.join(path, "index.html")
        with open(path, "rb") as fh:
            return fh.read(), "text/html"
    resp = open_url(url, headers={"Accept": SIMPLE_ACCEPT}, timeout=timeout, follow_redirects="safe")
    return resp.read(), resp.headers.get("Content-Type", "")


def index_requires_python(index_url, name, version, timeout=30):
    """The Requires-Python values of the files of name==version on a simple index: (values, page URL).
    Raises RequiresPythonError when the page cannot be read or holds no file of that version."""
    url = "%s/%s/" % (index_url.rstrip("/"), normalize(name))
    try:
        body, ctype = _read_url(url, timeout)
    except Exception as exc:   # pylint: disable=broad-except  # every network/IO failure is reported the same way
        raise RequiresPythonError("cannot read %s: %s" % (url, exc)) from exc
    files = parse_simple_page(body, ctype)
    values = [f["requires-python"] for f in files if _file_version(f["filename"], name) == version]
    if not values:
        raise RequiresPythonError("%s lists no file of %s==%s" % (url, name, version))
    return values, url


def find_links_requires_python(dirs, name, version):
    """Requires-Python of the wheels of name==version in local find-links directories: (values, path) or None."""
    values, where = [], None
    for d in dirs:
        if d.startswith("file://"):
            d = d[len("file://"):]
        if not os.path.isdir(d):
            continue
        for fn in sorted(os.listdir(d)):
            if fn.endswith(".whl") and _file_version(fn, name) == version:
                values.append(wheel_requires_python(os.path.join(d, fn)))
                where = where or d
    return (values, where) if values else None


def allowed_by_any(python_version, values):
    """pip's rule: the release is installable when at least one of its files allows the interpreter."""
    return any(satisfies(python_version, v) for v in values)


def read_pip_sources(config_texts, environ, pip_args):
    """Where pip looks: {'index_url', 'extra_index_urls', 'find_links', 'no_index'} from pip configuration
    files (texts, lowest precedence first), then PIP_* environment variables, then pip arguments."""
    import configparser
    src = {"index_url": PYPI_SIMPLE, "extra_index_urls": [], "find_links": [], "no_index": False}

    def apply(key, value):
        if key == "index-url":
            src["index_url"] = value.strip()
        elif key == "extra-index-url":
            src["extra_index_urls"] = value.split()
        elif key == "find-links":
            src["find_links"] = value.split()
        elif key == "no-index":
            src["no_index"] = value.strip().lower() in ("1", "yes", "true", "on")

    for text in config_texts:
        cfg = configparser.ConfigParser(interpolation=None)
        try:
            cfg.read_string(text)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            if cfg.has_section(section):
                for key, value in cfg.items(section):
                    apply(key, value)
    for key in ("index-url", "extra-index-url", "find-links", "no-index"):
        env = "PIP_" + key.upper().replace("-", "_")
        if environ.get(env):
            apply(key, environ[env])
    args = list(pip_args)
    flags = {"-i": "index-url", "--index-url": "index-url", "--extra-index-url": "extra-index-url",
             "-f": "find-links", "--find-links": "find-links"}
    extra, links = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        key, sep, value = arg.partition("=")
        if arg == "--no-index":
            src["no_index"] = True
        elif key in flags and (sep or i + 1 < len(args)):
            if not sep:
                i += 1
                value = args[i]
            if flags[key] == "index-url":
                src["index_url"] = value
            elif flags[key] == "extra-index-url":
                extra.append(value)
            else:
                links.append(value)
        i += 1
    src["extra_index_urls"] += extra
    src["find_links"] += links
    return src

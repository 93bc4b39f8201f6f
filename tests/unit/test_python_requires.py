"""llmops.gce_vllm.python_requires: Requires-Python read as pip reads it, and the interpreter judged as pip judges it.

The index pages are PyPI's real answers for vllm (tests/fixtures/pypi/, fetched 2026-12-01, trimmed to four
releases), served from loopback in both of PyPI's formats. The interpreters are small scripts that print a
version, standing in for /usr/bin/python3 of other OS releases; apt-cache is a script printing what Ubuntu
22.04's apt-cache prints for python3.11 (its Version line as read from jammy-updates/universe).
"""
import http.server
import json
import os
import threading
import zipfile

import pytest

from module_helpers import ROOT, STANDIN_DIR, run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.module_utils import python_requires as pr
from ansible_collections.llmops.gce_vllm.plugins.modules import python_requires

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "pypi")
JSON_PAGE = os.path.join(FIXTURES, "vllm-simple-2026-12-01.json")
HTML_PAGE = os.path.join(FIXTURES, "vllm-simple-2026-12-01.html")


@pytest.mark.parametrize("version,spec,expected", [
    ("3.10.12", "<3.14,>=3.10", True),
    ("3.9.2", "<3.14,>=3.10", False),
    ("3.14.0", "<3.14,>=3.10", False),
    ("3.13.5", "<3.14,>=3.10", True),
    ("3.11.0", "<3.15,>=3.11", True),   # what Ubuntu 22.04's python3.11 (3.11.0~rc1) counts as
    ("3.10.6", "<3.15,>=3.11", False),
    ("3.12.3", "", True),
    ("3.9.0", ">=3.9", True),
    ("3.9.0", ">3.9", False),
    ("3.9.1", ">3.9", True),   # the release tuple is padded: 3.9 == 3.9.0 < 3.9.1
    ("3.12.3", "==3.12.*", True),
    ("3.13.0", "==3.12.*", False),
    ("3.12.3", "!=3.12.*", False),
    ("3.10.4", "~=3.10", True),
    ("4.0.0", "~=3.10", False),
    ("3.10.4", "~=3.10.5", False),
    ("3.10.4", " >= 3.8 , != 3.10.4 ", False),
    ("3.11.0", "===3.11.0", True),
])
def test_specifier(version, spec, expected):
    assert pr.satisfies(version, spec) is expected


def test_bad_specifier_is_an_error():
    with pytest.raises(pr.RequiresPythonError, match="cannot read the Requires-Python clause"):
        pr.satisfies("3.10.0", ">=three")


@pytest.mark.parametrize("spec,pin", [
    ("vllm==0.15.1", ("vllm", "0.15.1")),
    ("fastapi[standard]==0.162.5 ; python_version >= '3.10'", ("fastapi", "0.162.5")),
    ("python-dotenv===1.2.4", ("python-dotenv", "1.2.4")),
    ("vllm>=0.15", None),
    ("/opt/standin/vllm_standin-0.33.0-py3-none-any.whl", None),
])
def test_parse_pin(spec, pin):
    assert pr.parse_pin(spec) == pin


def _page_values(path, ctype, version):
    with open(path, "rb") as fh:
        files = pr.parse_simple_page(fh.read(), ctype)
    return sorted(f["requires-python"] for f in files if pr._file_version(f["filename"], "vllm") == version)


@pytest.mark.parametrize("path,ctype", [(JSON_PAGE, "application/vnd.pypi.simple.v1+json"), (HTML_PAGE, "text/html")])
def test_reads_pypis_real_pages(path, ctype):
    assert _page_values(path, ctype, "0.15.1") == ["<3.14,>=3.10", "<3.14,>=3.10"]
    assert set(_page_values(path, ctype, "0.33.0")) == {"<3.15,>=3.11"}


def test_standin_declares_the_real_vllm_requires_python(tmp_path):
    """Fidelity: the stand-in wheel says what vLLM 0.33.0 (which it stands in for) says on PyPI, so pip decides alike."""
    import subprocess
    import sys
    wheel = subprocess.run([sys.executable, os.path.join(STANDIN_DIR, "build_wheel.py"), str(tmp_path)],
                           capture_output=True, text=True, check=True).stdout.strip()
    with zipfile.ZipFile(wheel) as whl:
        assert "Version: 0.33.0" in whl.read("vllm_standin-0.33.0.dist-info/METADATA").decode()
    assert {pr.wheel_requires_python(wheel)} == set(_page_values(JSON_PAGE, "json", "0.33.0"))


def test_pip_sources_precedence():
    conf = "[global]\nindex-url = https://mirror.example/simple\nfind-links = /opt/a /opt/b\n"
    src = pr.read_pip_sources([conf], {"PIP_EXTRA_INDEX_URL": "https://extra.example/simple"},
                              ["-i", "https://args.example/simple", "--find-links=/opt/c", "--no-index"])
    assert src == {"index_url": "https://args.example/simple", "extra_index_urls": ["https://extra.example/simple"],
                   "find_links": ["/opt/a", "/opt/b", "/opt/c"], "no_index": True}
    assert pr.read_pip_sources([], {}, [])["index_url"] == "https://pypi.org/simple"


# --- the module on this machine, against a loopback index ---------------------------------------------------
class _Index(http.server.BaseHTTPRequestHandler):
    html = False

    def do_GET(self):   # noqa: N802 (http.server's name)
        if self.path.rstrip("/") != "/simple/vllm":
            self.send_error(404)
            return
        path, ctype = (HTML_PAGE, "text/html") if self.html or "json" not in self.headers.get("Accept", "") \
            else (JSON_PAGE, "application/vnd.pypi.simple.v1+json")
        with open(path, "rb") as fh:
            body = fh.read()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):   # quiet
        pass


@pytest.fixture(name="index")
def fixture_index():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/simple" % server.server_address[1]
    server.shutdown()
    _Index.html = False


@pytest.fixture(name="host")
def fixture_host(tmp_path, monkeypatch):
    """A PATH with python3 = 3.9.2 (Debian 11), python3.12 = 3.12.3, and an apt-cache that knows python3.11."""
    bindir = tmp_path / "bin"
    bindir.mkdir()

    def script(name, text):
        path = bindir / name
        path.write_text("#!/bin/sh\n" + text)
        path.chmod(0o755)

    script("python3", "echo 3.9.2\n")
    script("python3.12", "echo 3.12.3\n")
    script("apt-cache", 'case "$1 $2" in\n'
                        '  "pkgnames python3.") printf "python3.11\\npython3.11-venv\\n" ;;\n'
                        '  "show --no-all-versions") [ "$3" = python3.11 ] && printf "Package: python3.11\\n'
                        'Version: 3.11.0~rc1-1~22.04.1\\n" && exit 0; exit 100 ;;\n'
                        'esac\n')
    for key in list(os.environ):
        if key.startswith("PIP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", str(bindir))
    return bindir


def _run(index, **args):
    args.setdefault("pip_args", ["--index-url", index])
    args.setdefault("pip_config_files", [])
    return run_module(python_requires, args)


def test_too_old_interpreter_fails_naming_it_the_version_needed_and_the_variable(index, host):
    failed, res = _run(index, python="python3", requirements=["vllm==0.15.1"],
                       python_variable="vllm_server_python (default gpu_host_python)")
    assert failed
    msg = res["msg"]
    assert "python3 is Python 3.9.2 (%s/python3)" % host in msg
    assert "vllm==0.15.1 needs Python <3.14,>=3.10 (Requires-Python from %s/vllm/)" % index in msg
    assert "Set vllm_server_python (default gpu_host_python) to an interpreter" in msg
    assert "python3.12 3.12.3 (installed at %s/python3.12)" % host in msg
    assert "python3.11 3.11.0~rc1 (APT package python3.11)" in msg   # installable, and 3.11.0 fits
    assert res["requirements"] == [{"spec": "vllm==0.15.1", "requires_python": ["<3.14,>=3.10", "<3.14,>=3.10"],
                                    "source": index + "/vllm/", "allowed": False}]


def test_interpreter_that_fits_passes(index, host):
    failed, res = _run(index, python="python3.12", requirements=["vllm==0.33.0"])
    assert not failed, res
    assert (res["version"], res["installed"], res["path"]) == ("3.12.3", True, "%s/python3.12" % host)
    assert res["requirements"][0]["allowed"] and not res["changed"]


def test_html_index_is_read_too(index, host):
    _Index.html = True
    failed, res = _run(index, python="python3", requirements=["vllm==0.33.0"])
    assert failed and "vllm==0.33.0 needs Python <3.15,>=3.11" in res["msg"]


def test_apt_package_not_yet_installed_is_judged_by_its_version(index, host):
    failed, res = _run(index, python="python3.11", requirements=["vllm==0.33.0"])
    assert not failed, res
    assert (res["version"], res["installed"], res["path"]) == ("3.11.0", False, None)


def test_unknown_interpreter_names_the_variable(index, host):
    failed, res = _run(index, python="python3.42", requirements=["vllm==0.15.1"], python_variable="ai_server_python")
    assert failed and "ai_server_python=python3.42: no such interpreter" in res["msg"]


def test_release_not_on_the_index_fails_before_any_change(index, host):
    failed, res = _run(index, python="python3.12", requirements=["vllm==9.9.9"])
    assert failed and "lists no file of vllm==9.9.9" in res["msg"]


def test_unreachable_index_fails_clearly(host):
    failed, res = _run("http://127.0.0.1:9/simple", python="python3.12", requirements=["vllm==0.15.1"], timeout=2)
    assert failed and "cannot read http://127.0.0.1:9/simple/vllm/" in res["msg"]


def test_wheel_on_the_host_and_a_wheelhouse(tmp_path, host):
    import subprocess
    import sys
    wheel = subprocess.run([sys.executable, os.path.join(STANDIN_DIR, "build_wheel.py"), str(tmp_path / "wh")],
                           capture_output=True, text=True, check=True).stdout.strip()
    failed, res = _run("unused", python="python3", requirements=[wheel], pip_args=[])
    assert failed and "needs Python <3.15,>=3.11 (Requires-Python from %s)" % wheel in res["msg"]
    # an air-gapped host: pip told --no-index and a find-links directory (the wheelhouse)
    failed, res = _run("unused", python="python3.12", requirements=["vllm-standin==0.33.0"],
                       pip_args=["--no-index", "--find-links", str(tmp_path / "wh")])
    assert not failed, res
    assert res["requirements"][0]["source"] == str(tmp_path / "wh")
    failed, res = _run("unused", python="python3.12", requirements=["vllm==0.15.1"],
                       pip_args=["--no-index", "-f", str(tmp_path / "wh")])
    assert failed and "in none of the find-links directories" in res["msg"]


def test_pip_configuration_file_names_the_index(index, host, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = %s\n" % index)
    failed, res = _run(index, python="python3.12", requirements=["vllm==0.15.1"], pip_args=[],
                       pip_config_files=[str(conf)])
    assert not failed and res["requirements"][0]["source"] == index + "/vllm/"


def test_ranges_are_left_unchecked(index, host, capfd):
    failed, res = _run(index, python="python3", requirements=["vllm>=0.15"])
    assert not failed and res["unchecked"] == ["vllm>=0.15"] and res["requirements"] == []
    out, err = capfd.readouterr()
    assert "not exact pins, not checked against python3's Requires-Python: vllm>=0.15" in out + err + json.dumps(res)


def test_check_mode_reads_only(index, host):
    failed, res = run_module(python_requires, dict(python="python3.12", requirements=["vllm==0.15.1"],
                                                   pip_args=["--index-url", index], pip_config_files=[]),
                             check_mode=True)
    assert not failed and not res["changed"]
    assert json.dumps(res)   # serialisable


def test_without_check_index_only_the_interpreter_is_checked(host):
    """check_index false (the roles, when the venv already holds the spec): no index request at all, but an
    interpreter that does not exist is still refused, naming the variable."""
    failed, res = _run("http://127.0.0.1:9/simple", python="python3", requirements=["vllm==0.15.1"], check_index=False,
                       python_variable="vllm_server_python")
    assert not failed and res["installed"] and res["version"] == "3.9.2" and res["requirements"] == [], res
    failed, res = _run("http://127.0.0.1:9/simple", python="python3.42", requirements=["vllm==0.15.1"],
                       check_index=False, python_variable="vllm_server_python")
    assert failed and "vllm_server_python=python3.42: no such interpreter" in res["msg"], res

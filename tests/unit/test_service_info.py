"""llmops.gce_vllm.service_info and module_utils/service_state.py: the service state read from the host."""
import hashlib
import os
import pathlib
import time

from module_helpers import run_module  # first: installs the collection loader
from ansible_collections.llmops.gce_vllm.plugins.module_utils import service_state as ss
from ansible_collections.llmops.gce_vllm.plugins.modules import service_info

WHEEL = "vllm_standin-0.33.0-py3-none-any.whl"


def _venv(tmp_path, dists, py="python3.11"):
    """A venv as pip leaves it: bin/python and one dist-info per (name, version, url)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    sp = venv / "lib" / py / "site-packages"
    sp.mkdir(parents=True)
    for name, version, url in dists:
        info = sp / ("%s-%s.dist-info" % (name.replace("-", "_"), version))
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: %s\nVersion: %s\n\nName: not-a-header\n" % (name, version))
        if url:
            (info / "direct_url.json").write_text('{"url": "%s", "archive_info": {}}' % url)
    return venv


def test_pins_are_judged_by_the_installed_versions(tmp_path):
    venv = _venv(tmp_path, [("FastAPI", "0.162.5", None), ("uvicorn", "0.40.0", None)])
    assert ss.venv_state(str(venv), ["fastapi==0.162.5", "uvicorn[standard]==0.40"])["satisfied"]
    state = ss.venv_state(str(venv), ["fastapi==0.162.6", "httpx==0.28.1", "uvicorn==0.40.0"])
    assert not state["satisfied"]
    assert state["missing"] == ["fastapi==0.162.6", "httpx==0.28.1"]


def test_a_wheel_is_held_only_from_the_same_url(tmp_path):
    venv = _venv(tmp_path, [("vllm-standin", "0.33.0", "file:///opt/standin/" + WHEEL)])
    assert ss.venv_state(str(venv), ["/opt/standin/" + WHEEL])["satisfied"]
    assert ss.venv_state(str(venv), ["file:///opt/standin/" + WHEEL])["satisfied"]
    assert not ss.venv_state(str(venv), ["file:///opt/standin/reinstall/" + WHEEL])["satisfied"]
    assert not ss.venv_state(str(venv), ["/opt/standin/vllm_standin-0.34.0-py3-none-any.whl"])["satisfied"]


def test_a_missing_venv_holds_nothing(tmp_path):
    state = ss.venv_state(str(tmp_path / "none"), ["vllm==0.15.1"])
    assert not state["exists"] and not state["satisfied"] and state["missing"] == ["vllm==0.15.1"]


def test_unjudged_requirements_need_an_install_after_the_file_changed(tmp_path):
    venv = _venv(tmp_path, [("fastapi", "0.162.5", None)])
    req = tmp_path / "requirements.txt"
    req.write_text("# app\nfastapi==0.162.5  # pinned\n-r other.txt\n")
    sp = venv / "lib" / "python3.11" / "site-packages"
    old = time.time() - 100
    os.utime(req, (old, old))   # ctime is now: the file changed after the install
    time.sleep(0.01)
    state = ss.venv_state(str(venv), requirements_file=str(req))
    assert state["unjudged"] == ["-r other.txt"] and not state["satisfied"]
    time.sleep(0.01)
    (sp / "marker-of-an-install").write_text("")   # an install after the file: site-packages changes
    assert ss.venv_state(str(venv), requirements_file=str(req))["satisfied"]


def _props(active=True, started_mono_us=1_000_000, reload_due="no"):
    return {"ActiveState": "active" if active else "inactive", "NeedDaemonReload": reload_due,
            "ExecMainStartTimestampMonotonic": str(started_mono_us if active else 0)}


def test_a_file_written_after_the_start_makes_the_service_stale(tmp_path):
    unit = tmp_path / "x.service"
    unit.write_text("[Service]\n")
    written = os.stat(unit).st_ctime
    # the process started 5 s before the write: stale; 5 s after it: current
    before = ss.service_state(_props(), [str(unit)], [], now_realtime=written + 10, now_monotonic=16.0)
    assert before["stale"] and before["changed_since_start"] == [str(unit)] and str(unit) in before["reason"]
    after = ss.service_state(_props(), [str(unit)], [], now_realtime=written + 10, now_monotonic=6.0)
    assert not after["stale"] and not after["changed_since_start"]


def test_a_unit_changed_since_the_last_daemon_reload_is_stale_and_an_inactive_one_never(tmp_path):
    assert ss.service_state(_props(reload_due="yes"), [], [])["stale"]
    stopped = ss.service_state(_props(active=False, reload_due="yes"), [str(tmp_path)], [])
    assert not stopped["stale"] and stopped["started_at"] is None and stopped["need_daemon_reload"]


def test_an_install_into_a_watched_venv_after_the_start_makes_it_stale(tmp_path):
    venv = _venv(tmp_path, [("vllm", "0.15.1", None)])
    now = time.time()
    state = ss.service_state(_props(started_mono_us=int(5e6)), [], [str(venv)], now_realtime=now + 60, now_monotonic=70.0)
    assert state["stale"] and state["changed_since_start"][0].endswith("site-packages")


def _fake_proc(tmp_path, procs):
    """A /proc with one stat file per (pid, ppid, start ticks)."""
    proc = tmp_path / "proc"
    for pid, ppid, start in procs:
        (proc / str(pid)).mkdir(parents=True)
        rest = ["S", str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 5
        (proc / str(pid) / "stat").write_text("%d (hap roxy) %s\n" % (pid, " ".join(rest)))
    (proc / "self").mkdir()
    return str(proc)


def test_a_reload_is_due_when_a_reload_file_changed_after_the_youngest_worker_started(tmp_path):
    """HAProxy -Ws: a reload keeps the main process and forks new workers; the youngest child is what loaded the
    configuration in use. The main process started long before the write: not a reason to reload."""
    cfg = tmp_path / "proxy.cfg"
    cfg.write_text("global\n")
    written = os.stat(cfg).st_ctime
    tick = os.sysconf("SC_CLK_TCK")
    # boot clock now 100 s; main process (pid 10) started at 1 s; old worker 11 at 2 s; the newest worker 12 at
    # 95 s (5 s ago), an unrelated process 13 at 99 s. The file was written 10 s ago (boot clock 90 s).
    proc = _fake_proc(tmp_path, [(10, 1, 1 * tick), (11, 10, 2 * tick), (12, 10, 95 * tick), (13, 1, 99 * tick)])
    props = {"ActiveState": "active", "MainPID": "10", "ExecMainStartTimestampMonotonic": "1000000"}
    current = ss.reload_state(props, [str(cfg)], proc=proc, now_realtime=written + 10, now_boottime=100.0)
    assert not current["reload_due"] and abs(current["loaded_at"] - (written + 5)) < 0.1
    # the newest worker started 15 s ago (before the write): due
    proc2 = _fake_proc(tmp_path / "b", [(10, 1, 1 * tick), (12, 10, 85 * tick)])
    due = ss.reload_state(props, [str(cfg)], proc=proc2, now_realtime=written + 10, now_boottime=100.0)
    assert due["reload_due"] and due["changed_since_load"] == [str(cfg)] and str(cfg) in due["reload_reason"]
    # not running: never due
    stopped = ss.reload_state({"ActiveState": "inactive", "MainPID": "0"}, [str(cfg)], proc=proc2)
    assert not stopped["reload_due"] and stopped["loaded_at"] is None


def test_parse_show():
    assert ss.parse_show("ActiveState=active\nNeedDaemonReload=no\nbad line\nX=a=b\n") == {
        "ActiveState": "active", "NeedDaemonReload": "no", "X": "a=b"}


def test_the_module_reads_paths_account_venvs_and_legacy_files(tmp_path):
    me = pathlib.Path(tmp_path).owner()
    group = pathlib.Path(tmp_path).group()
    f = tmp_path / "env"
    f.write_text("A=1\n")
    f.chmod(0o600)
    legacy = tmp_path / ".llmops-applied"
    legacy.write_text("x")
    venv = _venv(tmp_path, [("uv", "0.13.9", None)])
    failed, res = run_module(service_info, {
        "paths": [{"path": str(f), "state": "file", "owner": me, "group": group, "mode": "0600"},
                  {"path": str(tmp_path), "state": "file"},
                  {"path": str(tmp_path / "missing"), "state": "directory"}],
        "venvs": [{"path": str(venv), "requirements": ["uv==0.13.9"]}],
        "legacy_files": [str(legacy), str(tmp_path / ".llmops-pip-spec")],
    }, check_mode=True)
    assert not failed and res["changed"] is False
    assert res["paths"][str(f)]["ok"] and res["paths"][str(f)]["checksum"] == hashlib.sha1(b"A=1\n").hexdigest()
    assert not res["paths"][str(tmp_path)]["ok"]          # a directory where a file is wanted
    assert not res["paths"][str(tmp_path / "missing")]["exists"]
    assert res["venvs"][0]["satisfied"]
    assert res["legacy_present"] == [str(legacy)]
    assert res["unit"] == {} and res["account"] == {}


def test_the_module_refuses_a_mode_that_is_not_octal(tmp_path):
    failed, res = run_module(service_info, {"paths": [{"path": str(tmp_path), "mode": "u=rwx"}]})
    assert failed and "mode of %s must be octal" % tmp_path in res["msg"]


def test_the_account_is_checked_with_its_group_home_and_shell():
    state = ss.account_state("root", "root", "/root")
    assert state["exists"] and state["group_exists"] and state["ok"]
    assert not ss.account_state("root", "root", "/elsewhere")["ok"]
    assert not ss.account_state("no-such-user-llmops", "root")["exists"]
    assert not ss.account_state("root", "no-such-group-llmops")["group_exists"]


def test_packages_missing_reads_dpkg_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Package: acl\nStatus: install ok installed\nVersion: 2\n\n"
                      "Package: python3-pip\nStatus: deinstall ok config-files\n\n"
                      "Package: gcc\nStatus: install ok installed\n")
    assert ss.packages_missing(["acl", "gcc", "python3-pip", "tree", "gcc=4:12", "acl:amd64"], str(status)) == [
        "python3-pip", "tree", "gcc=4:12", "acl:amd64"]
    assert ss.packages_missing(["acl"], str(tmp_path / "none")) == ["acl"]

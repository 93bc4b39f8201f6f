# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state of a service in a virtual environment, read from the host (llmops.gce_vllm.service_info).

No marker files: what a run needs to decide is on the host already.

- Whether a venv holds the wanted packages: its installed distributions (``*.dist-info/METADATA`` under
  ``lib/python*/site-packages``, what ``importlib.metadata`` reads), their versions, and for a wheel file or
  URL the ``direct_url.json`` pip writes (PEP 610).
- Whether a running service still runs an older configuration: systemd's ``NeedDaemonReload`` (the unit file
  changed since the last daemon-reload) and the change time (ctime: set by every write, rename, chmod or
  utime, and never settable to the past, unlike mtime, which an archive extraction sets from the archive)
  of each file a start reads, against the start time of the running main process
  (``ExecMainStartTimestampMonotonic``: a plain integer on every systemd, taken on the same
  CLOCK_MONOTONIC this host's Python reads, so no date parsing and no locale).
- Whether a master-worker server (HAProxy ``-Ws``) must reload: a reload keeps the main process and forks new
  workers that run the new configuration, so the configuration in use was loaded when the youngest child of
  the main process started (``/proc/PID/stat`` start time, in clock ticks since boot).
"""

from __future__ import annotations

import glob
import grp
import hashlib
import json
import os
import pwd
import re
import stat
import time
from urllib.parse import unquote, urlparse

from ansible_collections.llmops.gce_vllm.plugins.module_utils.python_requires import normalize

UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "NeedDaemonReload", "MainPID",
                   "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(===?)\s*([0-9][0-9A-Za-z.+!-]*)\s*$")
_WHEEL = re.compile(r"^([A-Za-z0-9_.]+)-([0-9][^-]*)(?:-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def site_packages(venv):
    """The site-packages directories of a venv (lib/pythonX.Y/site-packages, lib64 too)."""
    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    found += glob.glob(os.path.join(venv, "lib64", "python*", "site-packages"))
    seen, out = set(), []
    for path in sorted(found):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def _metadata_headers(path):
    name = version = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                break   # end of the header block
            key, _sep, value = line.partition(":")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
    return name, version


def installed(venv):
    """{normalized name: {"name", "version", "url"}} of the distributions installed in the venv."""
    dists = {}
    for sp in site_packages(venv):
        for info in sorted(glob.glob(os.path.join(sp, "*.dist-info"))):
            meta = os.path.join(info, "METADATA")
            if not os.path.isfile(meta):
                continue
            name, version = _metadata_headers(meta)
            if not name or not version:
                continue
            url = None
            direct = os.path.join(info, "direct_url.json")
            if os.path.isfile(direct):
                try:
                    with open(direct, encoding="utf-8") as fh:
                        url = json.load(fh).get("url")
                except (OSError, ValueError):
                    url = None
            dists.setdefault(normalize(name), {"name": name, "version": version, "url": url})
    return dists


def file_url(spec):
    """The file:// URL pip records for a wheel given as a path or file:// URL; None for anything else."""
    if spec.startswith("file://"):
        path = unquote(urlparse(spec).path)
    elif spec.startswith("/"):
        path = spec
    else:
        return None
    return "file://" + os.path.normpath(path)


def wanted(spec):
    """(normalized name, version, url or None) of a requirement this module can judge; None otherwise.

    Judged: exact pins (``name==1.2``, ``name[extra]==1.2``) and wheel files (path or file:// URL)."""
    spec = spec.strip()
    m = _REQ.match(spec)
    if m:
        return normalize(m.group(1)), m.group(3), None
    url = file_url(spec)
    if url and url.endswith(".whl"):
        w = _WHEEL.match(os.path.basename(url))
        if w:
            return normalize(w.group(1)), w.group(2), url
    return None


def _same_version(a, b):
    strip = re.compile(r"(\.0+)+$")
    return strip.sub("", a.lower().lstrip("v")) == strip.sub("", b.lower().lstrip("v"))


def requirement_lines(path):
    """The requirement lines of a requirements file (comments and blank lines dropped); None if unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


def venv_state(venv, requirements=None, requirements_file=None):
    """Whether the venv holds every wanted requirement, from the venv itself.

    A requirement this module cannot judge (ranges, markers, options such as ``-r``, VCS URLs) counts as held
    only when the venv's site-packages changed after the requirements file did (the last install ran after the
    file was written); with only exact pins and wheels, the installed versions alone decide."""
    reqs = list(requirements or [])
    result = {"path": venv, "exists": os.path.isfile(os.path.join(venv, "bin", "python")), "satisfied": False,
              "missing": [], "unjudged": [], "requirements_file": requirements_file}
    if requirements_file:
        lines = requirement_lines(requirements_file)
        if lines is None:
            result["missing"].append(requirements_file)
            return result
        reqs += lines
    if not result["exists"]:
        result["missing"] = reqs
        return result
    dists = installed(venv)
    for spec in reqs:
        want = wanted(spec)
        if want is None:
            result["unjudged"].append(spec)
            continue
        name, version, url = want
        have = dists.get(name)
        if have is None or not _same_version(have["version"], version) or (url and have["url"] != url):
            result["missing"].append(spec)
    if result["unjudged"] and requirements_file:
        installed_at = max((os.stat(sp).st_ctime for sp in site_packages(venv)), default=0.0)
        if os.stat(requirements_file).st_ctime > installed_at:
            result["missing"] += result["unjudged"]
    elif result["unjudged"]:
        result["missing"] += result["unjudged"]
    result["satisfied"] = not result["missing"]
    return result


def parse_show(text):
    """`systemctl show --property=...` output -> dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def started_at(props, now_realtime=None, now_monotonic=None):
    """The realtime (epoch seconds) at which the running main process started; None when none runs."""
    mono = props.get("ExecMainStartTimestampMonotonic") or "0"
    if not mono.isdigit() or int(mono) == 0:
        mono = props.get("ActiveEnterTimestampMonotonic") or "0"
    if not mono.isdigit() or int(mono) == 0:
        return None
    now_rt = time.time() if now_realtime is None else now_realtime
    now_mono = time.monotonic() if now_monotonic is None else now_monotonic
    return now_rt - (now_mono - int(mono) / 1e6)


def changed_since(paths, since):
    """The paths (files or directories) changed (ctime) after `since`; a missing path is not a change."""
    out = []
    for path in paths:
        try:
            ctime = os.stat(path).st_ctime
        except OSError:
            continue
        if ctime > since:
            out.append(path)
    return out


def _boot_clock():
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


def _stat_fields(pid, proc="/proc"):
    """(ppid, start time in clock ticks since boot) of a process; None when it is gone."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()   # after "pid (comm) ": state is fields[0]
    try:
        return int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def loaded_at(main_pid, proc="/proc", now_realtime=None, now_boottime=None):
    """The realtime (epoch seconds) at which the youngest child of `main_pid` started, i.e. when a master-worker
    server last loaded its configuration (a reload forks new workers and keeps the main process); None when the
    main process has no child."""
    youngest = None
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry, proc)
        if fields and fields[0] == main_pid and (youngest is None or fields[1] > youngest):
            youngest = fields[1]
    if youngest is None:
        return None
    now_rt = time.time() if now_realtime is None else now_realtime
    now_boot = _boot_clock() if now_boottime is None else now_boottime
    return now_rt - (now_boot - youngest / float(os.sysconf("SC_CLK_TCK")))


def reload_state(props, reload_files, proc="/proc", now_realtime=None, now_boottime=None):
    """Whether a running master-worker service must reload to run the `reload_files` on disk, and why. A main
    process without a child (no worker yet) counts as loaded at its own start."""
    active = props.get("ActiveState") == "active"
    pid = props.get("MainPID") or "0"
    when = None
    if active and pid.isdigit() and int(pid) > 0:
        when = loaded_at(int(pid), proc, now_realtime, now_boottime)
        if when is None:
            when = started_at(props, now_realtime)
    changed = changed_since(reload_files, when) if when is not None else []
    return {"loaded_at": when, "changed_since_load": changed, "reload_due": bool(active and changed),
            "reload_reason": ("changed after the running workers loaded their configuration: " + ", ".join(changed))
            if changed else ""}


def service_state(props, files, venvs, now_realtime=None, now_monotonic=None):
    """Whether a service must be restarted to run what is on disk, and why."""
    active = props.get("ActiveState") == "active"
    start = started_at(props, now_realtime, now_monotonic) if active else None
    watched = list(files)
    for venv in venvs:
        watched += site_packages(venv)
    changed = changed_since(watched, start) if start is not None else []
    reload_due = props.get("NeedDaemonReload") == "yes"
    reasons = []
    if active and reload_due:
        reasons.append("the unit file changed after the last daemon-reload")
    if changed:
        reasons.append("changed after the running process started: " + ", ".join(changed))
    return {"active": active, "started_at": start, "need_daemon_reload": reload_due,
            "changed_since_start": changed, "stale": bool(active and (reload_due or changed)),
            "reason": "; ".join(reasons)}


def _sha1(path):
    digest = hashlib.sha1()  # nosec - a content comparison, as ansible's own checksums
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def path_state(path, state=None, owner=None, group=None, mode=None):
    """What is at `path`, and whether it is what is wanted (state directory/file, owner, group, octal mode)."""
    out = {"path": path, "exists": False, "ok": False, "checksum": None}
    try:
        st = os.lstat(path)
    except OSError:
        return out
    kind = "directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        gname = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        gname = str(st.st_gid)
    out.update(exists=True, state=kind, owner=user, group=gname, mode="%04o" % stat.S_IMODE(st.st_mode))
    if kind == "file":
        try:
            out["checksum"] = _sha1(path)
        except OSError:
            out["checksum"] = None
    out["ok"] = ((state is None or kind == state) and (owner is None or user == owner)
                 and (group is None or gname == group) and (mode is None or int(mode, 8) == stat.S_IMODE(st.st_mode)))
    return out


def account_state(name, group, home=None, shell=None):
    """Whether the system user `name` exists with primary group `group` (which exists), home and shell."""
    out = {"name": name, "exists": False, "group_exists": False, "ok": False}
    try:
        gid = grp.getgrnam(group).gr_gid
        out["group_exists"] = True
    except KeyError:
        gid = None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return out
    out.update(exists=True, home=pw.pw_dir, shell=pw.pw_shell, gid=pw.pw_gid)
    out["ok"] = (gid is not None and pw.pw_gid == gid and (home is None or pw.pw_dir == home)
                 and (shell is None or pw.pw_shell == shell))
    return out


DPKG_STATUS = "/var/lib/dpkg/status"


def packages_missing(names, status_file=DPKG_STATUS):
    """The names of `names` that dpkg does not list as installed ("install ok installed"). A name this cannot
    judge (a version, an architecture or a pattern in it) counts as missing, and so does every name when the
    status file cannot be read: the caller's apt task then decides."""
    try:
        with open(status_file, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return list(names)
    installed_now = set()
    for stanza in text.split("\n\n"):
        pkg = status = None
        for line in stanza.splitlines():
            if line.startswith("Package:"):
                pkg = line.split(":", 1)[1].strip()
            elif line.startswith("Status:"):
                status = line.split(":", 1)[1].split()
        if pkg and status and status[-1] == "installed":
            installed_now.add(pkg)
    return [n for n in names if not re.match(r"^[a-z0-9][a-z0-9+.-]*$", n) or n not in installed_now]

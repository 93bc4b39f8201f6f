# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of llmops.gce_vllm.wait_for_login: wait until Ansible can log in (and become), telling apart a host
that does not answer from one whose SSH answers but refuses the key."""

from __future__ import annotations

import shlex
import socket
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

REPORT_EVERY = 30   # seconds between two progress lines that say the same thing

# What a failed login attempt says, first match wins: (kind, words in the error, how the progress calls it).
# The permanent kinds come first: ssh prints "Permission denied (publickey)" after an ignored key file too.
KINDS = (
    ("host_key", ("host key verification failed", "remote host identification has changed",
                  "has changed and you have requested strict checking", "you have requested strict checking"),
     "SSH answers, its host key does not match known_hosts"),
    ("key_file", ("unprotected private key file", "bad permissions", "no such identity", "not accessible:",
                  "invalid format", "incorrect passphrase", "error in libcrypto"),
     "the private key cannot be used"),
    ("unresolvable", ("could not resolve hostname", "name or service not known", "no address associated with hostname",
                      "nodename nor servname provided"), "the host name does not resolve"),
    ("ssh_config", ("bad configuration option", "unsupported option", "garbage at end of line",
                    "bad configuration options"), "ssh refuses its options"),
    ("key_refused", ("permission denied (", "authentication failed", "authenticationexception",
                     "no supported authentication methods"), "SSH answers, the key is refused"),
    ("become", ("sudo", "privilege escalation", "password is required", "become"), "logged in, sudo not allowed yet"),
    ("no_banner", ("banner exchange", "kex_exchange_identification", "connection closed by", "connection reset by"),
     "the port answers, SSH does not (no banner)"),
    ("port_closed", ("connection refused",), "no answer: port closed (connection refused)"),
    ("no_answer", ("timed out", "timeout", "no route to host", "network is unreachable",
                   "temporary failure in name resolution"),
     "no answer (timed out)"),
)
NO_ANSWER = ("no_answer", "port_closed", "no_banner")
# Waiting cannot change these: the wait ends at the first one, with what to do.
PERMANENT = {
    "host_key": "The host's SSH key is not the one %(known_hosts)s holds for it: waiting cannot fix this. %(hint)s",
    "key_file": "ssh cannot use the private key (%(key_file)s): it is missing, unreadable, too open (ssh ignores a "
                "key that group or others can read: chmod 600) or not a private key. Fix the key file or "
                "ansible_ssh_private_key_file.",
    "unresolvable": "The host name %(host)s does not resolve: fix the address the inventory gives (ansible_host).",
    "ssh_config": "ssh refuses its own options: fix ansible_ssh_common_args / ansible_ssh_args / ssh_args.",
}


def classify(error):
    """(kind, description) of a failed login attempt's error text."""
    low = to_text(error).lower()
    for kind, words, text in KINDS:
        if any(w in low for w in words):
            return kind, text
    return "other", "login failed"


def banner(host, port, timeout):
    """What the controller sees at host:port: ('banner', 'SSH-2.0-...'), ('no_banner', ''), or (kind, error)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = sock.recv(256)
    except ConnectionRefusedError:
        return "port_closed", "connection refused"
    except (socket.timeout, TimeoutError):
        return "no_answer", "timed out after %d s" % timeout
    except OSError as exc:
        return "no_answer", to_text(exc)
    line = to_text(data, errors="replace").split("\n", 1)[0].strip()
    return ("banner", line) if line.startswith("SSH-") else ("no_banner", line[:60])


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("timeout", "sleep", "connect_timeout", "key_refused_hint", "no_answer_hint",
                             "host_key_hint"))

    def _login(self, task_vars):
        """One end-to-end attempt: a fresh connection, then the ping module (with the task's become)."""
        if self._discovered_interpreter_key:   # discover the interpreter again on the next attempt
            task_vars.get("ansible_facts", {}).pop(self._discovered_interpreter_key, None)
        try:
            self._connection.reset()
        except AttributeError:
            pass
        res = self._execute_module(module_name="ansible.legacy.ping", module_args={}, task_vars=task_vars)
        if res.get("ping") != "pong":
            raise AnsibleActionFail(res.get("msg") or res.get("module_stderr") or "ping did not answer pong")

    def _address(self, task_vars):
        def opt(name, default=None):
            try:
                return self._connection.get_option(name)
            except KeyError:
                return default
        host = opt("host") or task_vars.get("ansible_host") or self._play_context.remote_addr
        port = opt("port") or 22
        user = opt("remote_user") or self._play_context.remote_user or "(default user)"
        proxied = any("proxy" in str(opt(name) or "").lower()
                      for name in ("ssh_args", "ssh_common_args", "ssh_extra_args", "proxy_command"))
        probe = self._connection.transport in ("ssh", "ansible.builtin.ssh", "paramiko_ssh",
                                               "ansible.builtin.paramiko_ssh") and not proxied
        return host, int(port), user, probe

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        try:
            timeout = int(args.get("timeout", 900))
            sleep = max(1, int(args.get("sleep", 5)))
            connect_timeout = max(1, int(args.get("connect_timeout", 5)))
        except (TypeError, ValueError) as exc:
            raise AnsibleActionFail("timeout, sleep and connect_timeout must be whole seconds: %s" % exc)
        name = task_vars.get("inventory_hostname", "?")
        host, port, user, probe = self._address(task_vars)
        where = "%s@%s:%d" % (user, host, port)
        t0 = time.monotonic()
        seen = {}              # kind -> seconds it was the answer
        last = None            # (kind, text, error, what the controller saw at the port)
        said = (None, -REPORT_EVERY)
        while True:
            t_round = time.monotonic()
            error = ""
            try:
                self._login(task_vars)
                break
            except Exception as exc:  # pylint: disable=broad-exception-caught
                error = " ".join(to_text(exc).split())   # any failure: look at it, try again
            kind, text = classify(error)
            port_seen = banner(host, port, connect_timeout) if probe else ("not_probed", "")
            if kind == "other" and port_seen[0] in NO_ANSWER:
                kind, text = port_seen[0], dict((k, t) for k, _w, t in KINDS)[port_seen[0]]
            last = (kind, text, error, port_seen)
            waited = time.monotonic() - t0
            if kind in PERMANENT:
                seen[kind] = seen.get(kind, 0) + time.monotonic() - t_round
                result.update(failed=True, elapsed=round(waited), last_error=error, kind=kind,
                              seen=dict((k, round(v)) for k, v in seen.items()),
                              msg=self._permanent(where, host, kind, error, args))
                return result
            if said[0] != kind or waited - said[1] >= REPORT_EVERY:
                display.display("[%s] waiting for the SSH login %s: %s: %d s of at most %d s"
                                % (name, where, text, waited, timeout))
                said = (kind, waited)
            if waited >= timeout:
                seen[kind] = seen.get(kind, 0) + time.monotonic() - t_round
                elapsed = time.monotonic() - t0
                result.update(failed=True, elapsed=round(elapsed), last_error=error, kind=kind,
                              seen=dict((k, round(v)) for k, v in seen.items()),
                              msg=self._message(where, elapsed, last, seen, args))
                return result
            time.sleep(min(sleep, max(0.0, timeout - waited)))
            seen[kind] = seen.get(kind, 0) + time.monotonic() - t_round
        elapsed = time.monotonic() - t0
        result.update(changed=False, elapsed=round(elapsed), seen=dict((k, round(v)) for k, v in seen.items()))
        if last:
            display.display("[%s] logged in as %s after %d s" % (name, where, elapsed))
        return result

    def _ssh_option(self, name):
        """The value of -o NAME=VALUE in the connection's ssh arguments (None when not given)."""
        words = []
        for opt in ("ssh_args", "ssh_common_args", "ssh_extra_args"):
            try:
                words += shlex.split(to_text(self._connection.get_option(opt) or ""))
            except (KeyError, ValueError, AttributeError):
                continue
        for i, word in enumerate(words):
            item = words[i + 1] if word == "-o" and i + 1 < len(words) else (word[2:] if word.startswith("-o") else "")
            key, sep, value = item.partition("=")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None

    def _permanent(self, where, host, kind, error, args):
        try:
            key_file = self._connection.get_option("private_key_file") or "ssh's default keys"
        except (KeyError, AttributeError):
            key_file = "ssh's default keys"
        known = self._ssh_option("UserKnownHostsFile")
        head = PERMANENT[kind] % dict(
            known_hosts=known or "the known_hosts file ssh reads (~/.ssh/known_hosts)", key_file=key_file,
            host=host, hint=args.get("host_key_hint") or "")
        return " ".join(("SSH login to %s failed at once (%s). %s Last error: %s"
                         % (where, dict((k, t) for k, _w, t in KINDS)[kind], head, error[:600])).split())

    @staticmethod
    def _message(where, elapsed, last, seen, args):
        kind, text, error, port_seen = last
        before = ", ".join("%s %d s" % (dict((k, t) for k, _w, t in KINDS).get(k, k), v)
                           for k, v in sorted(seen.items(), key=lambda kv: -kv[1]))
        port = {"banner": "the controller saw the SSH banner %r" % port_seen[1],
                "no_banner": "the port accepted the connection but sent no SSH banner",
                "port_closed": "the port refused the connection", "no_answer": "the port did not answer (%s)" % port_seen[1],
                "not_probed": "the port was not probed (proxied connection)"}[port_seen[0]]
        if kind == "key_refused":
            head = ("SSH on %s answered but the key was refused for %d s (%s). On GCE the guest agent creates "
                    "the user of the ssh-keys metadata and installs its key a little after sshd starts; when that "
                    "never happens the user or key is wrong. %s"
                    % (where, elapsed, port, args.get("key_refused_hint") or ""))
        elif kind in NO_ANSWER:
            head = ("no SSH answer from %s within %d s: %s; %s. The host is not up, sshd is not running, or a "
                    "firewall drops tcp/%s from this controller. %s"
                    % (where, elapsed, text, port, where.rsplit(":", 1)[1], args.get("no_answer_hint") or ""))
        else:
            head = "could not log in to %s within %d s: %s; %s." % (where, elapsed, text, port)
        return "%s Seen while waiting: %s. Last error: %s" % (" ".join(head.split()), before, error[:600])

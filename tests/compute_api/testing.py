"""Helpers for unit tests of the GCE plugins against the local Compute API.

    from tests.compute_api.testing import ComputeApiServer, run_module, auth_args

run_module(main, args) runs a module's main() in-process (ansible-core's patch_module_args), the way
Ansible runs it, and returns its JSON result (with "failed": true when it failed); result["warning_msgs"] lists the
warnings' texts.
"""
import contextlib
import io
import json

from unittest import mock

from ansible.module_utils import _internal as _module_internal
from ansible.module_utils.common import warnings as _warnings
from ansible.module_utils.testing import patch_module_args

from .server import ComputeApiServer

__all__ = ["PROJECT", "ComputeApiServer", "auth_args", "run_module", "service_account_key"]

PROJECT = "llmops-demo"


def auth_args(server, **extra):
    """The connection options of the modules, pointed at `server`."""
    args = {"project": PROJECT, "auth_kind": "accesstoken", "access_token": "test-token",
            "api_endpoint": server.endpoint}
    args.update(extra)
    return args


def run_module(main, args, check_mode=False, diff=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    _warnings._global_warnings.clear()  # pylint: disable=protected-access
    _warnings._global_deprecations.clear()  # pylint: disable=protected-access
    out = io.StringIO()
    # run as on a target: warnings go into the result even when controller code was imported in this process
    with patch_module_args(args), contextlib.redirect_stdout(out), \
            mock.patch.object(_module_internal, "is_controller", False):
        try:
            main()
        except SystemExit:
            pass
    text = out.getvalue().strip()
    if not text:
        raise AssertionError("the module printed nothing")
    result = json.loads(text.splitlines()[-1])
    result["warning_msgs"] = [w["event"]["msg"] if isinstance(w, dict) and "event" in w else str(w)
                              for w in result.get("warnings") or []]
    return result


def service_account_key(directory, server):
    """Write a real RSA service-account key file (mode 0600) whose token_uri is `server`'s OAuth2 endpoint;
    returns its path (a pathlib.Path when `directory` is one)."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import rsa  # pylint: disable=import-outside-toplevel

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = directory / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "0123abcd", "private_key": pem,
        "client_email": "deployer@%s.iam.gserviceaccount.com" % PROJECT, "client_id": "1",
        "token_uri": server.url + "token"}))
    path.chmod(0o600)
    return path

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, llmops.gce_vllm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP polling helpers shared by llmops.gce_vllm.http_health and llmops.gce_vllm.vllm_models.

Runs on the managed host (Python 3.9+), standard library plus ansible.module_utils only:
- http_get(): one GET through ansible.module_utils.urls.open_url, never raising; the outcome is an
  HttpResult with status, body and a classified error.
- poll_until(): call a check until it says done or the time is up, on the monotonic clock, sleeping only
  the poll interval (growing by `backoff` up to `max_interval`), never past the deadline.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

# Default poll settings: a service that turns healthy is noticed within about a second.
DEFAULT_INTERVAL = 1.0
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_INTERVAL = 10.0
DEFAULT_REQUEST_TIMEOUT = 10.0
MAX_BODY = 1024 * 1024

POLL_ARGUMENT_SPEC = dict(
    timeout=dict(type='float', default=300.0),
    interval=dict(type='float', default=DEFAULT_INTERVAL),
    backoff=dict(type='float', default=DEFAULT_BACKOFF),
    max_interval=dict(type='float', default=DEFAULT_MAX_INTERVAL),
    request_timeout=dict(type='float', default=DEFAULT_REQUEST_TIMEOUT),
    validate_certs=dict(type='bool', default=True),
)


class HttpResult(object):
    """Outcome of one request: `status` is the HTTP status or None; `error_kind` is None when a response came.

    error_kind is one of: refused, timeout, dns, tls, reset, url, other.
    """

    def __init__(self, url, status=None, body=b'', headers=None, error_kind=None, error=None):
        self.url = url
        self.status = status
        self.body = body or b''
        self.headers = headers or {}
        self.error_kind = error_kind
        self.error = error

    @property
    def text(self):
        return self.body.decode('utf-8', errors='replace')

    def json(self):
        """Decoded JSON body; raises ValueError with a short description when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError as exc:
            raise ValueError('response of %s is not JSON (%s): %r' % (self.url, exc, self.text[:200]))

    def describe(self):
        """One line for error messages: 'HTTP 503' or 'connection refused (...)'."""
        if self.error_kind is None:
            return 'HTTP %s' % self.status
        return '%s (%s)' % (ERROR_TEXT.get(self.error_kind, self.error_kind), self.error)


ERROR_TEXT = {
    'refused': 'connection refused',
    'timeout': 'request timed out',
    'dns': 'host name not resolved',
    'tls': 'TLS error',
    'reset': 'connection closed by the server',
    'url': 'invalid URL',
    'other': 'request failed',
}


def classify_error(exc):
    """Map an exception from open_url to one of the kinds of HttpResult.error_kind."""
    reason = getattr(exc, 'reason', exc)
    if isinstance(reason, ConnectionRefusedError):
        return 'refused'
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return 'timeout'
    if isinstance(reason, socket.gaierror):
        return 'dns'
    if isinstance(reason, ssl.SSLError) or 'CERTIFICATE_VERIFY_FAILED' in str(reason):
        return 'tls'
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return 'reset'
    if isinstance(exc, ValueError):
        return 'url'
    text = str(reason).lower()
    if 'refused' in text:
        return 'refused'
    if 'timed out' in text:
        return 'timeout'
    if 'remote end closed' in text or 'reset' in text:
        return 'reset'
    return 'other'


def http_get(url, headers=None, timeout=DEFAULT_REQUEST_TIMEOUT, validate_certs=True):
    """GET `url`; returns an HttpResult (non-2xx statuses are results, not errors). Never raises."""
    return http_request(url, 'GET', None, headers, timeout, validate_certs)


def http_request(url, method='GET', data=None, headers=None, timeout=DEFAULT_REQUEST_TIMEOUT, validate_certs=True):
    """`method` `url` with the body `data` (bytes or None); returns an HttpResult (non-2xx statuses are results,
    not errors). Never raises."""
    try:
        response = open_url(url, method=method, data=data, headers=headers or {}, timeout=timeout,
                            validate_certs=validate_certs, follow_redirects='safe', use_proxy=False)
        try:
            body = response.read(MAX_BODY)
            return HttpResult(url, status=response.status, body=body, headers=dict(response.headers))
        finally:
            response.close()
    except HTTPError as exc:
        try:
            body = exc.read(MAX_BODY)
        except Exception:  # pylint: disable=broad-except
            body = b''
        return HttpResult(url, status=exc.code, body=body, headers=dict(exc.headers or {}))
    except (URLError, OSError, ValueError) as exc:
        return HttpResult(url, error_kind=classify_error(exc), error=str(getattr(exc, 'reason', exc)))
    except Exception as exc:  # pylint: disable=broad-except
        # http.client.RemoteDisconnected, BadStatusLine and friends while a server is starting or stopping.
        return HttpResult(url, error_kind=classify_error(exc), error='%s: %s' % (type(exc).__name__, exc))


class PollOutcome(object):
    """What poll_until returns: done (bool), value (the last check's value), attempts, elapsed (s)."""

    def __init__(self, done, value, attempts, elapsed):
        self.done = done
        self.value = value
        self.attempts = attempts
        self.elapsed = elapsed


class StopPolling(Exception):
    """Raised by a check to stop polling at once (e.g. HTTP 401: retrying cannot help)."""

    def __init__(self, message, value=None):
        super(StopPolling, self).__init__(message)
        self.value = value


def poll_until(check, timeout, interval=DEFAULT_INTERVAL, backoff=DEFAULT_BACKOFF,
               max_interval=DEFAULT_MAX_INTERVAL, clock=time.monotonic, sleep=time.sleep):
    """Call check(remaining_seconds) -> (done, value) until done or `timeout` seconds have passed.

    The check runs at least once. Between attempts it sleeps `interval`, multiplied by `backoff` after
    each attempt up to `max_interval`, and never past the deadline. StopPolling propagates to the caller.
    """
    start = clock()
    deadline = start + max(0.0, timeout)
    attempts = 0
    wait = interval
    while True:
        attempts += 1
        done, value = check(max(0.0, deadline - clock()))
        now = clock()
        if done:
            return PollOutcome(True, value, attempts, now - start)
        remaining = deadline - now
        if remaining <= 0:
            return PollOutcome(False, value, attempts, now - start)
        sleep(min(wait, remaining))
        wait = min(wait * backoff, max_interval)


def validate_poll_params(module):
    """fail_json naming the option when a poll/timeout option is out of range. Returns nothing."""
    params = module.params
    problems = []
    if params['timeout'] < 0:
        problems.append('timeout must be >= 0 seconds, got %s' % params['timeout'])
    if params['interval'] <= 0:
        problems.append('interval must be > 0 seconds, got %s (e.g. interval: 1)' % params['interval'])
    if params['backoff'] < 1:
        problems.append('backoff must be >= 1 (1 = fixed interval), got %s' % params['backoff'])
    if params['max_interval'] < params['interval']:
        problems.append('max_interval (%s) must be >= interval (%s)' % (params['max_interval'], params['interval']))
    if params['request_timeout'] <= 0:
        problems.append('request_timeout must be > 0 seconds, got %s' % params['request_timeout'])
    if problems:
        module.fail_json(msg='Invalid parameters: ' + '; '.join(problems) + '.')


def request_timeout_for(remaining, request_timeout):
    """Per-request timeout: never longer than the time left (but at least 0.5 s so a request can complete)."""
    return max(0.5, min(request_timeout, remaining)) if remaining > 0 else max(0.5, min(request_timeout, 1.0))

"""Benchmark-only redirect of google.cloud.gcp_compute's Compute API calls to the local Compute API.

google.cloud 1.15.0 hard-codes Google's hosts (https://www.googleapis.com/compute/v1/...). The benchmark
puts this directory first on PYTHONPATH of the google.cloud comparison process only (never of ours), so
Python imports this module at start-up; it rewrites the URL of every requests.Session.request whose URL
starts with one of Google's Compute API bases to LLMOPS_BENCH_COMPUTE_API (the local server's
.../compute/v1/ base). Nothing else changes: same requests/google-auth code path, same pagination.
Requests to any other https host are refused, so a missed rewrite can never reach the internet.
With LLMOPS_BENCH_COUNT_FILE set it also counts the process's requests (for both plugins; counting only,
no redirect, when LLMOPS_BENCH_COMPUTE_API is unset).
"""

import os

_TARGET = os.environ.get("LLMOPS_BENCH_COMPUTE_API", "")
_BASES = (
    "https://www.googleapis.com/compute/v1/",
    "https://compute.googleapis.com/compute/v1/",
)

if _TARGET or os.environ.get("LLMOPS_BENCH_COUNT_FILE"):
    try:
        import requests
    except ImportError:  # pragma: no cover - the comparison venv always has requests
        requests = None

    if requests is not None:
        _orig_request = requests.Session.request
        _counter = {"requests": 0}

        def _redirected(self, method, url, *args, **kwargs):
            text = str(url)
            for base in _BASES:
                if _TARGET and text.startswith(base):
                    text = _TARGET.rstrip("/") + "/" + text[len(base):]
                    break
            else:
                if _TARGET and text.startswith("https://"):
                    raise RuntimeError("bench redirect: refusing a request outside the local API: " + text)
            _counter["requests"] += 1
            return _orig_request(self, method, text, *args, **kwargs)

        requests.Session.request = _redirected

        if os.environ.get("LLMOPS_BENCH_COUNT_FILE"):
            import atexit

            def _write_count():
                with open(os.environ["LLMOPS_BENCH_COUNT_FILE"], "w", encoding="utf-8") as fh:
                    fh.write(str(_counter["requests"]))

            atexit.register(_write_count)

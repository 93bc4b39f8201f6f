"""vllm_standin: a stand-in for vLLM 0.33.0, for tests only.

It is NOT vLLM. It has no model, no GPU code and no weights. It reproduces the parts of vLLM 0.33.0 that
the llmops.gce_vllm collection depends on: the ``vllm serve`` command line (same flags, same validation,
argparse-style errors with exit status 2), the late readiness of the API server, the API-key guard on
/v1, and the JSON shapes of /health, /version, /v1/models, /metrics, /v1/completions and
/v1/chat/completions. Runtime: Python 3.9+ standard library only.
"""

__version__ = "0.33.0"
STANDIN_NOTICE = "vllm_standin: stand-in for vLLM 0.33.0, tests only"

"""The `vllm` command of vllm_standin (stand-in for vLLM 0.33.0, tests only).

Only ``vllm serve`` (and ``vllm --version``) are implemented. The flag names, choices, defaults and error
messages follow vLLM 0.33.0 (``vllm/entrypoints/common/cli_args.py`` and the engine argument parser).

Knobs for tests (environment):
  VLLM_STANDIN_STARTUP_DELAY  seconds the "engine" takes to load before the API server listens (default 0)
  VLLM_STANDIN_CRASH          seconds after start at which the process dies like a CUDA OOM (exit 1)
  VLLM_STANDIN_MODEL_MAX_LEN  the model's max_position_embeddings (default 32768, EXAONE-3.5-2.4B's)
  VLLM_STANDIN_LATENCY        seconds a chat or completion takes to generate (default 0), so requests are in flight

SIGTERM: with ``--shutdown-timeout N`` (N > 0; vLLM >= 0.18, vllm#34730) the server stops accepting connections and
lets the requests in flight finish for up to N seconds, then exits 0; with 0 (vLLM's default) it exits at once and
the requests in flight are cut off, as vLLM aborts them.
"""
import argparse
import json
import os
import signal
import socket
import sys
import threading
import time

from vllm_standin import STANDIN_NOTICE, __version__
from vllm_standin.server import adapter_problem, make_server

DTYPES = ["auto", "half", "float16", "bfloat16", "float", "float32"]
MAX_LORA_RANKS = [1, 8, 16, 32, 64, 128, 256, 320, 512]
LORA_FIELDS = ("name", "path", "base_model_name")


def log(level, where, msg):
    """Print one log line the way vLLM formats them: 'INFO 11-24 09:33:33 [file.py:123] message'."""
    stamp = time.strftime("%m-%d %H:%M:%S")
    sys.stdout.write("%s %s [%s] %s\n" % (level, stamp, where, msg))
    sys.stdout.flush()


def human_readable_int(value):
    """vLLM's parser for --max-model-len: '8192', '1k' (1000), '1K' (1024), '25.6k', '1m', '1M', '1g', '1G'."""
    value = value.strip()
    decimal = {"k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}
    binary = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}
    if value and value[-1] in decimal or value and value[-1] in binary:
        number, suffix = value[:-1], value[-1]
        try:
            if suffix in decimal:
                return int(float(number) * decimal[suffix])
            if "." in number:
                raise argparse.ArgumentTypeError(
                    "Decimals are not allowed with binary suffixes like %s. Did you mean to use %s%s instead?"
                    % (suffix, number, suffix.lower()))
            return int(number) * binary[suffix]
        except ValueError:
            raise argparse.ArgumentTypeError("Invalid number format: %s" % number)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("invalid int value: %r" % value)


class LoRAModulePath(object):
    """Same fields as vLLM's dataclass: name, path, base_model_name=None."""

    def __init__(self, name, path, base_model_name=None):
        self.name = name
        self.path = path
        self.base_model_name = base_model_name


def _lora_from_dict(data):
    if not isinstance(data, dict):
        raise TypeError("LoRAModulePath() argument after ** must be a mapping, not %s" % type(data).__name__)
    for key in data:
        if key not in LORA_FIELDS:
            raise TypeError("LoRAModulePath.__init__() got an unexpected keyword argument '%s'" % key)
    missing = [k for k in ("name", "path") if k not in data]
    if missing:
        raise TypeError("LoRAModulePath.__init__() missing %d required positional argument%s: %s" % (
            len(missing), "s" if len(missing) > 1 else "", " and ".join("'%s'" % m for m in missing)))
    return LoRAModulePath(**data)


class LoRAParserAction(argparse.Action):
    """--lora-modules VALUE [VALUE ...]: each `name=path` or JSON {"name", "path", "base_model_name"}."""

    def __call__(self, parser, namespace, values, option_string=None):
        loras = []
        for item in values or []:
            if item in (None, ""):
                continue
            if "=" in item and "," not in item:
                name, _sep, path = item.partition("=")
                if "=" in path:
                    parser.error("Invalid format for --lora-modules: %s (expected name=path)" % item)
                loras.append(LoRAModulePath(name, path))
                continue
            try:
                loras.append(_lora_from_dict(json.loads(item)))
            except json.JSONDecodeError:
                parser.error("Invalid JSON format for --lora-modules: %s" % item)
            except TypeError as exc:
                parser.error("Invalid fields for --lora-modules: %s - %s" % (item, exc))
        setattr(namespace, self.dest, loras)


def _non_negative_int(value):
    number = int(value)
    if number < 0:   # vLLM: VllmConfig.shutdown_timeout is Field(ge=0)
        raise argparse.ArgumentTypeError("Input should be greater than or equal to 0")
    return number


def _bool_flag(group, name, default=False, help_text=""):
    group.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help_text)


def build_parser():
    parser = argparse.ArgumentParser(prog="vllm", description="vLLM CLI (" + STANDIN_NOTICE + ")")
    parser.add_argument("-v", "--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="subparser", metavar="{serve}")
    serve = sub.add_parser("serve", prog="vllm serve", usage="vllm serve [model_tag] [options]",
                           help="Start the vLLM OpenAI Compatible API server (" + STANDIN_NOTICE + ").")
    serve.add_argument("model_tag", nargs="?", default=None, help="The model tag to serve.")
    fe = serve.add_argument_group("Frontend")
    fe.add_argument("--host", default=None)
    fe.add_argument("--port", type=int, default=8000)
    fe.add_argument("--uvicorn-log-level", default="info",
                    choices=["critical", "debug", "error", "info", "trace", "warning"])
    fe.add_argument("--api-key", nargs="+", default=None,
                    help="If provided, the server will require one of these keys in the header.")
    fe.add_argument("--lora-modules", nargs="+", action=LoRAParserAction, default=None,
                    help="LoRA modules: 'name=path' or JSON {\"name\": .., \"path\": .., \"base_model_name\": ..}.")
    fe.add_argument("--root-path", default=None)
    fe.add_argument("--allowed-origins", default=None)
    fe.add_argument("--chat-template", default=None)
    fe.add_argument("--response-role", default="assistant")
    _bool_flag(fe, "--enable-log-requests")
    _bool_flag(fe, "--disable-uvicorn-access-log")
    _bool_flag(fe, "--enable-auto-tool-choice")
    fe.add_argument("--tool-call-parser", default=None)
    mc = serve.add_argument_group("ModelConfig")
    mc.add_argument("--model", default=None)
    mc.add_argument("--tokenizer", default=None)
    mc.add_argument("--revision", default=None)
    mc.add_argument("--code-revision", default=None)
    mc.add_argument("--tokenizer-revision", default=None)
    mc.add_argument("--dtype", default="auto", choices=DTYPES)
    mc.add_argument("--max-model-len", type=human_readable_int, default=None)
    mc.add_argument("--served-model-name", nargs="+", default=None)
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--quantization", "-q", default=None)
    _bool_flag(mc, "--trust-remote-code")
    _bool_flag(mc, "--enforce-eager")
    lc = serve.add_argument_group("LoadConfig")
    lc.add_argument("--download-dir", default=None)
    lc.add_argument("--load-format", default="auto")
    cc = serve.add_argument_group("CacheConfig")
    cc.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    cc.add_argument("--kv-cache-dtype", default="auto")
    cc.add_argument("--swap-space", type=float, default=4)
    pc = serve.add_argument_group("ParallelConfig")
    pc.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    sc = serve.add_argument_group("SchedulerConfig")
    sc.add_argument("--max-num-seqs", type=int, default=None)
    sc.add_argument("--max-num-batched-tokens", type=human_readable_int, default=None)
    lo = serve.add_argument_group("LoRAConfig")
    _bool_flag(lo, "--enable-lora")
    lo.add_argument("--max-loras", type=int, default=1)
    lo.add_argument("--max-lora-rank", type=int, default=16, choices=MAX_LORA_RANKS)
    lo.add_argument("--max-cpu-loras", type=int, default=None)
    _bool_flag(serve.add_argument_group("ObservabilityConfig"), "--disable-log-stats")
    serve.add_argument("--shutdown-timeout", type=_non_negative_int, default=0,
                       help="Shutdown timeout in seconds. 0 = abort, >0 = wait.")
    return parser


def _config_error(message, frame='"vllm/engine/arg_utils.py", in create_engine_config'):
    """vLLM validates its configs after parsing (or fails a step of its start, `frame`): the process dies with a
    traceback, exit 1."""
    sys.stdout.flush()
    if message.startswith(("ValueError: ", "RuntimeError: ")):
        head = ""
    else:
        head = "pydantic_core._pydantic_core.ValidationError: 1 validation error for VllmConfig\n"
    sys.stderr.write("Traceback (most recent call last):\n  File %s\n%s%s\n" % (frame, head, message))
    sys.stderr.flush()
    return 1


def validate(args):
    """Config checks vLLM makes after argument parsing (exit 1, like vLLM's startup failures)."""
    if not 0 < args.gpu_memory_utilization <= 1:
        return _config_error("gpu_memory_utilization\n  Input should be greater than 0 and less than or equal "
                             "to 1 [type=value_error, input_value=%s]" % args.gpu_memory_utilization)
    model_max = int(os.environ.get("VLLM_STANDIN_MODEL_MAX_LEN", "32768"))
    if args.max_model_len is not None and not 0 < args.max_model_len <= model_max:
        if args.max_model_len <= 0:
            return _config_error("max_model_len\n  Value error, max_model_len must be positive, got %d"
                                 % args.max_model_len)
        return _config_error(
            "Value error, User-specified max_model_len (%d) is greater than the derived max_model_len "
            "(max_position_embeddings=%d in model's config.json). This may lead to incorrect model outputs "
            "or CUDA errors." % (args.max_model_len, model_max))
    if args.lora_modules and not args.enable_lora:
        return _config_error("RuntimeError: LoRA is not enabled. Use --enable-lora to enable LoRA. "
                             "(while loading the --lora-modules %s)"
                             % ", ".join(lora.name for lora in args.lora_modules))
    if args.max_cpu_loras is not None and args.max_cpu_loras < args.max_loras:
        return _config_error("Value error, max_cpu_loras (%d) must be >= max_loras (%d)"
                             % (args.max_cpu_loras, args.max_loras))
    if args.lora_modules and len(args.lora_modules) > 0:
        names = [lora.name for lora in args.lora_modules]
        if len(set(names)) != len(names):
            return _config_error("ValueError: The lora adapter '%s' has already been loaded."
                                 % [n for n in names if names.count(n) > 1][0])
    return 0


def _env_float(name):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        sys.stderr.write("%s must be a number of seconds, got %r\n" % (name, raw))
        sys.exit(2)


def serve(args):
    model = args.model_tag or args.model or "Qwen/Qwen3-0.6B"
    rc = validate(args)
    if rc:
        return rc
    served = (args.served_model_name or [model])[0]
    api_keys = list(args.api_key or [])
    if not api_keys and os.environ.get("VLLM_API_KEY"):
        api_keys = [os.environ["VLLM_API_KEY"]]
    host = args.host or ""
    delay = _env_float("VLLM_STANDIN_STARTUP_DELAY") or 0.0
    crash_after = _env_float("VLLM_STANDIN_CRASH")
    started = time.monotonic()

    log("INFO", "api_server.py:1902", "vLLM API server version %s (%s)" % (__version__, STANDIN_NOTICE))
    shown = {"model": model, "host": args.host, "port": args.port, "dtype": args.dtype,
             "max_model_len": args.max_model_len, "gpu_memory_utilization": args.gpu_memory_utilization,
             "trust_remote_code": args.trust_remote_code, "enable_lora": args.enable_lora,
             "max_lora_rank": args.max_lora_rank, "served_model_name": args.served_model_name,
             "api_key": "<redacted>" if api_keys else None,
             "lora_modules": [lora.name for lora in args.lora_modules or []]}
    log("INFO", "utils.py:328", "non-default args: %s" % {k: v for k, v in shown.items() if v not in (None, False)})

    # Like vLLM's run_server(): bind the port before building the engine (a port in use fails at once) but
    # only listen once the engine is ready, so connections during start-up are refused.
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, args.port))
    except OSError as exc:
        log("ERROR", "api_server.py:1850", "Failed to bind %s:%d: %s" % (host or "0.0.0.0", args.port, exc))
        return 1

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def crashed():
        sys.stdout.flush()
        sys.stderr.write(
            "ERROR %s [core.py:708] EngineCore failed to start.\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
            "capacity of 22.03 GiB of which 1.12 GiB is free. Including non-PyTorch memory, this process has "
            "20.89 GiB memory in use. (vllm_standin: VLLM_STANDIN_CRASH)\n"
            "RuntimeError: Engine core initialization failed. See root cause above.\n"
            % time.strftime("%m-%d %H:%M:%S"))
        sys.stderr.flush()
        return 1

    def wait_until(deadline):
        """Wait for SIGTERM until `deadline`; returns 'stop', 'crash' or 'time'."""
        while True:
            now = time.monotonic()
            if crash_after is not None and now >= started + crash_after:
                return "crash"
            limit = deadline
            if crash_after is not None:
                limit = started + crash_after if limit is None else min(limit, started + crash_after)
            if limit is not None and now >= limit:
                return "time"
            if stop.wait(None if limit is None else max(0.0, limit - now)):
                return "stop"

    log("INFO", "model.py:547", "Resolved architecture: ExaoneForCausalLM (stand-in: no weights are loaded)")
    # The start-up phases it models, in the real engine's line formats (vLLM's CPU build 0.32.0 prints these three;
    # llmops.gce_vllm.vllm_startup_info times them): its "engine" takes VLLM_STANDIN_STARTUP_DELAY.
    log("INFO", "cpu_model_runner.py:68", "Starting to load model %s..." % model)
    outcome = wait_until(started + delay) if delay > 0 else "time"
    if outcome == "time":
        log("INFO", "default_loader.py:501", "Loading weights took 0.00 seconds")
        log("INFO", "core.py:402", "init engine (profile, create kv cache, warmup model) took %.2f s"
            % (time.monotonic() - started))
    if crash_after is not None and outcome != "stop" and time.monotonic() >= started + crash_after:
        outcome = "crash"
    if outcome == "stop":
        sock.close()
        log("INFO", "launcher.py:80", "Shutting down FastAPI HTTP server.")
        return 0
    if outcome == "crash":
        sock.close()
        return crashed()

    state = {
        "model": model,
        "served": served,
        "max_model_len": args.max_model_len or int(os.environ.get("VLLM_STANDIN_MODEL_MAX_LEN", "32768")),
        "loras": [{"name": lora.name, "path": lora.path, "base_model_name": lora.base_model_name}
                  for lora in args.lora_modules or []],
        "max_loras": args.max_loras,
        "api_keys": api_keys,
        "created": int(time.time()),
        "access_log": not args.disable_uvicorn_access_log,
        "root_path": args.root_path or "",
    }
    for lora in state["loras"]:
        # init_static_loras: the same load as /v1/load_lora_adapter; one that fails stops the start (ValueError)
        problem = adapter_problem(lora["name"], lora["path"])
        if problem:
            sock.close()
            return _config_error("ValueError: " + problem, '"vllm/entrypoints/openai/serving_models.py", in init_static_loras')
        log("INFO", "serving_models.py:161", "Loaded new LoRA adapter: name '%s', path '%s'"
            % (lora["name"], lora["path"]))
    server = make_server(sock, state, log)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    log("INFO", "api_server.py:1971", "Starting vLLM API server 0 on http://%s:%d"
        % (args.host or "0.0.0.0", args.port))
    sys.stdout.write("INFO:     Started server process [%d]\nINFO:     Waiting for application startup.\n"
                     "INFO:     Application startup complete.\n" % os.getpid())
    sys.stdout.flush()

    outcome = wait_until(None)
    server.shutdown()
    server.server_close()   # no new connection is accepted from here
    if outcome == "stop" and args.shutdown_timeout > 0:
        log("INFO", "core.py:1636", "[shutdown] EngineCore: start mode=drain timeout=%ds" % args.shutdown_timeout)
        if not server.wait_idle(args.shutdown_timeout):
            log("INFO", "core.py:1641", "[shutdown] EngineCore: aborting in-flight requests count=%d" % server.in_flight)
    if outcome == "crash":
        return crashed()
    sys.stdout.write("INFO:     Shutting down\nINFO:     Finished server process [%d]\n" % os.getpid())
    sys.stdout.flush()
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.subparser != "serve":
        parser.print_help()
        return 1 if args.subparser is None else 2
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())

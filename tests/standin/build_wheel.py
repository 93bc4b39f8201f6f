"""Build a stand-in's wheel (tests only) with zipfile.

Usage: python3 tests/standin/build_wheel.py OUTDIR [PACKAGE]   -> prints the wheel's path

PACKAGE: vllm_standin (default; vllm_standin-0.33.0-py3-none-any.whl, the stand-in for vLLM 0.33.0, console
script `vllm`) or nvitop_exporter_standin (nvitop_exporter_standin-1.7.2-py3-none-any.whl, the stand-in for
nvitop-exporter 1.7.2, console script `nvitop-exporter`, serving the real H200 capture bundled as fixture.prom).
The wheel is reproducible (fixed timestamps, sorted entries), so reinstalling an unchanged stand-in does
not look like a change to the roles' idempotence checks.
"""
import base64
import hashlib
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "vllm_standin"
VERSION = "0.33.0"
DIST_INFO = "%s-%s.dist-info" % (PACKAGE, VERSION)
WHEEL_NAME = "%s-%s-py3-none-any.whl" % (PACKAGE, VERSION)
EPOCH = (1980, 1, 1, 0, 0, 0)

METADATA = """Metadata-Version: 2.1
Name: vllm_standin
Version: {version}
Summary: Stand-in for vLLM {version}, tests only: the vllm serve CLI and OpenAI-compatible API shapes, no model.
License: Apache-2.0
Requires-Python: <3.15,>=3.11

vllm_standin is NOT vLLM. It is the test stand-in of the llmops.gce_vllm collection: it parses the
`vllm serve` command line the way vLLM {version} does and answers /health, /v1/models, /metrics and
minimal completions without any GPU or model weights.
""".format(version=VERSION)

WHEEL = """Wheel-Version: 1.0
Generator: llmops-build-wheel (stand-in)
Root-Is-Purelib: true
Tag: py3-none-any
"""

ENTRY_POINTS = """[console_scripts]
vllm = vllm_standin.cli:main
"""


def _record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


GPU_EXPORTER_FIXTURE = os.path.join(HERE, "..", "fixtures", "gpu", "nvitop-exporter-1.7.2-h200-2026-12-02.prom")

# package -> (version, METADATA, entry_points.txt, {file in the package: source path} beyond its *.py files)
PACKAGES = {
    PACKAGE: (VERSION, METADATA, ENTRY_POINTS, {}),
    "nvitop_exporter_standin": ("1.7.2", """Metadata-Version: 2.1
Name: nvitop_exporter_standin
Version: 1.7.2
Summary: Stand-in for nvitop-exporter 1.7.2, tests only: its command line, serving a real H200 capture, no NVML.
License: Apache-2.0
Requires-Python: >=3.8

nvitop_exporter_standin is NOT nvitop-exporter. It is the test stand-in of the llmops.gce_vllm collection for hosts
without an NVIDIA GPU: `nvitop-exporter` with the real flags serving the /metrics body recorded from nvitop-exporter
1.7.2 on an NVIDIA H200.
""", """[console_scripts]
nvitop-exporter = nvitop_exporter_standin.cli:main
""", {"fixture.prom": GPU_EXPORTER_FIXTURE}),
}


def _package_files(package=PACKAGE, extra=None):
    src = os.path.join(HERE, package)
    for name in sorted(os.listdir(src)):
        if name.endswith(".py"):
            with open(os.path.join(src, name), "rb") as handle:
                yield "%s/%s" % (package, name), handle.read()
    for name, source in sorted((extra or {}).items()):
        with open(source, "rb") as handle:
            yield "%s/%s" % (package, name), handle.read()


def build(outdir, package=PACKAGE):
    version, metadata, entry_points, extra = PACKAGES[package]
    dist_info = "%s-%s.dist-info" % (package, version)
    os.makedirs(outdir, exist_ok=True)
    entries = list(_package_files(package, extra))
    entries += [
        ("%s/METADATA" % dist_info, metadata.encode()),
        ("%s/WHEEL" % dist_info, WHEEL.encode()),
        ("%s/entry_points.txt" % dist_info, entry_points.encode()),
        ("%s/top_level.txt" % dist_info, (package + "\n").encode()),
    ]
    record = "".join("%s,%s,%d\n" % (name, _record_hash(data), len(data)) for name, data in entries)
    record += "%s/RECORD,,\n" % dist_info
    entries.append(("%s/RECORD" % dist_info, record.encode()))
    path = os.path.join(outdir, "%s-%s-py3-none-any.whl" % (package, version))
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    os.replace(tmp, path)
    return path


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] not in PACKAGES):
        sys.stderr.write("usage: %s OUTDIR [%s]\n" % (argv[0], "|".join(PACKAGES)))
        return 2
    print(build(*argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

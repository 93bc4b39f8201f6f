"""Build vllm_standin-0.33.0-py3-none-any.whl (the stand-in for vLLM 0.33.0, tests only) with zipfile.

Usage: python3 tests/standin/build_wheel.py OUTDIR   -> prints the wheel's path

The wheel is reproducible (fixed timestamps, sorted entries), so reinstalling an unchanged stand-in does
not look like a change to the roles' idempotence checks. It installs a console script `vllm`.
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


def _package_files():
    src = os.path.join(HERE, PACKAGE)
    for name in sorted(os.listdir(src)):
        if name.endswith(".py"):
            with open(os.path.join(src, name), "rb") as handle:
                yield "%s/%s" % (PACKAGE, name), handle.read()


def build(outdir):
    os.makedirs(outdir, exist_ok=True)
    entries = list(_package_files())
    entries += [
        ("%s/METADATA" % DIST_INFO, METADATA.encode()),
        ("%s/WHEEL" % DIST_INFO, WHEEL.encode()),
        ("%s/entry_points.txt" % DIST_INFO, ENTRY_POINTS.encode()),
        ("%s/top_level.txt" % DIST_INFO, (PACKAGE + "\n").encode()),
    ]
    record = "".join("%s,%s,%d\n" % (name, _record_hash(data), len(data)) for name, data in entries)
    record += "%s/RECORD,,\n" % DIST_INFO
    entries.append(("%s/RECORD" % DIST_INFO, record.encode()))
    path = os.path.join(outdir, WHEEL_NAME)
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
    if len(argv) != 2:
        sys.stderr.write("usage: %s OUTDIR\n" % argv[0])
        return 2
    print(build(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

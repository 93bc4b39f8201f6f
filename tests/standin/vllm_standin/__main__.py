"""python -m vllm_standin == the `vllm` console script of the stand-in (tests only)."""
import sys

from vllm_standin.cli import main

sys.exit(main())

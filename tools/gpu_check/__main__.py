"""python -m tools.gpu_check: see tools/gpu_check/run.py."""

import sys

from tools.gpu_check.run import main

sys.exit(main())

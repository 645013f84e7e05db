"""CNN Internals: paper-faithful CNNs and what their feature maps respond to."""

import sys

from cnn_internals.runtime.cpu_pin import pin_cpu_isa

# Before torch runs a kernel: the CPU kernels' instruction set, so that results are the same
# bytes on every x86-64 machine (runtime/cpu_pin.py says why). Every stage and `python -m` tool
# imports this package before torch. A bad CNN_INTERNALS_CPU_PIN is a user error: one line, exit 2.
try:
    pin_cpu_isa()
except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

"""Dense bf16 tensor-core peaks of common GPUs, from NVIDIA's data sheets (the figures 'with
sparsity' halved), keyed by the device name torch reports: the denominator of model FLOP utilisation."""

from __future__ import annotations

import re

# (pattern on torch.cuda.get_device_name(), label, dense bf16 TFLOP/s). First match wins, so the
# specific names (H100 PCIe, H100 NVL, L40S) come before the general ones (H100, L40).
BF16_PEAKS: list[tuple[str, str, float]] = [
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100 NVL", "H100 NVL", 835.5),
    (r"H100", "H100 SXM", 989.4),  # "NVIDIA H100 80GB HBM3"
    (r"GH200", "GH200", 989.4),
    (r"H200 NVL", "H200 NVL", 835.5),
    (r"H200", "H200 SXM", 989.4),
    (r"B200", "B200", 2250.0),
    (r"A100", "A100", 312.0),  # SXM4 and PCIe, 40 and 80 GB alike
    (r"A800", "A800", 312.0),
    (r"L40S", "L40S", 362.1),
    (r"L40\b", "L40", 181.0),
    (r"\bL4\b", "L4", 121.0),
    (r"\bA10\b", "A10", 125.0),
    (r"A6000", "RTX A6000", 154.8),
    (r"RTX 6000 Ada", "RTX 6000 Ada", 364.2),
    (r"RTX 4090", "GeForce RTX 4090", 165.2),
]


def bf16_peak(device_name: str) -> tuple[str, float] | None:
    """(label, dense bf16 TFLOP/s) of the GPU named `device_name`, or None when it is not in the table."""
    for pattern, label, tflops in BF16_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return label, tflops
    return None

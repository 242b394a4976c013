"""Which ops of each model stay float in its shipped int8 file, and why.

Findings that fix the schemes (measured on this 2-core x86 VM with ai-edge-litert 2.3.0 /
XNNPACK, calibration on real people; see ``models/README.md``):

* XNNPACK's int8 kernels are *slower* than its float kernels on the high-resolution stem
  (128x128 and 64x64 feature maps with 3-64 channels: 3.9 ms int8 vs 2.1 ms float for the first
  five ops of the full landmark model, input quantization included) and only faster from the
  16x16 stage on (16x16: 3.6 vs 3.9 ms, 8x8: 1.9 vs 2.5 ms). The stem is also where the
  detector is most sensitive.
* The landmark models' 4x4/2x2 refinement tail and their 1x1 heads cost almost nothing
  (< 1 ms) but quantizing them alone moves the landmarks by 9 px and the world landmarks by
  130 mm: they stay float.
* The detector's quantization error is spread over the backbone; with the stem and the
  prediction heads float it stays within the IoU bar except for detections within a few
  hundredths of the score threshold.

So each scheme starts from a contiguous *region* in the costly-to-run middle of the network,
everything else float, model inputs and outputs float32; :mod:`models.search` then leaves float
the blocks of the region that would break the fidelity bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.quantize import OpInfo


@dataclass(frozen=True)
class Region:
    """The part of a model where int8 may pay off.

    :mod:`models.search` decides how much of it actually becomes int8.

    Attributes:
        name: Short identifier recorded in the manifest.
        text: What the region is, in words.
        first: Index of the region's first op (in the rewritten float model).
        last: Index of its last op (inclusive).
    """

    name: str
    text: str
    first: int
    last: int


def _spatial(op: OpInfo) -> int:
    return op.shape[1] if len(op.shape) == 4 else 0


def landmark_region(ops: Sequence[OpInfo]) -> Region:
    """The 16x16 and 8x8 stages of a BlazePose landmark model.

    The region starts at the PAD feeding the stride-2 depthwise convolution into 16x16 and ends
    at the last op with an 8x8 output (the 1x1 convolution before the 4x4 refinement tail). The
    128/64/32-px stem, the 4x4/2x2 tail and the heads stay float.

    Args:
        ops: Ops of the rewritten (pruned, folded) float landmark model.
    """
    mid = [o.index for o in ops if _spatial(o) in (16, 8) and o.kind != "PAD"]
    first, last = min(mid), max(mid)
    if first > 0 and ops[first - 1].kind == "PAD":
        first -= 1
    return Region("landmark_16x16_8x8",
                  "the 16x16 and 8x8 stages; the 128/64/32-px stem, the 4x4/2x2 refinement "
                  "tail and the heads are always float", first, last)


def detector_region(ops: Sequence[OpInfo]) -> Region:
    """The detector backbone after its 112x112 stem, up to the last 7x7 op.

    The region starts at the PAD before the first 56x56 op and ends at the last 7x7 op before
    the feature-pyramid upsampling (the first DEPTH_TO_SPACE). The stem, the feature-pyramid
    decoder and the SSD heads stay float.

    Args:
        ops: Ops of the rewritten float detector.
    """
    first = min(o.index for o in ops if _spatial(o) == 56)
    up = min(o.index for o in ops if o.kind == "DEPTH_TO_SPACE")
    last = max(o.index for o in ops if o.index < up and _spatial(o) == 7)
    if first > 0 and ops[first - 1].kind == "PAD":
        first -= 1
    return Region("detector_backbone",
                  "the backbone from the 56x56 to the 7x7 stage; the 112x112 stem, the "
                  "feature-pyramid decoder and the SSD heads are always float", first, last)

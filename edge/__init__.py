"""edge-pose: real-time multi-person 2D + 3D human pose estimation on a CPU.

The pipeline is top-down, after fastpose: an SSD person detector (BlazePose's) at a low rate,
a 2D landmark model on each tracked person's rotated crop, and a 3D lifter; see ``edge.runtime``
for how the models are found and loaded.
"""

__version__ = "0.1.0"

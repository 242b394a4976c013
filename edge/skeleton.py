"""Joint sets: BlazePose's 33 landmarks, a COCO-17 view of them, and the bones between them."""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt


class BlazePose(IntEnum):
    """The 33 body landmarks of BlazePose, in model output order."""

    NOSE = 0
    LEFT_EYE_INNER = 1
    LEFT_EYE = 2
    LEFT_EYE_OUTER = 3
    RIGHT_EYE_INNER = 4
    RIGHT_EYE = 5
    RIGHT_EYE_OUTER = 6
    LEFT_EAR = 7
    RIGHT_EAR = 8
    MOUTH_LEFT = 9
    MOUTH_RIGHT = 10
    LEFT_SHOULDER = 11
    RIGHT_SHOULDER = 12
    LEFT_ELBOW = 13
    RIGHT_ELBOW = 14
    LEFT_WRIST = 15
    RIGHT_WRIST = 16
    LEFT_PINKY = 17
    RIGHT_PINKY = 18
    LEFT_INDEX = 19
    RIGHT_INDEX = 20
    LEFT_THUMB = 21
    RIGHT_THUMB = 22
    LEFT_HIP = 23
    RIGHT_HIP = 24
    LEFT_KNEE = 25
    RIGHT_KNEE = 26
    LEFT_ANKLE = 27
    RIGHT_ANKLE = 28
    LEFT_HEEL = 29
    RIGHT_HEEL = 30
    LEFT_FOOT_INDEX = 31
    RIGHT_FOOT_INDEX = 32


class Coco17(IntEnum):
    """The 17 COCO keypoints, in COCO order."""

    NOSE = 0
    LEFT_EYE = 1
    RIGHT_EYE = 2
    LEFT_EAR = 3
    RIGHT_EAR = 4
    LEFT_SHOULDER = 5
    RIGHT_SHOULDER = 6
    LEFT_ELBOW = 7
    RIGHT_ELBOW = 8
    LEFT_WRIST = 9
    RIGHT_WRIST = 10
    LEFT_HIP = 11
    RIGHT_HIP = 12
    LEFT_KNEE = 13
    RIGHT_KNEE = 14
    LEFT_ANKLE = 15
    RIGHT_ANKLE = 16


#: BlazePose index of each COCO-17 joint (COCO order): every COCO joint is a BlazePose landmark.
COCO17_FROM_BLAZEPOSE: npt.NDArray[np.intp] = np.array(
    [BlazePose[j.name] for j in Coco17], dtype=np.intp)

#: Landmark names, lower case, in BlazePose order (the JSON joint names).
BLAZEPOSE_NAMES: tuple[str, ...] = tuple(j.name.lower() for j in BlazePose)
COCO17_NAMES: tuple[str, ...] = tuple(j.name.lower() for j in Coco17)

_B = BlazePose
#: Bones of the BlazePose body as (parent, child) pairs, for drawing and bone-length checks.
BLAZEPOSE_BONES: tuple[tuple[BlazePose, BlazePose], ...] = (
    (_B.LEFT_SHOULDER, _B.RIGHT_SHOULDER), (_B.LEFT_HIP, _B.RIGHT_HIP),
    (_B.LEFT_SHOULDER, _B.LEFT_HIP), (_B.RIGHT_SHOULDER, _B.RIGHT_HIP),
    (_B.LEFT_SHOULDER, _B.LEFT_ELBOW), (_B.LEFT_ELBOW, _B.LEFT_WRIST),
    (_B.RIGHT_SHOULDER, _B.RIGHT_ELBOW), (_B.RIGHT_ELBOW, _B.RIGHT_WRIST),
    (_B.LEFT_WRIST, _B.LEFT_INDEX), (_B.LEFT_WRIST, _B.LEFT_PINKY), (_B.LEFT_WRIST, _B.LEFT_THUMB),
    (_B.RIGHT_WRIST, _B.RIGHT_INDEX), (_B.RIGHT_WRIST, _B.RIGHT_PINKY),
    (_B.RIGHT_WRIST, _B.RIGHT_THUMB),
    (_B.LEFT_HIP, _B.LEFT_KNEE), (_B.LEFT_KNEE, _B.LEFT_ANKLE),
    (_B.LEFT_ANKLE, _B.LEFT_HEEL), (_B.LEFT_HEEL, _B.LEFT_FOOT_INDEX),
    (_B.LEFT_ANKLE, _B.LEFT_FOOT_INDEX),
    (_B.RIGHT_HIP, _B.RIGHT_KNEE), (_B.RIGHT_KNEE, _B.RIGHT_ANKLE),
    (_B.RIGHT_ANKLE, _B.RIGHT_HEEL), (_B.RIGHT_HEEL, _B.RIGHT_FOOT_INDEX),
    (_B.RIGHT_ANKLE, _B.RIGHT_FOOT_INDEX),
    (_B.NOSE, _B.LEFT_EYE), (_B.NOSE, _B.RIGHT_EYE), (_B.LEFT_EYE, _B.LEFT_EAR),
    (_B.RIGHT_EYE, _B.RIGHT_EAR), (_B.MOUTH_LEFT, _B.MOUTH_RIGHT),
)

#: Left/right swap permutation of the BlazePose landmarks (for mirroring).
BLAZEPOSE_FLIP: npt.NDArray[np.intp] = np.array(
    [BlazePose[j.name.replace("LEFT", "#").replace("RIGHT", "LEFT").replace("#", "RIGHT")]
     for j in BlazePose], dtype=np.intp)

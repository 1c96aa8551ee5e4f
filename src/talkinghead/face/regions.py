"""Named MediaPipe FaceMesh landmark indices (ordered contours) used by motion, render and eval."""
from __future__ import annotations

import numpy as np

# Lips, each contour ordered from the image-left mouth corner to the image-right one.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291, 78, 308)
LIP_MID_UPPER_INNER, LIP_MID_LOWER_INNER = 13, 14

# Eyes ("right" = the subject's right = image left). Lids ordered outer corner -> inner corner.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
# Skin rings above each upper lid (crease, then the next ring up), same order as the lid.
RIGHT_EYE_CREASE = (130, 247, 30, 29, 27, 28, 56, 190, 243)
LEFT_EYE_CREASE = (359, 467, 260, 259, 257, 258, 286, 414, 463)
RIGHT_IRIS = (468, 469, 470, 471, 472)  # centre first
LEFT_IRIS = (473, 474, 475, 476, 477)

RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
CHIN = 152
NOSE_TIP = 1
FOREHEAD = 10


def inner_lip_polygon(pts: np.ndarray) -> np.ndarray:
    """(22, 2) closed inner-lip contour: upper lip left->right then lower lip right->left."""
    return np.concatenate([pts[list(LIPS_INNER_UPPER), :2], pts[list(LIPS_INNER_LOWER[::-1]), :2]])


def eye_centres(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image-left and image-right eye centres (iris centres), (2,) each."""
    return pts[RIGHT_IRIS[0], :2], pts[LEFT_IRIS[0], :2]


def mouth_aperture(pts: np.ndarray) -> float:
    """Inner-lip opening normalised by inter-ocular distance (0 = closed)."""
    up = pts[[81, 13, 311], :2]
    lo = pts[[178, 14, 402], :2]
    iod = float(np.linalg.norm(np.subtract(*eye_centres(pts))))
    return float(np.linalg.norm(lo - up, axis=1).mean() / max(iod, 1e-6))

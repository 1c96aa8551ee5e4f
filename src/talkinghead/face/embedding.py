"""The identity embedding Hallo's image projection consumes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from ..errors import CheckpointError, InputError, UnreadableMediaError, UnsupportedFormatError
from ..types import FaceAnalysis, Portrait
from .regions import NOSE_TIP, eye_centres

EMBED_DIM = 512  # Hallo's ImageProjModel takes clip_embeddings_dim=512
ARCFACE_SIDE = 112  # px, side of the aligned crop ArcFace models take
# The standard ArcFace five-point template in pixels of the 112 x 112 crop: image-left eye,
# image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
MOUTH_LEFT, MOUTH_RIGHT = 61, 291  # outer mouth corners (image left, image right)
ORT_PIN = "onnxruntime==1.31.1"

SAVE_HINT = ("save the 512 numbers of the face embedding with numpy, e.g. `numpy.save('face.npy', emb)` "
             "(InsightFace: emb = face['embedding']), or pass an ArcFace .onnx model instead")
# what to do when an engine that needs the face's identity is given no embedding
EMBEDDING_HINT = ("give the face-embedding file: a 512-value identity embedding (.npy/.npz/.txt/.safetensors) "
                  "or an ArcFace-style .onnx model that computes it (e.g. InsightFace's glintr100.onnx, which "
                  "official Hallo uses; its licence is non-commercial). See README, 'Face embedding'.")


class FaceEmbedder(Protocol):
    """Anything that turns a portrait's face into Hallo's identity vector."""

    def embed(self, portrait: Portrait, face: FaceAnalysis) -> np.ndarray:
        """(512,) float32 identity embedding of `face` in `portrait`."""
        ...


# ---------------------------------------------------------------- precomputed embedding files

def _load_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _load_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        if len(z.files) != 1:
            raise InputError(f"{path} holds {len(z.files)} arrays ({', '.join(z.files) or 'none'}); "
                             "one array of 512 values is needed", SAVE_HINT, field="face_embedding")
        return z[z.files[0]]


def _load_safetensors(path: Path) -> np.ndarray:
    from safetensors.torch import load_file  # torch: numpy cannot hold bf16

    tensors = load_file(str(path))
    if len(tensors) != 1:
        raise InputError(f"{path} holds {len(tensors)} tensors ({', '.join(tensors) or 'none'}); "
                         "one tensor of 512 values is needed", SAVE_HINT, field="face_embedding")
    return next(iter(tensors.values())).float().numpy()


def _load_txt(path: Path) -> np.ndarray:
    return np.array(path.read_text().split(), dtype=np.float64)


_LOADERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".npy": _load_npy, ".npz": _load_npz, ".safetensors": _load_safetensors, ".txt": _load_txt,
}


def _as_embedding(values: np.ndarray, path: Path) -> np.ndarray:
    """Any-shaped array of exactly 512 finite real numbers -> (512,) float32."""
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise InputError(f"{path} holds {values.dtype} values, not numbers", SAVE_HINT, field="face_embedding")
    if values.size != EMBED_DIM:
        raise InputError(f"{path} holds {values.size} values (shape {tuple(values.shape)}); "
                         f"a face embedding has exactly {EMBED_DIM}", SAVE_HINT, field="face_embedding")
    out = values.reshape(EMBED_DIM).astype(np.float32)
    if not np.isfinite(out).all():
        raise InputError(f"{path} contains NaN or infinite values", SAVE_HINT, field="face_embedding")
    return out


class PrecomputedEmbedding:
    """A face embedding computed elsewhere: .npy, .npz (one array), .safetensors (one tensor) or
    .txt (whitespace separated), exactly 512 numbers. Read once, on construction."""

    def __init__(self, path: str | Path):
        path = Path(path)
        loader = _LOADERS.get(path.suffix.lower())
        if loader is None:
            raise UnsupportedFormatError(f"{path} has the unsupported type '{path.suffix or '(none)'}'; "
                                         "use .npy, .npz, .safetensors, .txt or .onnx", SAVE_HINT, field="face_embedding")
        if not path.is_file():
            raise InputError(f"{path} not found (no such file)", "check the path", field="face_embedding")
        try:
            values = loader(path)
        except InputError:
            raise
        except Exception as e:  # corrupt or foreign file: numpy/safetensors/float parsing errors
            raise UnreadableMediaError(f"{path} cannot be read as a face embedding: {e}", SAVE_HINT, field="face_embedding") from e
        self.path = path
        self.embedding = _as_embedding(values, path)  # (512,) float32

    def embed(self, portrait: Portrait, face: FaceAnalysis) -> np.ndarray:
        return self.embedding.copy()


# ---------------------------------------------------------------- ArcFace ONNX model

def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(478, 3) MediaPipe landmarks -> (5, 2) ArcFace keypoints in pixels, template order.

    Eyes are the iris centres (the refined FaceMesh points), i.e. the pupils that the 5-point
    detectors InsightFace pairs with ArcFace are trained to mark.
    """
    left_eye, right_eye = eye_centres(landmarks)
    rest = landmarks[[NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT], :2]
    return np.vstack([left_eye, right_eye, rest]).astype(np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    x' = a x - b y + tx, y' = b x + a y + ty is linear in (a, b, tx, ty); its least-squares
    solution is the same optimum skimage's SimilarityTransform (Umeyama) finds, which InsightFace
    uses. No RANSAC: all five points count.
    """
    n = len(src)
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones(n), np.zeros(n)
    rows = np.vstack([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])  # (2n, 4)
    a, b, tx, ty = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def align_face(portrait: Portrait, face: FaceAnalysis) -> np.ndarray:
    """(112, 112, 3) uint8 RGB crop with the face on the ArcFace template (bilinear, black outside)."""
    if tuple(face.image_size) != tuple(portrait.size):
        raise ValueError(f"face landmarks refer to a {face.image_size} image, the portrait is {portrait.size}")
    m = similarity_transform(five_points(face.landmarks), ARCFACE_TEMPLATE)
    return cv2.warpAffine(portrait.image, m, (ARCFACE_SIDE, ARCFACE_SIDE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def input_normalisation(model_path: Path) -> tuple[float, float]:
    """(mean, std) for the model's 0..255 input, chosen the way InsightFace's ArcFaceONNX does.

    Models converted from MXNet normalise inside the graph (a Sub and a Mul among the first 8
    nodes) and take raw pixels: (0, 1). Everything else, e.g. glintr100.onnx / w600k_r50.onnx
    (PyTorch exports): (127.5, 127.5). Without the `onnx` package the graph cannot be inspected and
    the common (127.5, 127.5) is used.
    """
    try:
        import onnx
    except Exception:  # not installed, or built for another protobuf than the one installed
        return 127.5, 127.5
    try:
        nodes = onnx.load(str(model_path), load_external_data=False).graph.node[:8]
    except Exception:  # onnxruntime loaded it; let it be the judge
        return 127.5, 127.5
    names = [n.name for n in nodes]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


def _fixed(dim: object) -> int | None:
    """An ONNX dimension as an int, None when symbolic (named or unknown)."""
    return dim if isinstance(dim, int) else None


class OnnxFaceEmbedder:
    """An ArcFace-style recognition model the user supplies (e.g. InsightFace's glintr100.onnx,
    which Hallo's face analysis uses, or w600k_r50.onnx), run with onnxruntime on the CPU.

    Like InsightFace: 5-point similarity alignment to 112 x 112, RGB channel order (InsightFace
    reads BGR with cv2 and swaps to RGB in blobFromImages), (x - mean) / std, and the raw,
    unnormalised output: Hallo feeds `face['embedding']`, not `face['normed_embedding']`
    (hallo/datasets/image_processor.py).
    """

    def __init__(self, model_path: str | Path):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise InputError(f"{self.path} not found (no such file)", "check the path", field="face_embedding")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise InputError("running an .onnx face embedding model needs onnxruntime, which is not installed",
                             f"pip install {ORT_PIN}") from e
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise CheckpointError(f"{self.path} is not a loadable ONNX model: {e}") from e
        self.input_name = self._check_io()
        self.mean, self.std = input_normalisation(self.path)

    def _check_io(self) -> str:
        """The input's name, after checking the model maps (N, 3, 112, 112) float to (N, 512)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(f"{self.path}: an ArcFace model has one input and one output, this one has "
                                  f"{len(inputs)} and {len(outputs)}")
        shape_in, shape_out = list(inputs[0].shape), list(outputs[0].shape)
        want = [None, 3, ARCFACE_SIDE, ARCFACE_SIDE]
        if len(shape_in) != 4 or any(w is not None and _fixed(d) not in (None, w) for d, w in zip(shape_in, want)):
            raise CheckpointError(f"{self.path}: input '{inputs[0].name}' has shape {shape_in}, "
                                  f"an ArcFace model takes (N, 3, {ARCFACE_SIDE}, {ARCFACE_SIDE})")
        if inputs[0].type != "tensor(float)":
            raise CheckpointError(f"{self.path}: input '{inputs[0].name}' is {inputs[0].type}, float32 is needed")
        if len(shape_out) != 2 or _fixed(shape_out[1]) not in (None, EMBED_DIM):
            raise CheckpointError(f"{self.path}: output '{outputs[0].name}' has shape {shape_out}, "
                                  f"Hallo needs (N, {EMBED_DIM}) face embeddings")
        return inputs[0].name

    def blob(self, crop: np.ndarray) -> np.ndarray:
        """(112, 112, 3) uint8 RGB -> (1, 3, 112, 112) float32 model input."""
        x = (crop.astype(np.float32) - np.float32(self.mean)) * np.float32(1.0 / self.std)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def embed(self, portrait: Portrait, face: FaceAnalysis) -> np.ndarray:
        out = np.asarray(self.session.run(None, {self.input_name: self.blob(align_face(portrait, face))})[0])
        if out.shape != (1, EMBED_DIM):  # a symbolic width passed the load-time check
            raise CheckpointError(f"{self.path}: output has shape {list(out.shape)}, "
                                  f"Hallo needs (1, {EMBED_DIM}) for one face")
        if not np.isfinite(out).all():
            raise CheckpointError(f"{self.path}: the model produced NaN or infinite values")
        return out[0].astype(np.float32)


def make_embedder(spec: str | Path) -> FaceEmbedder:
    """`.onnx` -> OnnxFaceEmbedder (computes it from the portrait), else a PrecomputedEmbedding file."""
    if Path(spec).suffix.lower() == ".onnx":
        return OnnxFaceEmbedder(spec)
    return PrecomputedEmbedding(spec)

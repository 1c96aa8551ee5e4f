import sys

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage.transform import SimilarityTransform

from talkinghead.errors import CheckpointError, InputError, UnreadableMediaError, UnsupportedFormatError
from talkinghead.face import analyze
from talkinghead.face import embedding as E
from talkinghead.types import FaceAnalysis

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

POOL = 16  # px: the tiny model averages 16 x 16 cells, (3, 7, 7) features of the 112 x 112 crop


def tiny_arcface(path, width=512, side=112, mxnet_names=False):
    """An ArcFace-shaped ONNX model: (N, 3, side, side) -> AveragePool 16 -> Flatten -> MatMul -> (N, width).

    mxnet_names: start with a Sub and a Mul node named like MXNet exports (raw-pixel input)."""
    weight = np.random.default_rng(0).standard_normal((3 * (side // POOL) ** 2, width)).astype(np.float32)
    nodes, inits, first = [], [numpy_helper.from_array(weight, "W")], "x"
    if mxnet_names:
        inits += [numpy_helper.from_array(np.float32([127.5]), "m"), numpy_helper.from_array(np.float32([1 / 128]), "s")]
        nodes += [helper.make_node("Sub", ["x", "m"], ["xs"], name="_minus0"),
                  helper.make_node("Mul", ["xs", "s"], ["xm"], name="_mul0")]
        first = "xm"
    nodes += [helper.make_node("AveragePool", [first], ["p"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]),
              helper.make_node("Flatten", ["p"], ["f"], axis=1),
              helper.make_node("MatMul", ["f", "W"], ["emb"])]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return weight


@pytest.fixture(scope="module")
def astro_face(astronaut):
    return analyze(astronaut)


def dummy_face() -> FaceAnalysis:
    return FaceAnalysis(np.zeros((478, 3), np.float32), (0, 0, 1, 1), (512, 512))


# ---------------------------------------------------------------- alignment

def test_alignment_puts_her_face_on_the_arcface_template(astronaut, astro_face):
    pts = E.five_points(astro_face.landmarks)
    m = E.similarity_transform(pts, E.ARCFACE_TEMPLATE)
    ref = SimilarityTransform.from_estimate(pts, E.ARCFACE_TEMPLATE)  # InsightFace's estimator (Umeyama)
    np.testing.assert_allclose(m, ref.params[:2], atol=1e-9)
    moved = np.c_[pts, np.ones(5)] @ m.T
    err = np.linalg.norm(moved - E.ARCFACE_TEMPLATE, axis=1)  # px in the 112 crop
    assert err[:2].max() < 4 and err.max() < 8  # eyes close; a smile moves the mouth corners a little
    crop = E.align_face(astronaut, astro_face)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert crop[40:100, 30:82].mean() > 60  # a lit face fills the middle, not the black border


def test_alignment_needs_landmarks_of_this_image(astronaut, astro_face):
    small = FaceAnalysis(astro_face.landmarks, astro_face.box, (256, 256))
    with pytest.raises(ValueError, match="256"):
        E.align_face(astronaut, small)


# ---------------------------------------------------------------- ONNX embedder

def embedding_by_hand(image, face, weight, mean=127.5, std=127.5):
    """skimage similarity + cv2 bilinear warp, RGB, (x - mean) / std, 16 x 16 average, matmul."""
    tform = SimilarityTransform.from_estimate(E.five_points(face.landmarks), E.ARCFACE_TEMPLATE)
    crop = cv2.warpAffine(image, tform.params[:2], (112, 112), borderValue=0.0).astype(np.float64)
    x = ((crop - mean) / std).transpose(2, 0, 1)  # (3, 112, 112)
    pooled = x.reshape(3, 7, POOL, 7, POOL).mean(axis=(2, 4))  # (3, 7, 7)
    return pooled.reshape(-1) @ weight  # (512,)


def test_onnx_embedding_equals_the_hand_computation(tmp_path, astronaut, astro_face):
    weight = tiny_arcface(tmp_path / "arc.onnx")
    embedder = E.make_embedder(tmp_path / "arc.onnx")
    assert isinstance(embedder, E.OnnxFaceEmbedder) and (embedder.mean, embedder.std) == (127.5, 127.5)
    emb = embedder.embed(astronaut, astro_face)
    assert emb.shape == (512,) and emb.dtype == np.float32
    want = embedding_by_hand(astronaut.image, astro_face, weight)
    np.testing.assert_allclose(emb, want, atol=2e-4, rtol=0)
    assert np.linalg.norm(emb) > 2  # the raw output, not unit-normalised
    # the check can tell the channel order: BGR input gives another vector
    bgr = embedding_by_hand(np.ascontiguousarray(astronaut.image[..., ::-1]), astro_face, weight)
    assert np.abs(bgr - want).max() > 100 * 2e-4


def test_mxnet_style_models_take_raw_pixels(tmp_path, astronaut, astro_face):
    weight = tiny_arcface(tmp_path / "mx.onnx", mxnet_names=True)
    embedder = E.OnnxFaceEmbedder(tmp_path / "mx.onnx")
    assert (embedder.mean, embedder.std) == (0.0, 1.0)
    want = embedding_by_hand(astronaut.image, astro_face, weight, mean=127.5, std=128.0)  # the graph's own
    np.testing.assert_allclose(embedder.embed(astronaut, astro_face), want, atol=2e-4, rtol=0)


def test_wrong_model_shapes_are_checkpoint_errors(tmp_path, monkeypatch, astronaut, astro_face):
    tiny_arcface(tmp_path / "w256.onnx", width=256)
    with pytest.raises(CheckpointError, match=r"\['N', 256\].*512"):
        E.OnnxFaceEmbedder(tmp_path / "w256.onnx")
    tiny_arcface(tmp_path / "s128.onnx", side=128)
    with pytest.raises(CheckpointError, match=r"\['N', 3, 128, 128\].*112"):
        E.OnnxFaceEmbedder(tmp_path / "s128.onnx")
    # a width only known when run (onnxruntime infers it for this tiny graph, so stand in for run)
    tiny_arcface(tmp_path / "arc.onnx")
    embedder = E.OnnxFaceEmbedder(tmp_path / "arc.onnx")
    monkeypatch.setattr(embedder.session, "run", lambda names, feed: [np.ones((1, 300), np.float32)])
    with pytest.raises(CheckpointError, match="300"):
        embedder.embed(astronaut, astro_face)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx"):
        E.OnnxFaceEmbedder(tmp_path / "junk.onnx")


def test_missing_model_and_missing_onnxruntime_are_input_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not found"):
        E.make_embedder(tmp_path / "nope.onnx")
    tiny_arcface(tmp_path / "arc.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(InputError, match="onnxruntime") as err:
        E.OnnxFaceEmbedder(tmp_path / "arc.onnx")
    assert "pip install onnxruntime==1.31.1" in str(err.value)


# ---------------------------------------------------------------- precomputed files

def _write(path, values):
    ext = path.suffix
    if ext == ".npy":
        np.save(path, values)
    elif ext == ".npz":
        np.savez(path, emb=values)
    elif ext == ".safetensors":
        save_file({"face_emb": torch.from_numpy(values)}, str(path))
    else:
        np.savetxt(path, values.reshape(32, 16))  # rows and columns: any whitespace will do


@pytest.mark.parametrize("ext", [".npy", ".npz", ".safetensors", ".txt"])
def test_precomputed_files_round_trip(tmp_path, ext):
    values = np.random.default_rng(1).standard_normal(512).astype(np.float32) * 20
    path = tmp_path / f"face{ext}"
    _write(path, values.reshape(1, 512) if ext != ".txt" else values)  # (1, 512) as Hallo keeps it
    embedder = E.make_embedder(path)
    assert isinstance(embedder, E.PrecomputedEmbedding)
    out = embedder.embed(None, dummy_face())
    assert out.shape == (512,) and out.dtype == np.float32
    np.testing.assert_allclose(out, values, rtol=1e-6 if ext == ".txt" else 0)


def test_bf16_safetensors(tmp_path):
    values = torch.linspace(-3, 3, 512, dtype=torch.bfloat16)
    save_file({"e": values}, str(tmp_path / "e.safetensors"))
    np.testing.assert_array_equal(E.PrecomputedEmbedding(tmp_path / "e.safetensors").embedding, values.float().numpy())


def test_bad_precomputed_files_are_input_errors(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros(511, np.float32))
    with pytest.raises(InputError, match="511 values") as err:
        E.PrecomputedEmbedding(tmp_path / "short.npy")
    assert "numpy.save('face.npy', emb)" in str(err.value)
    (tmp_path / "short.txt").write_text(" ".join(["0.5"] * 511))
    with pytest.raises(InputError, match="511 values"):
        E.make_embedder(tmp_path / "short.txt")
    bad = np.zeros(512, np.float32)
    bad[7] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InputError, match="NaN"):
        E.PrecomputedEmbedding(tmp_path / "nan.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros(512), b=np.zeros(512))
    with pytest.raises(InputError, match="2 arrays"):
        E.PrecomputedEmbedding(tmp_path / "two.npz")
    (tmp_path / "words.txt").write_text("not numbers")
    with pytest.raises(UnreadableMediaError, match="cannot be read as a face embedding") as err:
        E.PrecomputedEmbedding(tmp_path / "words.txt")
    assert err.value.field == "face_embedding"
    (tmp_path / "face.pt").write_bytes(b"")
    with pytest.raises(UnsupportedFormatError, match="unsupported type '.pt'"):
        E.make_embedder(tmp_path / "face.pt")
    with pytest.raises(InputError, match="not found"):
        E.make_embedder(tmp_path / "absent.npy")

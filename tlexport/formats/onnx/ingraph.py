"""The whole eval preprocessing as ONNX nodes, in front of the float model: the in-graph
preprocessing model (`model.uint8.onnx`, role "baked-preprocess").

Contract (apps and other formats build on it):
    input  `image`          uint8   [H, W, 3]  one decoded RGB image, any H and W
    output `logits`         float32 [1, K]
    output `probabilities`  float32 [1, K]     softmax of the logits
Inside, exactly the steps of `Preprocess.to_array`: the shorter side resized to `resize` (the
longer one `int(resize * long / short)`, as torchvision computes it) with Pillow's antialiased
filter, the centre crop at torchvision's offsets, x / 255, (x - mean) / std, NCHW.

The resize is ONNX Resize-18 with `antialias=1` on the uint8 image, one node per axis: Pillow
resizes in two passes with an 8-bit image between them, and onnxruntime's kernel follows Pillow's
algorithm (22-bit fixed-point weights) when `exclude_outside=1` (Pillow renormalises the weights of
a window cut by the border) and `coordinate_transformation_mode="half_pixel"` (Pillow's pixel
centres); bicubic needs `cubic_coeff_a=-0.5` (Pillow's; ONNX's default is -0.75). Pillow runs the
horizontal pass first, except (Pillow 13) when it shrinks an image more than twice as tall as wide:
then the vertical one; the order changes bicubic results by up to 8 levels, so the graph takes the
order the exporting Pillow takes (`pillow_shrinks_tall_images_vertically_first`). The weights are
computed in float where Pillow's are double, so a pixel may still round the other way, by one
level: docs/deploy.md has the measurement and the tolerance verification derives from it.

Torch-free: only `onnx` is needed to build the graph.
"""

from __future__ import annotations

IMAGE, LOGITS, PROBABILITIES = "image", "logits", "probabilities"
CROP = "tlx_pre_crop"  # uint8 [1, 3, crop, crop]: what Preprocess.crop_uint8 computes, in NCHW
PIXELS = "tlx_pre_pixels"  # float32 [1, 3, crop, crop]: the float model's input
# Preprocess.interpolation -> (Resize mode, extra attributes); nearest is not Pillow's filter
# family (Pillow's NEAREST samples in 16.16 fixed point), so the in-graph model refuses it.
FILTERS = {"bilinear": ("linear", {}), "bicubic": ("cubic", {"cubic_coeff_a": -0.5})}


def unsupported_reason(pre) -> str | None:
    """Why the in-graph preprocessing cannot reproduce `pre` (None when it can)."""
    if pre.interpolation not in FILTERS:
        return (f"the in-graph preprocessing reproduces Pillow's bilinear and bicubic resize only; this run "
                f"resizes with {pre.interpolation}")
    return None


class _Nodes:
    """A small builder: named constants and nodes under one prefix, so nothing collides with the
    float model's own names."""

    def __init__(self):
        self.nodes, self.inits, self._n = [], [], 0

    def const(self, values, dtype="int64", shape=None):
        import numpy as np
        from onnx import numpy_helper

        self._n += 1
        arr = np.asarray(values, dtype=dtype)
        arr = arr.reshape(shape) if shape is not None else arr
        name = f"tlx_pre_c{self._n}"
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type, inputs, out=None, **attrs):
        from onnx import helper

        self._n += 1
        out = out or f"tlx_pre_t{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"tlx_pre_{op_type}_{self._n}", **attrs))
        return out


def _resized_size(b: _Nodes, resize: int):
    """(h, w, new_h, new_w) as int64 [1] tensors, the new size being torchvision's `_compute_resized_output_size` for an
    int size: the shorter side becomes `resize`, the longer `int(resize * long / short)` (integer
    floor division of positive numbers, the same as truncating the exact quotient)."""
    shape = b.op("Shape", [IMAGE])
    h = b.op("Slice", [shape, b.const([0]), b.const([1])])
    w = b.op("Slice", [shape, b.const([1]), b.const([2])])
    one, size = b.const([1]), b.const([resize])
    safe_h, safe_w = b.op("Max", [h, one]), b.op("Max", [w, one])  # an empty image: no division by zero
    w_short = b.op("LessOrEqual", [w, h])
    new_w = b.op("Where", [w_short, size, b.op("Div", [b.op("Mul", [size, w]), safe_h])])
    new_h = b.op("Where", [w_short, b.op("Div", [b.op("Mul", [size, h]), safe_w]), size])
    return h, w, new_h, new_w


def _centre_offset(b: _Nodes, side, crop: int):
    """torchvision's CenterCrop offset: int(round((side - crop) / 2.0)); ONNX Round rounds half
    to even like Python's round."""
    from onnx import TensorProto

    diff = b.op("Cast", [b.op("Sub", [side, b.const([crop])])], to=TensorProto.FLOAT)
    half = b.op("Round", [b.op("Div", [diff, b.const([2.0], "float32")])])
    return b.op("Cast", [half], to=TensorProto.INT64)


def pillow_shrinks_tall_images_vertically_first() -> bool:
    """Whether the installed Pillow shrinks an image more than twice as tall as wide with its
    vertical pass first (Pillow 13 does; older ones always start with the horizontal pass): its
    one-call resize is compared with both two-call orders on a small random image."""
    import numpy as np
    from PIL import Image

    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (61, 20, 3), dtype=np.uint8))
    size = (11, 33)
    whole = np.asarray(im.resize(size, Image.BICUBIC))
    vertical_first = np.asarray(im.resize((20, 33), Image.BICUBIC).resize(size, Image.BICUBIC))
    horizontal_first = np.asarray(im.resize((11, 61), Image.BICUBIC).resize(size, Image.BICUBIC))
    return bool(np.array_equal(whole, vertical_first) and not np.array_equal(whole, horizontal_first))


def _resize(b: _Nodes, pre, size, tall_vertical_first: bool):
    """Two one-axis Resize nodes on uint8 NCHW, in Pillow's order of passes."""
    mode, extra = FILTERS[pre.interpolation]
    h, w, new_h, new_w = size
    if tall_vertical_first:
        first = b.op("And", [b.op("Greater", [h, b.op("Mul", [w, b.const([2])])]), b.op("Less", [new_h, h])])
    else:
        first = b.const([False], "bool")
    mid_h, mid_w = b.op("Where", [first, new_h, h]), b.op("Where", [first, w, new_w])
    x = b.op("Unsqueeze", [b.op("Transpose", [IMAGE], perm=[2, 0, 1]), b.const([0])])
    for hh, ww in ((mid_h, mid_w), (new_h, new_w)):
        sizes = b.op("Concat", [b.const([1, 3]), hh, ww], axis=0)
        x = b.op("Resize", [x, "", "", sizes], mode=mode, antialias=1, exclude_outside=1,
                 coordinate_transformation_mode="half_pixel", **extra)
    return x


def preprocess_nodes(pre, tall_vertical_first: bool, b: _Nodes | None = None) -> _Nodes:
    """Nodes from `image` (uint8 [H, W, 3]) to CROP (uint8 [1, 3, crop, crop]) and PIXELS
    (float32 [1, 3, crop, crop], normalised)."""
    from onnx import TensorProto

    b = b or _Nodes()
    size = _resized_size(b, pre.resize)
    resized = _resize(b, pre, size, tall_vertical_first)
    new_h, new_w = size[2:]
    top, left = _centre_offset(b, new_h, pre.crop), _centre_offset(b, new_w, pre.crop)
    starts = b.op("Concat", [top, left], axis=0)
    ends = b.op("Add", [starts, b.const([pre.crop, pre.crop])])
    b.op("Slice", [resized, starts, ends, b.const([2, 3])], out=CROP)
    # The same float32 operations, in the same order, as Preprocess.normalize.
    x = b.op("Div", [b.op("Cast", [CROP], to=TensorProto.FLOAT), b.const(255.0, "float32")])
    mean = b.const(pre.mean, "float32", (1, 3, 1, 1))
    std = b.const(pre.std, "float32", (1, 3, 1, 1))
    b.op("Div", [b.op("Sub", [x, mean]), std], out=PIXELS)
    return b


def _image_input():
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["height", "width", 3])


def wrap(model_proto, pre, tall_vertical_first: bool):
    """The in-graph preprocessing model: `model_proto` (a float NCHW classifier whose input is
    `image` and output `logits`) behind the preprocessing nodes, with a softmax output.
    `tall_vertical_first`: the order of passes of the Pillow to match (see the module docstring).

    Returns:
        a new onnx.ModelProto (metadata not yet embedded).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    graph = model.graph
    (inner,) = [i.name for i in graph.input]
    for node in graph.node:  # the float model now reads the normalised crop
        node.input[:] = [PIXELS if name == inner else name for name in node.input]
    b = preprocess_nodes(pre, tall_vertical_first)
    b.op("Softmax", [LOGITS], out=PROBABILITIES, axis=1)
    nodes = [*b.nodes[:-1], *graph.node, b.nodes[-1]]
    classes = graph.output[0].type.tensor_type.shape.dim[1].dim_value or "classes"
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, classes]) for n in (LOGITS, PROBABILITIES)]
    new = helper.make_graph(nodes, graph.name or "tlexport", [_image_input()], outputs,
                            initializer=[*b.inits, *graph.initializer])
    del graph.node[:], graph.input[:], graph.output[:], graph.initializer[:], graph.value_info[:]
    graph.CopyFrom(new)
    return onnx.shape_inference.infer_shapes(model)


def preprocess_only(pre, opset: int, tall_vertical_first: bool):
    """`image` -> CROP alone (uint8 [1, 3, crop, crop]): the in-graph resize and crop as a model
    of its own, to measure them against Pillow (verification, docs/deploy.md)."""
    from onnx import TensorProto, helper

    from .graph import min_ir_for_opset

    b = preprocess_nodes(pre, tall_vertical_first)
    out = helper.make_tensor_value_info(CROP, TensorProto.UINT8, [1, 3, pre.crop, pre.crop])
    graph = helper.make_graph(b.nodes, "tlexport_preprocess", [_image_input()], [out], initializer=b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=min_ir_for_opset(opset))

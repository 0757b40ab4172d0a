"""Floating-point operations of one pass of a preset's network, counted once, from its layer list.

Convention (what ``lenet5 bench`` divides by to print GFLOP/s):

- Only the products of inputs with weights count, as 2 FLOPs per multiply-add:
  - a convolution: 2·C_in·k²·C_out·H_out·W_out per image, where C_in·C_out is the number of
    *connected* kernels (LeNet-5's partial C3 in lecun1998: 60 of 6·16 = 96). This is the
    network's useful work; an engine that multiplies by a masked dense kernel does more.
  - a fully connected layer: 2·in·out per image.
  - the RBF output (lecun1998): 2·in·out per image, like a fully connected layer (a subtraction
    and a multiply-add per centre and input).
- Everything elementwise or per-window is left out: biases, activations, pooling, lecun1998's
  trainable subsampling, batch norm, dropout, the loss and the optimizer. At one FLOP per
  element (bias, activation, pooling input) that would add ~20,000 to seed-tanh's forward
  count of 833,040 per image (~2.4%).
- Training = forward + input gradient + weight gradient, each product layer counted on its
  own (no "3×" multiplier):
  - forward: F_l (above);
  - input gradient: F_l as well (the transposed product), except for a layer that does not
    propagate to its input: the first convolution (C1, ``input_grad=False``) — nothing needs
    the gradient of the image;
  - weight gradient: F_l as well (the product of the output gradient with the inputs),
    except for a layer with nothing to train (the RBF's fixed centres).
  So for seed-tanh training = 3·forward − F_C1: 2,263,920 FLOPs per image.

``flops(preset, batch, training)`` is linear in ``batch``; ``layer_flops`` shows the parts.
"""

from __future__ import annotations

import numpy as np

from .layers import Conv2d, Layer, Linear
from .lecun1998 import RBF
from .presets import get_preset

CONVENTION = ("2 FLOPs per multiply-add of convolutions (connected kernels only), fully connected layers and "
              "the RBF output; elementwise ops, pooling, batch norm, loss and optimizer not counted; "
              "training = forward + input gradient (not for C1) + weight gradient (not for fixed RBF centres)")


def _forward_per_image(layer: Layer, out_shape: tuple[int, ...]) -> int:
    """FLOPs of one image through ``layer``, whose output (batch-last) has shape ``out_shape``;
    0 for a layer outside the convention."""
    if isinstance(layer, Conv2d):
        c_out, c_in, k, _ = layer.params["weight"].shape
        kernels = c_out * c_in if layer.mask is None else int(np.count_nonzero(layer.mask))
        _, h_out, w_out, _ = out_shape
        return 2 * kernels * k * k * h_out * w_out
    if isinstance(layer, Linear):
        out_f, in_f = layer.params["weight"].shape
        return 2 * in_f * out_f
    if isinstance(layer, RBF):
        k, f = layer.buffers["centres"].shape
        return 2 * f * k
    return 0


def layer_flops(preset: str) -> list[dict]:
    """Per image, one row per layer that counts: name, forward, input_grad, weight_grad FLOPs."""
    p = get_preset(preset)
    shape: tuple[int, ...] = (1, p.input_size, p.input_size, 1)  # batch-last, one image
    rows = []
    for name, layer in p.build(np.dtype(np.float32)):
        shape = layer.output_shape(shape)
        fwd = _forward_per_image(layer, shape)
        if not fwd:
            continue
        propagates = getattr(layer, "input_grad", True)  # C1 does not: no gradient of the image
        trains = bool(layer.params)  # the RBF's centres are fixed
        rows.append({"layer": name, "forward": fwd, "input_grad": fwd if propagates else 0,
                     "weight_grad": fwd if trains else 0})
    return rows


def flops(preset: str, batch: int, training: bool) -> int:
    """FLOPs of one pass of ``batch`` images: forward only, or a training step (forward, input
    gradients, weight gradients). See the module docstring for what counts."""
    rows = layer_flops(preset)
    per_image = sum(r["forward"] + (r["input_grad"] + r["weight_grad"] if training else 0) for r in rows)
    return per_image * int(batch)

"""LSTM and RNN (Caffe's RecurrentLayer and its unrolled nets) and the LSTMUnit cell.

Bottoms of LSTM / RNN: x (T, N, ...), cont (T, N), an optional static input x_static (N, ...),
and with ``expose_hidden`` the initial states (h0, then c0 for an LSTM; each (1, N, H)). Tops:
the output (T, N, H), then with ``expose_hidden`` the final states in the same order.
Caffe's parameter blobs are those its unrolled net owns, in layer order (lstm_layer.cpp,
rnn_layer.cpp): LSTM W_xc (4H, D), b_c (4H), [W_xc_static (4H, D_static)], W_hc (4H, H);
RNN W_xh (H, D), b_h (H), [W_xh_static (H, D_static)], W_hh (H, H), W_ho (H, H), b_o (H).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from caffe2torch.ir.graph import LayerNode
from caffe2torch.layers._common import count, expect_bottoms
from caffe2torch.layers.registry import Converter, register_converter, shape_error
from caffe2torch.modules.recurrent import LSTM, RNN, LSTMUnit

Shape = tuple[int, ...]


@dataclass(frozen=True)
class _Layout:
    """What RecurrentLayer::LayerSetUp / Reshape read from the bottoms."""

    steps: int
    streams: int
    input_size: int          # count(x, 2): InnerProduct with axis 2
    hidden: int
    static_size: int | None  # count(x_static, 1), or None without a static input
    expose_hidden: bool


class _RecurrentConverter(Converter):
    """Caffe's RecurrentLayer checks and shapes; subclasses give the gate width and states."""

    limits = ("the state Caffe carries from one forward call to the next without "
              "expose_hidden (each call starts from zero, as Caffe's first)")
    gates_per_hidden = 1
    states = ("h",)

    def _layout(self, layer: LayerNode, inputs: Sequence[Shape]) -> _Layout:
        p = layer.param.recurrent_param
        exposed = len(self.states) if p.expose_hidden else 0
        expect_bottoms(layer, inputs, 2 + exposed, 3 + exposed)
        if p.num_output <= 0:
            raise shape_error(layer, f"num_output is {p.num_output}; expected a positive number")
        x, cont = inputs[0], inputs[1]
        if len(x) < 3:  # its InnerProduct has axis 2
            raise shape_error(layer, f"x (bottom 0) has shape {tuple(x)}; expected at least 3 "
                                     "axes (timesteps, streams, features...)")
        steps, streams = x[0], x[1]
        if steps < 1:
            raise shape_error(layer, f"x (bottom 0) has {steps} timesteps; expected at least 1")
        if tuple(cont) != (steps, streams):
            raise shape_error(layer, f"cont (bottom 1) has shape {tuple(cont)}; expected "
                                     f"(timesteps, streams) = {(steps, streams)}")
        static_size = None
        if len(inputs) > 2 + exposed:
            static = inputs[2]
            if len(static) < 2 or static[0] != streams:  # its InnerProduct has axis 1
                raise shape_error(layer, f"x_static (bottom 2) has shape {tuple(static)}; "
                                         f"expected ({streams}, features...): the {streams} "
                                         "streams, then at least 1 axis")
            static_size = count(static, 1)
        state = (1, streams, p.num_output)
        first = len(inputs) - exposed
        for name, shape in zip(self.states[:exposed], inputs[first:], strict=True):
            if tuple(shape) != state:
                raise shape_error(layer, f"initial {name} state (bottom {first}) has shape "
                                         f"{tuple(shape)}; expected {state}")
            first += 1
        return _Layout(steps, streams, count(x, 2), p.num_output, static_size,
                       p.expose_hidden)

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        s = self._layout(layer, inputs)
        tops = 1 + (len(self.states) if s.expose_hidden else 0)
        if len(layer.param.top) != tops:
            raise shape_error(layer, f"has {len(layer.param.top)} top(s); expected {tops} "
                                     f"(expose_hidden is {str(s.expose_hidden).lower()})")
        return [(s.steps, s.streams, s.hidden)] + \
            [(1, s.streams, s.hidden)] * (tops - 1)

    def _weights(self, s: _Layout) -> list[Shape]:
        gates = self.gates_per_hidden * s.hidden
        static = [(gates, s.static_size)] if s.static_size is not None else []
        return [(gates, s.input_size), (gates,), *static, (gates, s.hidden)]

    def flops(self, layer: LayerNode, inputs: Sequence[Shape], outputs: Sequence[Shape]) -> int:
        s = self._layout(layer, inputs)
        gates = self.gates_per_hidden * s.hidden
        per_step = gates * (s.input_size + s.hidden) + self.output_macs(s)
        return s.streams * (s.steps * per_step + gates * (s.static_size or 0))

    def output_macs(self, s: _Layout) -> int:
        """Multiply-accumulates per stream and step after the gates (RNN's W_ho)."""
        return 0


@register_converter
class LSTMConverter(_RecurrentConverter):
    caffe_type = "LSTM"
    gates_per_hidden = 4
    states = ("h", "c")

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        return self._weights(self._layout(layer, inputs))

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> LSTM:
        s = self._layout(layer, inputs)
        return LSTM(s.input_size, s.hidden, s.static_size, s.expose_hidden)


@register_converter
class RNNConverter(_RecurrentConverter):
    caffe_type = "RNN"

    def blob_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        s = self._layout(layer, inputs)
        return [*self._weights(s), (s.hidden, s.hidden), (s.hidden,)]

    def output_macs(self, s: _Layout) -> int:
        return s.hidden * s.hidden

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> RNN:
        s = self._layout(layer, inputs)
        return RNN(s.input_size, s.hidden, s.static_size, s.expose_hidden)


@register_converter
class LSTMUnitConverter(Converter):
    """Bottoms c_prev (1, N, H), gates (1, N, 4H) in the order i, f, o, g, cont (1, N); tops
    c and h, shaped like c_prev (LSTMUnitLayer::Reshape)."""

    caffe_type = "LSTMUnit"

    def output_shapes(self, layer: LayerNode, inputs: Sequence[Shape]) -> list[Shape]:
        expect_bottoms(layer, inputs, 3)
        if len(layer.param.top) != 2:
            raise shape_error(layer, f"has {len(layer.param.top)} top(s); expected 2 (c, h)")
        c_prev, gates, cont = (tuple(s) for s in inputs)
        for i, (shape, axes) in enumerate(((c_prev, 3), (gates, 3), (cont, 2))):
            if len(shape) != axes or shape[0] != 1 or shape[1] != c_prev[1]:
                raise shape_error(layer, f"bottom {i} has shape {shape}; expected {axes} axes "
                                         f"(1, {c_prev[1] if len(c_prev) > 1 else 'N'}, ...)")
        if gates[2] != 4 * c_prev[2]:
            raise shape_error(layer, f"gates (bottom 1) have {gates[2]} channels; expected "
                                     f"4 x {c_prev[2]} (the c_prev channels)")
        return [c_prev, c_prev]

    def build(self, layer: LayerNode, inputs: Sequence[Shape]) -> LSTMUnit:
        return LSTMUnit()

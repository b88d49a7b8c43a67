"""Caffe's recurrent layers (LSTM, RNN) and their cell (LSTMUnit), time-major like Caffe.

Caffe builds LSTM and RNN as an unrolled inner net (``FillUnrolledNet`` in lstm_layer.cpp and
rnn_layer.cpp); these modules compute the same net with a loop over the T timesteps:

- ``x`` is (T, N, ...) and is flattened from axis 2 (an InnerProduct with ``axis: 2``);
- ``cont`` (T, N) flushes the state: ``h_conted_{t-1} = cont_t * h_{t-1}`` (a Scale layer), and
  the LSTM cell's forget gate is exactly 0 where ``cont_t == 0``;
- an optional static input ``x_static`` (N, ...) is flattened from axis 1 and added to every
  timestep's pre-activation (after the recurrent and input terms, as Caffe's Eltwise sums);
- ``expose_hidden`` takes the initial states as extra inputs (h0, then c0 for an LSTM, each
  (1, N, H)) and returns the final states after the output (h_T, then c_T).

Without ``expose_hidden`` the initial states are zero, which is Caffe's first forward pass. Caffe
carries the final state of one ``Forward`` into the next; a stateless module cannot, so a later
Caffe pass matches only where its first ``cont`` row is 0 (the usual start of a sequence).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lstm_unit(c_prev: torch.Tensor, gates: torch.Tensor,
              cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Caffe's LSTMUnit: gates (..., 4H) in the order i, f, o, g; cont (...) per stream.

    ``c = f * c_prev + i * g`` with ``f = 0`` where ``cont == 0`` and ``cont * sigmoid(f')``
    elsewhere; ``h = o * tanh(c)``.
    """
    hidden = c_prev.shape[-1]
    i, f, o, g = gates.split(hidden, dim=-1)
    cont = cont.to(gates.dtype).unsqueeze(-1)
    forget = torch.where(cont == 0, torch.zeros_like(f), cont * torch.sigmoid(f))
    c = forget * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return c, torch.sigmoid(o) * torch.tanh(c)


class LSTMUnit(nn.Module):
    """Caffe's LSTMUnit layer: (c_prev (1, N, H), gates (1, N, 4H), cont (1, N)) -> (c, h)."""

    def forward(self, c_prev: torch.Tensor, gates: torch.Tensor,
                cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return lstm_unit(c_prev, gates, cont)


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(T, N, ...) -> (T, N, D): Caffe's InnerProduct with axis 2 (D = 1 for a 2-D input)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _static_term(x_static: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (1, N, out): the static InnerProduct (axis 1, no bias), one timestep."""
    return F.linear(x_static.reshape(x_static.shape[0], -1), weight).unsqueeze(0)


def _init_weight(*shape: int) -> nn.Parameter:
    weight = nn.Parameter(torch.empty(shape))
    nn.init.uniform_(weight, -shape[-1] ** -0.5, shape[-1] ** -0.5)
    return weight


class _Recurrent(nn.Module):
    """Parameters and input unpacking shared by LSTM and RNN."""

    num_states = 1

    def __init__(self, input_size: int, hidden_size: int, gate_size: int,
                 static_size: int | None, expose_hidden: bool) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.static_size, self.expose_hidden = static_size, expose_hidden
        self.weight_ih = _init_weight(gate_size, input_size)
        self.bias_ih = nn.Parameter(torch.zeros(gate_size))
        self.weight_static = (_init_weight(gate_size, static_size)
                              if static_size is not None else None)
        self.weight_hh = _init_weight(gate_size, hidden_size)

    def extra_repr(self) -> str:
        static = f", static_size={self.static_size}" if self.static_size is not None else ""
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}{static}, "
                f"expose_hidden={self.expose_hidden}")

    def _unpack(self, x: torch.Tensor, extra: tuple[torch.Tensor, ...]):
        """(static term or None, initial states): zeros unless exposed."""
        static = None
        if self.weight_static is not None:
            static = _static_term(extra[0], self.weight_static)
            extra = extra[1:]
        if self.expose_hidden:
            states = list(extra[:self.num_states])
        else:
            zeros = x.new_zeros((1, x.shape[1], self.hidden_size))
            states = [zeros] * self.num_states
        return static, states


class LSTM(_Recurrent):
    """Caffe's LSTM layer: forward(x, cont[, x_static][, h0, c0]) -> h (T, N, H)[, h_T, c_T].

    Caffe's blobs are W_xc, b_c, W_xc_static (with a static input), W_hc: here ``weight_ih``
    (4H, D), ``bias_ih`` (4H), ``weight_static`` (4H, D_static), ``weight_hh`` (4H, H).
    """

    num_states = 2

    def __init__(self, input_size: int, hidden_size: int, static_size: int | None = None,
                 expose_hidden: bool = False) -> None:
        super().__init__(input_size, hidden_size, 4 * hidden_size, static_size, expose_hidden)
        self.caffe_blobs = ("weight_ih", "bias_ih",
                            *(("weight_static",) if static_size is not None else ()),
                            "weight_hh")

    def forward(self, x: torch.Tensor, cont: torch.Tensor, *extra: torch.Tensor):
        static, (h, c) = self._unpack(x, extra)
        x_term = F.linear(_time_major(x), self.weight_ih, self.bias_ih)
        cont = cont.to(x_term.dtype)
        outputs = []
        for t in range(x.shape[0]):
            cont_t = cont[t:t + 1]
            gates = F.linear(h * cont_t.unsqueeze(-1), self.weight_hh) + x_term[t:t + 1]
            if static is not None:
                gates = gates + static
            c, h = lstm_unit(c, gates, cont_t)
            outputs.append(h)
        out = torch.cat(outputs, 0)
        return (out, h, c) if self.expose_hidden else out


class RNN(_Recurrent):
    """Caffe's RNN layer: forward(x, cont[, x_static][, h0]) -> o (T, N, H)[, h_T].

    ``h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static])`` and
    ``o_t = tanh(W_ho h_t + b_o)``. Caffe's blobs are W_xh, b_h, W_xh_static (with a static
    input), W_hh, W_ho, b_o: here ``weight_ih``, ``bias_ih``, ``weight_static``, ``weight_hh``,
    ``weight_ho``, ``bias_ho``.
    """

    def __init__(self, input_size: int, hidden_size: int, static_size: int | None = None,
                 expose_hidden: bool = False) -> None:
        super().__init__(input_size, hidden_size, hidden_size, static_size, expose_hidden)
        self.weight_ho = _init_weight(hidden_size, hidden_size)
        self.bias_ho = nn.Parameter(torch.zeros(hidden_size))
        self.caffe_blobs = ("weight_ih", "bias_ih",
                            *(("weight_static",) if static_size is not None else ()),
                            "weight_hh", "weight_ho", "bias_ho")

    def forward(self, x: torch.Tensor, cont: torch.Tensor, *extra: torch.Tensor):
        static, (h,) = self._unpack(x, extra)
        x_term = F.linear(_time_major(x), self.weight_ih, self.bias_ih)
        cont = cont.to(x_term.dtype)
        outputs = []
        for t in range(x.shape[0]):
            pre = F.linear(h * cont[t:t + 1].unsqueeze(-1), self.weight_hh) + x_term[t:t + 1]
            if static is not None:
                pre = pre + static
            h = torch.tanh(pre)
            outputs.append(torch.tanh(F.linear(h, self.weight_ho, self.bias_ho)))
        out = torch.cat(outputs, 0)
        return (out, h) if self.expose_hidden else out

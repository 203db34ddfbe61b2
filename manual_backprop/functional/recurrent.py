"""Recurrent layers — RNN (tanh or ReLU), LSTM, GRU — one step at a time (the cells) or over a
whole sequence, with backpropagation through time written out.

Every recurrent step sits between two linear maps, and only the step in the middle differs:

    gi = x_t · W_ihᵀ + b_ih        the input's share of every gate
    gh = h_{t−1} · W_hhᵀ + b_hh    the recurrent share
    h_t (, c_t) = step(gi, gh, h_{t−1} (, c_{t−1}))

The step's backward turns ∂C/∂h_t (and ∂C/∂c_t) into δ_i = ∂C/∂gi and δ_h = ∂C/∂gh (the same
except in the GRU); the linear maps then give, summed over the time steps t:

    ∂C/∂x_t = δ_i,t · W_ih       ∂C/∂W_ih = Σ_t δ_i,tᵀ · x_t       ∂C/∂b_ih = Σ_t,n δ_i,t
    ∂C/∂h_{t−1} = δ_h,t · W_hh   ∂C/∂W_hh = Σ_t δ_h,tᵀ · h_{t−1}   ∂C/∂b_hh = Σ_t,n δ_h,t
    (plus any direct path of the step: the GRU's h' = … + z ⊙ h, the LSTM's c' = f ⊙ c + …)

Index letters and sizes: t time step (T), n sample (B, the batch), i input features, h hidden
features (H; P when an LSTM projects h), g gate rows (G·H with G = 1, 4 or 3 gates), ℓ layer (L),
d direction (D = 1, or 2 when bidirectional).

Design: one Function for the whole sequence (:class:`Recurrence`) whose backward is an explicit
loop running backwards in time, rather than one Function per step chained by autograd. The loop is
backpropagation through time as the textbook writes it: ∂C/∂h_t arrives from the output at t and
from step t + 1, and is carried on to step t − 1. And everything torch's modules do around the
cells — slicing time steps, packed sequences whose batch shrinks over time, the reverse direction,
stacking layers, dropout between them, batch_first, unbatched input, the sort order of a
PackedSequence — happens inside that one Function, so the backward graph holds one hand-written
node and no native reshaping or indexing node. The cells (:class:`Cell`) reuse the same step math.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from manual_backprop.errors import LayerInputError, shape
from manual_backprop.functional._function import ManualFunction

# -- the steps: h_t (, c_t) from gi, gh and the previous state ---------------------------------------
# A state is a tuple: (h,) for the RNN and GRU, (h, c) for the LSTM. Each step class states
#   step(gi, gh, state, w_hr)                      → new state, the activations its backward reuses
#   backward(acts, state, grad_new, w_hr)          → δ_i, δ_h, direct ∂C/∂state (None: no direct path),
#                                                    ∂C/∂W_hr (None without a projection)
#   jvp(acts, state, ġi, ġh, state_dot, w_hr, Ẇ_hr) → the new state's tangent


def _sigmoid_slope(pre: Tensor) -> Tensor:
    """σ′(z) = σ(z)·σ(−z): the textbook a(1 − a), written so that a saturated gate (a ≈ 1, where
    1 − a cancels to a few rounding steps or to 0) keeps its small but exact slope."""
    return torch.sigmoid(pre) * torch.sigmoid(-pre)


def _tanh_slope(pre: Tensor) -> Tensor:
    """tanh′(z) = 1 − tanh²(z) = 4·σ(2z)·σ(−2z): the same, without the cancellation once |tanh z| ≈ 1."""
    pre2 = pre + pre  # 2z (a sum, not 2 · z: a Python number costs a conversion per call)
    quarter = torch.sigmoid(pre2) * torch.sigmoid(-pre2)  # σ(2z)σ(−2z)
    half = quarter + quarter
    return half + half  # times 4, exactly


class _ElmanStep:
    """h' = f(z), z = gi + gh, f = tanh or ReLU (Elman's RNN).

    δ = ∂C/∂h' ⊙ f′(z); δ_i = δ_h = δ, and h reaches h' only through W_hh.
    Forward mode: ḣ' = f′(z) ⊙ (ġi + ġh).
    """

    gates = 1
    one_sum = True  # the step reads only z = gi + gh

    @classmethod
    def step(cls, gi, gh, state, w_hr):
        pre = gi if gh is None else gi + gh  # z = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh (gh None: gi holds all of z)
        h_new = cls.f(pre)  # h' = f(z)
        return (h_new,), (pre,)

    @classmethod
    def backward(cls, acts, state, grad_new, w_hr):
        (pre,) = acts
        delta = grad_new[0] * cls.df(pre)  # δ = ∂C/∂h' ⊙ f′(z)
        return delta, delta, (None,), None

    @classmethod
    def jvp(cls, acts, state, tangent_gi, tangent_gh, tangent_state, w_hr, tangent_w_hr):
        (pre,) = acts
        return (cls.df(pre) * (tangent_gi + tangent_gh),)  # ḣ' = f′(z) ⊙ (ġi + ġh)


class TanhRNNStep(_ElmanStep):
    """h' = tanh(gi + gh);  tanh′(z) = 1 − h'² (computed as 4σ(2z)σ(−2z), see :func:`_tanh_slope`)."""

    f = staticmethod(torch.tanh)
    df = staticmethod(_tanh_slope)


class ReLURNNStep(_ElmanStep):
    """h' = max(gi + gh, 0);  relu′(z) = [z > 0]."""

    f = staticmethod(torch.relu)

    @staticmethod
    def df(pre):
        return (pre > 0).to(pre.dtype)  # relu′(z) = [z > 0]


class LSTMStep:
    """LSTM step, gates in torch's order i, f, g, o:

        i, f, g, o = σ, σ, tanh, σ of z = gi + gh
        c' = f ⊙ c + i ⊙ g        m = o ⊙ tanh(c')        h' = m   (h' = m · W_hrᵀ with proj_size)

    Backward, from ∂C/∂h' and ∂C/∂c' (what the next step sent back, ∂C/∂c'_next ⊙ f_next):
        ∂C/∂m = ∂C/∂h'   (with a projection ∂C/∂m = ∂C/∂h' · W_hr, and ∂C/∂W_hr = ∂C/∂h'ᵀ · m)
        ∂C/∂o = ∂C/∂m ⊙ tanh(c')
        ∂C/∂c' (all of it) = ∂C/∂c' + ∂C/∂m ⊙ o ⊙ (1 − tanh²c')
        ∂C/∂i = ∂C/∂c' ⊙ g    ∂C/∂f = ∂C/∂c' ⊙ c    ∂C/∂g = ∂C/∂c' ⊙ i    ∂C/∂c = ∂C/∂c' ⊙ f (direct)
        δ_i = δ_h = [∂C/∂i ⊙ i(1 − i), ∂C/∂f ⊙ f(1 − f), ∂C/∂g ⊙ (1 − g²), ∂C/∂o ⊙ o(1 − o)]
    (each slope a(1 − a), 1 − a² computed from z without cancellation: :func:`_sigmoid_slope`).
    Forward mode: i̇ = i(1 − i)(ġi + ġh)_i, … ;  ċ' = ḟ c + f ċ + i̇ g + i ġ;
                  ṁ = ȯ tanh(c') + o (1 − tanh²c') ċ';  ḣ' = ṁ  (or ṁ W_hrᵀ + m Ẇ_hrᵀ).
    """

    gates = 4
    one_sum = True  # the step reads only z = gi + gh

    @staticmethod
    def step(gi, gh, state, w_hr):
        c = state[1]
        hidden = c.shape[-1]
        pre = gi if gh is None else gi + gh  # z: every gate's pre-activation (gh None: gi holds all of z)
        sigma = torch.sigmoid(pre)  # σ over the whole gate row, one call (its g block goes unused)
        i, f, _, o = sigma.chunk(4, -1)
        g = torch.tanh(pre.narrow(-1, 2 * hidden, hidden))  # g = tanh(z_g)
        c_new = torch.addcmul(f * c, i, g)  # c' = f ⊙ c + i ⊙ g
        tanh_c = torch.tanh(c_new)
        m = o * tanh_c  # m = o ⊙ tanh(c')
        h_new = m if w_hr is None else m @ w_hr.T  # h' = m, or its projection m · W_hrᵀ
        return (h_new, c_new), (pre, sigma, g, c_new, tanh_c, m)

    @staticmethod
    def kept(acts, state):
        """What :meth:`backward_through_time` reads of one step: σ(z), g, c, tanh(c'), h."""
        _, sigma, g, _, tanh_c, _ = acts
        return sigma, g, state[1], tanh_c, state[0]

    @staticmethod
    def _slopes(pre, c_new):
        """σ′ of the gates i, f, o and tanh′ of g and of c', all from one σ(u)σ(−u) (:func:`_sigmoid_slope`)
        with tanh′(z) = 4σ′(2z) (:func:`_tanh_slope`). Returns (σ′(z_i), σ′(z_f), σ′(2z_g), σ′(z_o)) side
        by side, each gate's block where its z is, and σ′(2c'): the two tanh slopes are a quarter of tanh′."""
        z_i, z_f, z_g, z_o = pre.chunk(4, -1)
        u = torch.cat([z_i, z_f, z_g + z_g, z_o, c_new + c_new], -1)  # σ gates at z, tanh ones at 2z
        slope = torch.sigmoid(u) * torch.sigmoid(-u)  # σ′(u) = σ(u)σ(−u), exact where a gate saturates
        return slope.split([pre.shape[-1], c_new.shape[-1]], -1)

    @staticmethod
    def backward(acts, state, grad_new, w_hr):
        pre, sigma, g, c_new, tanh_c, m = acts
        i, f, _, o = sigma.chunk(4, -1)
        slope_gates, slope_c = LSTMStep._slopes(pre, c_new)
        c = state[1]
        grad_h_new, grad_c_new = grad_new
        grad_w_hr = None if w_hr is None else grad_h_new.T @ m  # ∂C/∂W_hr = ∂C/∂h'ᵀ · m
        grad_m = grad_h_new if w_hr is None else grad_h_new @ w_hr  # ∂C/∂m = ∂C/∂h' (· W_hr)
        grad_o = grad_m * tanh_c  # ∂C/∂o = ∂C/∂m ⊙ tanh(c')
        grad_c_new = grad_c_new + grad_m * o * (slope_c * 4)  # + ∂C/∂m ⊙ o ⊙ tanh′(c')
        grad_i = grad_c_new * g  # ∂C/∂i = ∂C/∂c' ⊙ g
        grad_f = grad_c_new * c  # ∂C/∂f = ∂C/∂c' ⊙ c
        grad_g = grad_c_new * i * 4  # ∂C/∂g = ∂C/∂c' ⊙ i (times the 4 of tanh′ = 4σ′(2z))
        grad_c = grad_c_new * f  # ∂C/∂c = ∂C/∂c' ⊙ f: the cell state's direct path back in time
        delta = torch.cat([grad_i, grad_f, grad_g, grad_o], -1) * slope_gates  # δ of each gate: ∂C ⊙ slope
        return delta, delta, (None, grad_c), grad_w_hr

    @staticmethod
    def jvp(acts, state, tangent_gi, tangent_gh, tangent_state, w_hr, tangent_w_hr):
        pre, sigma, g, c_new, tanh_c, m = acts
        i, f, _, o = sigma.chunk(4, -1)
        slope_gates, slope_c = LSTMStep._slopes(pre, c_new)
        c = state[1]
        tangent_c = tangent_state[1]
        t_i, t_f, t_g, t_o = ((tangent_gi + tangent_gh) * slope_gates).chunk(4, -1)  # each gate: ȧ = a′(z) ż
        t_g = t_g * 4  # tanh′ = 4σ′(2z)
        tangent_c_new = t_f * c + f * tangent_c + t_i * g + i * t_g  # ċ' = ḟ c + f ċ + i̇ g + i ġ
        tangent_m = t_o * tanh_c + o * (slope_c * 4) * tangent_c_new  # ṁ = ȯ tanh c' + o tanh′(c') ċ'
        if w_hr is None:
            return tangent_m, tangent_c_new
        return tangent_m @ w_hr.T + m @ tangent_w_hr.T, tangent_c_new  # ḣ' = ṁ W_hrᵀ + m Ẇ_hrᵀ

    @staticmethod
    def backward_through_time(kept, grad_y, carried, w_hh, w_hr, batch_sizes, order, state0=True):
        """One direction's backward from what forward kept (time-major rows of σ(z), g, c, tanh(c'), h
        of every step, :meth:`kept`), without running the steps again. Not differentiable in the saved
        activations, so :class:`Recurrence` takes it only when no second derivative is asked for.

        Every factor that does not depend on the gradient is formed once, for all steps:
            K = [g ⊙ σ′(z_i), c ⊙ σ′(z_f), i ⊙ tanh′(z_g), tanh(c') ⊙ σ′(z_o)]    (σ′ = a(1 − a), tanh′ = 1 − g²)
            ∂m/∂c' = o ⊙ (1 − tanh²c')
        leaving per step, from its last one back to its first:
            ∂C/∂h_t = ∂C/∂y_t + δ_{t+1} · W_hh     ∂C/∂m = ∂C/∂h_t (· W_hr with a projection)
            ∂C/∂c' = ∂C/∂c_t (carried) + ∂C/∂m ⊙ ∂m/∂c'
            δ_t = [∂C/∂c', ∂C/∂c', ∂C/∂c', ∂C/∂m] ⊙ K       ∂C/∂c_{t−1} = ∂C/∂c' ⊙ f
        Returns δ of every step as rows, the carried (∂C/∂h_0, ∂C/∂c_0; ∂C/∂h_0 None unless ``state0``)
        and ∂C/∂W_hr (None without W_hr).
        """
        sigma, g, c, tanh_c, _ = kept
        i, f, _, o = sigma.chunk(4, -1)
        slope = sigma - sigma * sigma  # σ′ = a(1 − a) of every gate row (the g block goes unused)
        slope_i, slope_f, _, slope_o = slope.chunk(4, -1)
        gate_factor = torch.cat([g * slope_i, c * slope_f, i * (1 - g * g), tanh_c * slope_o], -1)  # K
        cell_factor = o * (1 - tanh_c * tanh_c)  # ∂m/∂c' = o ⊙ tanh′(c')
        carried_h, carried_c = carried
        deltas, grads_h = [None] * len(batch_sizes), [None] * len(batch_sizes)
        # each step's rows, as views split off in one call each
        grads_y, cell_factors, gate_factors, fs = (r.split(batch_sizes) for r in (grad_y, cell_factor, gate_factor, f))
        packed = batch_sizes[0] != batch_sizes[-1]  # samples end at different steps (sizes never grow)
        pending = None  # δ of the step just done, not yet multiplied by W_hh
        for t in order:
            n, grad_y_t = batch_sizes[t], grads_y[t]
            if pending is not None and (not packed or pending.shape[0] == n):
                grad_h = torch.addmm(grad_y_t, pending, w_hh)  # ∂C/∂h_t = ∂C/∂y_t + δ_{t+1} · W_hh
            else:  # the first step back, or a packed batch that changed size: go through the full carried rows
                if pending is not None:
                    carried_h = _first_rows_replaced(carried_h, pending @ w_hh)  # δ_{t+1} · W_hh
                grad_h = grad_y_t + _first_rows(carried_h, n)  # ∂C/∂h_t = ∂C/∂y_t + what came back
            grad_m = grad_h if w_hr is None else grad_h @ w_hr  # ∂C/∂m = ∂C/∂h_t (· W_hr)
            carried_c_t = _first_rows(carried_c, n) if packed else carried_c  # ∂C/∂c_t from step t + 1
            grad_c = torch.addcmul(carried_c_t, grad_m, cell_factors[t])  # ∂C/∂c' = ∂C/∂c_t + ∂C/∂m ⊙ ∂m/∂c'
            pending = torch.cat([grad_c, grad_c, grad_c, grad_m], -1) * gate_factors[t]  # δ_t
            grad_c_previous = grad_c * fs[t]  # ∂C/∂c_{t−1} = ∂C/∂c' ⊙ f
            carried_c = _first_rows_replaced(carried_c, grad_c_previous) if packed else grad_c_previous
            deltas[t] = pending
            if w_hr is not None:
                grads_h[t] = grad_h
        if state0:
            carried_h = _first_rows_replaced(carried_h, pending @ w_hh)  # past the first step: ∂C/∂h_0
        else:
            carried_h = None  # h_0 needs no gradient: its last product is not formed
        grad_w_hr = None if w_hr is None else torch.cat(grads_h).T @ (o * tanh_c)  # Σ_t ∂C/∂h_tᵀ · m_t
        return torch.cat(deltas), (carried_h, carried_c), grad_w_hr


class GRUStep:
    """GRU step, torch's formulas, gates in the order r, z, n:

        r = σ(gi_r + gh_r)    z = σ(gi_z + gh_z)    n = tanh(gi_n + r ⊙ gh_n)
        h' = (1 − z) ⊙ n + z ⊙ h

    Backward, from ∂C/∂h':
        ∂C/∂n = ∂C/∂h' ⊙ (1 − z)    ∂C/∂z = ∂C/∂h' ⊙ (h − n)    ∂C/∂h = ∂C/∂h' ⊙ z (direct)
        δ_n = ∂C/∂n ⊙ (1 − n²)      δ_r = δ_n ⊙ gh_n ⊙ r(1 − r)     δ_z = ∂C/∂z ⊙ z(1 − z)
        δ_i = [δ_r, δ_z, δ_n]       δ_h = [δ_r, δ_z, δ_n ⊙ r]   (gh_n reaches n scaled by r)
    (each slope computed from the pre-activation without cancellation: :func:`_sigmoid_slope`).
    Forward mode: ṙ = r(1 − r)(ġi_r + ġh_r),  ż = z(1 − z)(ġi_z + ġh_z),
                  ṅ = (1 − n²)(ġi_n + ṙ ⊙ gh_n + r ⊙ ġh_n),  ḣ' = ṅ + ż ⊙ (h − n) + z ⊙ (ḣ − ṅ).
    """

    gates = 3
    one_sum = False  # n reads gh_n apart from gi_n

    @staticmethod
    def step(gi, gh, state, w_hr):
        (h,) = state
        gi_r, gi_z, gi_n = gi.chunk(3, -1)
        gh_r, gh_z, gh_n = gh.chunk(3, -1)
        pre_r, pre_z = gi_r + gh_r, gi_z + gh_z
        r = torch.sigmoid(pre_r)  # reset gate
        z = torch.sigmoid(pre_z)  # update gate
        pre_n = gi_n + r * gh_n
        n = torch.tanh(pre_n)  # candidate state
        h_new = n + z * (h - n)  # h' = (1 − z) ⊙ n + z ⊙ h
        return (h_new,), (r, z, n, gh_n, pre_r, pre_z, pre_n)

    @staticmethod
    def backward(acts, state, grad_new, w_hr):
        r, z, n, gh_n, pre_r, pre_z, pre_n = acts
        (h,) = state
        (grad_h_new,) = grad_new
        grad_n = grad_h_new * (1 - z)  # ∂C/∂n = ∂C/∂h' ⊙ (1 − z)
        grad_z = grad_h_new * (h - n)  # ∂C/∂z = ∂C/∂h' ⊙ (h − n)
        grad_h = grad_h_new * z  # ∂C/∂h = ∂C/∂h' ⊙ z: h's direct path into h'
        delta_n = grad_n * _tanh_slope(pre_n)  # δ_n = ∂C/∂n ⊙ tanh′
        delta_r = delta_n * gh_n * _sigmoid_slope(pre_r)  # δ_r = δ_n ⊙ gh_n ⊙ σ′
        delta_z = grad_z * _sigmoid_slope(pre_z)  # δ_z = ∂C/∂z ⊙ σ′
        delta_i = torch.cat([delta_r, delta_z, delta_n], -1)  # ∂C/∂gi
        delta_h = torch.cat([delta_r, delta_z, delta_n * r], -1)  # ∂C/∂gh: gh_n is scaled by r
        return delta_i, delta_h, (grad_h,), None

    @staticmethod
    def jvp(acts, state, tangent_gi, tangent_gh, tangent_state, w_hr, tangent_w_hr):
        r, z, n, gh_n, pre_r, pre_z, pre_n = acts
        (h,) = state
        (tangent_h,) = tangent_state
        ti_r, ti_z, ti_n = tangent_gi.chunk(3, -1)
        th_r, th_z, th_n = tangent_gh.chunk(3, -1)
        tangent_r = _sigmoid_slope(pre_r) * (ti_r + th_r)  # ṙ = σ′ ⊙ ż_r
        tangent_z = _sigmoid_slope(pre_z) * (ti_z + th_z)  # ż = σ′ ⊙ ż_z
        tangent_n = _tanh_slope(pre_n) * (ti_n + tangent_r * gh_n + r * th_n)  # ṅ = tanh′ ⊙ (ġi_n + ṙ gh_n + r ġh_n)
        return (tangent_n + tangent_z * (h - n) + z * (tangent_h - tangent_n),)  # ḣ' = ṅ + ż(h − n) + z(ḣ − ṅ)


# -- one step as a Function: the cells -------------------------------------------------------------


def _cell_step(kind, x, state, w_ih, w_hh, b_ih, b_hh):
    gi = F.linear(x, w_ih, b_ih)  # gi = x W_ihᵀ + b_ih
    gh = F.linear(state[0], w_hh, b_hh)  # gh = h W_hhᵀ + b_hh
    return kind.step(gi, gh, state, None)


class Cell(ManualFunction):
    """One step of RNNCell, LSTMCell or GRUCell: gi = x W_ihᵀ + b_ih, gh = h W_hhᵀ + b_hh, then the
    step of ``kind`` (whose docstring has its gates) turns them into h' (and c').

    Backward: the step gives δ_i = ∂C/∂gi, δ_h = ∂C/∂gh and its direct paths; then
        ∂C/∂x = δ_i · W_ih     ∂C/∂W_ih = δ_iᵀ · x     ∂C/∂b_ih = Σ_n δ_i
        ∂C/∂h = δ_h · W_hh (+ direct)    ∂C/∂W_hh = δ_hᵀ · h    ∂C/∂b_hh = Σ_n δ_h
    (LSTM: ∂C/∂c = ∂C/∂c' ⊙ f.)  Index letters: n batch, i input features, h hidden, g gate rows.
    Unbatched input (a 1-D x and h) is one sample: n = 1 inside.
    """

    @staticmethod
    def forward(kind, unbatched, input, h, c, w_ih, w_hh, b_ih, b_hh):
        state = (h,) if c is None else (h, c)
        if unbatched:
            input, state = input.unsqueeze(0), tuple(s.unsqueeze(0) for s in state)  # one sample
        new, _ = _cell_step(kind, input, state, w_ih, w_hh, b_ih, b_hh)
        new = tuple(s.squeeze(0) for s in new) if unbatched else new
        return new if c is not None else new[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.kind, ctx.unbatched = inputs[:2]
        ctx.save_for_backward(*inputs[2:])
        ctx.save_for_forward(*inputs[2:])

    @staticmethod
    def backward(ctx, *grad_new):
        x, h, c, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors
        state = (h,) if c is None else (h, c)
        if ctx.unbatched:
            x, state = x.unsqueeze(0), tuple(s.unsqueeze(0) for s in state)
            grad_new = tuple(g.unsqueeze(0) for g in grad_new)
        _, acts = _cell_step(ctx.kind, x, state, w_ih, w_hh, b_ih, b_hh)  # the gates again, from the inputs
        delta_i, delta_h, direct, _ = ctx.kind.backward(acts, state, grad_new, None)
        needs = ctx.needs_input_grad
        grad_x = delta_i @ w_ih if needs[2] else None  # ∂C/∂x = δ_i · W_ih
        grad_h = delta_h @ w_hh if needs[3] else None  # ∂C/∂h = δ_h · W_hh …
        if grad_h is not None and direct[0] is not None:
            grad_h = grad_h + direct[0]  # … + the step's direct path (GRU: ∂C/∂h' ⊙ z)
        grad_c = direct[1] if c is not None and needs[4] else None  # LSTM: ∂C/∂c = ∂C/∂c' ⊙ f
        if ctx.unbatched:
            grad_x, grad_h, grad_c = (None if g is None else g.squeeze(0) for g in (grad_x, grad_h, grad_c))
        grad_w_ih = delta_i.T @ x if needs[5] else None  # ∂C/∂W_ih = δ_iᵀ · x
        grad_w_hh = delta_h.T @ state[0] if needs[6] else None  # ∂C/∂W_hh = δ_hᵀ · h
        grad_b_ih = delta_i.sum(0) if needs[7] else None  # ∂C/∂b_ih = Σ_n δ_i
        grad_b_hh = delta_h.sum(0) if needs[8] else None  # ∂C/∂b_hh = Σ_n δ_h
        return None, None, grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh

    @staticmethod
    def jvp(ctx, _kind, _unbatched, tangent_x, tangent_h, tangent_c, tangent_w_ih, tangent_w_hh, tangent_b_ih,
            tangent_b_hh):
        x, h, c, w_ih, w_hh, b_ih, b_hh = ctx.saved_tensors
        state = (h,) if c is None else (h, c)
        tangent_state = (_or_zeros(tangent_h, h),) + (() if c is None else (_or_zeros(tangent_c, c),))
        tangent_x = _or_zeros(tangent_x, x)
        if ctx.unbatched:
            x, state = x.unsqueeze(0), tuple(s.unsqueeze(0) for s in state)
            tangent_x, tangent_state = tangent_x.unsqueeze(0), tuple(t.unsqueeze(0) for t in tangent_state)
        _, acts = _cell_step(ctx.kind, x, state, w_ih, w_hh, b_ih, b_hh)
        tangent_gi = _linear_tangent(x, tangent_x, w_ih, tangent_w_ih, tangent_b_ih)  # ġi = ẋ W_ihᵀ + x Ẇ_ihᵀ + ḃ_ih
        tangent_gh = _linear_tangent(state[0], tangent_state[0], w_hh, tangent_w_hh, tangent_b_hh)  # ġh, likewise
        tangent_new = ctx.kind.jvp(acts, state, tangent_gi, tangent_gh, tangent_state, None, None)
        if ctx.unbatched:
            tangent_new = tuple(t.squeeze(0) for t in tangent_new)
        return tangent_new if c is not None else tangent_new[0]


def _or_zeros(tangent: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if tangent is None else tangent


def _linear_tangent(a, tangent_a, weight, tangent_weight, tangent_bias) -> Tensor:
    """The tangent of a · Wᵀ + b:  ȧ · Wᵀ + a · Ẇᵀ + ḃ."""
    tangent = tangent_a @ weight.T
    if tangent_weight is not None:
        tangent = tangent + a @ tangent_weight.T
    if tangent_bias is not None:
        tangent = tangent + tangent_bias
    return tangent


# -- a whole sequence as a Function: backpropagation through time -------------------------------------


class Layout(NamedTuple):
    """How a sequence is laid out; plain numbers, fixed for one call."""

    num_layers: int
    directions: int  # 1, or 2 when bidirectional
    batch_first: bool
    unbatched: bool  # a (T, features) input: one sample
    packed: bool  # a PackedSequence's data: rows already time-major, batch shrinking over time
    batch_sizes: tuple[int, ...]  # samples taking a step at each t (all B unless packed)
    has_biases: bool
    projections: bool  # LSTM proj_size > 0: each layer also has W_hr

    @property
    def per_layer(self) -> int:
        return 2 + 2 * self.has_biases + self.projections


def _weights(layout: Layout, params, layer: int, direction: int):
    """Where W_ih, W_hh, b_ih, b_hh, W_hr of one layer and direction sit in ``params`` (None: absent)."""
    first = (layer * layout.directions + direction) * layout.per_layer
    index = dict(zip(["w_ih", "w_hh"] + ["b_ih", "b_hh"] * layout.has_biases + ["w_hr"] * layout.projections,
                     range(first, first + layout.per_layer)))
    return tuple(index.get(name) for name in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"))


def _pick(params, indices):
    return tuple(None if i is None else params[i] for i in indices)


def _offsets(batch_sizes: tuple[int, ...]) -> list[int]:
    """Row where each time step starts in the time-major rows."""
    offsets, total = [], 0
    for n in batch_sizes:
        offsets.append(total)
        total += n
    return offsets


def _to_rows(x: Tensor, layout: Layout) -> Tensor:
    """The sequence as time-major rows (Σ_t n_t, features): step t is rows offsets[t] … + n_t.
    A permutation of the entries, so its chain rule is the inverse permutation, :func:`_from_rows`."""
    if layout.packed or layout.unbatched:
        return x  # already time-major rows (unbatched: one sample per step)
    if layout.batch_first:
        x = x.transpose(0, 1)  # (B, T, ·) → (T, B, ·)
    return x.reshape(-1, x.shape[-1])


def _from_rows(rows: Tensor, layout: Layout) -> Tensor:
    """Time-major rows back to the caller's layout (the inverse of :func:`_to_rows`)."""
    if layout.packed or layout.unbatched:
        return rows
    x = rows.reshape(len(layout.batch_sizes), layout.batch_sizes[0], rows.shape[-1])
    return x.transpose(0, 1) if layout.batch_first else x


def _states_in(h: Tensor, layout: Layout, sorted_indices: Tensor | None) -> Tensor:
    """(L·D, B, ·) states in the order the rows take (a PackedSequence sorts samples, longest first)."""
    if layout.unbatched:
        return h.unsqueeze(1)
    return h if sorted_indices is None else h.index_select(1, sorted_indices)


def _states_in_adjoint(grad: Tensor, layout: Layout, sorted_indices: Tensor | None) -> Tensor:
    """The chain rule of :func:`_states_in`: ∂C/∂h[:, sorted[j]] = ∂C/∂h_sorted[:, j] (a scatter-add)."""
    if layout.unbatched:
        return grad.squeeze(1)
    return grad if sorted_indices is None else torch.zeros_like(grad).index_add(1, sorted_indices, grad)


def _states_out(h: Tensor, layout: Layout, unsorted_indices: Tensor | None) -> Tensor:
    """Final states back in the caller's order."""
    if layout.unbatched:
        return h.squeeze(1)
    return h if unsorted_indices is None else h.index_select(1, unsorted_indices)


def _states_out_adjoint(grad: Tensor, layout: Layout, unsorted_indices: Tensor | None) -> Tensor:
    """The chain rule of :func:`_states_out`: ∂C/∂h_sorted[:, unsorted[k]] = ∂C/∂h_n[:, k]."""
    if layout.unbatched:
        return grad.unsqueeze(1)
    return grad if unsorted_indices is None else torch.zeros_like(grad).index_add(1, unsorted_indices, grad)


def _time_order(steps: int, direction: int) -> range:
    return range(steps) if direction == 0 else range(steps - 1, -1, -1)


def _first_rows(full: Tensor, n: int) -> Tensor:
    """The first n rows (the samples taking a step; all of them unless packed)."""
    return full if full.shape[0] == n else full[:n]


def _first_rows_replaced(full: Tensor, first: Tensor) -> Tensor:
    """``full`` with its first rows replaced by ``first``: the samples that took this step get their
    new state; the others (a packed sequence that ended, or not yet started in reverse) keep theirs."""
    if first.shape[0] == full.shape[0]:
        return first
    return torch.cat([first, full[first.shape[0]:]])


def _through_time(kind, layout: Layout, x: Tensor, states: list[Tensor], masks, params, keep: bool = False):
    """Run every layer and direction over the rows ``x``; ``states`` are h0 (and c0), (L·D, B, ·).

    Returns the top layer's output rows, the final states (L·D, B, ·), the tape backward and jvp
    read: for each layer its input rows and, per direction, each step's (t, previous state, activations),
    and, with ``keep``, what ``kind.backward_through_time`` reads, as tensors: each layer's input rows
    (but layer 0's, the Function's input) and, per direction, ``kind.kept`` of every step as time-major rows.

    A step that reads only z = gi + gh (``kind.one_sum``) gets both biases in the all-steps product,
    gi = x W_ihᵀ + (b_ih + b_hh), and then z_t = gi_t + h_{t−1} W_hhᵀ is one addmm per step.
    """
    steps = len(layout.batch_sizes)
    finals: list[list[Tensor]] = [[] for _ in states]
    tape, kept = [], []
    for layer in range(layout.num_layers):
        outputs, runs = [], []
        if keep and layer > 0:
            kept.append(x)
        for direction in range(layout.directions):
            w_ih, w_hh, b_ih, b_hh, w_hr = _pick(params, _weights(layout, params, layer, direction))
            if kind.one_sum:
                gi = F.linear(x, w_ih, None if b_ih is None else b_ih + b_hh)  # x W_ihᵀ + b_ih + b_hh, all steps
            else:
                gi = F.linear(x, w_ih, b_ih)  # the input's share of every gate, for all steps at once
            state = tuple(s[layer * layout.directions + direction] for s in states)
            y, run, kept_steps = [None] * steps, [], [None] * steps
            gis, w_hh_t = gi.split(layout.batch_sizes), w_hh.T  # each step's rows of gi (views, one call)
            full = state[0].shape[0]
            for t in _time_order(steps, direction):
                n = layout.batch_sizes[t]
                previous = state if n == full else tuple(s[:n] for s in state)  # the samples taking step t
                if kind.one_sum:  # z = gi_t + h_{t−1} W_hhᵀ
                    new, acts = kind.step(torch.addmm(gis[t], previous[0], w_hh_t), None, previous, w_hr)
                else:
                    gh = F.linear(previous[0], w_hh, b_hh)  # the recurrent share, h_{t−1} W_hhᵀ + b_hh
                    new, acts = kind.step(gis[t], gh, previous, w_hr)
                state = new if n == full else tuple(_first_rows_replaced(s, s_new) for s, s_new in zip(state, new))
                y[t] = new[0]
                run.append((t, previous, acts))
                if keep:
                    kept_steps[t] = kind.kept(acts, previous)
            for final, s in zip(finals, state):
                final.append(s)
            outputs.append(torch.cat(y))
            runs.append(run)
            if keep:
                kept.extend(torch.cat(rows) for rows in zip(*kept_steps))
        tape.append((x, runs))
        out = torch.cat(outputs, -1) if layout.directions > 1 else outputs[0]  # y_t = [h_t forward, h_t reverse]
        x = out * masks[layer] if masks is not None and layer < layout.num_layers - 1 else out  # dropout between layers
    return out, [torch.stack(final) for final in finals], tape, kept


def _fused_lstm_fits(kind, layout: Layout, x: Tensor) -> bool:
    """Whether :func:`_fused_lstm_through_time` may run the forward: an LSTM on whole (unpacked) sequences
    without projections, outside torch.compile, torch.func transforms and autocast (which would each
    see torch's kernel where the steps are written out)."""
    return (kind is LSTMStep and not layout.packed and not layout.projections and x.dtype in _FUSED_DTYPES
            and not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
            and not torch._C._is_any_autocast_enabled())


_FUSED_DTYPES = (torch.float32, torch.float64)


def _fused_lstm_through_time(layout: Layout, x: Tensor, states: list[Tensor], masks, params, keep: bool):
    """What :func:`_through_time` returns for the LSTM (no tape), with the steps run by
    torch's own LSTM kernel (``torch.lstm``, a forward op: one call per layer and direction instead of
    ten small ones per step). Backward then needs the gates of every step, which are a function of the
    outputs the kernel returned, so they are formed again for all steps at once:
        z_t = x_t W_ihᵀ + b_ih + b_hh + h_{t−1} W_hhᵀ      (h_{t−1}: h_0, then the outputs y shifted by one)
        σ(z), g = tanh(z_g)                                  (one call each, over all steps)
    leaving only the cell state's recurrence a loop, one addcmul per step: c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t.
    The reverse direction runs on the time-flipped sequence and is flipped back. Without ``keep``
    (no backward to come) the gates are not formed again.
    """
    steps, batch = len(layout.batch_sizes), layout.batch_sizes[0]
    finals: list[list[Tensor]] = [[], []]
    kept = []
    for layer in range(layout.num_layers):
        if keep and layer > 0:
            kept.append(x)
        outputs = []
        for direction in range(layout.directions):
            at = _weights(layout, params, layer, direction)
            w_ih, w_hh, b_ih, b_hh, _ = _pick(params, at)
            h0, c0 = (s[layer * layout.directions + direction] for s in states)
            x_own = x.view(steps, batch, -1)
            x_own = x_own if direction == 0 else x_own.flip(0)  # the reverse direction reads t = T−1 first
            weights = [p for p in (w_ih, w_hh, b_ih, b_hh) if p is not None]
            y, h_n, c_n = torch.lstm(x_own, (h0[None], c0[None]), weights, layout.has_biases, 1, 0.0, False, False,
                                     False)  # the steps, in torch's kernel
            finals[0].append(h_n[0])
            finals[1].append(c_n[0])
            if not keep:
                outputs.append((y if direction == 0 else y.flip(0)).reshape(steps * batch, -1))
                continue
            h_previous = torch.cat([h0[None], y[:-1]]).view(steps * batch, -1)  # h_{t−1} of every step
            gi = F.linear(x_own.reshape(steps * batch, -1), w_ih, None if b_ih is None else b_ih + b_hh)
            pre = torch.addmm(gi, h_previous, w_hh.T)  # z = x W_ihᵀ + b_ih + b_hh + h_{t−1} W_hhᵀ, all steps
            sigma = torch.sigmoid(pre)  # σ of every gate row (its g block goes unused)
            i, f, _, _ = sigma.chunk(4, -1)
            hidden = c0.shape[-1]
            g = torch.tanh(pre.narrow(-1, 2 * hidden, hidden))  # g = tanh(z_g)
            c, c_all = c0, []
            for f_t, ig_t in zip(f.split(batch), (i * g).split(batch)):
                c_all.append(c)  # c_{t−1}
                c = torch.addcmul(ig_t, f_t, c)  # c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t
            c_previous = torch.cat(c_all)
            tanh_c = torch.tanh(torch.cat([*c_all[1:], c]))  # tanh(c_t)
            rows = [sigma, g, c_previous, tanh_c, h_previous, y.view(steps * batch, -1)]
            if direction:  # back in time order
                rows = [r.view(steps, batch, -1).flip(0).reshape(steps * batch, -1) for r in rows]
            kept.extend(rows[:5])
            outputs.append(rows[5])
        out = torch.cat(outputs, -1) if layout.directions > 1 else outputs[0]  # y_t = [h_t forward, h_t reverse]
        x = out * masks[layer] if masks is not None and layer < layout.num_layers - 1 else out  # dropout between layers
    return out, [torch.stack(final) for final in finals], kept


def _unflatten_kept(x0: Tensor, kept: list[Tensor], layout: Layout):
    """What :func:`_through_time` kept, flat, back in its places: each layer's input rows (layer 0's is
    ``x0``), and per layer and direction the rows of ``kind.kept``."""
    per_direction = (len(kept) - layout.num_layers + 1) // (layout.num_layers * layout.directions)
    xs, rows, at = [x0], [], 0
    for layer in range(layout.num_layers):
        if layer > 0:
            xs.append(kept[at])
            at += 1
        rows.append([kept[at + d * per_direction:at + (d + 1) * per_direction] for d in range(layout.directions)])
        at += layout.directions * per_direction
    return xs, rows


class Recurrence(ManualFunction):
    """A multi-layer, optionally bidirectional RNN / LSTM / GRU over a whole sequence, with
    backpropagation through time written out as a loop that runs backwards in time.

    Forward, layer ℓ by layer, each direction on its own (the reverse one reads t = T−1 down to 0):
        gi_t = x_t W_ihᵀ + b_ih for all t at once;   h_t (, c_t) = step(gi_t, h_{t−1} W_hhᵀ + b_hh, …)
        y_t = [h_t forward, h_t reverse] is layer ℓ + 1's input x_t (times a dropout mask in training).

    Backward, from the top layer down; in each direction from its last step back to its first:
        ∂C/∂h_t = ∂C/∂y_t (this step's output) + what step t + 1 carried back (at the last step: ∂C/∂h_n)
        the step's backward → δ_i,t, δ_h,t, and its direct paths (LSTM: ∂C/∂c_{t−1} = ∂C/∂c_t ⊙ f_t)
        ∂C/∂h_{t−1} = δ_h,t · W_hh (+ direct path), carried on to step t − 1; past t = 0 it is ∂C/∂h_0
    then, with every δ of the direction in hand (one product each, over all steps):
        ∂C/∂x_t += δ_i,t · W_ih   ∂C/∂W_ih = Σ_t δ_i,tᵀ x_t   ∂C/∂W_hh = Σ_t δ_h,tᵀ h_{t−1}
        ∂C/∂b_ih = Σ δ_i          ∂C/∂b_hh = Σ δ_h            (∂C/∂W_hr = Σ_t ∂C/∂h_tᵀ m_t)
    and ∂C/∂x of layer ℓ times its dropout mask is ∂C/∂y of layer ℓ − 1.

    Packed sequences: at step t only the first n_t = batch_sizes[t] samples (sorted longest first)
    take a step; the other rows of the state pass through unchanged, and so do their gradients.
    The caller's layout (batch_first, unbatched, a PackedSequence's sort order) is undone on the way in
    and redone on the way out; those are permutations, whose chain rule is the inverse permutation.
    A step kind with ``backward_through_time`` (the LSTM) has forward keep its activations (``keep``:
    returned as extra, non-differentiable outputs, which the public wrappers drop), and a backward that
    is not asked for second derivatives reads them; every other backward first re-runs the forward
    from the saved inputs to get the gates back (built from the inputs, so second derivatives are
    right). Forward mode runs the same loop forwards with tangents.
    Index letters: t time, n sample, i input features, h hidden features, g gate rows, ℓ layer.
    """

    @staticmethod
    def forward(kind, layout, input, h0, c0, masks, sorted_indices, unsorted_indices, keep, *params):
        states = [_states_in(s, layout, sorted_indices) for s in (h0, c0) if s is not None]
        x = _to_rows(input, layout)
        if _fused_lstm_fits(kind, layout, x):
            out, finals, kept = _fused_lstm_through_time(layout, x, states, masks, params, keep)
        else:
            out, finals, _, kept = _through_time(kind, layout, x, states, masks, params, keep)
        return (_from_rows(out, layout), *[_states_out(s, layout, unsorted_indices) for s in finals], *kept)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.kind, ctx.layout = inputs[:2]
        ctx.outputs = 3 if inputs[4] is not None else 2  # y, h_n (, c_n with a c0); the rest was kept
        ctx.kept = len(output) - ctx.outputs
        ctx.mark_non_differentiable(*output[ctx.outputs:])
        ctx.save_for_backward(*inputs[2:8], *inputs[9:], *output[ctx.outputs:])
        ctx.save_for_forward(*inputs[2:8], *inputs[9:])

    @staticmethod
    def backward(ctx, grad_output, *grad_finals):
        kind, layout = ctx.kind, ctx.layout
        input, h0, c0, masks, sorted_indices, unsorted_indices, *params = ctx.saved_tensors
        params, kept = params[:len(params) - ctx.kept], params[len(params) - ctx.kept:]  # what forward kept last
        grad_finals = grad_finals[:ctx.outputs - 1]  # the kept activations have no gradient
        states = [_states_in(s, layout, sorted_indices) for s in (h0, c0) if s is not None]
        fast = bool(kept) and not torch.is_grad_enabled()  # no second derivative asked for: read what forward kept
        if fast:
            xs, kept = _unflatten_kept(_to_rows(input, layout), kept, layout)
        else:
            _, _, tape, _ = _through_time(kind, layout, _to_rows(input, layout), states, masks, params)  # gates again
        offsets = _offsets(layout.batch_sizes)
        needs = ctx.needs_input_grad[9:]
        grad_params: list[Tensor | None] = [None] * len(params)
        grad_y = _to_rows(grad_output, layout)  # ∂C/∂y_t of the top layer, as time-major rows
        grad_finals = [_states_out_adjoint(g, layout, unsorted_indices) for g in grad_finals]  # ∂C/∂h_n (, ∂C/∂c_n)
        grad_states0: list[list] = [[None] * (layout.num_layers * layout.directions) for _ in states]
        for layer in reversed(range(layout.num_layers)):
            x, runs = (xs[layer], None) if fast else tape[layer]
            grad_x = None
            for direction in range(layout.directions):
                indices = _weights(layout, params, layer, direction)
                w_ih, w_hh, _, _, w_hr = _pick(params, indices)
                grad_y_own = grad_y.chunk(layout.directions, -1)[direction]  # this direction's half of y_t
                carried = [g[layer * layout.directions + direction] for g in grad_finals]  # ∂C/∂h_n to start
                if fast:
                    rows = kept[layer][direction]
                    delta_i, carried, grad_w_hr = kind.backward_through_time(
                        rows, grad_y_own, carried, w_hh, w_hr, layout.batch_sizes,
                        reversed(_time_order(len(layout.batch_sizes), direction)), state0=ctx.needs_input_grad[3])
                    delta_h, h_previous = delta_i, rows[-1]  # δ_h = δ_i; h_{t−1} of every step
                    runs = [[]] * layout.directions  # no step left to take below
                else:
                    delta_i = [None] * len(layout.batch_sizes)
                    delta_h, h_previous, grad_w_hr = [], [], None
                for t, previous, acts in reversed(runs[direction]):
                    n = layout.batch_sizes[t]
                    grad_h = carried[0][:n] + grad_y_own.narrow(0, offsets[t], n)  # ∂C/∂h_t: output at t + step t+1
                    grad_new = (grad_h, *(g[:n] for g in carried[1:]))
                    d_i, d_h, direct, g_w_hr = kind.backward(acts, previous, grad_new, w_hr)
                    grad_previous = [d_h @ w_hh if direct[0] is None else d_h @ w_hh + direct[0],  # ∂C/∂h_{t−1}
                                     *direct[1:]]  # LSTM: ∂C/∂c_{t−1} = ∂C/∂c_t ⊙ f
                    carried = [_first_rows_replaced(g, g_new) for g, g_new in zip(carried, grad_previous)]
                    delta_i[t] = d_i
                    delta_h.append(d_h)
                    h_previous.append(previous[0])
                    if g_w_hr is not None:
                        grad_w_hr = g_w_hr if grad_w_hr is None else grad_w_hr + g_w_hr  # Σ_t ∂C/∂h_tᵀ m_t
                for grad_state0, g in zip(grad_states0, carried):
                    grad_state0[layer * layout.directions + direction] = g  # carried past the first step: ∂C/∂h_0
                if not fast:
                    delta_i, delta_h, h_previous = torch.cat(delta_i), torch.cat(delta_h), torch.cat(h_previous)
                if layer > 0 or ctx.needs_input_grad[2]:
                    grad_x_own = delta_i @ w_ih  # ∂C/∂x_t = δ_i,t · W_ih, every step at once
                    grad_x = grad_x_own if grad_x is None else grad_x + grad_x_own  # both directions read x_t
                w_ih_at, w_hh_at, b_ih_at, b_hh_at, w_hr_at = indices
                if needs[w_ih_at]:
                    grad_params[w_ih_at] = delta_i.T @ x  # ∂C/∂W_ih = Σ_t δ_i,tᵀ · x_t
                if needs[w_hh_at]:
                    grad_params[w_hh_at] = delta_h.T @ h_previous  # ∂C/∂W_hh = Σ_t δ_h,tᵀ · h_{t−1}
                if b_ih_at is not None and needs[b_ih_at]:
                    grad_params[b_ih_at] = delta_i.sum(0)  # ∂C/∂b_ih = Σ_t,n δ_i
                if b_hh_at is not None and needs[b_hh_at]:
                    grad_params[b_hh_at] = delta_h.sum(0)  # ∂C/∂b_hh = Σ_t,n δ_h
                if w_hr_at is not None and needs[w_hr_at]:
                    grad_params[w_hr_at] = grad_w_hr  # ∂C/∂W_hr = Σ_t ∂C/∂h_tᵀ · m_t
            grad_y = grad_x * masks[layer - 1] if layer > 0 and masks is not None else grad_x  # through dropout
        grad_input = None if grad_y is None else _from_rows(grad_y, layout)  # ∂C/∂x of layer 0, caller's layout
        grad_h0, grad_c0 = (_states_in_adjoint(torch.stack(g), layout, sorted_indices) if needed else None
                            for g, needed in zip([*grad_states0, None], ctx.needs_input_grad[3:5]))  # ∂C/∂h_0, ∂C/∂c_0
        return None, None, grad_input, grad_h0, grad_c0, None, None, None, None, *grad_params

    @staticmethod
    def jvp(ctx, _kind, _layout, tangent_input, tangent_h0, tangent_c0, _masks, _sorted, _unsorted, _keep,
            *tangent_params):
        kind, layout = ctx.kind, ctx.layout
        input, h0, c0, masks, sorted_indices, unsorted_indices, *params = ctx.saved_tensors
        states = [_states_in(s, layout, sorted_indices) for s in (h0, c0) if s is not None]
        _, _, tape, _ = _through_time(kind, layout, _to_rows(input, layout), states, masks, params)
        tangent_states = [_states_in(_or_zeros(t, s), layout, sorted_indices)
                          for t, s in ((tangent_h0, h0), (tangent_c0, c0)) if s is not None]
        offsets = _offsets(layout.batch_sizes)
        tangent_x = _to_rows(_or_zeros(tangent_input, input), layout)
        finals: list[list[Tensor]] = [[] for _ in states]
        for layer in range(layout.num_layers):
            x, runs = tape[layer]
            outputs = []
            for direction in range(layout.directions):
                indices = _weights(layout, params, layer, direction)
                w_ih, w_hh, _, _, w_hr = _pick(params, indices)
                t_w_ih, t_w_hh, t_b_ih, t_b_hh, t_w_hr = _pick(tangent_params, indices)
                t_w_hr = None if w_hr is None else _or_zeros(t_w_hr, w_hr)
                tangent_gi = _linear_tangent(x, tangent_x, w_ih, t_w_ih, t_b_ih)  # ġi = ẋ W_ihᵀ + x Ẇ_ihᵀ + ḃ_ih
                tangent_state = tuple(s[layer * layout.directions + direction] for s in tangent_states)
                tangent_y = [None] * len(layout.batch_sizes)
                for t, previous, acts in runs[direction]:
                    n = layout.batch_sizes[t]
                    tangent_previous = tuple(s[:n] for s in tangent_state)
                    tangent_gh = _linear_tangent(previous[0], tangent_previous[0], w_hh, t_w_hh, t_b_hh)  # ġh
                    tangent_new = kind.jvp(acts, previous, tangent_gi.narrow(0, offsets[t], n), tangent_gh,
                                           tangent_previous, w_hr, t_w_hr)
                    tangent_state = tuple(_first_rows_replaced(s, s_new)
                                          for s, s_new in zip(tangent_state, tangent_new))
                    tangent_y[t] = tangent_new[0]
                for final, s in zip(finals, tangent_state):
                    final.append(s)
                outputs.append(torch.cat(tangent_y))
            tangent_out = torch.cat(outputs, -1) if layout.directions > 1 else outputs[0]
            last = layer == layout.num_layers - 1
            tangent_x = tangent_out * masks[layer] if masks is not None and not last else tangent_out
        return (_from_rows(tangent_out, layout),
                *[_states_out(torch.stack(final), layout, unsorted_indices) for final in finals],
                *[None] * ctx.kept)  # the kept activations have no tangent


# -- checks and public entries ---------------------------------------------------------------------

_KINDS = {"rnn_tanh": TanhRNNStep, "rnn_relu": ReLURNNStep, "lstm": LSTMStep, "gru": GRUStep}


def _can_check_dtype() -> bool:
    return not torch._C._is_any_autocast_enabled()  # autocast mixes dtypes on purpose, as in torch


def _check_dtypes(name: str, input: Tensor, tensors) -> None:
    if not input.is_floating_point():
        raise LayerInputError(f"{name}: input must be a floating-point tensor, got {input.dtype}")
    if _can_check_dtype():
        for label, t in tensors:
            if t is not None and t.dtype != input.dtype:
                raise LayerInputError(
                    f"{name}: input dtype ({input.dtype}) does not match {label} dtype ({t.dtype}); "
                    f"convert one: input.to({t.dtype}) or the module/tensors .to({input.dtype})"
                )


def _check_cell(name: str, kind, input: Tensor, states, w_ih, w_hh, b_ih, b_hh) -> None:
    if input.dim() not in (1, 2):
        raise LayerInputError(f"{name}: expected input to be 1-D (features) or 2-D (batch, features), "
                              f"got {input.dim()}-D shape {shape(input)}")
    if w_ih.dim() != 2 or w_hh.dim() != 2:
        raise LayerInputError(f"{name}: w_ih and w_hh must be 2-D, got shapes {shape(w_ih)} and {shape(w_hh)}")
    hidden = w_hh.shape[1]
    rows = kind.gates * hidden  # g: one block of hidden_size rows per gate
    for label, t, expected in [("w_ih", w_ih, (rows, w_ih.shape[1])), ("w_hh", w_hh, (rows, hidden)),
                               ("b_ih", b_ih, (rows,)), ("b_hh", b_hh, (rows,))]:
        if t is not None and shape(t) != expected:
            raise LayerInputError(f"{name}: {label} shape {shape(t)} does not fit hidden_size={hidden} (from w_hh "
                                  f"shape {shape(w_hh)}): expected {expected}, {kind.gates} × hidden_size rows")
    if input.shape[-1] != w_ih.shape[1]:
        raise LayerInputError(f"{name}: input has inconsistent input_size: got {input.shape[-1]} (input shape "
                              f"{shape(input)}), expected {w_ih.shape[1]} (w_ih shape {shape(w_ih)})")
    expected = (*shape(input)[:-1], hidden)
    for label, s in states:
        if shape(s) != expected:
            raise LayerInputError(f"{name}: {label} shape {shape(s)} does not match input shape {shape(input)} "
                                  f"and hidden_size={hidden}: expected {expected}")
    _check_dtypes(name, input, [*states, ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)])


def _cell(name: str, input: Tensor, h: Tensor | None, c: Tensor | None, w_ih, w_hh, b_ih, b_hh, lstm: bool):
    kind = _KINDS[name.removesuffix("_cell")]
    if h is None:  # no state given: zeros, as torch's cells do
        size = (*shape(input)[:-1], w_hh.shape[-1])
        h = torch.zeros(size, dtype=input.dtype, device=input.device)
        c = torch.zeros(size, dtype=input.dtype, device=input.device) if lstm else None
    states = [("hx[0]" if lstm else "hx", h)] + ([("hx[1]", c)] if lstm else [])
    _check_cell(name, kind, input, states, w_ih, w_hh, b_ih, b_hh)
    return Cell.call(kind, input.dim() == 1, input, h, c, w_ih, w_hh, b_ih, b_hh)


def rnn_tanh_cell(input: Tensor, hx: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """Like ``torch.rnn_tanh_cell``: h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh); backward δ = ∂C/∂h' ⊙ (1 − h'²).

    As nn.RNNCell does, also takes an unbatched 1-D input and hx=None (zeros)."""
    return _cell("rnn_tanh_cell", input, hx, None, w_ih, w_hh, b_ih, b_hh, lstm=False)


def rnn_relu_cell(input: Tensor, hx: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """Like ``torch.rnn_relu_cell``: h' = relu(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh); backward δ = ∂C/∂h' ⊙ [h' > 0]."""
    return _cell("rnn_relu_cell", input, hx, None, w_ih, w_hh, b_ih, b_hh, lstm=False)


def gru_cell(input: Tensor, hx: Tensor | None, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    """Like ``torch.gru_cell``; the step and its backward are in :class:`GRUStep`."""
    return _cell("gru_cell", input, hx, None, w_ih, w_hh, b_ih, b_hh, lstm=False)


def lstm_cell(input: Tensor, hx: tuple[Tensor, Tensor] | None, w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Like ``torch.lstm_cell``: returns (h', c'); the step and its backward are in :class:`LSTMStep`."""
    h, c = _state_pair("lstm_cell", hx)
    return _cell("lstm_cell", input, h, c, w_ih, w_hh, b_ih, b_hh, lstm=True)


def _state_pair(name: str, hx) -> tuple[Tensor | None, Tensor | None]:
    if hx is None:
        return None, None
    if isinstance(hx, Tensor) or len(hx) != 2:
        raise LayerInputError(f"{name} expects two hidden states (h, c), got {type(hx).__name__}"
                              + ("" if isinstance(hx, Tensor) else f" of length {len(hx)}"))
    return hx[0], hx[1]


_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _param_name(layer: int, direction: int, slot: int) -> str:
    return f"{_PARAM_NAMES[slot]}_l{layer}{'_reverse' if direction else ''}"


def _check_sequence(name: str, kind, data: Tensor, packed: bool, params, has_biases: bool, num_layers: int,
                    dropout: float, directions: int) -> tuple[bool, int, int]:
    """Checks what can be checked before the states; returns (projections, hidden, hidden_out)."""
    if packed and data.dim() != 2:
        raise LayerInputError(f"{name}: a PackedSequence's data must be 2-D (Σ lengths, features), "
                              f"got shape {shape(data)}")
    if not packed and data.dim() not in (2, 3):
        raise LayerInputError(f"{name}: expected input to be 2-D (seq, features) unbatched or 3-D "
                              f"(seq, batch, features), got {data.dim()}-D shape {shape(data)}")
    if num_layers < 1:
        raise LayerInputError(f"{name}: num_layers must be at least 1, got {num_layers}")
    if not 0 <= dropout <= 1:
        raise LayerInputError(f"{name}: dropout must be in [0, 1], got {dropout}")
    base = 4 if has_biases else 2
    per_layer, extra = divmod(len(params), num_layers * directions)
    projections = kind is LSTMStep and per_layer == base + 1 and extra == 0
    if extra or per_layer != base + projections:
        each = ", ".join(_PARAM_NAMES[:base]) + (" (, weight_hr)" if kind is LSTMStep else "")
        raise LayerInputError(f"{name}: got {len(params)} parameters, expected num_layers·directions·{base} = "
                              f"{num_layers * directions * base} ({each} per layer and direction)")
    w_ih0 = params[0]
    if w_ih0.dim() != 2 or w_ih0.shape[0] % kind.gates:
        raise LayerInputError(f"{name}: weight_ih_l0 shape {shape(w_ih0)} is not "
                              f"({kind.gates}·hidden_size, input_size)")
    hidden = w_ih0.shape[0] // kind.gates
    hidden_out = params[per_layer - 1].shape[0] if projections else hidden
    if data.shape[-1] != w_ih0.shape[1]:
        raise LayerInputError(f"{name}: input has {data.shape[-1]} features (shape {shape(data)}) but weight_ih_l0 "
                              f"shape {shape(w_ih0)} expects input_size={w_ih0.shape[1]}")
    rows = kind.gates * hidden  # g: one block of hidden_size rows per gate
    slots = [0, 1] + [2, 3] * has_biases + [4] * projections  # which of weight_ih, …, weight_hr each layer has
    named = []
    for layer in range(num_layers):
        n_in = w_ih0.shape[1] if layer == 0 else directions * hidden_out  # layer ℓ > 0 reads y of layer ℓ − 1
        wanted = {0: (rows, n_in), 1: (rows, hidden_out), 2: (rows,), 3: (rows,), 4: (hidden_out, hidden)}
        for direction in range(directions):
            first = (layer * directions + direction) * per_layer
            for k, slot in enumerate(slots):
                label, p = _param_name(layer, direction, slot), params[first + k]
                if shape(p) != wanted[slot]:
                    raise LayerInputError(f"{name}: {label} has shape {shape(p)}, expected {wanted[slot]}")
                named.append((label, p))
    _check_dtypes(name, data, named)
    return projections, hidden, hidden_out


def _dropout_masks(rows: int, features: int, dropout: float, train: bool, num_layers: int, like: Tensor):
    """One mask per gap between layers, drawn as torch does on CPU (``empty_like(y).bernoulli_(1 − p)
    / (1 − p)`` on each layer's time-major output, in layer order), so the same seed drops the same
    entries there. p = 1 drops everything and draws nothing, as in torch."""
    if not train or dropout == 0 or num_layers == 1:
        return None
    size = (num_layers - 1, rows, features)
    if dropout == 1:
        return torch.zeros(size, dtype=like.dtype, device=like.device)
    return torch.stack([torch.empty(size[1:], dtype=like.dtype, device=like.device).bernoulli_(1 - dropout)
                        .div_(1 - dropout) for _ in range(num_layers - 1)])


def _sequence(name: str, input, hx, cx, params, has_biases: bool, num_layers: int, dropout: float, train: bool,
              bidirectional: bool, batch_first: bool, lstm: bool):
    kind = _KINDS[name]
    params = list(params)
    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
    else:
        data, batch_sizes, sorted_indices, unsorted_indices = input, None, None, None
    if not isinstance(data, Tensor):
        raise LayerInputError(f"{name}: input must be a Tensor or a PackedSequence, got {type(input).__name__}")
    directions = 2 if bidirectional else 1
    projections, hidden, hidden_out = _check_sequence(name, kind, data, packed, params, has_biases, num_layers,
                                                      float(dropout), directions)
    unbatched = not packed and data.dim() == 2
    if packed:
        steps = tuple(int(n) for n in batch_sizes.tolist())
        if sum(steps) != data.shape[0] or any(a < b for a, b in itertools.pairwise(steps)):
            raise LayerInputError(f"{name}: PackedSequence batch_sizes {list(steps)} must not increase and must add "
                                  f"up to the data's {data.shape[0]} rows")
    else:
        time_dim = 1 if batch_first and not unbatched else 0
        batch = 1 if unbatched else data.shape[1 - time_dim]
        steps = (batch,) * data.shape[time_dim]
    if not steps:
        raise LayerInputError(f"{name}: expected sequence length to be larger than 0, got input shape {shape(data)}")
    batch_shape = () if unbatched else (steps[0],)
    expected = {"hx[0]" if lstm else "hx": (num_layers * directions, *batch_shape, hidden_out),
                "hx[1]": (num_layers * directions, *batch_shape, hidden)}
    states = {}
    for label, s in [("hx[0]" if lstm else "hx", hx), ("hx[1]", cx)][: 1 + lstm]:
        if s is None:  # no state given: zeros, as torch's modules do
            s = torch.zeros(expected[label], dtype=data.dtype, device=data.device)
        elif shape(s) != expected[label]:
            size = "proj_size" if projections and label != "hx[1]" else "hidden_size"
            raise LayerInputError(
                f"{name}: {label} shape {shape(s)} does not match (num_layers·directions, "
                f"{'' if unbatched else 'batch, '}{size}) = {expected[label]} for input shape {shape(data)}")
        states[label] = s
    _check_dtypes(name, data, list(states.items()))
    layout = Layout(num_layers, directions, bool(batch_first), unbatched, packed, steps, bool(has_biases),
                    projections)
    masks = _dropout_masks(sum(steps), directions * hidden_out, float(dropout), train, num_layers, data)
    h0, *c0 = states.values()
    keep = hasattr(kind, "backward_through_time") and torch.is_grad_enabled()  # a backward can read the gates
    outputs = Recurrence.call(kind, layout, data, h0, c0[0] if c0 else None, masks, sorted_indices,
                              unsorted_indices, keep, *params)
    outputs = outputs[:2 + lstm]  # y, h_n (, c_n); the rest is what forward kept for backward
    if packed:
        return (PackedSequence(outputs[0], batch_sizes, sorted_indices, unsorted_indices), *outputs[1:])
    return outputs


def rnn_tanh(input: Tensor | PackedSequence, hx: Tensor | None, params, has_biases: bool, num_layers: int,
             dropout: float, train: bool, bidirectional: bool, batch_first: bool):
    """Like ``torch.rnn_tanh`` in its (input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first) form; the input may be what nn.RNN takes: (T, B, features),
    (B, T, features) with batch_first, unbatched (T, features), or a PackedSequence (the output is
    then one too, and the states are in the caller's batch order); hx=None means zeros.
    Returns (output, h_n); the backward is :class:`Recurrence` with :class:`TanhRNNStep`."""
    return _sequence("rnn_tanh", input, hx, None, params, has_biases, num_layers, dropout, train, bidirectional,
                     batch_first, lstm=False)


def rnn_relu(input: Tensor | PackedSequence, hx: Tensor | None, params, has_biases: bool, num_layers: int,
             dropout: float, train: bool, bidirectional: bool, batch_first: bool):
    """Like ``torch.rnn_relu`` in its (input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first) form; the input may be what nn.RNN takes: (T, B, features),
    (B, T, features) with batch_first, unbatched (T, features), or a PackedSequence (the output is
    then one too, and the states are in the caller's batch order); hx=None means zeros.
    Returns (output, h_n); the backward is :class:`Recurrence` with :class:`ReLURNNStep`."""
    return _sequence("rnn_relu", input, hx, None, params, has_biases, num_layers, dropout, train, bidirectional,
                     batch_first, lstm=False)


def gru(input: Tensor | PackedSequence, hx: Tensor | None, params, has_biases: bool, num_layers: int,
        dropout: float, train: bool, bidirectional: bool, batch_first: bool):
    """Like ``torch.gru`` in its (input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first) form; the input may be what nn.GRU takes: (T, B, features),
    (B, T, features) with batch_first, unbatched (T, features), or a PackedSequence (the output is
    then one too, and the states are in the caller's batch order); hx=None means zeros.
    Returns (output, h_n); the backward is :class:`Recurrence` with :class:`GRUStep`."""
    return _sequence("gru", input, hx, None, params, has_biases, num_layers, dropout, train, bidirectional,
                     batch_first, lstm=False)


def lstm(input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None, params, has_biases: bool,
         num_layers: int, dropout: float, train: bool, bidirectional: bool, batch_first: bool):
    """Like ``torch.lstm`` in its (input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first) form; the input may be what nn.LSTM takes: (T, B, features),
    (B, T, features) with batch_first, unbatched (T, features), or a PackedSequence (the output is
    then one too, and the states are in the caller's batch order); hx=None means zeros.
    Returns (output, h_n, c_n); the backward is :class:`Recurrence` with :class:`LSTMStep`."""
    h0, c0 = _state_pair("lstm", hx)
    return _sequence("lstm", input, h0, c0, params, has_biases, num_layers, dropout, train, bidirectional,
                     batch_first, lstm=True)

"""Dense building blocks shared by every DPA-2 block (deepmd-kit ``MLPLayer``, ``EmbeddingNet``).

Weights are stored as ``[num_in, num_out]`` matrices (``y = x @ weight + bias``), the orientation
deepmd-kit uses, so that its checkpoints copy over without transposes. Initialisation follows
deepmd-kit's defaults: weights ~ N(0, 1/(num_in + num_out)), biases ~ N(0, 1), timestep vectors
~ N(0.1, 0.001); the bridge uses Xavier-uniform ("glorot").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lamforge.nn.aggregate_kernel import gather_outer_sum
from lamforge.nn.contraction import tanh_contract, tanh_contract_ragged

# Tensors with fewer elements use autograd's derivatives (tanh_backward's, the contraction's): there
# the Python overhead of a hand-written Function outweighs the memory it saves.
HAND_DERIVATIVE_MIN_SIZE = 1 << 14


def is_small(x: torch.Tensor, limit: int) -> bool:
    """Whether ``x`` has fewer than ``limit`` elements.

    Never for a symbolic size: export traces one branch for every size, taking no size guard.
    """
    size = x.numel()
    return isinstance(size, int) and size < limit


class _SigmoidTanh(torch.autograd.Function):
    """tanh(x) = 2·sigmoid(2x) - 1, with tanh's own backward (twice differentiable).

    On CPU PyTorch's float64 ``tanh`` takes about 3x as long as this form (its ``sigmoid`` is
    vectorised, its ``tanh`` much less so), and tanh of the embedding nets' pair and triplet
    tensors is a large share of a DPA-2 evaluation. The two agree to a few 1e-16 in absolute
    value (the form loses relative accuracy only where tanh(x) ≈ x is itself tiny).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        # One fresh tensor (2x), the rest in place: large fresh tensors cost page faults.
        y = (2.0 * x).sigmoid_().mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (y,) = ctx.saved_tensors
        if not torch.is_grad_enabled() or is_small(y, HAND_DERIVATIVE_MIN_SIZE):
            # Nothing recorded (no create_graph), or small tensors: the plain operation.
            return torch.ops.aten.tanh_backward(grad, y)
        return _TanhGradient.apply(grad, y)


class _TanhGradient(torch.autograd.Function):
    """aten's ``tanh_backward``, grad · (1 - y²), with a leaner derivative of its own.

    autograd's derivative of ``tanh_backward`` builds ∂/∂y = gg · (-2 · y · grad) from three
    fresh tensors; training on forces runs it on every tanh of the model (the pair and triplet
    tensors are the largest). Here it is one fresh tensor and two in-place products when no
    higher derivative is being recorded; with ``create_graph`` (a third derivative, e.g. the
    distillation's Hessian-vector products) the same formula runs as ordinary tensor operations.
    """

    @staticmethod
    def forward(ctx, grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(grad, y)
        return torch.ops.aten.tanh_backward(grad, y)

    @staticmethod
    def backward(ctx, upstream: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        grad, y = ctx.saved_tensors
        grad_grad = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_grad = _TanhGradient.apply(upstream, y)
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():
                grad_y = upstream * grad * y * -2.0
            else:
                grad_y = torch.mul(upstream, grad).mul_(y).mul_(-2.0)
        return grad_grad, grad_y


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh``, computed through the sigmoid on CPU (see :class:`_SigmoidTanh`)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return torch.tanh(x)
    return _SigmoidTanh.apply(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (deepmd-kit's ``gelu`` and ``gelu_tf``)."""
    return torch.nn.functional.gelu(x, approximate="tanh")


# deepmd-kit's activation names (``deepmd/pt/utils/utils.py``, ``ActivationFn``), same functions.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": tanh,
    "relu": torch.relu,
    "relu6": torch.nn.functional.relu6,
    "softplus": torch.nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "silu": torch.nn.functional.silu,
    "gelu": gelu,
    "gelu_tf": gelu,
    "linear": lambda x: x,
    "none": lambda x: x,
}

# ``silut`` / ``custom_silu``, optionally ``:threshold`` (default 3): SiLU below the threshold, a
# tanh continuing it with the same value and slope above (deepmd-kit's SiLUT).
_SILUT_PREFIXES = ("silut", "custom_silu")


def silut_parameters(name: str) -> tuple[float, float, float] | None:
    """(threshold, slope, offset) of a ``silut[:t]`` / ``custom_silu[:t]`` name, else None."""
    lowered = name.lower()
    prefix = next((p for p in _SILUT_PREFIXES if lowered.startswith(p)), None)
    if prefix is None:
        return None
    rest = lowered[len(prefix) :]
    if rest and not rest.startswith(":"):
        return None
    try:
        threshold = float(rest[1:]) if rest else 3.0
    except ValueError:
        return None
    sigmoid = 1.0 / (1.0 + math.exp(-threshold))
    return threshold, sigmoid + threshold * sigmoid * (1.0 - sigmoid), threshold * sigmoid


def is_activation(name: str) -> bool:
    """Whether ``name`` is an activation lamforge has (:data:`ACTIVATIONS` or ``silut[:t]``)."""
    return name.lower() in ACTIVATIONS or silut_parameters(name) is not None


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name`` (one of :data:`ACTIVATIONS`, or ``silut[:threshold]``)."""
    parameters = silut_parameters(name)
    if parameters is not None:
        threshold, slope, offset = parameters

        def silut(x: torch.Tensor) -> torch.Tensor:
            above = torch.tanh(slope * (x - threshold)) + offset
            return torch.where(x >= threshold, above, torch.nn.functional.silu(x))

        return silut
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unsupported activation {name!r}; choose one of {sorted(ACTIVATIONS)} or "
            "silut[:threshold]"
        ) from None


class DenseLayer(nn.Module):
    """``y = act(x @ weight + bias)``, optionally ``* timestep`` and with an identity skip.

    The skip (``resnet``) adds ``x`` when ``num_out == num_in`` and ``[x, x]`` when
    ``num_out == 2 * num_in`` (deepmd-kit's doubling skip), and nothing otherwise. The timestep
    vector exists only where such a skip exists, as in deepmd-kit.

    Attributes:
        weight: [num_in, num_out].
        bias: [num_out] or None.
        timestep: [num_out] or None (deepmd-kit ``idt``).
    """

    def __init__(
        self,
        num_in: int,
        num_out: int,
        *,
        bias: bool = True,
        activation: str = "linear",
        resnet: bool = False,
        use_timestep: bool = False,
        init: str = "default",
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_in = num_in
        self.num_out = num_out
        self.activation_name = activation
        self.activation = activation_function(activation)
        self.resnet = resnet
        has_skip = num_out in (num_in, 2 * num_in)
        self.weight = nn.Parameter(torch.empty(num_in, num_out, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(num_out, dtype=dtype)) if bias else None
        self.timestep = (
            nn.Parameter(torch.empty(num_out, dtype=dtype)) if use_timestep and has_skip else None
        )
        self._initialise(init, generator)

    @torch.no_grad()
    def _initialise(self, init: str, generator: torch.Generator | None) -> None:
        if init == "default":
            std = 1.0 / math.sqrt(self.num_in + self.num_out)
            self.weight.normal_(0.0, std, generator=generator)
        elif init == "glorot":
            bound = math.sqrt(6.0 / (self.num_in + self.num_out))
            self.weight.uniform_(-bound, bound, generator=generator)
        else:
            raise ValueError(f"unknown initialisation {init!r} (default or glorot)")
        if self.bias is not None:
            self.bias.normal_(0.0, 1.0, generator=generator)
        if self.timestep is not None:
            self.timestep.normal_(0.1, 0.001, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Args:
            x: [..., num_in].

        Returns:
            [..., num_out].
        """
        y = torch.nn.functional.linear(x, self.weight.t(), self.bias)
        return self.finish(y, x)

    @property
    def has_skip(self) -> bool:
        """Whether the layer adds its input (so the input must exist as a tensor)."""
        return self.resnet and self.num_out in (self.num_in, 2 * self.num_in)

    def finish(self, y: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Activation, timestep and skip applied to the pre-activation ``y = x @ weight + bias``.

        ``x`` may be None when the layer has no skip; blocks whose input is a concatenation use
        this to compute ``y`` block by block without materialising ``x``.
        """
        y = self.activation(y)
        if self.timestep is not None:
            y = y * self.timestep
        if self.has_skip:
            assert x is not None
            y = y + x if self.num_out == self.num_in else y + torch.cat([x, x], dim=-1)
        return y

    def contract(
        self, left: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``left @ self(x)`` without materialising the skip-added output.

        ``left @ (a + [x, x]) = left @ a + [left @ x, left @ x]``: the skip is applied to the
        small contracted tensor instead of the large per-pair one (and so is its backward).

        Args:
            left: [..., M, K]; ragged (``offsets`` given): [P, M], the rows of Lᵀ.
            x: [..., num_in] with K · (leading size of ``left``) rows, in ``left``'s order
                (ragged: [P, num_in]).
            offsets: None, or [B + 1] int64: item b's rows are ``offsets[b]:offsets[b + 1]``.

        Returns:
            [..., M, num_out] (ragged: [B, M, num_out]).
        """
        if offsets is None:
            x = x.reshape(*left.shape[:-2], left.shape[-1], self.num_in)
        if (
            self.activation_name == "tanh"
            and self.timestep is None
            and x.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and not is_small(x, HAND_DERIVATIVE_MIN_SIZE)
        ):
            # Derivatives by hand, far fewer fresh pair-sized tensors (lamforge.nn.contraction).
            pre = torch.nn.functional.linear(x, self.weight.t(), self.bias)
            skip = x if self.has_skip else None
            if offsets is not None:
                return tanh_contract_ragged(left, pre, skip, offsets)
            return tanh_contract(left, pre, skip)
        activated = self.activation(torch.nn.functional.linear(x, self.weight.t(), self.bias))
        if self.timestep is not None:
            activated = activated * self.timestep
        if offsets is not None:
            out = gather_outer_sum(left, activated, None, offsets)
            skip = gather_outer_sum(left, x, None, offsets) if self.has_skip else None
        else:
            out = torch.matmul(left, activated)
            skip = torch.matmul(left, x) if self.has_skip else None
        if skip is not None:
            out = out + (skip if self.num_out == self.num_in else torch.cat([skip, skip], dim=-1))
        return out

    def segment_sum(
        self,
        coefficients: torch.Tensor,
        x: torch.Tensor,
        segments: torch.Tensor,
        num_segments: int,
    ) -> torch.Tensor:
        """``out[s] = Σ_{r: segments[r] = s} coefficients[r] · self(x[r])``, skip on the sums.

        The ragged counterpart of :meth:`contract` (rows of different centres in one list).

        Args:
            coefficients: [rows].
            x: [rows, num_in].
            segments: [rows] int64 segment of each row.
            num_segments: number of segments.

        Returns:
            [num_segments, num_out].
        """
        activated = self.activation(torch.nn.functional.linear(x, self.weight.t(), self.bias))
        if self.timestep is not None:
            activated = activated * self.timestep
        weight = coefficients.unsqueeze(-1)
        out = activated.new_zeros(num_segments, self.num_out)
        out = out.index_add(0, segments, weight * activated)
        if self.has_skip:
            skip = x.new_zeros(num_segments, self.num_in).index_add(0, segments, weight * x)
            out = out + (skip if self.num_out == self.num_in else torch.cat([skip, skip], dim=-1))
        return out


class EmbeddingNet(nn.Module):
    """A stack of ``DenseLayer(activation, resnet=True, use_timestep=resnet_dt)``.

    deepmd-kit ``EmbeddingNet``: ``layers.{k}`` here is ``layers.{k}`` there.
    """

    def __init__(
        self,
        num_in: int,
        neurons: Sequence[int],
        *,
        activation: str = "tanh",
        resnet_dt: bool = False,
        bias: bool = True,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        sizes = [num_in, *neurons]
        self.layers = nn.ModuleList(
            DenseLayer(
                sizes[k],
                sizes[k + 1],
                bias=bias,
                activation=activation,
                resnet=True,
                use_timestep=resnet_dt,
                dtype=dtype,
                generator=generator,
            )
            for k in range(len(neurons))
        )
        self.num_out = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., num_in] -> [..., neurons[-1]]."""
        for layer in self.layers:
            x = layer(x)
        return x

    def forward_contracted(
        self, left: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``left @ self(x)`` (see :meth:`DenseLayer.contract`), left [..., M, K] (or ragged)."""
        for layer in self.layers[:-1]:
            x = layer(x)
        return self.layers[-1].contract(left, x, offsets)

    def forward_concatenated(
        self,
        scalar: torch.Tensor,
        parts: list[torch.Tensor],
        left: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The net applied to ``[scalar, *parts]`` (concatenated last) without building it.

        The first layer is linear, so its pre-activation is computed block by block,
        ``scalar * W[0] + parts[0] @ W_0 + ... + b``, where each part may have broadcast
        (size-1) leading dimensions: a centre's embedding is projected once per centre instead of
        once per pair. The pair tensors of repinit and of the three-body branch are the largest of
        the model, so this saves both time and memory. Falls back to the plain concatenation when
        the first layer has a skip connection.

        Args:
            scalar: [..., 1].
            parts: tensors [..., dim_k] broadcastable to ``scalar``'s leading shape.
            left: if given, [..., M, K]: return ``left @ output`` (:meth:`forward_contracted`);
                with ``offsets`` the ragged rows [P, M] of :meth:`DenseLayer.contract`.
            offsets: None, or the ragged layout's [B + 1] offsets (with ``left``).

        Returns:
            [..., neurons[-1]], or [..., M, neurons[-1]] with ``left``.
        """
        first = self.layers[0]
        if first.has_skip or (left is not None and len(self.layers) == 1):
            shape = scalar.shape[:-1]
            expanded = [part.expand(*shape, part.shape[-1]) for part in parts]
            x = torch.cat([scalar, *expanded], dim=-1)
            return self(x) if left is None else self.forward_contracted(left, x, offsets)
        weight = first.weight
        y = scalar * weight[0]
        start = 1
        for part in parts:
            dim = part.shape[-1]
            y = y + part @ weight[start : start + dim]
            start += dim
        if first.bias is not None:
            y = y + first.bias
        x = first.finish(y, None)
        if left is not None:
            for layer in self.layers[1:-1]:
                x = layer(x)
            return self.layers[-1].contract(left, x, offsets)
        for layer in self.layers[1:]:
            x = layer(x)
        return x


class FittingNet(EmbeddingNet):
    """The embedding stack, then a linear output layer without skip (deepmd-kit FittingNet)."""

    def __init__(
        self,
        num_in: int,
        num_out: int,
        neurons: Sequence[int],
        *,
        activation: str = "tanh",
        resnet_dt: bool = False,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            num_in,
            neurons,
            activation=activation,
            resnet_dt=resnet_dt,
            dtype=dtype,
            generator=generator,
        )
        last = neurons[-1] if neurons else num_in
        self.layers.append(DenseLayer(last, num_out, dtype=dtype, generator=generator))
        self.num_out = num_out


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension, weight 1 and bias 0 at initialisation.

    Computed as deepmd-kit does (``var_mean`` then ``(x - mean) / sqrt(var + eps)``), except on the
    CPU, where PyTorch's fused ``layer_norm`` gives the same values up to rounding in one operation.
    ``weight``/``bias`` are deepmd-kit's ``matrix``/``bias``.
    """

    def __init__(
        self, num_features: int, *, eps: float, trainable: bool, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features, dtype=dtype), requires_grad=trainable)
        self.bias = nn.Parameter(torch.zeros(num_features, dtype=dtype), requires_grad=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., num_features] -> same shape."""
        if x.device.type == "cpu" and not torch.compiler.is_compiling():
            # One fused operation (and backward) instead of six; (x - mean) · rsqrt(var + eps)
            # differs from deepmd-kit's division by the square root only by rounding.
            return torch.nn.functional.layer_norm(
                x, (x.shape[-1],), self.weight, self.bias, self.eps
            )
        variance, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(variance + self.eps) * self.weight + self.bias


class TypeEmbedding(nn.Module):
    """Element embedding table: one linear layer applied to one-hot vectors, plus a zero row.

    The table has ``num_elements + 1`` rows; the last (index ``num_elements``) is the all-zero
    padding row used for absent neighbours in strip mode. Built like deepmd-kit's
    ``TypeEmbedNet``: a one-layer ``EmbeddingNet`` with a linear activation and ``resnet=True``,
    so when ``dim`` equals ``num_elements`` (or twice it) the identity is added to the table.
    """

    def __init__(
        self,
        num_elements: int,
        dim: int,
        *,
        use_bias: bool = False,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.num_elements = num_elements
        self.dim = dim
        self.net = EmbeddingNet(
            num_elements,
            [dim],
            activation="linear",
            bias=use_bias,
            dtype=dtype,
            generator=generator,
        )

    def table(self) -> torch.Tensor:
        """The full table, [num_elements + 1, dim]; the last row is zero."""
        weight = self.net.layers[0].weight
        one_hot = torch.eye(self.num_elements, dtype=weight.dtype, device=weight.device)
        rows = self.net(one_hot)
        return torch.cat([rows, rows.new_zeros(1, self.dim)], dim=0)

    def forward(self, atom_types: torch.Tensor) -> torch.Tensor:
        """Embed element indices (``num_elements`` selects the zero row): [...] -> [..., dim]."""
        return self.table()[atom_types]

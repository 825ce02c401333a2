"""Load deepmd-kit PyTorch training checkpoints of DPA-2 energy models into lamforge.

A deepmd-kit checkpoint (``model.ckpt-<step>.pt``, written by ``dp --pt train``) is a
``torch.save`` of ``{"model": state_dict, "optimizer": ...}``; the state dict holds

* ``_extra_state``: ``{"model_params": <the model section of input.json, normalised>,
  "train_infos": {"lr", "step"}}``; multi-task checkpoints have ``model_params.model_dict.<head>``;
* ``model.<head>.atomic_model.descriptor.*``: DPA-2 weights and the per-block statistics
  ``{repinit,repinit_three_body,repformers}.{mean,stddev}`` (davg/dstd, [ntypes, nnei, 4], every
  neighbour slot a copy of the same per-type row); in multi-task checkpoints every head stores
  its own copy of the shared descriptor;
* ``model.<head>.atomic_model.fitting_net.*``: the energy fitting net (``bias_atom_e`` a buffer);
* ``model.<head>.atomic_model.out_bias`` [1, ntypes, 1]: the per-type energy bias; ``out_std``,
  ``min_nbor_dist`` and the ``_networks`` / ``compress_*`` / ``type_embd_data`` buffers do not
  change predictions of an uncompressed model.

Only plain tensors and containers are read (``torch.load(weights_only=True)``): such checkpoints
need no unsafe unpickling, so loading never executes code from the file.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from lamforge.interop.deepmd_config import UnsupportedCheckpointError, model_config
from lamforge.nn.model import DPA2Model

__all__ = ["UnsupportedCheckpointError", "load_checkpoint", "read_checkpoint"]

# deepmd-kit name of a single-task model's only head; lamforge calls it "default".
SINGLE_TASK_HEAD = "Default"
OUR_SINGLE_HEAD = "default"

# deepmd-kit parameter path (after ``atomic_model.descriptor.``) -> ours (after ``descriptor.``).
_DESCRIPTOR_RENAMES = (
    (r"^type_embedding\.embedding\.embedding_net\.", "type_embedding.net."),
    (r"^repinit_three_body\.", "three_body."),
    (r"^g1_shape_tranform\.", "bridge."),
    (r"\.filter_layers\.networks\.0\.", ".embedding."),
    (r"\.filter_layers_strip\.networks\.0\.", ".type_embedding_net."),
    (r"\.attn2g_map\.mapqk\.", ".attn2g_map.query_key."),
    (r"\.attn2_mh_apply\.mapv\.", ".attn2_mh_apply.value."),
    (r"\.loc_attn\.mapq\.", ".loc_attn.query."),
    (r"\.loc_attn\.mapkv\.", ".loc_attn.key_value."),
)
_LEAF_RENAMES = ((r"\.matrix$", ".weight"), (r"\.idt$", ".timestep"))

# Buffers that carry nothing an uncompressed model computes with (duplicates and caches).
_IGNORED_DESCRIPTOR = re.compile(
    r"(\._networks\.|\.type_embd_data$|\.compress_info\.|\.compress_data\.)"
)
_STATISTICS = re.compile(r"^(repinit|repinit_three_body|repformers)\.(mean|stddev)$")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state dict of a deepmd-kit training checkpoint, read without executing code.

    Raises:
        ValueError: naming the file when it is a frozen TorchScript model or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such deepmd-kit checkpoint")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                raise ValueError(
                    f"{path}: this is a frozen TorchScript model (`dp freeze`/`dp compress` "
                    "output, .pth); load_checkpoint reads training checkpoints (model.ckpt*.pt)"
                )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path}: not readable as a weights-only torch checkpoint ({error}); lamforge never "
            "unpickles arbitrary objects"
        ) from error
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or "model_params" not in state.get("_extra_state", {}):
        raise ValueError(
            f"{path}: not a deepmd-kit PyTorch training checkpoint (no "
            "model._extra_state.model_params)"
        )
    return state


def _our_descriptor_key(key: str) -> str:
    for pattern, replacement in _DESCRIPTOR_RENAMES + _LEAF_RENAMES:
        key = re.sub(pattern, replacement, key)
    return re.sub(r"\.stddev$", ".std", key)


def _per_element_statistics(tensor: torch.Tensor, key: str) -> torch.Tensor:
    """[ntypes, nnei, 4] davg/dstd -> our [ntypes, 4]; every slot must hold the same row."""
    if tensor.ndim != 3 or tensor.shape[-1] != 4:
        raise ValueError(
            f"descriptor statistics {key}: expected [ntypes, nnei, 4], got {tuple(tensor.shape)}"
        )
    if not torch.equal(tensor, tensor[:, :1].expand_as(tensor)):
        raise UnsupportedCheckpointError(
            f"descriptor statistics {key} differ between neighbour slots; lamforge keeps one "
            "mean/std per element"
        )
    return tensor[:, 0].clone()


def descriptor_state(state: dict[str, Any], head: str) -> dict[str, torch.Tensor]:
    """Our ``descriptor.*`` entries from one deepmd-kit head's descriptor."""
    prefix = f"model.{head}.atomic_model.descriptor."
    ours = {}
    for key, tensor in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if ".compress_data." in name and tensor.numel() > 0:
            raise UnsupportedCheckpointError(
                f"head {head!r}: the descriptor is compressed (`dp compress` tables in {name}); "
                "load the uncompressed checkpoint"
            )
        if _IGNORED_DESCRIPTOR.search(name):
            continue
        if _STATISTICS.match(name):
            tensor = _per_element_statistics(tensor, key)
        ours[f"descriptor.{_our_descriptor_key(name)}"] = tensor
    return ours


def head_state(state: dict[str, Any], head: str, our_name: str) -> dict[str, torch.Tensor]:
    """Our ``heads.<our_name>.*`` entries: fitting net weights and the folded energy bias."""
    prefix = f"model.{head}.atomic_model."
    fitting_prefix = f"{prefix}fitting_net.filter_layers.networks.0."
    ours = {}
    for key, tensor in state.items():
        if key.startswith(fitting_prefix):
            name = key[len(fitting_prefix) :]
            for pattern, replacement in _LEAF_RENAMES:
                name = re.sub(pattern, replacement, name)
            ours[f"heads.{our_name}.fitting_net.{name}"] = tensor
    # E_i = fit(D_i) + bias_atom_e[t_i] + out_bias[t_i]; bias_atom_e is a (normally zero) buffer
    # of the fitting net, out_bias the least-squares bias of the atomic model: fold both.
    out_bias = state[f"{prefix}out_bias"]
    if out_bias.shape[0] != 1 or out_bias.shape[-1] != 1:
        raise UnsupportedCheckpointError(
            f"head {head!r}: out_bias of shape {tuple(out_bias.shape)} is not a single energy "
            "bias per type"
        )
    bias = out_bias[0, :, 0].to(torch.float64)
    bias_atom_e = state.get(f"{prefix}fitting_net.bias_atom_e")
    if bias_atom_e is not None:
        bias = bias + bias_atom_e.reshape(-1).to(torch.float64)
    ours[f"heads.{our_name}.energy_bias"] = bias
    return ours


def _head_params(state: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """deepmd-kit head name -> its model parameters."""
    params = state["_extra_state"]["model_params"]
    if "model_dict" in params:
        return dict(params["model_dict"])
    return {SINGLE_TASK_HEAD: params}


def _select_heads(heads: dict[str, dict[str, Any]], head: str | None, path: Path) -> list[str]:
    if head is None:
        return list(heads)
    if head in heads:
        return [head]
    if len(heads) == 1 and head.lower() in (SINGLE_TASK_HEAD.lower(), OUR_SINGLE_HEAD):
        return list(heads)
    for name, params in heads.items():
        if head in params.get("model_branch_alias", []):
            return [name]
    raise KeyError(f"{path}: no head {head!r}; the checkpoint has heads {list(heads)}")


def _check_shared_descriptor(
    ours: dict[str, torch.Tensor], other: dict[str, torch.Tensor], head: str, first: str
) -> None:
    mismatched = sorted(
        key for key in ours if key not in other or not torch.equal(ours[key], other[key])
    )
    if mismatched or set(other) - set(ours):
        raise UnsupportedCheckpointError(
            f"head {head!r} does not share head {first!r}'s descriptor (e.g. {mismatched[:3]}); "
            "load one head at a time with head="
        )


def load_checkpoint(
    path: str | Path, head: str | None = None, *, precision: str | None = None
) -> DPA2Model:
    """A lamforge :class:`DPA2Model` with a deepmd-kit DPA-2 checkpoint's weights and statistics.

    Args:
        path: a ``dp --pt train`` checkpoint (``model.ckpt*.pt``), single- or multi-task.
        head: load only this head (a multi-task head name or alias); ``None`` loads every head.
            The head of a single-task checkpoint is called ``"default"`` in the returned model.
        precision: ``"float64"`` or ``"float32"`` to cast the model; by default the checkpoint's.

    Returns:
        The model with the checkpoint's type map as its element list, davg/dstd of repinit,
        three-body and repformer blocks, and each head's energy bias (``out_bias``).

    Raises:
        UnsupportedCheckpointError: naming the deepmd-kit option lamforge does not implement.
        KeyError: for an unknown ``head``, listing the available ones.
        ValueError: when the file is not a deepmd-kit training checkpoint.
    """
    path = Path(path)
    state = read_checkpoint(path)
    all_heads = _head_params(state, path)
    selected = _select_heads(all_heads, head, path)
    single = list(all_heads) == [SINGLE_TASK_HEAD]
    our_names = {name: OUR_SINGLE_HEAD if single else name for name in selected}
    try:
        config = model_config({our_names[name]: all_heads[name] for name in selected})
    except UnsupportedCheckpointError as error:
        raise UnsupportedCheckpointError(f"{path}: {error}") from None
    ours = descriptor_state(state, selected[0])
    for name in selected[1:]:
        _check_shared_descriptor(ours, descriptor_state(state, name), name, selected[0])
    for name in selected:
        ours.update(head_state(state, name, our_names[name]))
    model = DPA2Model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:
        raise UnsupportedCheckpointError(
            f"{path}: the checkpoint's tensors do not match the model its config describes "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, tensor in ours.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise UnsupportedCheckpointError(
                f"{path}: tensor {key} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict(
        {key: tensor.to(expected[key].dtype) for key, tensor in ours.items()}, strict=True
    )
    if precision is not None and precision != config.precision:
        cast = DPA2Model(config.with_precision(precision))
        cast.load_state_dict(model.state_dict(), strict=True)
        model = cast
    return model

"""`dsgan migrate --checkpoint`: MMagic 1.x / MMGeneration 0.x checkpoints and BigGAN-PyTorch weights -> a dsgan run
directory whose weights-only checkpoint `dsgan sample`, `dsgan eval` and training start from.

A checkpoint is untrusted input: it is read with `torch.load(weights_only=True)`, which builds tensors and plain
containers and never calls what a pickle names. MMEngine's checkpoints also pickle its own logging objects
(`message_hub`'s HistoryBuffer) and numpy values: those load as inert stand-ins or numpy arrays; any other class or
function named in the file refuses the whole file, and nothing in it runs.
"""

from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsgan.checkpoint import misfit
from dsgan.config import Config
from dsgan.errors import ConfigError
from dsgan.migrate.layouts import Format, Layout, layout, source_sn_style

Tensor = torch.Tensor

BIGGAN_PYTORCH_FILES = {"generator": "G", "discriminator": "D", "ema": "G_ema"}
BIGGAN_PYTORCH_NAME = re.compile(r"(G|D|G_ema)(_(?:best|copy)\d+)?\.pth")
"""BigGAN-PyTorch's `utils.save_weights` names: G.pth, D.pth, G_ema.pth, and with a suffix for its best and
copied snapshots (G_ema_best0.pth)."""
INERT_PACKAGES = ("mmengine.", "mmcv.", "mmgen.", "mmagic.")
"""Classes of these packages in a checkpoint (message-hub buffers, config dicts) load as data-only stand-ins."""
NUMPY_GLOBALS = {
    "numpy.core.multiarray._reconstruct": ("numpy._core.multiarray", "_reconstruct"),
    "numpy._core.multiarray._reconstruct": ("numpy._core.multiarray", "_reconstruct"),
    "numpy.core.multiarray.scalar": ("numpy._core.multiarray", "scalar"),
    "numpy._core.multiarray.scalar": ("numpy._core.multiarray", "scalar"),
    "numpy.ndarray": ("numpy", "ndarray"),
    "numpy.dtype": ("numpy", "dtype"),
}
"""numpy's array and scalar reconstruction: builds arrays from bytes, calls nothing else."""


def _stand_in(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def setstate(self: Any, state: Any) -> None:
        self.state = state

    return type(name, (), {"__module__": module, "__init__": init, "__setstate__": setstate})


def read_checkpoint(path: Path) -> Any:
    """`torch.load(weights_only=True)`; see the module docstring for MMEngine's and numpy's objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"--checkpoint {path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        names = _named_globals(path)
        if not names:
            why = str(exc).strip().splitlines()[-1][:200]
            raise ConfigError(f"--checkpoint {path}: not a readable checkpoint ({why})") from None
    refused = sorted(n for n in names if not n.startswith(INERT_PACKAGES) and n not in NUMPY_GLOBALS)
    if refused:
        raise ConfigError(
            f"--checkpoint {path}: refused: the file's pickle names {', '.join(refused[:5])}, which a plain weights "
            "checkpoint never needs (loading it could run code). Nothing in it was run. Re-save its state_dict "
            "with torch.save from a trusted environment."
        )
    allowed: list[Any] = [(_stand_in(n), n) for n in names if n.startswith(INERT_PACKAGES)]
    allowed += [(getattr(importlib.import_module(m), a), n) for n, (m, a) in NUMPY_GLOBALS.items() if n in names]
    if "numpy.dtype" in names:  # a dtype is rebuilt as an instance of its class (numpy.dtypes.Int64DType...)
        allowed += [t for t in vars(np.dtypes).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        why = lines[-2 if len(lines) > 1 else 0][:300]  # torch ends with a pointer to its docs
        raise ConfigError(f"--checkpoint {path}: refused ({why}). Nothing in it was run.") from None


def _named_globals(path: Path) -> list[str]:
    """The classes and functions a checkpoint's pickle names beyond what weights_only allows (read, not run)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch zip file at all: the caller reports torch.load's own error
        return []


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Source:
    """A checkpoint split into networks, in the source's names, and the top-level entries accounted for."""

    path: Path
    format: Format
    version: str
    networks: dict[str, dict[str, Tensor]]
    """"generator", "discriminator" and (when present) "ema": each a state dict in the source's names."""
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    """(source key, shape, what became of it) for what is not one of the networks' tensors."""
    config_text: str | None = None
    """The config stored in the checkpoint's meta (MMEngine `cfg`, mmcv `config`), Python source."""
    pl_mean: float = 0.0


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def load_source(path: Path) -> Source:
    if path.is_dir():
        return _biggan_pytorch(path, "")
    if match := BIGGAN_PYTORCH_NAME.fullmatch(path.name):
        return _biggan_pytorch(path.parent, match.group(2) or "")
    raw = read_checkpoint(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"--checkpoint {path}: holds a {type(raw).__name__}, not a checkpoint dict")
    state = raw.get("state_dict", raw)
    source = Source(path, "mmagic", "", {"generator": {}, "discriminator": {}})
    if state is not raw:
        source.rows += [(key, "-", _top_level(key)) for key in raw if key != "state_dict"]
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    text = meta.get("cfg", meta.get("config"))
    source.config_text = text if isinstance(text, str) else None
    ema_1x = any(k.startswith("generator_ema.module.") for k in state)
    source.version = "MMagic 1.x (MMEngine)" if ema_1x or "cfg" in meta else "MMGeneration 0.x (mmcv)"
    # MMagic's EMA wraps the copy (`ExponentialMovingAverage.module`); MMGeneration 0.x's is the copy itself.
    prefixes = (
        ("generator_ema.module." if ema_1x else "generator_ema.", "ema"),
        ("generator.", "generator"),
        ("discriminator.", "discriminator"),
    )
    for key, value in state.items():
        if key == "generator_ema.steps" or key == "generator_ema.n_averaged":
            source.rows.append((key, _shape(value), "dropped: MMagic's EMA update counter (a new run counts its own)"))
            continue
        if key == "mean_path_length" and isinstance(value, Tensor):
            source.pl_mean = float(value)
            source.rows.append((key, _shape(value), "converted: the path-length mean (trainer state pl_mean)"))
            continue
        for prefix, network in prefixes:
            if key.startswith(prefix):
                source.networks.setdefault(network, {})[key.removeprefix(prefix)] = value
                break
        else:
            source.rows.append((key, _shape(value), "unexpected: not part of G, D or the EMA; not converted"))
    if not source.networks["generator"] and "ema" not in source.networks:
        raise ConfigError(
            f"--checkpoint {path}: no generator.* or generator_ema.* weights in its state_dict: not an MMagic / "
            "MMGeneration GAN checkpoint"
        )
    return source


def _top_level(key: str) -> str:
    if key == "meta":
        return "read: its config text (used when --config is not given)"
    if key in ("optimizer", "optim_wrapper", "param_schedulers", "message_hub", "amp", "loss_scaler"):
        return "dropped: training state of the source run; fine-tuning starts a fresh optimizer"
    return "unexpected: not converted"


def _biggan_pytorch(folder: Path, suffix: str) -> Source:
    """One snapshot of a BigGAN-PyTorch weights folder: G, D and G_ema with the same suffix."""
    source = Source(folder, "biggan-pytorch", f"BigGAN-PyTorch ({suffix[1:] or 'latest'})", {})
    names = {f"{stem}{suffix}.pth": network for network, stem in BIGGAN_PYTORCH_FILES.items()}
    for name, network in names.items():
        if (folder / name).is_file():
            weights = read_checkpoint(folder / name)
            if not isinstance(weights, dict):
                raise ConfigError(f"--checkpoint {folder / name}: holds a {type(weights).__name__}, not a state dict")
            source.networks[network] = weights
    if "generator" not in source.networks and "ema" not in source.networks:
        raise ConfigError(
            f"--checkpoint {folder}: neither G{suffix}.pth nor G_ema{suffix}.pth there (BigGAN-PyTorch's weights)"
        )
    for other in sorted(p.name for p in folder.glob("*.pth") if p.name not in names):
        source.rows.append((other, "-", "not read: another snapshot, or optimizer / training-loop state"))
    return source


# ----------------------------------------------------------------------------------------------------------------


def convert_network(
    weights: dict[str, Tensor], lay: Layout, model: dict[str, Tensor], network: str, rows: list[tuple[str, str, str]]
) -> dict[str, Tensor]:
    """Source names -> dsgan's, every key accounted for in `rows`; any key or shape mismatch is a ConfigError
    naming the key and both shapes."""
    by_source = {e.source: e for e in lay.entries if e.source is not None}
    out: dict[str, Tensor] = {}
    errors: list[str] = []
    for key, tensor in weights.items():
        entry = by_source.get(key)
        name = f"{network}.{key}"
        if entry is None or not isinstance(tensor, Tensor):
            errors.append(f"{name} {_shape(tensor)}: dsgan's model has no tensor for it")
        elif entry.dsgan is None:
            rows.append((name, _shape(tensor), f"dropped: {entry.why}"))
        else:
            want = entry.to_source(model[entry.dsgan]).shape
            if tensor.shape != want:
                errors.append(
                    f"{name}: the checkpoint has {list(tensor.shape)}, dsgan's {entry.dsgan} needs {list(want)}"
                )
                continue
            out[entry.dsgan] = entry.to_dsgan(tensor).to(model[entry.dsgan].dtype).clone()
            rows.append((name, _shape(tensor), f"converted: {entry.dsgan}"))
    for entry in lay.entries:
        if entry.dsgan is None:
            continue
        if entry.source is None:
            out[entry.dsgan] = torch.zeros(model[entry.dsgan].shape, dtype=model[entry.dsgan].dtype)
            rows.append((f"{network}: (none)", "-", f"filled: {entry.dsgan} = 0 ({entry.why})"))
        elif entry.source not in weights:
            errors.append(f"{network}.{entry.source}: missing from the checkpoint (dsgan's {entry.dsgan} needs it)")
    unmapped = sorted(set(model) - set(out))
    if unmapped and not errors:
        errors.append(f"{network}: dsgan's {', '.join(unmapped[:5])} have no source tensor")
    if errors:
        raise misfit(f"the checkpoint's {network} does not fit the configured model", errors, "its config (--config)")
    return out


def _sigma_gap(converted: dict[str, Tensor], found: dict[str, Tensor], lay: Layout) -> str | None:
    """How far dsgan's sigma (u.Wv, v = W^T u normalised) is from the source's estimate from the same vectors
    (|Wv| for BigGAN-PyTorch's style, u.W v_cached for torch's): the worst layer, relative. Zero once u has
    converged to W's top singular vector; a large gap means the source's outputs differ from dsgan's there."""
    u_sources = {e.dsgan: e.source for e in lay.entries if e.dsgan and e.source and e.dsgan.endswith(".sn.u")}
    worst, where = 0.0, ""
    for key, source in u_sources.items():
        w = converted[key.removesuffix(".sn.u") + ".weight"].double().flatten(1)
        u = converted[key].double()
        wv = w @ F.normalize(w.t() @ u, dim=0)
        theirs = u @ w @ found[source[:-1] + "v"].double() if source.endswith(".weight_u") else wv.norm()
        gap = float(abs(u @ wv - theirs) / theirs.abs().clamp_min(1e-12))
        if gap >= worst:
            worst, where = gap, key.removesuffix(".sn.u")
    if not u_sources:
        return None
    if worst < 1e-4:
        return f"spectral norm: dsgan's sigma is within {worst:.1e} of the source's estimate in every layer"
    return (
        f"spectral norm: dsgan's sigma differs from the source's estimate by up to {worst:.1e} (relative; in {where}): "
        "u has not converged there (a short-trained checkpoint), so outputs differ from the source's by about that"
    )


def export_network(state: dict[str, Tensor], lay: Layout) -> dict[str, Tensor]:
    """The inverse map: a dsgan state dict in the source's names and layout, with the source-only tensors
    (sv0, weight_v, num_batches_tracked) as the source would hold them. A filled tensor must be zero."""
    out: dict[str, Tensor] = {}
    for entry in lay.entries:
        if entry.source is None:
            assert entry.dsgan is not None
            if state[entry.dsgan].any():
                raise ValueError(f"{entry.dsgan} is not zero: the source layout has no place for it ({entry.why})")
        elif entry.dsgan is None:
            assert entry.make is not None
            out[entry.source] = entry.make(state)
        else:
            out[entry.source] = entry.to_source(state[entry.dsgan]).clone()
    return out


@dataclass
class Imported:
    """Converted state dicts in dsgan's names, and the report rows."""

    weights: dict[str, dict[str, Tensor]]
    ema: dict[str, Tensor] | None
    rows: list[tuple[str, str, str]]
    notes: list[str]


def _build(cfg: Config, network: str, device: str = "cpu") -> nn.Module:
    """One of the configured networks; on the meta device for its layout and shapes only (BigGAN-128's orthogonal
    initialisation alone takes ~25 s on a CPU core)."""
    from dsgan.models import build_discriminator, build_generator

    torch.manual_seed(cfg.run.seed)
    with torch.device(device):
        if network == "generator":
            return build_generator(cfg.generator.model)
        return build_discriminator(cfg.discriminator.model)


def convert(source: Source, cfg: Config) -> Imported:
    """Map every network of `source` onto the models of `cfg`."""
    rows = list(source.rows)
    notes: list[str] = []
    weights: dict[str, dict[str, Tensor]] = {}
    ema: dict[str, Tensor] | None = None
    for network in ("generator", "discriminator", "ema"):
        module = _build(cfg, "generator" if network == "ema" else network, "meta")
        model = module.state_dict()
        found = source.networks.get(network)
        if not found:
            if network != "generator":  # load_source found G or the EMA: a missing G becomes the EMA, below
                weights_of = "a copy of G" if network == "ema" else "a fresh initialisation"
                notes.append(f"the checkpoint has no {network} weights: dsgan's {network} starts from {weights_of}")
            continue
        if network == "ema" and cfg.ema is None and "generator" in weights:
            why = "dropped: the run config keeps no EMA (ema: null)"
            rows += [(f"ema.{k}", _shape(v), why) for k, v in found.items()]
            continue
        lay = layout(module, source.format, source_sn_style(found), set(found))
        if isinstance(lay, str):
            rows += [(f"{network}.{k}", _shape(v), f"dropped: {lay}") for k, v in found.items()]
            notes.append(f"{network}: {lay}")
            continue
        converted = convert_network(found, lay, model, network, rows)
        if gap := _sigma_gap(converted, found, lay):
            notes.append(f"{network}: {gap}")
        if network == "ema":
            ema = converted
        else:
            weights[network] = converted
    if "generator" not in weights:  # only an EMA (e.g. BigGAN-PyTorch's G_ema.pth alone): G starts from it
        assert ema is not None  # load_source refuses a checkpoint with neither
        weights["generator"] = {k: v.clone() for k, v in ema.items()}
        notes.append("G's weights are the EMA's (the checkpoint has only the EMA)")
        ema = ema if cfg.ema is not None else None
    if "discriminator" not in weights:
        weights["discriminator"] = _build(cfg, "discriminator").state_dict()
    return Imported(weights, ema, rows, notes)


def render_report(source: Source, cfg_source: str, imported: Imported) -> str:
    counts: dict[str, int] = {}
    for _, _, outcome in imported.rows:
        kind = outcome.split(":", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    lines = [
        f"# Weights imported by `dsgan migrate --checkpoint` from {source.path}",
        "",
        f"Source: {source.version}. Config: {cfg_source}. "
        + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())),
        "",
        *[f"- {note}" for note in imported.notes],
        "",
        "| source key | shape | became |",
        "| --- | --- | --- |",
        *[f"| `{key}` | {shape} | {outcome} |" for key, shape, outcome in imported.rows],
    ]
    return "\n".join(lines) + "\n"

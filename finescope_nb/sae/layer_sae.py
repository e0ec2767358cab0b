"""An SAE bound to one layer of one model: encode, reconstruct, save and load with its identity.

The weights live in sae-lens's own folder format (cfg.json + sae_weights.safetensors, readable by
`sae_lens.SAE.load_from_disk`); `finescope_sae.json` beside them records which model (its
`model_identity` hash) and layer the SAE belongs to, the config that trained it, its metrics and
training history. Later stages load through `LayerSAE.load(folder, model)`, which refuses an SAE
of another model, layer or width instead of producing meaningless codes.

With coordinate selection the SAE sees only K of the layer's outputs: `encode` picks them from
the full activation, and `reconstruct` writes the decoded K back into place, filling the other
coordinates with their training mean (the best constant guess), so quality is always measured
on the full activation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from sae_lens import SAE

from finescope_nb.artifacts import atomic_path
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import get_adapter, model_identity
from finescope_nb.sae.registry import SAEConfig

META_FILE = "finescope_sae.json"
SAE_FILES = ("cfg.json", "sae_weights.safetensors")


class LayerSAE:
    """A trained sae-lens SAE plus what it belongs to (model identity, layer, coordinates)."""

    def __init__(self, sae: SAE, *, layer: int, hook_name: str, model_identity: str, d_model: int,
                 config: SAEConfig, coordinates: list[int] | None = None, fill: list[float] | None = None,
                 history: list[dict] | None = None, metrics: dict | None = None, stopped_early: str | None = None):
        self.sae = sae.eval()
        self.layer = layer
        self.hook_name = hook_name
        self.model_identity = model_identity
        self.d_model = d_model
        self.config = config
        self.coordinates = None if coordinates is None else torch.as_tensor(coordinates, dtype=torch.long)
        self.fill = None if fill is None else torch.as_tensor(fill, dtype=torch.float32)
        self.history = list(history or [])
        self.metrics = dict(metrics or {})
        self.stopped_early = stopped_early
        expected = self.d_model if self.coordinates is None else len(self.coordinates)
        if sae.cfg.d_in != expected:
            raise FinescopeError(
                f"The SAE's input width {sae.cfg.d_in} does not match layer {layer}'s width {expected}; "
                "train an SAE for this layer (and coordinate selection) instead.")

    @property
    def d_sae(self) -> int:
        return self.sae.cfg.d_sae

    @property
    def architecture(self) -> str:
        return self.config.architecture

    def __repr__(self) -> str:
        coords = "" if self.coordinates is None else f", {len(self.coordinates)} {self.config.selection} coordinates"
        return f"LayerSAE({self.architecture}, layer {self.layer}, {self.d_model} -> {self.d_sae}{coords})"

    # -- computing --------------------------------------------------------------------------------

    def _check_width(self, acts: torch.Tensor) -> None:
        if acts.shape[-1] != self.d_model:
            raise FinescopeError(
                f"Activations of width {acts.shape[-1]} do not fit this SAE of layer width {self.d_model}; "
                "capture them from the model and layer the SAE was trained on.")

    @torch.no_grad()
    def encode(self, acts: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of full-width layer activations [..., d_model]."""
        self._check_width(acts)
        x = acts if self.coordinates is None else acts[..., self.coordinates]
        return self.sae.encode(x.float())

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Full-width reconstruction [..., d_model] of feature activations."""
        out = self.sae.decode(codes)
        if self.coordinates is None:
            return out
        full = self.fill.expand(*out.shape[:-1], self.d_model).clone()
        full[..., self.coordinates] = out
        return full

    def reconstruct(self, acts: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(acts))

    @torch.no_grad()
    def decoder_directions(self) -> torch.Tensor:
        """[d_sae, d_model]: what each feature writes into the residual stream (zero off the coordinates)."""
        w = self.sae.W_dec.detach().float()
        if self.coordinates is None:
            return w.clone()
        full = torch.zeros(w.shape[0], self.d_model)
        full[:, self.coordinates] = w
        return full

    # -- identity ---------------------------------------------------------------------------------

    def check_model(self, model, layer: int | None = None) -> None:
        """Refuse (one sentence) a model or layer this SAE was not trained on."""
        if layer is not None and layer != self.layer:
            raise FinescopeError(f"This SAE belongs to layer {self.layer}, not layer {layer}; load or train an SAE for layer {layer}.")
        width = get_adapter(model).hidden_size(model)
        if width != self.d_model:
            raise FinescopeError(
                f"This SAE expects layer width {self.d_model} but the model's hidden size is {width}; "
                "use the model the SAE was trained on.")
        identity = model_identity(model)
        if identity != self.model_identity:
            raise FinescopeError(
                f"This SAE was trained on model {self.model_identity}, not on this model ({identity}); "
                "train an SAE for this model or load the model it belongs to.")

    # -- files ------------------------------------------------------------------------------------

    def metadata(self) -> dict:
        return {
            "model_identity": self.model_identity, "layer": self.layer, "hook_name": self.hook_name,
            "d_model": self.d_model, "d_sae": self.d_sae, "architecture": self.architecture,
            "config": self.config.to_dict(), "config_hash": self.config.config_hash(),
            "coordinates": None if self.coordinates is None else self.coordinates.tolist(),
            "fill": None if self.fill is None else self.fill.tolist(),
            "metrics": self.metrics, "history": self.history, "stopped_early": self.stopped_early,
        }

    def save(self, folder: str | Path) -> Path:
        """Write the sae-lens folder plus finescope_sae.json, replacing `folder` atomically."""
        folder = Path(folder)
        with atomic_path(folder) as tmp:
            self.sae.save_model(tmp)
            (tmp / META_FILE).write_text(json.dumps(self.metadata(), indent=1, default=float) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, model=None, layer: int | None = None, device: str = "cpu") -> "LayerSAE":
        """Load a saved SAE; with `model` (and `layer`), refuse one that belongs elsewhere."""
        folder = Path(folder)
        missing = [name for name in (*SAE_FILES, META_FILE) if not (folder / name).is_file()]
        if missing:
            raise FinescopeError(
                f"{str(folder)!r} is not a finescope SAE folder (missing {', '.join(missing)}); "
                "pass a folder written by LayerSAE.save or train_sae.")
        try:
            meta = json.loads((folder / META_FILE).read_text())
            sae = SAE.load_from_disk(folder, device=device)
            config = SAEConfig.from_dict(meta["config"])
            result = cls(sae, layer=meta["layer"], hook_name=meta["hook_name"], model_identity=meta["model_identity"],
                         d_model=meta["d_model"], config=config, coordinates=meta["coordinates"], fill=meta["fill"],
                         history=meta["history"], metrics=meta["metrics"], stopped_early=meta.get("stopped_early"))
        except FinescopeError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise FinescopeError(
                f"Cannot read the SAE in {str(folder)!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "train and save it again.") from exc
        if model is not None:
            result.check_model(model, layer)
        elif layer is not None and layer != result.layer:
            raise FinescopeError(f"This SAE belongs to layer {result.layer}, not layer {layer}; load or train an SAE for layer {layer}.")
        return result

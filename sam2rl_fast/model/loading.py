"""Build a sam2 model from what a user has: a Meta checkpoint, a Hugging Face id, a config
name, or a model.

Meta's checkpoints (`sam2_hiera_tiny.pt` ... `sam2.1_hiera_large.pt`) are `{"model":
state_dict}` files; the config is inferred from their keys (trunk width and depth, and the
SAM 2.1-only parameters) unless given. Models are built with sam2's own hydra configs, so
a checkpoint loads exactly as `sam2.build_sam.build_sam2_video_predictor` loads it. The
official Hugging Face ids ("facebook/sam2.1-hiera-tiny", ...) name such a checkpoint and its
config (sam2's own `HF_MODEL_ID_TO_FILENAMES`), fetched as `build_sam2_video_predictor_hf` does.

A config may also be a YAML file outside sam2's package (the project's demo model,
`sam2rl_fast/configs/demo_sam2.1_tiny256.yaml`): it is read with OmegaConf and instantiated
with the same video-predictor overrides as `build_sam2_video_predictor` applies.
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path

import torch

from sam2rl_fast.model import bundled

# (family, size) -> sam2's packaged config
CONFIGS = {
    ("sam2.1", "t"): "configs/sam2.1/sam2.1_hiera_t.yaml",
    ("sam2.1", "s"): "configs/sam2.1/sam2.1_hiera_s.yaml",
    ("sam2.1", "b+"): "configs/sam2.1/sam2.1_hiera_b+.yaml",
    ("sam2.1", "l"): "configs/sam2.1/sam2.1_hiera_l.yaml",
    ("sam2", "t"): "configs/sam2/sam2_hiera_t.yaml",
    ("sam2", "s"): "configs/sam2/sam2_hiera_s.yaml",
    ("sam2", "b+"): "configs/sam2/sam2_hiera_b+.yaml",
    ("sam2", "l"): "configs/sam2/sam2_hiera_l.yaml",
}
# Short names users type: "sam2.1_hiera_t", "sam2.1-tiny", "sam2_hiera_b+", ...
_SIZE_ALIASES = {"t": "t", "tiny": "t", "s": "s", "small": "s", "b+": "b+", "base_plus": "b+",
                 "base+": "b+", "l": "l", "large": "l"}
# Trunk (embed dim, number of blocks) of each size.
_TRUNKS = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
# Our own configs (YAML files shipped with this package), by (family, trunk width, blocks).
_PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_OWN_TRUNKS = {("sam2.1", 24, 7): "demo_sam2.1_tiny256.yaml"}
_OWN_EFFNET = "sam2rl_effnet256.yaml"  # SAM 2.1 on an EfficientNet-Lite0 trunk (the bundled model)
_EFFNET_TRUNK = "sam2rl_fast.model.efficientnet_trunk.EfficientNetLite0Trunk"
# What sam2.build_sam.build_sam2_video_predictor adds to a config (apply_postprocessing=True):
# the video-predictor class first, then the caller's overrides, then post-processing.
_VIDEO_PREDICTOR_OVERRIDES = ("++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",)
_POSTPROCESSING_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
)


class ModelError(ValueError):
    """A model that cannot be built: unknown config, missing or mismatched checkpoint."""


class RandomWeightsWarning(UserWarning):
    """A model built from a config alone: random weights, it will not track."""


# Meta's checkpoint file of each config
_CHECKPOINT_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


def _expected_checkpoint(cfg: str) -> str | None:
    for (fam, size), path in CONFIGS.items():
        if path == cfg:
            return f"{fam}_hiera_{_CHECKPOINT_NAMES[size]}.pt"
    return None


def bundled_checkpoint() -> tuple[Path, str]:
    """(checkpoint path, config) of the bundled demo model (`sam2rl_fast.model.bundled`)."""
    if not bundled.CHECKPOINT.is_file():
        raise ModelError(
            "this install has no bundled demo model yet "
            f"({bundled.CHECKPOINT} is missing); pass model= a Meta SAM 2 checkpoint "
            "(e.g. sam2.1_hiera_tiny.pt) or a config name for random weights")
    return Path(bundled.CHECKPOINT), str(bundled.CONFIG)


# The config each model `build_model` built came from (the export metadata names it).
_BUILT_CONFIGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def built_config(model) -> str | None:
    """The sam2 config (path, or YAML file) `build_model` built `model` from; None for a
    model it did not build."""
    return _BUILT_CONFIGS.get(model)


def resolve_device(device) -> torch.device:
    """torch.device for 'cpu', 'cuda', 'cuda:N' (None: cuda if usable); a clear error else."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {device!r} (--device): use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ModelError(f"unsupported device {device!r} (--device): use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device {device}: no usable CUDA GPU here (torch.cuda.is_available() "
                         "is False); use --device cpu")
    return dev


def is_file_config(cfg: str) -> bool:
    """Whether `cfg` is a YAML file on disk (not one of sam2's packaged hydra configs)."""
    return str(cfg).endswith((".yaml", ".yml")) and Path(cfg).expanduser().is_file()


def _same_config(a: str, b: str) -> bool:
    if is_file_config(a) and is_file_config(b):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


def resolve_config(name: str) -> str:
    """sam2's config path for a config path or short name ('sam2.1_hiera_t', 'sam2-large').

    A .yaml name is returned as it is: one of sam2's configs ('configs/sam2.1/...') or a
    YAML file on disk ('path/to/my_config.yaml')."""
    name = str(name)
    if name.endswith((".yaml", ".yml")):
        if is_file_config(name):
            return str(Path(name).expanduser())
        return name
    key = name.lower().replace("hiera", "").replace("-", "_").strip("_")
    for fam in ("sam2.1", "sam2"):
        if key.startswith(fam):
            size = key[len(fam):].strip("_")
            if size in _SIZE_ALIASES:
                return CONFIGS[(fam, _SIZE_ALIASES[size])]
    raise ModelError(f"unknown sam2 config {name!r}; use one of "
                     + ", ".join(sorted(f"{f}_hiera_{s}" for f, s in CONFIGS)) + " or a .yaml path")


def load_state_dict(path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip (PK..); older files are raw pickles (0x80 protocol byte)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ModelError(f"{path} is not a PyTorch checkpoint (corrupt, or another kind of "
                         "file); expected a .pt file saved with torch.save({'model': ...})")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean "not a checkpoint"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Weights only load failed" in str(e):
            msg = ("it holds Python objects besides tensors, and sam2rl-fast loads weights "
                   "only (no code runs from a checkpoint)")
        raise ModelError(f"cannot read checkpoint {path}: {msg}") from e
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path} is not a sam2 checkpoint (expected {{'model': state_dict}})")
    return sd


def infer_config(state_dict: dict, source: str = "checkpoint") -> str:
    """The sam2 config a state dict was trained with, from its keys and shapes."""
    if "image_encoder.trunk.conv_stem.weight" in state_dict:  # our EfficientNet-Lite0 trunk
        return str(_PACKAGE_CONFIG_DIR / _OWN_EFFNET)
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None:
        raise ModelError(f"{source} has no Hiera image encoder: not a sam2 checkpoint")
    blocks = {int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks.")}
    fam = "sam2.1" if "no_obj_embed_spatial" in state_dict else "sam2"
    own = _OWN_TRUNKS.get((fam, int(w.shape[0]), len(blocks)))
    if own is not None:
        return str(_PACKAGE_CONFIG_DIR / own)
    size = _TRUNKS.get((int(w.shape[0]), len(blocks)))
    if size is None:
        raise ModelError(f"{source}: a Hiera trunk of width {w.shape[0]} and {len(blocks)} blocks "
                         "matches no Meta config; pass its config explicitly")
    return CONFIGS[(fam, size)]


def build_model(model=None, *, config: str | None = None, device=None, image_size: int | None = None,
                overrides: tuple[str, ...] = ()):
    """A stock `SAM2VideoPredictor` in eval mode for `model`:

    - a checkpoint path (config inferred from its keys, or `config`),
    - an official Hugging Face id of SAM 2 / 2.1 ("facebook/sam2.1-hiera-tiny", ... the ids
      of `sam2.build_sam.HF_MODEL_ID_TO_FILENAMES`): its checkpoint comes from the Hugging
      Face cache, or is downloaded into it (`huggingface_hub.hf_hub_download`, as sam2's
      `build_sam2_video_predictor_hf` does: HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE=1
      apply), and loads with the id's config as a checkpoint path would; an existing local
      path of the same name wins,
    - a config name or .yaml (random weights; tests and benchmarks),
    - a built sam2 model (`SAM2Base` / `SAM2VideoPredictor`), used as it is,
    - None: the demo model bundled with the package.
    """
    from sam2.modeling.sam2_base import SAM2Base

    if isinstance(model, SAM2Base):  # used as it is: its weights, settings and device
        if device is not None and torch.device(device).type != model.device.type:
            raise ModelError(f"the given sam2 model is on {model.device}, not {device}: "
                             "move it (model.to(device)) or leave device unset")
        return model.eval()
    if isinstance(model, torch.nn.Module):
        raise ModelError(f"{type(model).__name__} is not a sam2 model (SAM2Base)")
    device = resolve_device(device)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size <= 0 or image_size % 32):
        raise ModelError(f"image size (--image-size) must be a positive multiple of 32 (the "
                         f"trunk halves the resolution 5 times), got {image_size!r}")
    # sam2's post-processing overrides come last and set fill_hole_area=8 whatever is asked
    # here (stock skips it without sam2's CUDA op; FastTracker never fills holes).
    extra = list(overrides)
    if image_size is not None:
        extra.append(f"++model.image_size={int(image_size)}")
    if model is None:
        ckpt, cfg = bundled_checkpoint()
        return _build(cfg, ckpt, load_state_dict(ckpt), device, extra)
    if not isinstance(model, (str, Path)):
        raise ModelError(f"unsupported model {type(model).__name__}: pass a checkpoint path, "
                         "a Hugging Face id, a config name, a sam2 model or None")
    s = str(model)
    if not Path(s).expanduser().exists() and looks_like_hf_id(s):  # a local path wins
        hf_cfg, ckpt = hf_checkpoint(s)
        return _build_checkpoint(ckpt, config or hf_cfg, device, extra)
    if not s.endswith((".yaml", ".yml")) and (
            s.endswith((".pt", ".pth", ".ckpt")) or Path(s).expanduser().is_file()):
        return _build_checkpoint(s, config, device, extra)
    cfg = resolve_config(s)
    ckpt = _expected_checkpoint(cfg)
    hint = (f"; for Meta's weights pass the checkpoint file ({ckpt}"
            + (f", found in {Path.cwd()}" if ckpt and Path(ckpt).is_file() else "") + ")"
            if ckpt else "")
    import warnings

    warnings.warn(f"model {s!r} is a config, not a checkpoint: the model has RANDOM weights "
                  f"and will not track{hint}", RandomWeightsWarning, stacklevel=2)
    return _build(cfg, None, None, device, extra)


def _build_checkpoint(s: str, config, device, extra):
    sd = load_state_dict(s)
    if config:
        cfg = resolve_config(config)
        try:
            inferred = infer_config(sd, s)
        except ModelError:  # a trunk we do not know: the given config decides
            inferred = cfg
    else:
        cfg = inferred = infer_config(sd, s)
    # The inference reads the trunk only: a YAML file given for a checkpoint whose trunk
    # looks like one of our own configs is trusted, and the weights' fit decides below.
    if not _same_config(cfg, inferred) and not (is_file_config(cfg) and is_file_config(inferred)):
        raise ModelError(f"checkpoint {s} was trained with {inferred}, not {cfg}")
    return _build(cfg, s, sd, device, extra)


def hf_models() -> dict[str, tuple[str, str]]:
    """The official Hugging Face ids of SAM 2 / 2.1 -> (sam2 config, checkpoint file name):
    sam2's own table (`sam2.build_sam.HF_MODEL_ID_TO_FILENAMES`)."""
    try:
        from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES
    except ImportError as e:
        raise ModelError(f"this sam2 install has no Hugging Face model table ({e}); upgrade "
                         "sam2 or pass a local checkpoint path") from e
    return dict(HF_MODEL_ID_TO_FILENAMES)


_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".yaml", ".yml", ".safetensors", ".bin")


def looks_like_hf_id(s: str) -> bool:
    """Whether `s` has the form of a Hugging Face repo id (`owner/name`, not a file name)."""
    return bool(_HF_ID.fullmatch(str(s))) and not str(s).lower().endswith(_FILE_SUFFIXES)


def hf_checkpoint(model_id: str) -> tuple[str, str]:
    """(sam2 config, local checkpoint path) of an official SAM 2 / 2.1 Hugging Face id, the
    checkpoint fetched as sam2's `_hf_download` does (from the cache when it is there)."""
    table = hf_models()
    canonical = {k.lower(): k for k in table}.get(str(model_id).lower())
    if canonical is None:
        raise ModelError(f"model {model_id!r} is neither a local file nor a supported Hugging "
                         f"Face model id (the official SAM 2 / 2.1 checkpoints); supported ids: "
                         f"{', '.join(table)} (or pass a checkpoint path, a config name, or "
                         "nothing for the bundled model)")
    cfg, filename = table[canonical]
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise ModelError(f"model {canonical} comes from Hugging Face, which needs huggingface_hub: "
                         f"pip install huggingface_hub (or pass a local checkpoint path, e.g. the "
                         f"{filename} file)") from None
    try:
        return cfg, hf_hub_download(repo_id=canonical, filename=filename)
    except Exception as e:
        # Not cached, and no Hub: offline mode, or a connection error (huggingface_hub turns
        # those into LocalEntryNotFoundError; matched by name, its modules vary by version).
        names = [c.__name__ for c in type(e).__mro__]
        if not any(w in n for n in names for w in ("LocalEntryNotFound", "OfflineMode", "Connect",
                                                     "Timeout", "Network")):
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"cannot get model {canonical} ({filename}) from Hugging Face: "
                             f"{msg}") from e
        offline = bool(getattr(constants, "HF_HUB_OFFLINE", False))
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the Hub cannot be reached"
        raise ModelError(
            f"model {canonical} ({filename}) is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}; set by HF_HUB_CACHE / HF_HOME) and {why}. Fix: connect "
            f"to the internet{' and unset HF_HUB_OFFLINE' if offline else ''} so that it "
            f"downloads once; or, where there is a connection, `hf download {canonical} {filename}` "
            f"(`huggingface-cli download ...` with huggingface_hub < 1.0) into that cache; or pass "
            f"a local checkpoint path instead (model= / --model path/to/{filename})") from e


def _apply_overrides(cfg, overrides):
    """Hydra-style `key=value` / `+key=value` / `++key=value` overrides on an OmegaConf config
    (values parsed as YAML, as hydra does for these simple forms)."""
    from omegaconf import OmegaConf

    for o in overrides:
        key, sep, value = o.lstrip("+").partition("=")
        if not sep or not key:
            raise ModelError(f"bad config override {o!r}: expected key=value")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={value}"]))
    return cfg


def _build_from_file(path: str, device, extra, with_weights: bool = False):
    """As `build_sam2_video_predictor(path, ckpt_path=None, device, extra)`, for a YAML file
    that sam2's hydra search path does not hold."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(path).expanduser())
    if "model" not in cfg:
        raise ModelError(f"{path} has no 'model' section: not a sam2 config")
    trunk = OmegaConf.select(cfg, "model.image_encoder.trunk")
    if trunk is not None and trunk.get("_target_") == _EFFNET_TRUNK and with_weights:
        trunk.pretrained = False  # the checkpoint holds the trunk's weights
    cfg = _apply_overrides(cfg, [*_VIDEO_PREDICTOR_OVERRIDES, *extra, *_POSTPROCESSING_OVERRIDES])
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    return model.to(device).eval()


def _build(cfg: str, ckpt, sd: dict | None, device, extra):
    """The model of `cfg` holding `sd`, the state dict read (once) from checkpoint `ckpt`."""
    from sam2.build_sam import build_sam2_video_predictor

    try:
        if is_file_config(cfg):
            model = _build_from_file(cfg, device, list(extra), with_weights=sd is not None)
        else:
            model = build_sam2_video_predictor(cfg, ckpt_path=None, device=device,
                                               hydra_overrides_extra=list(extra))
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot build sam2 config {cfg}: {e}") from e
    if sd is not None:
        try:
            missing, unexpected = model.load_state_dict(sd, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ModelError(f"checkpoint {ckpt} does not fit config {cfg}: {e}") from e
        if missing or unexpected:
            raise ModelError(f"checkpoint {ckpt} does not fit config {cfg}: "
                             f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                             f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    _BUILT_CONFIGS[model] = cfg
    return model.eval()

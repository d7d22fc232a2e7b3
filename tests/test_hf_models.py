"""model="facebook/sam2.1-hiera-tiny": official Hugging Face ids, from a hand-made offline hub cache."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sam2rl_fast.cli import main
from sam2rl_fast.model.loading import (
    CONFIGS,
    ModelError,
    build_model,
    hf_checkpoint,
    hf_models,
)
from tests.helpers import moving_square_video, write_jpeg_folder

MODEL_ID = "facebook/sam2.1-hiera-tiny"
FILENAME = "sam2.1_hiera_tiny.pt"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
KEY = "image_encoder.trunk.patch_embed.proj.weight"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight `{"model": state_dict}` of sam2.1_hiera_t (its shapes do not depend
    on image_size, so a 256 build loads into the id's 1024 config)."""
    torch.manual_seed(123)
    sd = build_model("sam2.1_hiera_t", device="cpu", image_size=256).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / FILENAME
    torch.save({"model": sd}, path)
    return path, sd


def fill_cache(hub: Path, ckpt: Path, repo: str = MODEL_ID, filename: str = FILENAME) -> Path:
    """The layout huggingface_hub writes: refs/main -> commit, snapshot file -> blob."""
    root = hub / ("models--" + repo.replace("/", "--"))
    blob = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    (root / "blobs").mkdir(parents=True)
    shutil.copyfile(ckpt, root / "blobs" / blob)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / filename).symlink_to(Path("..", "..", "blobs", blob))
    return snap / filename


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty offline hub cache in tmp_path, and a guard that fails on any connection."""
    import huggingface_hub.constants as constants

    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these variables once, at import: its constants are what it uses.
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network touched: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    yield cache
    assert not calls, f"network touched: {calls}"


def test_id_builds_from_the_cache_with_its_weights(hub, checkpoint):
    ckpt, sd = checkpoint
    cached = fill_cache(hub, ckpt)
    model = build_model(MODEL_ID, device="cpu")
    assert model.image_size == 1024  # the id's config, sam2.1_hiera_t as it ships
    assert torch.equal(model.state_dict()[KEY], sd[KEY])
    name = "memory_attention.layers.0.cross_attn_image.q_proj.weight"
    assert torch.equal(model.state_dict()[name], sd[name])
    # ids are case-insensitive, as on the Hub; the cache holds the canonical id
    assert hf_checkpoint("Facebook/SAM2.1-Hiera-Tiny") == (CONFIGS[("sam2.1", "t")], str(cached))


def test_every_official_id_downloads_as_sam2_does(monkeypatch):
    import huggingface_hub
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES, _hf_download

    assert hf_models() == HF_MODEL_ID_TO_FILENAMES and len(HF_MODEL_ID_TO_FILENAMES) == 8
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        return f"/cache/{kwargs['repo_id']}/{kwargs['filename']}"

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    for model_id, (cfg, _) in HF_MODEL_ID_TO_FILENAMES.items():
        assert cfg in CONFIGS.values()
        assert hf_checkpoint(model_id) == _hf_download(model_id)
        assert calls[-1] == calls[-2]  # same repo_id, filename and nothing else
    assert len(calls) == 16


def test_not_cached_is_a_clear_error(hub):
    with pytest.raises(ModelError) as e:
        build_model(MODEL_ID, device="cpu")
    msg = str(e.value)
    for part in (MODEL_ID, FILENAME, "not in the local Hugging Face cache", str(hub),
                 "HF_HUB_OFFLINE", f"hf download {MODEL_ID} {FILENAME}", "local checkpoint path"):
        assert part in msg, part


def test_hub_errors_are_clear(monkeypatch, hub):
    import huggingface_hub
    import huggingface_hub.constants as constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(**kwargs):
        raise LocalEntryNotFoundError("connection error, and the file is not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ModelError, match="not in the local Hugging Face cache .* cannot be reached"):
        build_model(MODEL_ID, device="cpu")

    def refused(**kwargs):
        raise ValueError("401 gated repo")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refused)
    with pytest.raises(ModelError, match=f"cannot get model {MODEL_ID} .*401 gated repo"):
        build_model(MODEL_ID, device="cpu")


def test_unknown_id_lists_the_supported_ones(hub):
    for bad in ("someone/my-sam2", "facebook/sam3-hiera-tiny"):
        with pytest.raises(ModelError) as e:
            build_model(bad, device="cpu")
        msg = str(e.value)
        assert repr(bad) in msg and "neither a local file nor a supported Hugging Face model id" in msg
        assert "supported ids: " in msg
        assert all(model_id in msg for model_id in hf_models())


def test_a_local_path_wins_over_an_id(hub, tmp_path, monkeypatch, checkpoint):
    fill_cache(hub, checkpoint[0])
    monkeypatch.chdir(tmp_path)
    local = tmp_path / MODEL_ID
    local.parent.mkdir()
    local.write_text("not a checkpoint")
    with pytest.raises(ModelError, match="is not a PyTorch checkpoint"):
        build_model(MODEL_ID, device="cpu")


def test_without_huggingface_hub_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ModelError, match="pip install huggingface_hub"):
        build_model(MODEL_ID, device="cpu")


def test_cli_accepts_an_id(hub, checkpoint, tmp_path, capsys, monkeypatch):
    import sam2rl_fast
    import sam2rl_fast.cli as cli

    built = []

    class Tracker:  # the model `track` builds from --model; tracking itself is tested elsewhere
        def __init__(self, video, *, model, **kwargs):
            built.append(model)

    monkeypatch.setattr(sam2rl_fast, "FastTracker", Tracker)
    monkeypatch.setattr(cli, "_write_tracking", lambda tracker, out, args: 0)
    frames, _ = moving_square_video(2, seed=1)
    folder = write_jpeg_folder(frames, tmp_path / "video")
    args = ["track", folder, "--box", "10,10,40,40", "--model", MODEL_ID, "--image-size", "256",
            "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2  # nothing cached yet
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not in the local Hugging Face cache" in err
    assert not (tmp_path / "a").exists() and not built
    fill_cache(hub, checkpoint[0])
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    (model,) = built
    assert model.image_size == 256 and torch.equal(model.state_dict()[KEY], checkpoint[1][KEY])


def test_the_env_configured_cache_is_used(tmp_path, checkpoint):
    """HF_HOME and HF_HUB_OFFLINE as a user sets them, before huggingface_hub is imported."""
    home = tmp_path / "hf"
    cached = fill_cache(home / "hub", checkpoint[0])
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    code = ("from sam2rl_fast.model.loading import hf_checkpoint; "
            f"print(hf_checkpoint({MODEL_ID!r})[1])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == cached

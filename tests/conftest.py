"""Shared pytest fixtures. Several modules add fixtures here: keep each one's block intact."""

from __future__ import annotations

# ---- models / workloads fixtures (servingbench.host.models, servingbench.host.workloads) -------------
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a bf16 HF directory: models/smollm2-135m if it is a valid
    conversion (pinned checksum), else converted once per session (~35 s)."""
    from servingbench.host.config import load_config
    from servingbench.host.models import SMOLLM2_SHA256, SMOLLM2_WEIGHTS, prepare_model, read_marker, sha256_file

    local = REPO / "models" / "smollm2-135m"
    marker = read_marker(local) if local.is_dir() else None
    if (marker and marker.get("weights") == "real" and (local / SMOLLM2_WEIGHTS).exists()
            and sha256_file(local / SMOLLM2_WEIGHTS) == SMOLLM2_SHA256):
        return local
    if os.environ.get("SERVINGBENCH_SKIP_CHECKSUM") == "1":
        pytest.fail("unset SERVINGBENCH_SKIP_CHECKSUM: the tests check the pinned checksum")
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    return prepare_model(cfg, "smollm2-135m", tmp_path_factory.mktemp("models") / "smollm2-135m")


@pytest.fixture(scope="session")
def dummy_dirs(tmp_path_factory) -> dict[str, Path]:
    """Dummy-weight dirs (config + generated tokenizer, no weights) of config.yaml's models."""
    from servingbench.host.config import load_config
    from servingbench.host.models import prepare_model

    cfg = load_config(REPO / "config.yaml").model_copy(update={"weights": "dummy"})
    root = tmp_path_factory.mktemp("dummy-models")
    return {m: prepare_model(cfg, m, root / m) for m in cfg.models}
# ---- end of models / workloads fixtures ----------------------------------------------------


# ---- llamacpp fixtures (servingbench.host.gguf_export, frameworks/llamacpp) ----------------------
@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_dir) -> Path:
    """The bf16 GGUF of SmolLM2 the llamacpp arm serves, beside the folder (FOLDER.gguf, where the
    arm looks for it): kept if it has the pinned checksum, else written once per session (~20 s)."""
    from servingbench.host.config import load_config
    from servingbench.host.gguf_export import SMOLLM2_GGUF_SHA256, prepare_gguf
    from servingbench.host.models import sha256_file

    local = Path(str(smollm2_dir) + ".gguf")
    if local.exists() and sha256_file(local) == SMOLLM2_GGUF_SHA256["bfloat16"]:
        return local
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    return prepare_gguf(cfg, "smollm2-135m", smollm2_dir, local)
# ---- end of llamacpp fixtures --------------------------------------------------------------

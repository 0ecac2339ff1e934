"""Package boundaries: rmt/ is a plain library (no Hydra, no W&B); data flows config -> run -> record -> figure,
so experiments/ never imports analysis/ and analysis/ never imports experiments/."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_rmt_imports_without_hydra_or_wandb():
    code = ("import sys, rmt, rmt.models, rmt.prune, rmt.pruners, rmt.spectra, rmt.analyze, rmt.io; "
            "print(sorted(m for m in ('hydra', 'omegaconf', 'wandb', 'experiments', 'analysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert out == "[]"


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports (static: every import statement, also inside functions)."""
    found = {}
    for path in sorted((ROOT / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


@pytest.mark.parametrize("package,forbidden", [("experiments", "analysis"), ("analysis", "experiments"),
                                               ("rmt", "experiments"), ("rmt", "analysis")])
def test_package_boundaries(package, forbidden):
    offenders = [name for name, imports in imported_packages(package).items() if forbidden in imports]
    assert offenders == [], f"{package}/ modules importing {forbidden}: {offenders}"


def test_timm_model_from_a_local_weights_file(tmp_path):
    from rmt.models import WeightsUnavailableError, build_model

    args = {"model_name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32,
                                                             "num_heads": 2}, "num_classes": 10}
    torch.manual_seed(1)
    source = build_model("timm", **args)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(2)
    loaded = build_model("timm", **args, checkpoint=str(tmp_path / "weights.pt"))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_model("timm", **args, checkpoint=str(tmp_path / "missing.pt"))

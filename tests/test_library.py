"""rmt/ is a plain library: importing it pulls in neither Hydra nor W&B."""

import subprocess
import sys


def test_rmt_imports_without_hydra_or_wandb():
    code = "import sys, rmt, rmt.models, rmt.prune, rmt.spectra; print(sorted(m for m in ('hydra', 'omegaconf', 'wandb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"

"""`rmt analyze` / `rmt prune` on small models: ground truth on random-init timm ViTs, loadable pruned models."""

import copy
import re

import pandas as pd
import pytest
import torch
from torch import nn

from rmt.__main__ import main as rmt_main
from rmt.analyze import analyze
from rmt.io import load_model, load_pruned
from rmt.models import build_model


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_model("timm", model_name="vit_small_patch16_224")


def test_random_init_vit_fits_initialiser_variance(vit):
    """timm initialises ViT Linear weights with a truncated normal of std 0.02: sigma2 = 4e-4, no spikes."""
    df = analyze(vit, device="cpu")
    blocks = df[df["layer"].str.startswith("blocks.")]
    assert len(blocks) == 48
    assert (blocks["sigma2"] / 0.02**2).between(0.98, 1.02).all()
    assert blocks["spikes"].sum() <= 5 and blocks["gof"].max() < 0.02
    assert set(df.attrs["singular_values"]) == set(df["layer"])


def test_analyze_state_dict_equals_module(vit):
    a = analyze(vit, device="cpu")
    b = analyze(vit.state_dict(), device="cpu")
    pd.testing.assert_frame_equal(a.drop(columns="layer"), b.drop(columns="layer"))


def test_cli_analyze_writes_table_and_plot(tmp_path, capsys):
    path = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(build_model("fc", hidden=[200, 200], input_shape=(300,), num_classes=10).state_dict(), path)
    assert rmt_main(["analyze", str(path), "--out", str(tmp_path / "t.csv"), "--plot", str(tmp_path / "esd.png")]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["layer"].astype(str)) == ["1", "3", "5"]
    assert (tmp_path / "esd.png").stat().st_size > 1000
    assert "analysed in" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert rmt_main(["analyze", "no_such_model_xyz"]) == 1
    assert "not a file, a folder or a timm model name" in capsys.readouterr().err
    path = tmp_path / "w.pt"
    torch.save({"0.weight": torch.randn(50, 40)}, path)
    assert rmt_main(["prune", str(path), "--keep-fraction", "0.5", "--out", str(tmp_path / "p")]) == 1
    assert "needs an architecture" in capsys.readouterr().err


class _RunsAShellCommand:
    """A pickle payload that would call os.system when unpickled in full."""

    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


def _write_bad_file(kind: str, path) -> None:
    import pickle

    if kind == "text":
        path.write_text("hello, not weights\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "numpy":
        path.write_bytes(b"\x93NUMPY\x01\x00v\x00")
    elif kind == "truncated":
        torch.save({"0.weight": torch.randn(50, 40)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "code_in_torch_save":
        torch.save({"model": _RunsAShellCommand()}, path)
    elif kind == "raw_pickle":
        path.write_bytes(pickle.dumps(_RunsAShellCommand(), protocol=4))


@pytest.mark.parametrize("kind, message", [
    ("text", re.escape("is not a PyTorch checkpoint (torch.save writes a zip archive; this file starts with b'hello, n')")),
    ("empty", "is empty: not a PyTorch checkpoint"),
    ("numpy", "is not a PyTorch checkpoint"),
    ("truncated", "is truncated or corrupt"),
    ("code_in_torch_save", "refused to load .* it asks to import (posix|nt).system, and unpickling it in full could run code"),
    ("raw_pickle", "refused to load .* pickle features a weights-only load does not allow"),
])
def test_cli_analyze_on_files_that_are_not_checkpoints(tmp_path, capsys, kind, message):
    path = tmp_path / "file.pt"
    _write_bad_file(kind, path)
    assert rmt_main(["analyze", str(path)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert "should-never-run" not in captured.out + captured.err


@pytest.mark.parametrize("args, message", [
    (["analyze", "x", "--alpha", "0.7"], "bad option: --alpha=0.7 (expected a number > 0 and < 0.5)"),
    (["analyze", "x", "--beta", "0", "--keep-fraction", "nan"],
     "bad options: --beta=0.0 (expected a number > 0 and < 1); --keep-fraction=nan (expected a number >= 0 and <= 1)"),
    (["prune", "x", "--keep-fraction", "0.5", "--out", "o", "--gof-threshold", "-1"], "--gof-threshold=-1.0 (expected a number > 0"),
    (["prune", "x", "--keep-fraction", "0.5", "--out", "o", "--min-output-rank", "-5"], "--min-output-rank=-5 (expected an integer >= 0)"),
    (["analyze", "x", "--device", "tpu"], "--device=tpu (expected cpu, cuda or cuda:<index>)"),
])
def test_cli_options_out_of_range_are_one_line(capsys, args, message):
    assert rmt_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_analyze_with_an_alpha_no_spectrum_fits_raises_instead_of_skipping_every_layer():
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1/2\), got 0.7"):
        analyze({"0.weight": torch.randn(50, 40)}, alpha=0.7, device="cpu")


def test_unknown_timm_name_suggests_close_names():
    from rmt.models import UnknownModelError

    with pytest.raises(UnknownModelError, match="timm has no model 'vit_tiny_patch16_22'; close names: vit_tiny_patch16_224"):
        build_model("timm", model_name="vit_tiny_patch16_22")


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_cli_analyze_names_layers_with_non_finite_weights(tmp_path, capsys, bad):
    weights = {"ok.weight": torch.randn(50, 40), "broken.weight": torch.randn(60, 40)}
    weights["broken.weight"][3, 4] = bad
    torch.save(weights, tmp_path / "w.pt")
    assert rmt_main(["analyze", str(tmp_path / "w.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: non-finite weights (NaN or inf) in layer broken (1 of 2400): their spectra are undefined"]


def test_cli_analyze_lists_skipped_layers(tmp_path, capsys):
    weights = {"ok.weight": torch.randn(50, 40), "zero.weight": torch.zeros(30, 20), "tiny.weight": torch.randn(10, 1)}
    torch.save(weights, tmp_path / "w.pt")
    assert rmt_main(["analyze", str(tmp_path / "w.pt"), "--out", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "skipped zero: all weights are 0" in out and "skipped tiny: too small for the fit (1 singular values" in out
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(table["layer"]) == ["ok"] and table.notna().all().all()
    torch.save({"zero.weight": torch.zeros(30, 20)}, tmp_path / "z.pt")  # nothing left to fit: an empty table, no crash
    assert rmt_main(["analyze", str(tmp_path / "z.pt")]) == 0
    assert "skipped zero: all weights are 0" in capsys.readouterr().out
    assert rmt_main(["analyze", str(tmp_path / "z.pt"), "--plot", str(tmp_path / "esd.png")]) == 1  # not a ZeroDivisionError
    assert "no ESD to draw" in capsys.readouterr().err and not (tmp_path / "esd.png").exists()


def truncated_copy(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, rank in ranks.items():
            layer = ref.get_submodule(name)
            w = layer.weight.reshape(layer.weight.shape[0], -1)
            u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
            layer.weight.copy_(((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(layer.weight.shape))
    return ref


def test_prune_timm_model_is_smaller_loadable_and_matches_truncation(tmp_path, capsys):
    torch.manual_seed(0)
    name = "vit_tiny_patch16_224"
    assert rmt_main(["prune", name, "--keep-fraction", "0.3", "--out", str(tmp_path / "p")]) == 0
    assert "MACs" in capsys.readouterr().out
    pruned = load_pruned(tmp_path / "p")
    torch.manual_seed(0)
    dense, _ = load_model(name)
    import json

    record = json.loads((tmp_path / "p" / "rmt_model.json").read_text())
    assert record["params_after"] < record["params_before"] and record["macs_after"] < record["macs_before"]
    ranks = {layer["layer"]: layer["rank"] for layer in record["layers"]}
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, expected = pruned(x).double(), truncated_copy(dense, ranks).eval()(x).double()
    # A float32 ViT (LayerNorm, softmax, GELU) has no closed-form rounding bound: a normwise budget of 1e-3 of the
    # logits' norm per image (measured ~1e-6 under every thread count and instruction set), never an elementwise rtol
    # on logits near zero.  A wrong rank moves the logits by far more.
    assert (torch.linalg.vector_norm(got - expected, dim=1) <= 1e-3 * torch.linalg.vector_norm(expected, dim=1)).all()
    assert sum(p.numel() for p in pruned.parameters()) == record["params_after"]


def test_prune_run_folder_and_prune_again(tmp_path, data_root):
    from hydra import compose, initialize_config_dir

    from experiments import train
    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["profile=smoke", "arm=rmt", "logger=local", "progress=false",
                                                      f"paths.runs_dir={tmp_path}", f"paths.data_dir={data_root}"])
    train.run(cfg)
    assert rmt_main(["prune", cfg.run_dir, "--keep-fraction", "0.5", "--out", str(tmp_path / "a"), "--min-output-rank", "10"]) == 0
    assert rmt_main(["prune", str(tmp_path / "a"), "--keep-fraction", "0.2", "--out", str(tmp_path / "b")]) == 0
    model = load_pruned(tmp_path / "b")
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)

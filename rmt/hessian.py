"""Hessian spectra by stochastic Lanczos quadrature (SLQ), as P4 estimates the loss-landscape density.

    from rmt.hessian import lanczos_spectrum, loss_hessian_operator
    matvec, dim = loss_hessian_operator(model, batches, params=["0.weight", "2.weight"])
    nodes, weights = lanczos_spectrum(matvec, dim, steps=128, probes=1, seed=0)
    # sum(weights * f(nodes)) ~ tr f(H) / dim;  weights sum to 1

Conventions: Lanczos runs in float64 with full re-orthogonalisation (each new vector is orthogonalised twice
against all earlier ones), so the Ritz values do not develop the ghost copies of plain Lanczos.  A probe is a
Rademacher vector scaled to unit norm (E[v v^T] = I / dim, so the quadrature is an unbiased estimate of
tr f(A) / dim); with one probe and m steps, `sum(weights * nodes**k) = v^T A^k v` exactly for k <= 2m - 1.
On an invariant subspace (breakdown, e.g. steps >= dim) the recursion stops early and the Ritz values are exact
eigenvalues.  `matvec` receives and returns 1-D float64 tensors on the device of its choice.

A long run can keep its progress in a folder (`checkpoint_dir`): each new basis vector is written to a raw
float64 file, which is fsynced before the coefficients that count it are committed (atomically, every few
seconds), so a run killed at any point resumes after its last committed step and gives bitwise the coefficients
of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rmt.runfolder import atomic_write_text

Matvec = Callable[[torch.Tensor], torch.Tensor]


class LanczosCheckpoint:
    """The durable progress of one Lanczos run in `folder`: `basis.f64` (the basis vectors as raw float64 rows)
    and `coefficients.json` (alpha and beta so far, the rows they count, whether the run has ended, and the seconds
    its saved steps took).  Rows are written as they come; the coefficients are committed (the basis file fsynced
    first, then the JSON replaced atomically) when `every_s` seconds have passed since the last commit and when the
    run ends, so the two always agree after a kill, which loses at most `every_s` seconds of steps."""

    BASIS, COEFFICIENTS = "basis.f64", "coefficients.json"

    def __init__(self, folder: str | Path, every_s: float = 10.0):
        self.folder = Path(folder)
        self.every_s = every_s
        self.last_commit = time.monotonic()

    def saved(self) -> dict:
        """{"dim": vector length, "rows": basis rows written, "alphas": [...], "betas": [...], "ended": bool,
        "seconds": float} (rows 0 when nothing is saved)."""
        path = self.folder / self.COEFFICIENTS
        return json.loads(path.read_text()) if path.exists() else {"dim": 0, "rows": 0, "alphas": [], "betas": [],
                                                                    "ended": False, "seconds": 0.0}

    def restore(self, basis: torch.Tensor) -> tuple[list[float], list[float], bool, float]:
        """Fill the first saved rows of `basis` (whose row 0 is the start vector) and return (alphas, betas,
        ended, seconds).  A checkpoint of another start vector or dimension is refused."""
        state = self.saved()
        rows = state["rows"]
        if rows == 0:
            return [], [], False, 0.0
        dim = basis.shape[1]
        path = self.folder / self.BASIS
        if state["dim"] != dim or rows > basis.shape[0] or not path.exists() or path.stat().st_size < rows * dim * 8:
            raise ValueError(f"{self.folder} holds a Lanczos run of another size ({rows} rows of {state['dim']}, "
                             f"not at most {basis.shape[0]} of {dim}); remove the folder to start again")
        row = torch.empty(dim, dtype=torch.float64)
        with path.open("rb") as fh:  # row by row: the basis of a large net is gigabytes
            for i in range(rows):
                fh.readinto(memoryview(row.numpy()).cast("B"))
                if i == 0 and not torch.equal(row, basis[0].cpu()):
                    raise ValueError(f"{self.folder} holds a Lanczos run from another start vector; remove it to "
                                     "start again")
                basis[i] = row
        return ([float(a) for a in state["alphas"]], [float(b) for b in state["betas"]], bool(state["ended"]),
                float(state["seconds"]))

    def write_row(self, j: int, row: torch.Tensor) -> None:
        """Write basis row `j` (float64) at its place in the basis file (durable at the next commit)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.BASIS
        with path.open("r+b" if path.exists() else "wb") as fh:
            fh.seek(j * row.numel() * 8)
            fh.write(row.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())

    def write_coefficients(self, dim: int, rows: int, alphas: list[float], betas: list[float], ended: bool,
                           seconds: float) -> None:
        """Commit the coefficients of the first `rows` rows when it is time (or the run has `ended`)."""
        if not ended and time.monotonic() - self.last_commit < self.every_s:
            return
        with (self.folder / self.BASIS).open("rb") as fh:
            os.fsync(fh.fileno())  # the rows first: the coefficients never count a row that is not on disk
        atomic_write_text(self.folder / self.COEFFICIENTS, json.dumps(
            {"dim": dim, "rows": rows, "alphas": alphas, "betas": betas, "ended": ended, "seconds": seconds}))
        self.last_commit = time.monotonic()


def saved_lanczos_progress(checkpoint_dir: str | Path) -> tuple[int, float]:
    """(steps, seconds) that the probe runs saved under a `lanczos_spectrum` checkpoint folder have done."""
    states = [LanczosCheckpoint(p).saved() for p in sorted(Path(checkpoint_dir).glob("probe*"))]
    return sum(len(s["alphas"]) for s in states), sum(float(s["seconds"]) for s in states)


@torch.no_grad()
def lanczos_tridiagonal(matvec: Matvec, start: torch.Tensor, steps: int,
                        checkpoint: LanczosCheckpoint | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) of the Lanczos tridiagonal matrix from a unit `start` vector: `len(alpha) <= steps`
    diagonal entries and `len(alpha) - 1` off-diagonal ones.  Stops early on breakdown (beta ~ 0).  With a
    `checkpoint`, the progress is committed there and a run of the same start vector resumes after its last commit."""
    dim = start.numel()
    basis = torch.empty((min(steps, dim), dim), dtype=torch.float64, device=start.device)
    basis[0] = start
    alphas: list[float] = []
    betas: list[float] = []
    seconds = 0.0
    if checkpoint is not None:
        alphas, betas, ended, seconds = checkpoint.restore(basis)
        if ended:
            return torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)
        if not alphas:
            checkpoint.write_row(0, start)
    scale = max([abs(a) for a in alphas] + betas, default=0.0)
    for j in range(len(alphas), basis.shape[0]):
        step_start = time.perf_counter()
        w = matvec(basis[j].clone()).to(torch.float64, copy=True)  # a matvec may return or change its input
        if w.shape != (dim,):
            raise ValueError(f"matvec must return a 1-D tensor of length {dim}, got shape {tuple(w.shape)}")
        alpha = float(torch.dot(basis[j], w))
        alphas.append(alpha)
        known = basis[: j + 1]
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough")
            w -= known.T @ (known @ w)
        beta = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(alpha), beta)
        ended = j + 1 == basis.shape[0] or beta <= 1e-12 * max(scale, 1e-300)
        if not ended:
            betas.append(beta)
            basis[j + 1] = w / beta
        if checkpoint is not None:
            if not ended:
                checkpoint.write_row(j + 1, basis[j + 1])
            seconds += time.perf_counter() - step_start
            checkpoint.write_coefficients(dim, j + 2 - ended, alphas, betas, ended, round(seconds, 3))
        if ended:
            break
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)


def lanczos_spectrum(matvec: Matvec, dim: int, steps: int = 128, probes: int = 1, seed: int = 0,
                     device: str | torch.device | None = None,
                     checkpoint_dir: str | Path | None = None,
                     checkpoint_every_s: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values (`nodes`) and quadrature weights (averaged over `probes`, summing to 1) of the symmetric operator
    `matvec` on R^dim: `sum(weights * f(nodes)) ~ tr f(A) / dim`.  Float64 tensors on the CPU, nodes ascending.
    With `checkpoint_dir`, each probe's run keeps its progress in `checkpoint_dir/probe<k>` (committed every
    `checkpoint_every_s` seconds) and resumes from it (the folder belongs to these settings: another operator, seed
    or step count needs another folder)."""
    if dim < 1 or steps < 1 or probes < 1:
        raise ValueError(f"dim, steps and probes must be >= 1; got dim={dim}, steps={steps}, probes={probes}")
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for probe in range(probes):
        signs = torch.randint(0, 2, (dim,), generator=gen, dtype=torch.float64) * 2 - 1
        start = (signs / dim**0.5).to(device or "cpu")
        checkpoint = None if checkpoint_dir is None else LanczosCheckpoint(Path(checkpoint_dir) / f"probe{probe}",
                                                                    checkpoint_every_s)
        alpha, beta = lanczos_tridiagonal(matvec, start, steps, checkpoint)
        tri = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
        theta, vecs = torch.linalg.eigh(tri)
        nodes.append(theta)
        weights.append(vecs[0] ** 2 / probes)
    nodes_t, weights_t = torch.cat(nodes), torch.cat(weights)
    order = torch.argsort(nodes_t)
    return nodes_t[order], weights_t[order]


def loss_hessian_operator(model: nn.Module, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                          params: Sequence[str] | None = None,
                          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                          ) -> tuple[Matvec, int]:
    """The Hessian of the mean loss over a dataset, w.r.t. the named parameters (all by default), as a matvec on
    flat float64 vectors, and its dimension.

    `batches()` yields (inputs, targets) covering the dataset once (called for every product); `loss_fn` is a
    batch mean.  Each product is a double backward per batch (the gradient with its graph, then the gradient of
    its product with the vector; on 2 CPU cores 1.2x faster than forward-over-reverse `torch.func`), weighted by
    batch size and summed in float64, so it equals the Hessian of the loss over all examples.  The model is used
    as it is (put it in eval mode for a deterministic operator); its parameters and their `.grad` are unchanged."""
    named = dict(model.named_parameters())
    names = list(params) if params is not None else list(named)
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"the model has no parameters {missing[:5]}")
    frozen = [n for n in names if not named[n].requires_grad]
    if frozen:
        raise ValueError(f"parameters {frozen[:5]} do not require grad; the Hessian needs them to")
    chosen = [named[n] for n in names]
    sizes = [p.numel() for p in chosen]
    dtype = chosen[0].dtype
    if next(iter(batches()), None) is None:
        raise ValueError("the Hessian needs at least one batch of data")

    def matvec(v: torch.Tensor) -> torch.Tensor:
        tangent = [t.reshape(p.shape).to(dtype) for t, p in zip(v.split(sizes), chosen)]
        total = torch.zeros(sum(sizes), dtype=torch.float64, device=v.device)
        count = 0
        with torch.enable_grad():  # also when called under no_grad (as Lanczos calls it)
            for x, y in batches():
                grads = torch.autograd.grad(loss_fn(model(x.to(dtype)), y), chosen, create_graph=True)
                hv = torch.autograd.grad(grads, chosen, grad_outputs=tangent)
                total += torch.cat([h.reshape(-1) for h in hv]).to(torch.float64) * len(y)
                count += len(y)
        return total / count

    return matvec, sum(sizes)

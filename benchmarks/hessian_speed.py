"""Speed of the SLQ Hessian step against plain gradient passes over the same data, in one run.

    .venv/bin/python benchmarks/hessian_speed.py [--net fc5|fc12] [--width-scale 1.0] [--examples 10000]
        [--chunk 10000] [--steps 16] [--repeats 3] [--device cpu|cuda] [--json out.json]

On a P4 net (random Kaiming-normal weights, seed 0) and `--examples` random inputs with random labels, all on
`--device` (default: the GPU when present), each timed in interleaved rounds (medians of `--repeats`, CUDA
synchronised):
- gradient pass: forward + backward of the mean cross-entropy over the examples in chunks of `--chunk`
  (the plain baseline: what one training epoch costs per example, without the optimizer);
- HVP, ours: one product of `rmt.hessian.loss_hessian_operator` (double backward: the gradient with its graph,
  then its vector-Jacobian product with v; float64 accumulation) over the same examples;
- HVP, forward-over-reverse: `torch.func.jvp` of `torch.func.grad` through `functional_call`, the other route;
- SLQ step: `rmt.hessian.lanczos_spectrum` with `--steps` steps, per step (HVP + full re-orthogonalisation).
Prints one row and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import torch
import torch.nn.functional as F

from rmt.hessian import lanczos_spectrum, loss_hessian_operator
from rmt.models import build_model
from timing import timed

NETS = {"fc5": [1000, 600, 300, 100], "fc12": [1000, 900, 800, 750, 700, 650, 600, 500, 400, 200, 100]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=sorted(NETS), default="fc5")
    parser.add_argument("--width-scale", type=float, default=1.0)
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    hidden = [max(16, round(h * args.width_scale)) for h in NETS[args.net]]
    model = build_model(kind="fc", hidden=hidden, input_shape=[1, 28, 28], num_classes=10, init="kaiming_normal").to(device)
    model.eval()
    x = torch.randn(args.examples, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.examples,), device=device)

    def batches():
        return zip(x.split(args.chunk), y.split(args.chunk))

    params = [p for p in model.parameters()]
    dim = sum(p.numel() for p in params)
    matvec, _ = loss_hessian_operator(model, batches)
    v = torch.randn(dim, dtype=torch.float64, device=device)
    v_parts = [t.reshape(p.shape).float() for t, p in zip(v.split([p.numel() for p in params]), params)]

    def gradient_pass() -> None:
        model.zero_grad(set_to_none=True)
        for xb, yb in batches():
            (F.cross_entropy(model(xb), yb) * len(yb) / args.examples).backward()

    names = [n for n, _ in model.named_parameters()]
    theta, tangent = dict(zip(names, [p.detach() for p in params])), dict(zip(names, v_parts))

    def forward_over_reverse_hvp() -> None:
        for xb, yb in batches():
            def grad_of(t: dict) -> dict:
                return torch.func.grad(lambda q: F.cross_entropy(torch.func.functional_call(model, q, (xb,)), yb))(t)
            torch.func.jvp(grad_of, (theta,), (tangent,))

    def slq() -> None:
        lanczos_spectrum(matvec, dim, steps=args.steps, probes=1, seed=0, device=device)

    cases = {"grad_s": gradient_pass, "hvp_s": lambda: matvec(v), "hvp_forward_over_reverse_s": forward_over_reverse_hvp, "slq_s": slq}
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for key, fn in cases.items():
            times[key].append(timed(fn, device)[0])
    med = {k: statistics.median(t) for k, t in times.items()}
    slq_step = med["slq_s"] / args.steps
    row = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, "
                  f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "torch": torch.__version__, "net": args.net, "sizes": [784, *hidden, 10], "params": dim,
        "examples": args.examples, "chunk": args.chunk, "repeats": args.repeats, "lanczos_steps": args.steps,
        **{k: round(t, 4) for k, t in med.items()},
        "grad_passes_per_s": round(1 / med["grad_s"], 3), "hvps_per_s": round(1 / med["hvp_s"], 3),
        "hvp_over_grad": round(med["hvp_s"] / med["grad_s"], 3),
        "forward_over_reverse_over_ours": round(med["hvp_forward_over_reverse_s"] / med["hvp_s"], 3),
        "slq_step_s": round(slq_step, 4), "slq_step_over_hvp": round(slq_step / med["hvp_s"], 3),
    }
    print(" ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(row, fh, indent=2)


if __name__ == "__main__":
    main()

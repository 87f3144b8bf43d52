"""Can the default student's step get faster without changing what it computes? Side by side.

The default experiment runs 21 LeNet-5-half students (7 sets x 3 seeds) on flips-only augmentation,
so each step is the student's own forward, backward and Adam on a batch of 256 (the teacher's
logits are precomputed per view). Every candidate below computes the same function of the same
batch, in one run, interleaved rounds, best round counted:

- reference:   what dfkd runs: model and input in channels_last, Adam (foreach);
- nchw:        the same in the default memory format;
- fused adam:  `torch.optim.Adam(fused=True)`;
- compiled:    `torch.compile` (inductor, C++ on the CPU) over forward + loss; its compile time
               is printed apart and is paid once per process, i.e. once per student job;
- 3 stacked:   three seeds' students as one model (grouped convolutions, batched matmuls),
               each on its own batch, one Adam over all; its time is divided by 3. This is what
               training a set's seeds in one process would buy. Its forward is checked against
               the three separate students (max abs difference printed).

Prints ms per student step and each candidate's speed-up over the reference.

    python benchmarks/bench_student_step.py            # 1 thread, 4 rounds of 40 steps
    python benchmarks/bench_student_step.py --quick    # 2 rounds of 15 steps, no torch.compile
Never run as a test.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn import functional as F

from dfkd.stages.distill import kd_loss
from dfkd.models.lenet import lenet5_half

B, T = 256, 20.0


class StackedLeNetHalf(nn.Module):
    """G LeNet-5-half students as one module: input (G, B, 1, 32, 32) -> logits (G, B, K)."""

    def __init__(self, students: list[nn.Module]):
        super().__init__()
        self.groups = len(students)
        convs = [[m.conv[0], m.conv[3]] for m in students]
        self.conv1 = nn.Conv2d(self.groups, 3 * self.groups, 5, groups=self.groups)
        self.conv2 = nn.Conv2d(3 * self.groups, 8 * self.groups, 5, groups=self.groups)
        with torch.no_grad():
            for layer, i in ((self.conv1, 0), (self.conv2, 1)):
                layer.weight.copy_(torch.cat([c[i].weight for c in convs]))
                layer.bias.copy_(torch.cat([c[i].bias for c in convs]))
        linears = [[m.fc[0], m.fc[2], m.head] for m in students]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i].weight.detach().t() for ls in linears])) for i in range(3))  # (G, in, out)
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i].bias.detach()[None] for ls in linears])) for i in range(3))  # (G, 1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, batch = x.shape[:2]
        h = x.transpose(0, 1).reshape(batch, groups, *x.shape[-2:])  # (B, G, H, W): group g = student g
        h = h.contiguous(memory_format=torch.channels_last)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)  # (B, 8G, 5, 5)
        h = h.reshape(batch, groups, -1).transpose(0, 1)  # (G, B, 200), each student's own flatten order
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            h = F.relu(h) if i < 2 else h
        return h  # (G, B, K)


def single_step(channels_last: bool, fused: bool, compiled: bool, x: torch.Tensor, t: torch.Tensor):
    torch.manual_seed(0)
    model = lenet5_half(1, 10, 32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, fused=fused or None)
    loss_of = lambda a, b: kd_loss(model(a), b, T)  # noqa: E731
    if compiled:
        loss_of = torch.compile(loss_of)

    def step() -> None:
        loss = loss_of(x, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def stacked_step(xs: torch.Tensor, ts: torch.Tensor):
    students = []
    for seed in range(len(xs)):
        torch.manual_seed(seed)
        students.append(lenet5_half(1, 10, 32))
    model = StackedLeNetHalf(students)
    with torch.no_grad():  # the stacked forward is the three students' forwards
        gap = max(float((model(xs)[g] - students[g](xs[g])).abs().max()) for g in range(len(xs)))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def step() -> None:
        logits = model(xs)
        loss = sum(kd_loss(logits[g], ts[g], T) for g in range(len(xs)))  # independent students: summed losses
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step, gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, steps = (2, 15) if args.quick else (4, 40)
    generator = torch.Generator().manual_seed(0)
    xs = torch.rand(3, B, 1, 32, 32, generator=generator)
    ts = torch.randn(3, B, 10, generator=generator)

    candidates = {"reference (channels_last)": (single_step(True, False, False, xs[0], ts[0]), 1),
                  "nchw": (single_step(False, False, False, xs[0], ts[0]), 1),
                  "fused adam": (single_step(True, True, False, xs[0], ts[0]), 1)}
    if not args.quick:
        started = time.perf_counter()
        step = single_step(True, False, True, xs[0], ts[0])
        step()
        print(f"torch.compile: {time.perf_counter() - started:.1f} s to compile and run the first step")
        candidates["compiled"] = (step, 1)
    step, gap = stacked_step(xs, ts)
    print(f"3 stacked: forward differs from the separate students by at most {gap:.1e}")
    candidates["3 stacked (per student)"] = (step, 3)

    for step, _ in candidates.values():  # warm-up
        for _ in range(5):
            step()
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, (step, per) in candidates.items():
            started = time.perf_counter()
            for _ in range(steps):
                step()
            best[name] = min(best[name], (time.perf_counter() - started) / steps / per * 1000)

    reference = best["reference (channels_last)"]
    print(f"\n{args.threads} thread(s), batch {B}, best of {rounds} rounds of {steps} steps")
    print(f"{'candidate':28s} {'ms/step':>8s} {'speed-up':>9s}")
    for name, ms in best.items():
        print(f"{name:28s} {ms:8.2f} {reference / ms:8.2f}x")


if __name__ == "__main__":
    main()

"""Where the proxy nets' training time goes on a CPU, and whether another formulation of the same arithmetic is
faster: the depthwise conv's weight gradient (oneDNN's kernel against two rewrites as other convolutions and one
as unfolded products) and BatchNorm + ReLU (eager against torch.compile's fused kernels). One thread, fp32, NHWC
as the nets run; medians of 7 calls (ms). Prints a Markdown table; the README quotes it.

    taskset -c 0 python results/bench/kernel_alternatives.py
"""
import time

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)
NHWC = torch.channels_last


def ms(fn, n: int = 7) -> float:
    fn()
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[n // 2]


def depthwise(n: int, c: int, h: int, k: int) -> dict:
    p = k // 2
    x = torch.randn(n, c, h, h).contiguous(memory_format=NHWC)
    g = torch.randn(n, c, h, h).contiguous(memory_format=NHWC)
    w = torch.randn(c, 1, k, k)

    def grad(weight_grad: bool, input_grad: bool):
        return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], c,
                                                   [input_grad, weight_grad, False])

    def as_grouped_conv():  # dW[c] = sum_n corr(x_pad[n, c], g[n, c]): one group per channel, the batch as channels
        xp = F.pad(x, (p, p, p, p)).transpose(0, 1).reshape(1, c * n, h + 2 * p, h + 2 * p)
        return F.conv2d(xp, g.transpose(0, 1), None, 1, 0, 1, c).view(c, 1, k, k)

    def as_grouped_conv_nhwc():
        xp = F.pad(x, (p, p, p, p)).transpose(0, 1).reshape(1, c * n, h + 2 * p, h + 2 * p)
        return F.conv2d(xp.contiguous(memory_format=NHWC), g.transpose(0, 1).contiguous(memory_format=NHWC), None,
                        1, 0, 1, c).view(c, 1, k, k)

    def as_unfolded_products():  # one kernel row at a time: the row's k shifts as a window view, one einsum
        xp, gg = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1), g.permute(0, 2, 3, 1)
        out = torch.empty(c, k, k)
        for i in range(k):
            out[:, i] = torch.einsum("nhjcw,nhwc->cj", xp[:, i:i + h].unfold(2, h, 1), gg)
        return out.view(c, 1, k, k)

    reference = grad(True, False)[1]
    for alternative in (as_grouped_conv, as_grouped_conv_nhwc, as_unfolded_products):  # the same numbers
        assert (alternative() - reference).abs().max() <= 1e-4 * reference.abs().max()
    return {"forward": ms(lambda: F.conv2d(x, w, None, 1, p, 1, c)), "input grad": ms(lambda: grad(False, True)),
            "weight grad": ms(lambda: grad(True, False)), "as grouped conv": ms(as_grouped_conv),
            "as grouped conv, NHWC": ms(as_grouped_conv_nhwc), "as unfolded products": ms(as_unfolded_products)}


def batch_norm_relu(n: int, c: int, h: int) -> dict:
    x = torch.randn(n, c, h, h).contiguous(memory_format=NHWC).requires_grad_()
    g = torch.randn(n, c, h, h).contiguous(memory_format=NHWC)
    bn = nn.BatchNorm2d(c)

    def layer(x):
        return F.relu(bn(x))

    compiled = torch.compile(layer)
    return {"eager": ms(lambda: layer(x).backward(g)), "compiled": ms(lambda: compiled(x).backward(g))}


def table(title: str, rows: dict) -> None:
    columns = list(next(iter(rows.values())))
    print(f"\n{title}\n\n| shape | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for shape, row in rows.items():
        print(f"| {shape} | " + " | ".join(f"{row[col]:.1f}" for col in columns) + " |")


if __name__ == "__main__":
    # shapes of the quarter-width proxy nets: CIFAR (32 px, batch 128) and Imagenette (96 px, batch 64)
    table("Depthwise conv, ms (N, C, H=W, k)", {
        f"{n}, {c}, {h}, {k}": depthwise(n, c, h, k)
        for n, c, h, k in [(128, 24, 8, 7), (128, 96, 8, 7), (64, 96, 24, 7), (64, 48, 48, 7)]})
    table("BatchNorm + ReLU, forward and backward, ms (N, C, H=W)", {
        f"{n}, {c}, {h}": batch_norm_relu(n, c, h) for n, c, h in [(128, 64, 8), (64, 16, 24), (64, 64, 24)]})

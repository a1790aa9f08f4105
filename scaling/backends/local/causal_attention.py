"""Causal self-attention for fp32 CPU training that skips the masked key blocks (a small C++ op).

PyTorch's CPU flash-attention kernels split the keys into blocks of 512
(``kvSplitSize`` in ``aten/src/ATen/native/cpu/FlashAttentionKernel.cpp``), so at sequences up to
512 every query block multiplies all keys and the causal mask throws half of that work away:
causal attention costs what full attention does (16 sequences x 2 heads x 256 tokens here:
forward 6.6 against 6.1 ms, backward 20.1 against 21.7 ms). ``csrc/causal_attention.cpp`` computes,
for each block of :data:`BLOCK` queries ending at position ``j``, the scores against keys
``0..j`` only: a fraction ``(n + 1) / 2n`` of the full square for ``n`` blocks (5/8 at 256 tokens).
Its softmax takes two passes over a whole row (no online rescaling), and its backward recomputes
the probabilities from the saved log-sum-exp (FlashAttention-2, Dao 2023, Algorithm 2).

The op is compiled once per machine on first use with the system's C++ compiler (``$CXX`` or
``c++``, about 15 s) against the installed PyTorch, into ``$SCALING_KERNEL_CACHE`` (default
``~/.cache/scaling/kernels``), under a hash of the source, PyTorch's version and the flags; a file
lock lets concurrent runs share one build. After loading, it is checked against PyTorch's kernel
on a small problem. Where anything fails (no compiler, no ``sgemm_`` in PyTorch's BLAS, a
mismatch) the backend warns once and uses PyTorch's kernels; ``SCALING_ATTENTION_KERNEL=0``
chooses them outright.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from .data import file_lock

SOURCE = Path(__file__).with_name("csrc") / "causal_attention.cpp"
BLOCK = 64  # queries per block; forward + backward 1.3-1.6x PyTorch's kernels at 16 x {1,2,4} x 256 x 64
_state: dict[str, object] = {}


def kernel_cache_dir() -> Path:
    """``$SCALING_KERNEL_CACHE``, else ``~/.cache/scaling/kernels``."""
    default = Path.home() / ".cache" / "scaling" / "kernels"
    return Path(os.environ.get("SCALING_KERNEL_CACHE") or default).expanduser()


def compiler() -> str | None:
    """``$CXX``, else ``c++`` or ``g++`` on the PATH (None when there is none)."""
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _compile_command(source: Path) -> list[str]:
    """The compiler call that builds ``source`` into a shared library (append ``-o OUT``)."""
    from torch.utils.cpp_extension import include_paths, library_paths

    cxx = compiler()
    if not cxx:
        raise RuntimeError("no C++ compiler (set $CXX or install g++)")
    lib = library_paths()[0]
    flags = ["-O3", "-std=c++20", "-fPIC", "-shared", "-fopenmp", "-w", "-DNDEBUG"]
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        flags += ["-mavx2", "-mfma"]  # the exp and reductions take their AVX2 path
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    incs = [f"-I{p}" for p in include_paths()]
    return [cxx, *flags, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *incs, str(source),
            f"-L{lib}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{lib}"]  # fmt: skip


def _build() -> Path:
    """The compiled op for this source, PyTorch and machine, built once (under a file lock)."""
    cmd = _compile_command(SOURCE)
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update("\0".join([torch.__version__, platform.machine(), *cmd]).encode())
    lib = kernel_cache_dir() / f"causal_attention-{key.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    with file_lock(lib.with_suffix(".lock")):
        if lib.exists():
            return lib
        fd, tmp = tempfile.mkstemp(dir=lib.parent, prefix=".build-", suffix=".so")
        os.close(fd)
        try:
            proc = subprocess.run([*cmd, "-o", tmp], capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
            os.replace(tmp, lib)  # atomic: a concurrent reader sees no half-written library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


def _self_check() -> None:
    """Forward and backward against PyTorch's flash kernels on a 3-block problem."""
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(2, 3, 150, 16, generator=g) for _ in range(4))
    o, lse = forward(q, k, v)
    grads = torch.empty(3, *q.shape)
    backward(do, q, k, v, o, lse, *grads)
    ref, ref_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
    ref_grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        do, q, k, v, ref, ref_lse, 0.0, True
    )
    pairs = [(o, ref), (lse, ref_lse.view_as(lse)), *zip(grads, ref_grads, strict=True)]
    if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in pairs):
        raise RuntimeError("the compiled causal attention disagrees with PyTorch's kernels")


def available() -> bool:
    """Whether the op is built and loaded here (built on the first call; False on any failure)."""
    if "ok" not in _state:
        _state["ok"] = False
        if os.environ.get("SCALING_ATTENTION_KERNEL", "1") == "0":
            return False
        try:
            torch.ops.load_library(str(_build()))
            _self_check()
            _state["ok"] = True
        except Exception as e:  # noqa: BLE001 - any failure means: use PyTorch's kernels
            warnings.warn(
                f"causal attention kernel unavailable, using PyTorch's ({e}); "
                "SCALING_ATTENTION_KERNEL=0 silences this",
                RuntimeWarning,
                stacklevel=2,
            )
    return bool(_state["ok"])


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(softmax(q kᵀ / sqrt(D) + causal mask) v, logsumexp)`` for (B, H, T, D) fp32 CPU tensors with
    a contiguous last dimension; the output is a (B, H, T, D) view of (B, T, H, D) memory."""
    return torch.ops.scaling_causal_attention.forward(q, k, v, BLOCK)


def backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
) -> None:
    """Write the gradients of q, k and v into ``dq``, ``dk`` and ``dv`` (any strides with a
    contiguous last dimension, such as views into one q/k/v gradient buffer)."""
    torch.ops.scaling_causal_attention.backward(dout, q, k, v, out, lse, dq, dk, dv, BLOCK)

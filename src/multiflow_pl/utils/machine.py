"""What CPU this is: model name and ISA flags, from /proc/cpuinfo on Linux, else the platform's strings."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. ``Intel(R) Xeon(R) Processor``."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's ISA flags (``avx512f``, ``amx_bf16``, ...); empty where the OS does not list them."""
    return set(_cpuinfo().get("flags", "").split())


BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""ISA flags with native bfloat16 arithmetic (without them oneDNN emulates bfloat16 convolutions)."""


def has_fast_bfloat16() -> bool | None:
    """Whether the CPU has native bfloat16 arithmetic (AMX or AVX-512 bf16); None where flags are unknown."""
    flags = cpu_flags()
    return bool(flags & BF16_FLAGS) if flags else None

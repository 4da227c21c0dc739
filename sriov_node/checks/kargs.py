"""Kernel command lines: their words, what they do to the IOMMU, and the arguments vfio-pci needs.

The recipe (what `check --fix` ensures when VFs are meant for vfio-pci): `intel_iommu=on` where the
IOMMU is Intel VT-d (Intel CPUs, or a DMAR table), `iommu=pt` on x86 (Intel and AMD), and none of
the arguments that turn the IOMMU or passthrough off. The kernel parses repeated arguments in
order, so the last `intel_iommu=` and `iommu=pt|nopt` win; `iommu=off` and `amd_iommu=off` stick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

INTEL_ON = "intel_iommu=on"
PASSTHROUGH = "iommu=pt"
# What contradicts the recipe, and what replaces it in place when it stands where an argument goes.
CONTRADICTING = ("intel_iommu=off", "iommu=off", "amd_iommu=off", "iommu=nopt", "iommu.passthrough=0")
REPLACES = {"intel_iommu=off": INTEL_ON, "iommu=off": PASSTHROUGH, "iommu=nopt": PASSTHROUGH}


def split_cmdline(text: str) -> Tuple[str, ...]:
    """Words of a kernel command line: whitespace separates, double quotes group (param="a b")."""
    words: List[str] = []
    current: List[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch.isspace() and not quoted:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return tuple(words)


def _options(word: str, key: str) -> Optional[List[str]]:
    if not word.startswith(key + "="):
        return None
    return [o.strip().strip('"') for o in word[len(key) + 1:].split(",")]


@dataclass(frozen=True)
class IommuArgs:
    """What a command line does to the IOMMU."""

    intel: Optional[bool]  # intel_iommu after every on/off (None: not mentioned)
    amd_off: bool  # amd_iommu=off
    iommu_off: bool  # iommu=off (x86: no IOMMU at all)
    passthrough: Optional[bool]  # iommu=pt / nopt / iommu.passthrough (None: the kernel's default)
    offending: Tuple[str, ...]  # the words that turn something off

    @property
    def intel_on(self) -> bool:
        return bool(self.intel) and not self.iommu_off


def iommu_args(words: Iterable[str]) -> IommuArgs:
    intel: Optional[bool] = None
    amd_off = iommu_off = False
    passthrough: Optional[bool] = None
    offending: List[str] = []
    for word in words:
        for opt in _options(word, "intel_iommu") or []:
            if opt == "on":
                intel = True
            elif opt == "off":
                intel = False
                offending.append(word)
        if "off" in (_options(word, "amd_iommu") or []):
            amd_off = True
            offending.append(word)
        for opt in _options(word, "iommu") or []:
            if opt == "off":
                iommu_off = True
                offending.append(word)
            elif opt == "pt":
                passthrough = True
            elif opt == "nopt":
                passthrough = False
                offending.append(word)
        for opt in _options(word, "iommu.passthrough") or []:
            if opt in ("1", "y", "Y", "on"):
                passthrough = True
            elif opt in ("0", "n", "N", "off"):
                passthrough = False
                offending.append(word)
    return IommuArgs(intel, amd_off, iommu_off, passthrough, tuple(dict.fromkeys(offending)))


def needed_args(intel: bool) -> Tuple[str, ...]:
    """The arguments vfio-pci needs on this platform: intel_iommu=on for VT-d, iommu=pt on x86."""
    return (INTEL_ON, PASSTHROUGH) if intel else (PASSTHROUGH,)


def satisfied(words: Sequence[str], arg: str) -> bool:
    """Whether the command line has the effect of `arg` (after every later override)."""
    state = iommu_args(words)
    if arg == INTEL_ON:
        return state.intel_on
    if arg == PASSTHROUGH:
        return state.passthrough is True and not state.iommu_off
    return arg in words


def missing(words: Sequence[str], needed: Sequence[str]) -> Tuple[str, ...]:
    return tuple(a for a in needed if not satisfied(words, a))


def contradicting(words: Sequence[str]) -> Tuple[str, ...]:
    """Words of the recipe's contradicting list present on this command line."""
    return tuple(dict.fromkeys(w for w in words if w in CONTRADICTING))


def wants_change(words: Sequence[str], needed: Sequence[str]) -> bool:
    return bool(missing(words, needed) or contradicting(words))


def fix_words(words: Sequence[str], needed: Sequence[str]) -> Tuple[str, ...]:
    """The command line with the recipe applied: a contradicting word is replaced in place by the
    argument it stands against (once), other contradicting words are dropped, what is still
    missing is appended; every other word stays where it was. Idempotent."""
    out: List[str] = []
    placed = set()
    for word in words:
        if word in CONTRADICTING:
            sub = REPLACES.get(word)
            if sub in needed and sub not in placed and sub not in words:
                out.append(sub)
                placed.add(sub)
            continue
        out.append(word)
    for arg in needed:
        if not satisfied(out, arg):
            out.append(arg)
    return tuple(out)


def join(words: Sequence[str]) -> str:
    return " ".join(words)

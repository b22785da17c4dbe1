"""Vocabulary: symbol <-> id maps shared by the word, character and sentence tasks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


class UnknownSymbolError(ValueError):
    """Symbols that the vocabulary does not contain, with `on_unknown="error"`."""

    SHOWN = 20

    def __init__(self, symbols: Iterable[str], where: str = "", hint: str = ""):
        self.symbols = sorted(set(symbols))
        shown = ", ".join(repr(s) for s in self.symbols[: self.SHOWN])
        more = f" and {len(self.symbols) - self.SHOWN} more" if len(self.symbols) > self.SHOWN else ""
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{len(self.symbols)} symbol(s) not in the vocabulary: {shown}{more}{hint}")


class Vocabulary:
    """An ordered list of symbols; the id of a symbol is its position.

    `unk` names the symbol that unknown input maps to (it must be in `symbols`); with
    `on_unknown="error"` or no `unk`, unknown input raises `UnknownSymbolError` instead.
    """

    def __init__(self, symbols: Sequence[str], unk: str | None = None, on_unknown: str = "unk"):
        if on_unknown not in ("unk", "error"):
            raise ValueError(f"on_unknown must be 'unk' or 'error', got {on_unknown!r}")
        self.itos = list(symbols)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary symbols must be unique")
        if unk is not None and unk not in self.stoi:
            raise ValueError(f"unknown symbol {unk!r} is not in the vocabulary")
        self.unk = unk
        self.on_unknown = on_unknown

    @classmethod
    def build(
        cls,
        symbols: Iterable[str],
        specials: Sequence[str] = (),
        min_freq: int = 1,
        max_size: int | None = None,
        unk: str | None = None,
        on_unknown: str = "unk",
    ) -> Vocabulary:
        """Specials first, then symbols by falling frequency (ties alphabetical)."""
        counts = Counter(symbols)
        for s in specials:
            counts.pop(s, None)
        ranked = sorted((s for s, c in counts.items() if c >= min_freq), key=lambda s: (-counts[s], s))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(specials))]
        return cls(list(specials) + ranked, unk=unk, on_unknown=on_unknown)

    def extended(self, symbols: Iterable[str], min_freq: int = 1) -> Vocabulary:
        """This vocabulary, then the symbols of `symbols` it lacks that occur at least `min_freq` times, by
        falling frequency (ties alphabetical): every id it had stays the same."""
        counts = Counter(s for s in symbols if s not in self.stoi)
        new = sorted((s for s, c in counts.items() if c >= min_freq), key=lambda s: (-counts[s], s))
        return Vocabulary(self.itos + new, unk=self.unk, on_unknown=self.on_unknown)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos and self.unk == other.unk

    def unknown(self, symbols: Iterable[str]) -> list[str]:
        """The distinct symbols of `symbols` that are not in the vocabulary."""
        return sorted({s for s in symbols if s not in self.stoi})

    def encode(self, symbols: Iterable[str]) -> list[int]:
        symbols = list(symbols)
        if self.unk is None or self.on_unknown == "error":
            missing = self.unknown(symbols)
            if missing:
                raise UnknownSymbolError(missing)
            return [self.stoi[s] for s in symbols]
        unk_id = self.stoi[self.unk]
        return [self.stoi.get(s, unk_id) for s in symbols]

    def lower_case_hint(self, unknown: Iterable[str]) -> str:
        """For symbols outside the vocabulary whose lower-case forms are in it (PTB is lower-case): a clause naming
        up to five of those forms, else ""."""
        lowered = [s.lower() for s in unknown if s.lower() != s and s.lower() in self.stoi]
        return f"the vocabulary has {', '.join(map(repr, lowered[:5]))} in lower case" if lowered else ""

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    def state_dict(self) -> dict:
        return {"itos": list(self.itos), "unk": self.unk, "on_unknown": self.on_unknown}

    @classmethod
    def from_state_dict(cls, state: dict) -> Vocabulary:
        return cls(state["itos"], unk=state["unk"], on_unknown=state.get("on_unknown", "unk"))

"""Expression class names: one canonical spelling, and the synonyms datasets use.

Datasets disagree on both the spelling (``anger`` / ``angry``, ``happiness`` / ``happy``)
and the order of their classes, so labels are always matched by canonical name,
never by index alone.
"""

from __future__ import annotations

from typing import Iterable, Sequence

# AffectNet's expression ids 0-7, which the paper uses (8 classes, contempt included).
AFFECTNET8: tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
)
# FER2013's label ids 0-6 in the official CSV.
FER2013: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# FERPlus label.csv vote columns, in file order (the last two are not expressions).
FERPLUS_VOTES: tuple[str, ...] = (
    "neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt",
    "unknown", "not_a_face",
)
FERPLUS8: tuple[str, ...] = FERPLUS_VOTES[:8]
# RAF-DB basic: labels 1-7 in list_patition_label.txt.
RAFDB7: tuple[str, ...] = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")

_SYNONYMS = {
    "neutral": ("neutral", "neu", "ne", "calm"),
    "happy": ("happy", "happiness", "hap", "ha", "joy", "smile"),
    "sad": ("sad", "sadness", "sa"),
    "surprise": ("surprise", "surprised", "sur", "su"),
    "fear": ("fear", "fearful", "afraid", "fe", "scared"),
    "disgust": ("disgust", "disgusted", "dis", "di"),
    "anger": ("anger", "angry", "ang", "an", "mad"),
    "contempt": ("contempt", "contemptuous", "co"),
}
_LOOKUP = {alias: name for name, aliases in _SYNONYMS.items() for alias in aliases}


def canonical_name(name: str) -> str:
    """Return the canonical spelling of an expression name.

    Args:
        name: A class name as a dataset spells it (any case, ``-``/``_``/spaces allowed).

    Returns:
        The canonical name (e.g. ``"Angry"`` -> ``"anger"``); names that are not a known
        expression are returned lower-cased and stripped, so custom classes still work.
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _LOOKUP.get(key, key)


def canonical_names(names: Iterable[str]) -> list[str]:
    """Map :func:`canonical_name` over ``names``, refusing duplicates after mapping."""
    out = [canonical_name(n) for n in names]
    if len(set(out)) != len(out):
        raise ValueError(f"class names collide after canonicalisation: {list(names)} -> {out}")
    return out


def match_classes(
    model_classes: Sequence[str], data_classes: Sequence[str]
) -> tuple[list[tuple[int, int]], list[str], list[str]]:
    """Pair up the classes of a model and a dataset by canonical name.

    Args:
        model_classes: Class names in the model's output order.
        data_classes: Class names in the dataset's label order.

    Returns:
        ``(pairs, model_only, data_only)`` where ``pairs`` lists
        ``(model_index, data_index)`` for every shared class in the model's order, and the
        other two list the canonical names found on one side only.
    """
    m = canonical_names(model_classes)
    d = canonical_names(data_classes)
    d_index = {name: i for i, name in enumerate(d)}
    pairs = [(i, d_index[name]) for i, name in enumerate(m) if name in d_index]
    model_only = [name for name in m if name not in d_index]
    data_only = [name for name in d if name not in set(m)]
    return pairs, model_only, data_only

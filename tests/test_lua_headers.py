"""Every Lua script's header lists the key families it touches (SPEC §14).

Each script's opening comment ends with a ``-- Key families: a, b, c`` entry
(continued on ``--   `` lines). What a script
touches is read from its code: the families of the ``k_*``/``K_*`` key
builders it calls (lua/prelude.lua, mirrored by taskmesh/keys.py), plus
those of every library function it calls, transitively (``finish`` reaches
``mark_terminal``, ``resolve``, ``emit``, ...). The header must name exactly
those families, so a key use added without updating the header, or a
header entry left behind, fails here. Family names are the builders' names
without ``k_``/``K_``, lower-case (``task``, ``queue``, ``running``, ...).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from taskmesh.keys import Keys
from taskmesh.scripts import INCLUDES, LIBRARIES

LUA = Path(__file__).resolve().parent.parent / "taskmesh" / "lua"
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua") if p.stem not in LIBRARIES)
BUILDER = re.compile(r"\b(k_\w+|K_[A-Z_]+)\b")
CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\(")
HEADER = re.compile(r"^-- Key families:\s*(.*(?:\n--   .*)*)", re.M)


def _strip_comments(text: str) -> str:
    return re.sub(r"--[^\n]*", "", text)


def _family(builder: str) -> str:
    return builder[2:].lower()


@cache
def _library() -> tuple[dict[str, str], set[str]]:
    """(function name -> body) of the libraries' top-level functions, and
    the names of their key builders."""
    text = "\n".join(_strip_comments((LUA / f"{lib}.lua").read_text()) for lib in LIBRARIES)
    builders = set(re.findall(r"local function (k_\w+)\(", text))
    builders |= set(re.findall(r"local (K_[A-Z_]+)\s*=", text))
    bodies: dict[str, str] = {}
    starts = [(m.start(), m.group(1)) for m in
              re.finditer(r"^local function (\w+)\(", text, re.M)]
    for (start, name), (end, _) in zip(starts, starts[1:] + [(len(text), "")]):
        bodies[name] = text[start:end]
    return bodies, builders


def _touched(code: str, seen: set[str] | None = None) -> set[str]:
    bodies, builders = _library()
    seen = set() if seen is None else seen
    families = {_family(b) for b in BUILDER.findall(code) if b in builders}
    for name in CALL.findall(code):
        if name in bodies and name not in seen and not name.startswith("k_"):
            seen.add(name)
            families |= _touched(bodies[name].split("\n", 1)[1], seen)
    return families


def _families() -> set[str]:
    return {_family(b) for b in _library()[1]}


def keys_families(name: str) -> set[str]:
    """Families of the keys the header's ``KEYS[i] ...`` entries describe (a
    script reaches those through KEYS, not a builder): the ``family:<...>``
    form if there is one, "... task/worker's hash", else the first word."""
    text = (LUA / f"{name}.lua").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    by_norm = {f.replace("_", ""): f for f in _families()}
    found = set()
    for segment in re.findall(r"KEYS\[\d+\]\s+(.*?)(?=KEYS\[|\n|$)", header):
        shaped = re.search(r"(\w+):<", segment)
        if shaped:
            word = shaped.group(1)
        elif "hash" in segment and ("task" in segment or "dependen" in segment):
            word = "task"
        elif "worker's hash" in segment:
            word = "worker"
        else:
            word = segment.split()[0] if segment.split() else ""
        family = (_by_key_text().get(word) if shaped else None) or by_norm.get(
            word.replace("_", "").lower())
        if family:
            found.add(family)
    return found


@cache
def _by_key_text() -> dict[str, str]:
    """'periodic' -> 'periodic_schedule': the family whose keys.py builder
    makes ``<word>:<arg>`` keys (tests/test_keys.py pins the two together)."""
    keys = Keys("ns")
    out = {}
    for family in _families():
        builder = getattr(Keys, family, None)
        if builder is not None and not isinstance(builder, property):
            word = getattr(keys, family)("x")[len(keys.prefix):].split(":", 1)[0]
            out[word] = family
    return out


def used_by(name: str) -> set[str]:
    code = _strip_comments((LUA / f"{name}.lua").read_text())
    for inner in INCLUDES.get(name, ()):
        code += _strip_comments((LUA / f"{inner}.lua").read_text())
    return _touched(code) | (keys_families(name) if "KEYS[" in code else set())


def listed_by(name: str) -> set[str] | None:
    match = HEADER.search((LUA / f"{name}.lua").read_text())
    if match is None:
        return None
    entries = match.group(1).replace("\n--   ", " ").rstrip(".").split(",")
    return {re.sub(r"\(.*?\)", "", f).strip() for f in entries if f.strip()}


def test_the_analysis_sees_through_library_calls():
    # report.lua calls finish(), which reaches resolve() and the outbox.
    assert {"task", "running", "stats", "outbox", "remote_dependents", "events"} <= used_by("report")
    assert used_by("shards") == {"config", "seq", "stats"}  # through KEYS only
    assert used_by("link") == {"task", "remote_dependents"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_header_lists_exactly_the_key_families_the_script_touches(name):
    listed = listed_by(name)
    assert listed is not None, f"{name}.lua has no '-- Key families:' header line"
    used = used_by(name)
    assert used - listed == set(), f"{name}.lua touches {sorted(used - listed)} unlisted"
    assert listed - used == set(), f"{name}.lua lists {sorted(listed - used)} it never touches"

"""docs/queue-protocol.md cannot drift from the Lua scripts it documents.

The page states its format at the top: one section per script (``### `NAME` —
scheduler/lua/<file>.lua``) with `| KEYS |` and `| ARGV |` tables whose rows are the
script's header lines `-- KEYS[n] = ...` word for word; transition tables
(`| from | script | to | when |`) and state tables (`| state | meaning |`) naming states in
backticks. `problems(lua_dir, doc)` compares the two; it takes paths, so the tests below also
run it on edited copies (in tmp_path) to show that an edit to a script's header, or a state a
script starts to write, fails until the page follows. The real scripts are never edited.

How the scripts' states are found: a string literal right after `'state',` (an HSET of the
field), a literal passed to a Lua function's parameter named `state` (`finish_error`,
`reply`), or the values a header lists for a `state` ARGV (`(SUCCEEDED | FAILED)`).
"""

from __future__ import annotations

import difflib
import itertools
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from scheduler import keys
from tests.lua_keys import Source, Tokens, tokenize

LUA = Path(keys.__file__).parent / "lua"
DOC = Path(__file__).resolve().parents[2] / "docs" / "queue-protocol.md"

Table = list[list[str]]  # rows of cells, the header row first (the |---| row dropped)

_SLOT = re.compile(r"^-- ((KEYS|ARGV)\[[^\]]*\](?: \.\. \2\[[^\]]*\])?) = (.*)$")
_GOES_ON = re.compile(r"^--\s{3,}(\S.*)$")  # an indented line continues the slot above
_SECTION = re.compile(r"^### `([A-Z_]+)` — scheduler/lua/(\w+)\.lua$")
_BLOCK_ROW = re.compile(r"KEYS\[i(?: \+ (\d))?\]")
_BLOCK_USE = re.compile(r"KEYS\[(\d+)\.\.(\d+)\]")
_STATE = re.compile(r"[A-Z][A-Z_]*")
_LISTED = re.compile(r"\bstate\b.*\(([A-Z_]+(?: \| [A-Z_]+)+)\)")
TRANSITIONS = ["from", "script", "to", "when"]
STATES = ["state", "meaning"]


# --- the scripts' side ---------------------------------------------------------------------

@dataclass(frozen=True)
class Header:
    name: str  # the word before the colon on the script's first line
    slots: dict[str, list[tuple[str, str]]]  # "KEYS" / "ARGV" -> [(slot, text)], in order


def read_header(path: Path) -> Header:
    """The NAME and the `-- KEYS[n] = ...` / `-- ARGV[n] = ...` lines of a script's header
    (its leading comment lines); an indented `--   ` line continues the slot above it."""
    lines = path.read_text().splitlines()
    first = re.match(r"^-- ([A-Z_]+): ", lines[0] if lines else "")
    slots: dict[str, list[tuple[str, str]]] = {"KEYS": [], "ARGV": []}
    current: list[tuple[str, str]] | None = None
    for line in itertools.takewhile(lambda text: text.startswith("--"), lines):
        if slot := _SLOT.match(line):
            current = slots[slot[2]]
            current.append((slot[1], slot[3]))
        elif current and (more := _GOES_ON.match(line)):
            current[-1] = (current[-1][0], f"{current[-1][1]} {more[1]}")
        else:
            current = None
    return Header(first[1] if first else "", slots)


def scripts(lua_dir: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(lua_dir.glob("*.lua")) if p.stem != "common"}


def _call_args(tokens: Tokens, open_at: int) -> list[Tokens]:
    """The top-level arguments of the call whose `(` is at open_at."""
    parts: list[Tokens] = [[]]
    depth = 0
    for tok in tokens[open_at:]:
        if tok[0] == "op" and tok[1] in {"(", "[", "{"}:
            depth += 1
            if depth == 1:
                continue
        elif tok[0] == "op" and tok[1] in {")", "]", "}"}:
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and tok == ("op", ","):
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def _literal(arg: Tokens) -> str | None:
    """The state an argument is, when it is one string literal in capitals."""
    if len(arg) == 1 and arg[0][0] == "str" and _STATE.fullmatch(arg[0][1][1:-1]):
        return arg[0][1][1:-1]
    return None


def _states_after_field(tokens: Tokens) -> set[str]:
    """`'state', 'X'` anywhere in the code (HSET of the field; HMGET reads are lowercase)."""
    found = set()
    for i in range(len(tokens) - 2):
        if (tokens[i][0] == "str" and tokens[i][1][1:-1] == "state"
                and tokens[i + 1] == ("op", ",")):
            state = _literal([tokens[i + 2]])
            if state:
                found.add(state)
    return found


def _states_passed(source: Source) -> set[str]:
    """Literals passed to a local function's parameter named `state`."""
    t = source.tokens
    found = set()
    for fn in source.functions:
        if "state" not in fn.params:
            continue
        at = fn.params.index("state")
        for i in range(1, len(t) - 1):
            if t[i] == ("name", fn.name) and t[i + 1][1] == "(" and t[i - 1][1] != "function":
                args = _call_args(t, i + 1)
                state = _literal(args[at]) if at < len(args) else None
                if state:
                    found.add(state)
    return found


def lua_states(lua_dir: Path) -> set[str]:
    """Every state value the scripts (and their prelude) write."""
    prelude = (lua_dir / "common.lua").read_text()
    found = _states_after_field(tokenize(prelude))
    for path in scripts(lua_dir).values():
        text = path.read_text()
        found |= _states_after_field(tokenize(text))
        found |= _states_passed(Source(prelude + "\n" + text))
        for _, line in read_header(path).slots["ARGV"]:
            if listed := _LISTED.search(line):
                found |= set(listed[1].split(" | "))
    return found


def state_writers(lua_dir: Path) -> set[str]:
    """The NAMEs of the scripts whose code (or a prelude helper they call) HSETs `state`."""
    prelude = (lua_dir / "common.lua").read_text()
    writers = set()
    for path in scripts(lua_dir).values():
        source = Source(prelude + "\n" + path.read_text())
        live = source.reachable()
        t = source.tokens
        for i in range(len(t) - 4):
            if (t[i][1] == "redis" and t[i + 2][1] in ("call", "pcall")
                    and t[i + 4][1][1:-1] == "HSET" and source.scope_of(i).name in live
                    and any(arg and arg[0][0] == "str" and arg[0][1][1:-1] == "state"
                            for arg in _call_args(t, i + 3))):
                writers.add(read_header(path).name)
    return writers


# --- the page's side -----------------------------------------------------------------------

def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [part.strip().replace("\\|", "|") for part in parts]


@dataclass
class Section:
    name: str
    stem: str
    tables: list[Table]


@dataclass
class Doc:
    sections: list[Section]
    tables: list[Table]  # every table of the page, in order


def read_doc(path: Path) -> Doc:
    doc = Doc([], [])
    section: Section | None = None
    table: Table | None = None
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            table = None
        elif table is None:
            table = [_cells(line)]
            doc.tables.append(table)
            if section:
                section.tables.append(table)
        elif not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            table.append(_cells(line))
        if line.startswith("#"):
            heading = _SECTION.match(line)
            section = Section(heading[1], heading[2], []) if heading else None
            if section:
                doc.sections.append(section)
    return doc


def _tables(tables: list[Table], header: list[str]) -> list[Table]:
    return [t for t in tables if t[0] == header]


def _block(doc: Doc) -> list[str]:
    """The header texts of the queue_keys block, by offset."""
    rows = next((t[1:] for t in doc.tables if t[0][0] == "queue_keys(i)"), [])
    found = {int(m[1] or 0): row[1] for row in rows if (m := _BLOCK_ROW.fullmatch(row[0]))}
    return [found[k] for k in range(8)] if sorted(found) == list(range(8)) else []


def doc_slots(section: Section, kind: str, block: list[str]) -> list[tuple[str, str]]:
    """A section's rows of one table ("KEYS" or "ARGV"), the block rows expanded."""
    slots: list[tuple[str, str]] = []
    for table in (t for t in section.tables if t[0][0] == kind):
        for row in table[1:]:
            use = _BLOCK_USE.fullmatch(row[0]) if kind == "KEYS" else None
            if use and "keys.queue_keys(" in row[2] and int(use[2]) - int(use[1]) == 7:
                slots += [(f"KEYS[{int(use[1]) + k}]", text) for k, text in enumerate(block)]
            else:
                slots.append((row[0], row[1]))
    return slots


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --- the comparison ------------------------------------------------------------------------

def _differ(name: str, kind: str, header: list[tuple[str, str]],
            documented: list[tuple[str, str]]) -> list[str]:
    if header == documented:
        return []
    lines = difflib.ndiff([f"{s} = {t}" for s, t in header], [f"{s} = {t}" for s, t in documented])
    changed = [line for line in lines if line[:1] in "+-"]
    return [f"{name}: the doc's {kind} rows differ from the header (- header, + doc): {changed}"]


def _keys_py(section: Section) -> list[str]:
    """Every KEYS row names an existing function of scheduler/keys.py."""
    found = []
    for table in (t for t in section.tables if t[0][0] in ("KEYS", "queue_keys(i)")):
        for row in table[1:]:
            fn = re.search(r"`keys\.(\w+)\(", row[2] if len(row) > 2 else "")
            if not fn or not callable(getattr(keys, fn[1], None)):
                found.append(f"{section.name}: {row[0]} names no function of keys.py")
    return found


def script_problems(lua_dir: Path, doc: Doc) -> list[str]:
    headers = {stem: read_header(path) for stem, path in scripts(lua_dir).items()}
    block = _block(doc)
    found = [] if block else ["the doc has no queue_keys(i) table of 8 rows"]
    stems = [s.stem for s in doc.sections]
    found += [f"{stem}.lua: more than one section" for stem in sorted(set(stems))
              if stems.count(stem) > 1]
    found += [f"{stem}.lua: no section in the doc" for stem in sorted(headers.keys() - {*stems})]
    for section in doc.sections:
        header = headers.get(section.stem)
        if header is None:
            found.append(f"{section.stem}.lua: a section for a script that does not exist")
            continue
        if header.name != section.name:
            found.append(f"{section.stem}.lua: its NAME is {header.name}, not {section.name}")
        for kind in ("KEYS", "ARGV"):
            found += _differ(header.name, kind, header.slots[kind],
                             doc_slots(section, kind, block))
        found += _keys_py(section)
    return found


def _transition_cells(doc: Doc) -> tuple[set[str], set[str], list[str]]:
    """(states, scripts) named in the transition tables, and what is malformed there."""
    states: set[str] = set()
    named: set[str] = set()
    found = []
    for row in (r for t in _tables(doc.tables, TRANSITIONS) for r in t[1:]):
        for cell in (row[0], row[2]):
            for name in _backticked(cell):
                if _STATE.fullmatch(name):
                    states.add(name)
                else:
                    found.append(f"transition table: `{name}` is not a state")
        named |= set(_backticked(row[1]))
    return states, named, found


def state_problems(lua_dir: Path, doc: Doc) -> list[str]:
    states, named, found = _transition_cells(doc)
    documented = {s.name for s in doc.sections}
    listed = {_backticked(r[0])[0] for t in _tables(doc.tables, STATES) for r in t[1:]
              if _backticked(r[0])}
    written = lua_states(lua_dir)
    found += [f"transition table: {n} is not a documented script"
              for n in sorted(named - documented)]
    found += [f"{n} writes a state, but no transition names it"
              for n in sorted(state_writers(lua_dir) - named)]
    found += [f"state {s}: in the doc, never written by a script" for s in sorted(states - written)]
    found += [f"state {s}: written by a script, not in the doc's transitions"
              for s in sorted(written - states)]
    found += [f"state {s}: in the transitions, not in a state table"
              for s in sorted(states - listed)]
    found += [f"state {s}: in a state table, not in the transitions"
              for s in sorted(listed - states)]
    return found


def problems(lua_dir: Path, doc_path: Path) -> list[str]:
    doc = read_doc(doc_path)
    return script_problems(lua_dir, doc) + state_problems(lua_dir, doc)


# --- the tests -----------------------------------------------------------------------------

def test_the_doc_matches_the_scripts() -> None:
    assert problems(LUA, DOC) == []


def test_the_doc_names_the_states_of_the_issue() -> None:
    states, _, _ = _transition_cells(read_doc(DOC))
    assert {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED",
            "DEAD_LETTERED"} <= states


def test_the_header_parser_joins_continued_lines() -> None:
    argv = read_header(LUA / "submit_lean.lua").slots["ARGV"]
    assert argv[2] == ("ARGV[3 + 7(i-1)] .. ARGV[9 + 7(i-1)]",
                       "job i: job id, envelope bytes, deadline ms (0 = none), max attempts, "
                       "reply stream key, model version, tenant")


def test_the_scripts_write_states_the_parser_finds() -> None:
    """Each way a state is written is seen: the field, a `state` parameter, a header list."""
    written = lua_states(LUA)
    assert {"QUEUED", "RUNNING", "FORMING"} <= written  # 'state', 'X'
    assert {"EXPIRED", "DEAD_LETTERED"} <= written  # finish_error(..., 'X', ...)
    assert {"SUCCEEDED", "FAILED"} <= written  # complete.lua: ARGV (SUCCEEDED | FAILED)
    assert {"SUBMIT", "COMPLETE", "GANG_BEAT", "START"} <= state_writers(LUA)
    assert "EXTEND" not in state_writers(LUA)


@pytest.fixture
def copies(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of scheduler/lua and of the page, to edit."""
    lua = tmp_path / "lua"
    shutil.copytree(LUA, lua)
    doc = tmp_path / "queue-protocol.md"
    shutil.copy(DOC, doc)
    return lua, doc


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {path.name}: update this test"
    path.write_text(text.replace(old, new, 1))


def test_a_keys_line_added_to_a_script_fails_without_the_doc(copies: tuple[Path, Path]) -> None:
    lua, doc = copies
    line = "-- KEYS[5] = the idempotency key (STRING; only when the request has one)\n"
    _edit(lua / "submit.lua", line, line + "-- KEYS[6] = the tenant's counter (STRING)\n")
    found = problems(lua, doc)
    assert len(found) == 1
    assert found[0].startswith("SUBMIT: the doc's KEYS rows differ")
    assert "KEYS[6] = the tenant's counter (STRING)" in found[0]


@pytest.mark.parametrize(("script", "old", "new", "expected"), [
    ("reap.lua", "-- KEYS[3] = the model's delayed set (ZSET)",
     "-- KEYS[3] = the model's retry set (ZSET)", "REAP: the doc's KEYS rows differ"),
    ("extend.lua", "-- ARGV[2] = consumer\n", "", "EXTEND: the doc's ARGV rows differ"),
    ("cancel.lua", "--   (a hash in state", "--   (a hash, in state",
     "CANCEL: the doc's ARGV rows differ"),
    ("start.lua", "-- KEYS[10] = low backlog", "-- KEYS[10] = lower backlog",
     "START: the doc's KEYS rows differ"),
    ("promote.lua", "-- PROMOTE:", "-- PROMOTE_DUE:", "its NAME is PROMOTE_DUE, not PROMOTE"),
    ("cancel.lua", "local f = redis.call('HMGET', KEYS[1]",
     "redis.call('HSET', KEYS[1], 'state', 'PAUSED')\nlocal f = redis.call('HMGET', KEYS[1]",
     "state PAUSED: written by a script, not in the doc's transitions"),
    ("reap.lua", "'EXPIRED',\n      'DEADLINE_EXCEEDED'", "'TIMED_OUT',\n      'DEADLINE_EXCEEDED'",
     "state TIMED_OUT: written by a script"),
    ("train_update.lua", "-- ARGV[4] = terminal state ('' = still running)",
     "-- ARGV[4] = terminal state (SUCCEEDED | FAILED | ABANDONED)",
     "state ABANDONED: written by a script"),
    ("extend.lua", "local lost = {}", "redis.call('HSET', KEYS[1], 'state', 'RUNNING')\n"
     "local lost = {}", "EXTEND writes a state, but no transition names it"),
])
def test_a_script_edited_without_the_doc_fails(copies: tuple[Path, Path], script: str, old: str,
                                               new: str, expected: str) -> None:
    lua, doc = copies
    _edit(lua / script, old, new)
    assert any(expected in p for p in problems(lua, doc)), problems(lua, doc)


def test_a_new_script_needs_a_section(copies: tuple[Path, Path]) -> None:
    lua, doc = copies
    (lua / "pause.lua").write_text("-- PAUSE: stop a queue.\n-- KEYS[1] = the queue (STREAM)\n"
                                   "return 1\n")
    assert problems(lua, doc) == ["pause.lua: no section in the doc"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("### `GANG_END` — scheduler/lua/train_gang_end.lua", "### GANG_END",
     "train_gang_end.lua: no section in the doc"),
    ("| `QUEUED` | `PROMOTE` | `QUEUED` |", "| `QUEUED` | `PROMOTE` | `PARKED` |",
     "state PARKED: in the doc, never written by a script"),
    ("| `QUEUED` | `PROMOTE` | `QUEUED` |", "| `QUEUED` | `UNPARK` | `QUEUED` |",
     "transition table: UNPARK is not a documented script"),
    ("| `FORMED` | `GANG_BEAT` |", "| `FORMED` | GANG_BEAT |",
     "GANG_BEAT writes a state, but no transition names it"),
    ("| `BROKEN` | A rank's beat", "| BROKEN | A rank's beat",
     "state BROKEN: in the transitions, not in a state table"),
    ("formation deadline ms) | `keys.training_forming()` |",
     "formation deadline ms) | `keys.training_formng()` |",
     "GANG_JOIN: KEYS[1] names no function of keys.py"),
    ("| KEYS[i + 7] | low backlog list template", "| KEYS[i + 7] | lowest backlog list template",
     "CLAIM: the doc's KEYS rows differ"),
    ("| ARGV[5i+1] | state of item i (SUCCEEDED \\| FAILED) |",
     "| ARGV[5i+1] | state of item i (SUCCEEDED or FAILED) |",
     "COMPLETE: the doc's ARGV rows differ"),
])
def test_a_doc_edited_without_the_scripts_fails(copies: tuple[Path, Path], old: str, new: str,
                                                expected: str) -> None:
    lua, doc = copies
    _edit(doc, old, new)
    assert any(expected in p for p in problems(lua, doc)), problems(lua, doc)

"""A static reading of the queue's Lua scripts: which key arguments do not come from KEYS.

`undeclared_keys(source)` returns, for a script as scheduler/scripts.py loads it (the prelude
common.lua, then the script), every key argument of a `redis.call`/`redis.pcall` that is not
derived from KEYS, as (function, expression) pairs ("" = the script's body). Derived means:
- `KEYS[...]` itself;
- a concatenation whose first operand is derived (`KEYS[5] .. tenant`: a template from
  scheduler/keys.py completed with an id or a tenant the script read; the template's hash tag
  keeps the key in the declared slot);
- a table constructor of derived values, a field or index of a derived name (`q.share`,
  `q.stream[level]`), a call of a local function whose every `return` is derived;
- a name whose every assignment in its function (or, if none, in the script's body) is
  derived; a parameter of a local function when every call of that function in the source
  passes a derived value in its place (a helper no call reaches is vacuously fine).

Only code the script's body reaches is checked: a prelude helper it never calls does not run.

Limits: a token-and-parentheses reading, not a Lua parser. It knows the key positions of the
commands in KEY_ARGS only; a command missing there, or named by a variable, is reported (the
table grows with the scripts). It does not understand `and`/`or` at the top level of a key
expression, fields assigned after a table is built (`t.x = ...`), `unpack`ed keys, several
names assigned at once (`local a, b = f()`), `for` variables, varargs, or keys built by
string functions other than `..`: such a key is reported, so write it plainly. Scoping is by
function only (blocks are ignored), and a parameter's calls are found by name in the whole
source. It does not check that a template is completed only with an id (`KEYS[1] .. ':x'`
passes), nor that the KEYS the Python callers pass match the scripts' headers (the
integration tests run every script through its caller).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"""
    (?P<comment>--[^\n]*)
  | (?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<op>\.\.\.|\.\.|==|~=|<=|>=|[^\sA-Za-z0-9_])
  | (?P<space>\s+)
""", re.VERBOSE)

FIRST, ALL, STREAMS = "first", "all", "streams"
KEY_ARGS = {
    **dict.fromkeys(("GET", "SET", "PEXPIRE", "PERSIST", "HGET", "HSET", "HSETNX", "HMGET",
                     "HDEL", "HGETALL", "HINCRBY", "HEXISTS", "LPOP", "RPUSH", "SADD", "SREM",
                     "SMEMBERS", "SCARD", "ZADD", "ZREM", "ZCARD", "ZRANGEBYSCORE",
                     "ZREMRANGEBYSCORE", "XADD", "XACK", "XDEL", "XLEN", "XRANGE", "XPENDING",
                     "XCLAIM", "XAUTOCLAIM"), FIRST),
    "EXISTS": ALL, "DEL": ALL, "XREADGROUP": STREAMS, "TIME": None,
}
_OPENERS = {"function", "if", "do", "repeat"}
_CLOSERS = {"end", "until"}

Tokens = list[tuple[str, str]]


def tokenize(source: str) -> Tokens:
    tokens = []
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or ""
        if kind not in ("comment", "space"):
            tokens.append((kind, m.group()))
    return tokens


def _close(tokens: Tokens, i: int) -> int:
    """The index of the bracket closing the one at i."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    depth = 0
    for j in range(i, len(tokens)):
        text = tokens[j][1]
        if text in pairs:
            depth += 1
        elif text in pairs.values():
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced brackets")


def _split(tokens: Tokens, sep: str) -> list[Tokens]:
    """Top-level parts of an expression list (sep: ',' or '..')."""
    parts: list[Tokens] = [[]]
    depth = 0
    for tok in tokens:
        if tok[1] in "([{" and tok[0] == "op":
            depth += 1
        elif tok[1] in ")]}" and tok[0] == "op":
            depth -= 1
        if depth == 0 and tok == ("op", sep):
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


@dataclass
class Function:
    name: str  # "" = the script's body
    params: list[str]
    start: int  # first token of the body
    stop: int  # its `end`


class Source:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.functions = [Function("", [], 0, len(self.tokens))]
        self._find_functions()
        self._memo: dict[tuple[str, str], bool] = {}

    def _find_functions(self) -> None:
        stack: list[Function | None] = []
        for i, (kind, text) in enumerate(self.tokens):
            if kind == "name" and text in _OPENERS:
                fn = None
                if text == "function":
                    name = self.tokens[i + 1][1] if self.tokens[i + 1][0] == "name" else "?"
                    open_at = i + 2 if name != "?" else i + 1
                    close_at = _close(self.tokens, open_at)
                    params = [t for k, t in self.tokens[open_at + 1:close_at] if k == "name"]
                    fn = Function(name, params, close_at + 1, -1)
                    self.functions.append(fn)
                stack.append(fn)
            elif kind == "name" and text in _CLOSERS:
                fn = stack.pop()
                if fn is not None:
                    fn.stop = i

    def scope_of(self, i: int) -> Function:
        inner = [f for f in self.functions if f.start <= i < f.stop]
        return max(inner, key=lambda f: f.start)

    def _own(self, fn: Function, i: int) -> bool:
        return self.scope_of(i) is fn

    def key_args(self) -> list[tuple[int, str, Tokens]]:
        """(token index, command, key argument) of every redis.call / redis.pcall."""
        found = []
        t = self.tokens
        for i in range(len(t) - 3):
            if t[i][1] == "redis" and t[i + 1][1] == "." and t[i + 2][1] in ("call", "pcall"):
                args = _split(t[i + 4:_close(t, i + 3)], ",")
                command = args[0][0][1].strip("'\"").upper() if args[0][0][0] == "str" else "?"
                if command not in KEY_ARGS:
                    found.append((i, command, args[0]))
                    continue
                for key in self._keys_of(KEY_ARGS[command], args[1:]):
                    found.append((i, command, key))
        return found

    @staticmethod
    def _keys_of(how: str | None, args: list[Tokens]) -> list[Tokens]:
        if how == FIRST:
            return args[:1]
        if how == ALL:
            return args
        if how == STREAMS:
            at = next(n for n, a in enumerate(args) if a == [("str", "'STREAMS'")])
            rest = args[at + 1:]
            return rest[:len(rest) // 2]
        return []

    def is_derived(self, expr: Tokens, at: int) -> bool:
        """Whether an expression found at token index `at` is derived from KEYS."""
        while len(expr) > 2 and expr[0][1] == "(" and _close(expr, 0) == len(expr) - 1:
            expr = expr[1:-1]
        if not expr or any(tok[1] in ("and", "or") for tok in _top_level(expr)):
            return False
        parts = _split(expr, "..")
        if len(parts) > 1:
            return self.is_derived(parts[0], at)
        if expr[0][1] == "{":
            values = [v for v in _split(expr[1:-1], ",") if v]
            return bool(values) and all(self.is_derived(_value(v), at) for v in values)
        if expr[0][0] != "name":
            return False
        name, rest = expr[0][1], expr[1:]
        if name == "KEYS":
            return bool(rest) and rest[0][1] == "[" and _close(expr, 1) == len(expr) - 1
        if rest and rest[0][1] == "(" and _close(expr, 1) == len(expr) - 1:
            return self._returns_derived(name)
        if rest and not _is_path(rest):
            return False
        return self._name_derived(name, self.scope_of(at))

    def _returns_derived(self, name: str) -> bool:
        fns = [f for f in self.functions if f.name == name]
        if len(fns) != 1:
            return False
        fn = fns[0]
        returns = [i for i in range(fn.start, fn.stop)
                   if self.tokens[i] == ("name", "return") and self._own(fn, i)]
        return bool(returns) and all(
            self.is_derived(self._statement(i + 1), i) for i in returns)

    def _name_derived(self, name: str, fn: Function) -> bool:
        memo = (fn.name, name)
        if memo in self._memo:
            return self._memo[memo]
        self._memo[memo] = True  # a name assigned from itself stays what its other sources are
        if name in fn.params:
            found = self._param_derived(fn, fn.params.index(name))
        else:
            values = self._assignments(name, fn)
            if values is None:
                found = False
            elif values:
                found = all(self.is_derived(v, i) for i, v in values)
            else:
                found = fn.name != "" and self._name_derived(name, self.functions[0])
        self._memo[memo] = found
        return found

    def _param_derived(self, fn: Function, index: int) -> bool:
        t = self.tokens
        for i in range(len(t) - 1):
            if t[i] == ("name", fn.name) and t[i + 1][1] == "(" and t[i - 1][1] != "function":
                args = _split(t[i + 2:_close(t, i + 1)], ",")
                if index >= len(args) or not self.is_derived(args[index], i):
                    return False
        return True

    def _assignments(self, name: str, fn: Function) -> list[tuple[int, Tokens]] | None:
        """The values assigned to `name` in fn's own code; None when one is not understood."""
        t = self.tokens
        values = []
        for i in range(fn.start, fn.stop):
            if t[i] != ("name", name) or not self._own(fn, i) or t[i - 1][1] == ".":
                continue
            first, last = i, i  # the list of names this one is in (`a, b = ...`)
            while t[first - 1][1] == "," and t[first - 2][0] == "name":
                first -= 2
            while t[last + 1][1] == "," and t[last + 2][0] == "name":
                last += 2
            if t[first - 1] == ("name", "for"):
                return None  # a for variable
            if t[last + 1] != ("op", "=") or t[first - 1][1] in ("(", "{", ","):
                continue  # a use, not an assignment
            if first != last:
                return None  # one of several names
            value = self._statement(i + 2)
            if value != [("name", "nil")]:
                values.append((i, value))
        return values

    def _statement(self, i: int) -> Tokens:
        """The expression starting at token i, up to the end of its statement."""
        t = self.tokens
        if i < len(t) and t[i][1] in ("end", "else", "elseif", "until"):
            return []
        j = i
        depth = 0
        while j < len(t):
            text = t[j][1]
            if t[j][0] == "op" and text in "([{":
                depth += 1
            elif t[j][0] == "op" and text in ")]}":
                depth -= 1
            if depth == 0 and j > i and _starts_statement(t, j):
                break
            j += 1
        return t[i:j]

    def reachable(self) -> set[str]:
        """The functions the script's body calls, directly or through others ("" = body)."""
        names = {f.name for f in self.functions}
        seen = {""}
        todo = [self.functions[0]]
        while todo:
            fn = todo.pop()
            for i in range(fn.start, fn.stop):
                kind, text = self.tokens[i]
                if (kind == "name" and text in names and text not in seen
                        and self.tokens[i - 1][1] != "function" and self._own(fn, i)):
                    seen.add(text)
                    todo += [f for f in self.functions if f.name == text]
        return seen

    def undeclared(self) -> list[tuple[str, str]]:
        live = self.reachable()
        found = []
        for i, command, key in self.key_args():
            scope = self.scope_of(i).name
            if scope not in live:
                continue  # a prelude helper this script never calls
            if command not in KEY_ARGS:
                found.append((scope, command))
            elif not self.is_derived(key, i):
                found.append((scope, _text(key)))
        return found


def _top_level(tokens: Tokens) -> Tokens:
    """The tokens outside any bracket."""
    out = []
    depth = 0
    for tok in tokens:
        if tok[0] == "op" and tok[1] in ")]}":
            depth -= 1
        elif depth == 0:
            out.append(tok)
        if tok[0] == "op" and tok[1] in "([{":
            depth += 1
    return out


def _value(field_tokens: Tokens) -> Tokens:
    """The value of a table field (`name = v`, `[k] = v` or `v`)."""
    parts = _split(field_tokens, "=")
    return parts[-1]


def _is_path(rest: Tokens) -> bool:
    """`.field` and `[index]` suffixes only."""
    i = 0
    while i < len(rest):
        if rest[i][1] == "." and i + 1 < len(rest) and rest[i + 1][0] == "name":
            i += 2
        elif rest[i][1] == "[":
            i = _close(rest, i) + 1
        else:
            return False
    return True


def _starts_statement(t: Tokens, j: int) -> bool:
    """Whether token j begins a new statement (a name after a complete expression)."""
    kind, text = t[j]
    if kind == "name" and text in {"and", "or", "not", "in"}:
        return False
    if kind == "name" and text in {"local", "if", "for", "while", "return", "end", "else",
                                   "elseif", "then", "do", "until", "repeat", "function"}:
        return True
    prev_kind, prev = t[j - 1]
    ends_expr = prev_kind in ("name", "str", "num") or prev in (")", "]", "}")
    keyword = prev_kind == "name" and prev in {"and", "or", "not", "return", "local"}
    return kind == "name" and ends_expr and not keyword


def _text(tokens: Tokens) -> str:
    return " ".join(text for _, text in tokens).replace(" . ", ".").replace(" [ ", "[") \
        .replace(" ]", "]")


def undeclared_keys(source: str) -> list[tuple[str, str]]:
    """(function, key expression) of every key argument not derived from KEYS."""
    return Source(source).undeclared()

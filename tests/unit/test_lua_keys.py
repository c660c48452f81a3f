"""Every key a Lua script touches comes from KEYS, built by scheduler/keys.py.

The static reading and its limits are in tests/lua_keys.py. One key name is data: the reply
stream a job hash names in `reply_to` (keys.reply_stream at submit), written by the prelude's
`reply`; it lives in the gateway's slot, not the model's (issue 15 designs the reply path
across slots), so the scripts that reach `reply` are listed here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler import keys
from tests.lua_keys import tokenize, undeclared_keys

LUA = Path(keys.__file__).parent / "lua"
PRELUDE = (LUA / "common.lua").read_text()
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua") if p.stem != "common")
REPLY = {("reply", "reply_to")}
REPLIES = {"claim", "complete", "reap", "start", "train_start"}


def source(name: str) -> str:
    """As scheduler/scripts.py loads it: the prelude, then the script."""
    return PRELUDE + "\n" + (LUA / f"{name}.lua").read_text()


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_a_script_touches_comes_from_keys(name: str) -> None:
    assert set(undeclared_keys(source(name))) == (REPLY if name in REPLIES else set())


@pytest.mark.parametrize("lua", [
    "redis.call('GET', ARGV[1] .. ':x')",
    "local k = 'maas:' .. ARGV[1]\nredis.call('HGET', k, 'f')",
    "local k = string.match(KEYS[1], '^(.*):job:')\nredis.call('HGET', k, 'f')",
    "local function get(key)\n  return redis.call('GET', key)\nend\nget(KEYS[1])\nget(ARGV[1])",
    "local q = {job = ARGV[1]}\nredis.call('HGET', q.job .. 'id', 'f')",
    "local k = KEYS[1]\nk = ARGV[2]\nredis.call('GET', k)",
    "local a, b = KEYS[1], ARGV[1]\nredis.call('GET', b)",
    "redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', ARGV[1], '>')",
    "redis.call('UNLINK', KEYS[1])",  # a command the check does not know
])
def test_the_check_reports_keys_not_from_keys(lua: str) -> None:
    assert undeclared_keys(lua)


@pytest.mark.parametrize("lua", [
    "local q = {s = {high = KEYS[1]}, job = KEYS[2]}\n"
    "redis.call('XADD', q.s['high'], '*', 'job', ARGV[1])\n"
    "redis.call('HGET', q.job .. ARGV[1], 'state')",
    "local function keys_at(i)\n  return {job = KEYS[i]}\nend\n"
    "local function touch(q, id)\n  redis.call('HGET', q.job .. id, 'f')\nend\n"
    "touch(keys_at(1), ARGV[1])",
    "local function unused(key)\n  return redis.call('GET', key)\nend\n"
    "redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'STREAMS', KEYS[1], '>')",
])
def test_the_check_accepts_keys_derived_from_keys(lua: str) -> None:
    assert undeclared_keys(lua) == []


def test_templates_complete_to_the_keys_in_the_same_slot() -> None:
    model, tenant, job_id = "acme/digits", "acme", "0f1e"
    pairs = [(keys.job(model, ""), job_id, keys.job(model, job_id)),
             (keys.share(model, ""), tenant, keys.share(model, tenant)),
             (keys.training_gang(""), job_id, keys.training_gang(job_id)),
             *((keys.backlog(model, level, ""), tenant, keys.backlog(model, level, tenant))
               for level in keys.LEVELS)]
    for template, last, key in pairs:
        assert template + last == key
        assert template.split("}")[0] == key.split("}")[0]  # one hash tag, one slot


def test_queue_keys_is_the_block_the_prelude_reads() -> None:
    body = PRELUDE[PRELUDE.index("local function queue_keys(i)"):]
    body = body[:body.index("\nend\n")]
    read = [(name, int(n or 0)) for name, n in re.findall(r"(\w+) = KEYS\[i(?: \+ (\d))?\]", body)]
    assert read == [(name, i) for i, name in enumerate(
        ["high", "normal", "low", "job", "share", "high", "normal", "low"])]
    assert "stream = {high" in body and "backlog = {high" in body
    model = "m"
    assert keys.queue_keys(model) == [
        *(keys.stream(model, level) for level in keys.LEVELS), keys.job(model, ""),
        keys.share(model, ""), *(keys.backlog(model, level, "") for level in keys.LEVELS)]


def _used(code: str, table: str) -> set[int]:
    return {int(n) for n in re.findall(table + r"\[(\d+)\]", code)}


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_header_lists_the_keys_and_argv_a_script_reads(name: str) -> None:
    """Each `KEYS[n]` / `ARGV[n]` the code reads has a `-- KEYS[n] = ...` line and back."""
    text = (LUA / f"{name}.lua").read_text()
    code = " ".join(t for _, t in tokenize(text)).replace(" [ ", "[").replace(" ]", "]")
    blocks = [int(n) for n in re.findall(r"queue_keys \( (\d+) \)", code)]
    for table in ("KEYS", "ARGV"):
        documented = {int(n) for n in re.findall(rf"^-- {table}\[(\d+)\] = ", text, re.M)}
        used = _used(code, table) | ({i + k for i in blocks for k in range(8)}
                                     if table == "KEYS" else set())
        assert used <= documented, f"{name}: {table} {sorted(used - documented)} undocumented"
        assert documented <= used, f"{name}: {table} {sorted(documented - used)} unread"

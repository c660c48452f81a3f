"""`maas generate MODEL PROMPT`: a generative model continues the prompt; tokens are printed
as they arrive, then (on stderr) why it ended. `--json` prints one document at the end."""

from __future__ import annotations

import argparse
import sys

from maas.cli.commands import add_client_flags, client_for, emit
from maas.generation import GenerationChunk


def cmd_generate(args: argparse.Namespace) -> int:
    text: list[str] = []
    tokens: list[int] = []
    last: GenerationChunk | None = None
    with client_for(args) as client:
        for chunk in client.generate(
                args.model, args.prompt, max_tokens=args.max_tokens,
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                seed=args.seed, stop=args.stop or (), version=args.version,
                timeout_s=args.timeout):
            text.append(chunk.text)
            tokens += chunk.token_ids
            last = chunk
            if not args.json:
                print(chunk.text, end="", flush=True)
    reason = last.finish_reason if last is not None else None
    if args.json:
        emit(args, {"model": args.model, "text": "".join(text), "token_ids": tokens,
                    "finish_reason": reason,
                    "prompt_tokens": last.prompt_tokens if last else 0,
                    "completion_tokens": last.completion_tokens if last else 0}, "")
    else:
        print()
        print(f"[{reason}, {len(tokens)} tokens]", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate", help="continue a prompt with a generative model, "
                                        "printing tokens as they arrive")
    p.add_argument("model")
    p.add_argument("prompt")
    p.add_argument("--version", default="")
    p.add_argument("--max-tokens", type=int, default=16, help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 (default): no limit")
    p.add_argument("--top-p", type=float, default=None, help="nucleus, in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    p.add_argument("--stop", action="append", help="a stop string (repeatable)")
    add_client_flags(p)
    p.set_defaults(func=cmd_generate)

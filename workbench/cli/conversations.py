"""CLI: ``conversations`` lists the kept chat conversations; ``conversations export ID`` writes one
as Markdown or JSON. (``ask --conversation ID|new`` appends to one: see cli/chat.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workbench.config import Settings
from workbench.answer.conversation_export import export_json, export_markdown
from workbench.answer.conversations import ConversationStore


def register(sub) -> None:
    p = sub.add_parser("conversations", help="list kept chat conversations, newest first; `conversations export ID`")
    p.add_argument("--json", action="store_true", help="print [{id, title, collection, model, ..., turn_count}]")
    p.add_argument("--limit", type=int, help="at most this many (newest first)")
    p.set_defaults(func=run_list)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    e = actions.add_parser("export", help="write one conversation as Markdown or JSON")
    e.add_argument("id", help="conversation id (see `conversations`)")
    e.add_argument("--format", "-f", choices=("md", "json"), default="md", help="md (default) or json")
    e.add_argument("--output", "-o", type=Path, help="write to this file instead of stdout")
    e.add_argument("--no-check", action="store_true",
                   help="do not open the Chroma store to mark citations whose chunk is gone")
    e.set_defaults(func=run_export)


def run_list(args, settings: Settings) -> int:
    rows = ConversationStore.open(settings).list(limit=args.limit)
    if args.json:
        print(json.dumps([{k: v for k, v in vars(c).items() if k != "turns"} for c in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("No conversations yet (chat on the Chat page, or `ask --conversation new`).")
        return 0
    print(f"{'id':<14} {'updated (UTC)':<17} {'turns':>5}  {'collection':<20} title")
    for c in rows:
        print(f"{c.id:<14} {c.updated_at[:16].replace('T', ' '):<17} {c.turn_count:>5}  {c.collection[:20]:<20} {c.title}")
    return 0


def run_export(args, settings: Settings) -> int:
    store = None
    if not args.no_check:
        from workbench.store.chroma import open_store

        store = open_store(settings)
    conversation = ConversationStore.open(settings).get(args.id, store=store)
    text = export_json(conversation) if args.format == "json" else export_markdown(conversation)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({len(conversation.turns)} turns)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0

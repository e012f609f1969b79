"""How should a block of table rows be written for retrieval? (issue 14, .csv/.xlsx loaders)

A synthetic staff table (seeded, ROWS rows: employee, department, office, project, start year;
names unique) is rendered three ways, in blocks of ``formats.ROWS_PER_BLOCK`` rows with the
header on top of each block, then chunked by the real Chunker (CHUNK_SIZE 200, title header)
and embedded by the real MiniLM model:

- ``markdown``: "| a | b |" header, "|---|" rule, "| v | w |" rows;
- ``csv``: the header line and the rows as "v, w";
- ``key-value`` (what ``formats.table_block`` writes): the header line, then
  "a: v; b: w" rows.

Queries ask for one cell of one row by the employee's name ("Which department does X work
in?"); a chunk is relevant when it holds that row. Vector search only (cosine, top 10): BM25
finds the name in any rendering. Prints recall@1/@5 and MRR@10 and the chunk count of each;
writes benchmarks/results/tables.json. Usage: python benchmarks/tables.py [--rows 400] [--queries 300]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
from _common import write_result

from tests.conftest import make_settings
from workbench.ingest.chunking import Chunker
from workbench.documents import Page
from workbench.models.embeddings import get_embedder
from workbench.ingest.formats import ROWS_PER_BLOCK, table_block

FIRST = "Ada Bruno Chen Dana Emil Farah Goran Hana Ivo Jana Kofi Lena Mateo Nia Omar Priya Quinn Rosa Sami Tariq Uma Vera Wen Yusuf Zoe".split()
LAST = "Abara Novak Lindqvist Moreau Okafor Petrov Quispe Rahman Sato Tanaka Ueda Varga Weber Xu Yilmaz Zapata Brandt Costa Duarte Eriksen".split()
DEPARTMENTS = ["Finance", "Legal", "Marketing", "Research", "Logistics", "Customer support", "Security", "Human resources"]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Toronto", "Krakow", "Lima", "Dublin", "Hanoi", "Perth", "Oslo"]
PROJECTS = ["Falcon", "Juniper", "Basalt", "Meridian", "Tidewater", "Quartz", "Lantern", "Orchard"]
HEADER = ["Employee", "Department", "Office", "Project", "Start year"]
QUESTIONS = ["Which department does {} work in?", "In which city is {}'s office?", "What project is {} assigned to?"]


def staff(rows: int, rng: random.Random) -> list[list[str]]:
    names = rng.sample([f"{f} {l}" for f in FIRST for l in LAST], rows)
    return [[n, rng.choice(DEPARTMENTS), rng.choice(CITIES), rng.choice(PROJECTS), str(rng.randint(2005, 2026))] for n in names]


def render(kind: str, block: list[list[str]]) -> str:
    if kind == "key-value":
        return table_block(HEADER, block)
    if kind == "csv":
        return "\n".join([", ".join(HEADER), *(", ".join(r) for r in block)])
    return "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER), *("| " + " | ".join(r) + " |" for r in block)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(14)
    table = staff(args.rows, rng)
    queries = []
    for _ in range(args.queries):
        row = rng.choice(table)
        queries.append((rng.choice(QUESTIONS).format(row[0]), row[0]))
    settings = make_settings(Path("/nonexistent-unused"))
    embedder = get_embedder(settings)
    chunker = Chunker(embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length)
    query_vectors = embedder.encode([q for q, _ in queries])
    results = {}
    for kind in ("markdown", "csv", "key-value"):
        t0 = time.perf_counter()
        pages = [Page(render(kind, table[i : i + ROWS_PER_BLOCK]), n) for n, i in enumerate(range(0, len(table), ROWS_PER_BLOCK), start=1)]
        chunks = list(chunker.chunk_pages(iter(pages), document_id="d", source="staff.csv", file_name="staff.csv"))
        vectors = embedder.encode([c.header + c.text for c in chunks])
        ranks = []
        for (_, name), vector in zip(queries, query_vectors):
            order = np.argsort(-(vectors @ vector))[:10]
            hit = [i for i, c in enumerate(order) if _holds(chunks[c].text, name)]
            ranks.append(hit[0] + 1 if hit else None)
        results[kind] = {
            "chunks": len(chunks),
            "recall@1": sum(1 for r in ranks if r == 1) / len(ranks),
            "recall@5": sum(1 for r in ranks if r and r <= 5) / len(ranks),
            "mrr@10": sum(1 / r for r in ranks if r) / len(ranks),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    print(f"{'rendering':<10} {'chunks':>6} {'R@1':>6} {'R@5':>6} {'MRR@10':>7}")
    for kind, r in results.items():
        print(f"{kind:<10} {r['chunks']:>6} {r['recall@1']:>6.3f} {r['recall@5']:>6.3f} {r['mrr@10']:>7.3f}")
    write_result("tables", {"rows": args.rows, "queries": args.queries, "block_rows": ROWS_PER_BLOCK, "results": results})


def _holds(text: str, name: str) -> bool:
    """The chunk holds the row of ``name`` whole (its line, not a piece cut by the splitter)."""
    return any(line.startswith((f"| {name} |", f"{name}, ", f"Employee: {name};")) for line in text.splitlines())


if __name__ == "__main__":
    main()

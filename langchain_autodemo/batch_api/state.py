"""A batch job's durable state: one SQLite file (next to the output).

Every step a job takes is committed here before the job relies on it, so a process
killed at any point can be started again and continue where it was:

- ``job``: identity (id, fingerprint of inputs and settings, creation time) and the
  initial batch plans (a re-attached job does not plan, or embed, again);
- ``requests``: every request ever written, with a digest of its body: a re-attached
  job recomputes its requests and refuses to go on if one differs;
- ``parts``: one row per batch file: its request ids, its state (``planned`` ->
  ``submitting`` -> ``submitted`` -> ``done``) and batch id. ``submitting`` is written
  before the provider is called, so a kill during submission is followed by a look-up
  of the batch (``find``), never by a second submission;
- ``outcomes``: what each request delivered (completion text, finish reason, tokens, or
  error), so finished rounds are replayed through the engine without the provider.

SQLite commits are atomic and survive a kill of the process; the standard library has
it, so there is nothing to install.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_autodemo.batch_api.protocol import Outcome

__all__ = ["JobState", "PartRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    custom_id TEXT PRIMARY KEY, round INTEGER NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    tag TEXT PRIMARY KEY, round INTEGER NOT NULL, seq INTEGER NOT NULL,
    custom_ids TEXT NOT NULL, state TEXT NOT NULL, batch_id TEXT,
    provider_status TEXT, resubmits INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS outcomes (custom_id TEXT PRIMARY KEY, outcome TEXT NOT NULL);
"""


@dataclass
class PartRecord:
    """One batch file of a round."""

    tag: str
    round: int
    seq: int
    custom_ids: list[str]
    state: str
    batch_id: str | None
    provider_status: str | None
    resubmits: int


class JobState:
    """The SQLite state file of one job (``":memory:"``: no durability)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # online follow-ups write from worker threads
        with self._lock:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- job ---------------------------------------------------------------------

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM job WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, values: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO job (key, value) VALUES (?, ?)",
                [(key, json.dumps(value)) for key, value in values.items()],
            )

    def count(self, table: str) -> int:
        if table not in ("requests", "outcomes", "parts"):
            raise ValueError(table)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # -- requests ----------------------------------------------------------------

    def digests(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT custom_id, digest FROM requests"))

    def add_requests(self, round_: int, digests: dict[str, str]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO requests (custom_id, round, digest) VALUES (?, ?, ?)",
                [(cid, round_, digest) for cid, digest in digests.items()],
            )

    # -- parts -------------------------------------------------------------------

    def parts(self, round_: int) -> list[PartRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT tag, round, seq, custom_ids, state, batch_id, provider_status, resubmits"
                " FROM parts WHERE round = ? ORDER BY seq",
                (round_,),
            ).fetchall()
        return [
            PartRecord(tag, r, seq, json.loads(ids), state, batch_id, status, resubmits)
            for tag, r, seq, ids, state, batch_id, status, resubmits in rows
        ]

    def add_parts(self, parts: Iterable[PartRecord]) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO parts (tag, round, seq, custom_ids, state, batch_id,"
                " provider_status, resubmits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (p.tag, p.round, p.seq, json.dumps(p.custom_ids), p.state, p.batch_id,
                     p.provider_status, p.resubmits)
                    for p in parts
                ],
            )  # fmt: skip

    def update_part(self, part: PartRecord) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE parts SET state = ?, batch_id = ?, provider_status = ? WHERE tag = ?",
                (part.state, part.batch_id, part.provider_status, part.tag),
            )

    def finish_part(
        self, part: PartRecord, outcomes: dict[str, Outcome], follow: PartRecord | None
    ) -> None:
        """Record a finished batch's outcomes, the part's end and any resubmission, at once."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO outcomes (custom_id, outcome) VALUES (?, ?)",
                [(cid, json.dumps(o.as_dict())) for cid, o in outcomes.items()],
            )
            self._db.execute(
                "UPDATE parts SET state = ?, batch_id = ?, provider_status = ? WHERE tag = ?",
                ("done", part.batch_id, part.provider_status, part.tag),
            )
            if follow is not None:
                self._db.execute(
                    "INSERT INTO parts (tag, round, seq, custom_ids, state, batch_id,"
                    " provider_status, resubmits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (follow.tag, follow.round, follow.seq, json.dumps(follow.custom_ids),
                     follow.state, None, None, follow.resubmits),
                )  # fmt: skip

    # -- outcomes ----------------------------------------------------------------

    def outcomes(self, custom_ids: Iterable[str]) -> dict[str, Outcome]:
        wanted = list(custom_ids)
        found: dict[str, Outcome] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for cid, data in self._db.execute(
                    f"SELECT custom_id, outcome FROM outcomes WHERE custom_id IN ({marks})",
                    chunk,
                ):
                    found[cid] = Outcome.from_dict(json.loads(data))
        return found

    def add_outcome(self, custom_id: str, outcome: Outcome) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO outcomes (custom_id, outcome) VALUES (?, ?)",
                (custom_id, json.dumps(outcome.as_dict())),
            )

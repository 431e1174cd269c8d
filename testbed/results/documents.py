"""Results documents: written once per spec (JSON + a CSV of its headline figures), read back
as a typed model by the report and the plots (``testbed report DIR`` re-makes both from the
documents alone, as flent re-plots its data files).

Every document carries ``schema`` (its layout's version) and ``code`` (the commit and version
of the testbed that produced it). Schema 1 is the unversioned layout before that: the same
keys, read the same way.
"""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
ROOT = Path(__file__).resolve().parents[2]


class DocumentError(ValueError):
    """A results file that cannot be read as a results document (says which and why)."""


@cache
def code_identity() -> dict[str, Any]:
    """The commit (and whether the tree had changes) and version of the testbed running."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        version = metadata.version("migration-testbed")
    except metadata.PackageNotFoundError:
        version = None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "modified": bool(status) if status is not None else None,
            "version": version}


def stamp(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with this code's schema version and identity."""
    return {"schema": SCHEMA_VERSION, "code": code_identity()} | doc


def write(out_dir: Path, name: str, doc: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    """Write ``name``.json (the whole document) and ``name``.csv (``rows``) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
    if rows:
        with open(out_dir / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


@dataclass(frozen=True)
class Migration:
    """One migration's figures (the keys every kind writes, typed); ``raw`` has the rest."""

    case: str
    completed: bool
    integrity_ok: bool
    image_bytes: int
    rounds: int | None
    migration_time_s: float | None
    downtime_ms: float | None
    goodput_mbps: float | None
    iperf3_mbps: float | None
    encrypted: bool | None
    dirty_tracking: str | None
    error: str | None
    switchover_reason: str | None
    client_outage_ms: float | None
    client_downtime_ms: float | None
    outage_resolved: bool | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def failed(self) -> bool:
        """It did not complete with its integrity verified."""
        return not (self.completed and self.integrity_ok)

    @classmethod
    def from_json(cls, m: dict[str, Any]) -> Migration:
        return cls(case=str(m.get("case") or ""), completed=bool(m.get("completed")),
                   integrity_ok=bool(m.get("integrity_ok")),
                   image_bytes=int(m.get("image_bytes") or 0), rounds=m.get("rounds"),
                   migration_time_s=m.get("migration_time_s"),
                   downtime_ms=m.get("downtime_ms"), goodput_mbps=m.get("goodput_mbps"),
                   iperf3_mbps=m.get("iperf3_mbps"), encrypted=m.get("encrypted"),
                   dirty_tracking=m.get("dirty_tracking"), error=m.get("error"),
                   switchover_reason=m.get("switchover_reason"),
                   client_outage_ms=m.get("client_outage_ms"),
                   client_downtime_ms=m.get("client_downtime_ms"),
                   outage_resolved=(m.get("client") or {}).get("outage_resolved"), raw=m)


@dataclass(frozen=True)
class Variant:
    """One concrete variant run: its sweep point, repetition, migrations and summary."""

    sweep_point: dict[str, Any]
    repetition: int
    migrations: list[Migration]
    summary: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sweep_point.items())


@dataclass(frozen=True)
class Document:
    """One spec's results."""

    name: str
    kind: str
    description: str
    status: str
    duration_s: float
    schema: int
    code: dict[str, Any]
    spec: dict[str, Any]
    environment: dict[str, Any]
    variants: list[Variant]
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def placement(self) -> dict[str, Any] | None:
        """Where it ran and why (``native``, ``appliance``, ``vm``), if recorded."""
        return self.environment.get("placement")

    def migrations(self) -> list[tuple[Variant, Migration]]:
        return [(v, m) for v in self.variants for m in v.migrations]

    @classmethod
    def from_json(cls, obj: Any, origin: str = "<document>") -> Document:
        if not isinstance(obj, dict) or "spec" not in obj or "variants" not in obj:
            raise DocumentError(f"{origin}: not a results document (no 'spec' and 'variants')")
        schema = int(obj.get("schema", 1))
        if schema > SCHEMA_VERSION:
            raise DocumentError(f"{origin}: written with results schema {schema} by a newer "
                                f"testbed ({obj.get('code')}); this one reads up to "
                                f"{SCHEMA_VERSION}")
        spec = obj["spec"]
        variants = [Variant(sweep_point=v.get("sweep_point", {}),
                            repetition=int(v.get("repetition", 0)),
                            migrations=[Migration.from_json(m) for m in v.get("migrations", [])],
                            summary=v.get("summary", {}), raw=v) for v in obj["variants"]]
        return cls(name=spec["name"], kind=spec["kind"], description=spec.get("description")
                   or "", status=obj.get("status", "?"),
                   duration_s=float(obj.get("duration_s") or 0.0), schema=schema,
                   code=obj.get("code") or {}, spec=spec, environment=obj.get("environment", {}),
                   variants=variants, path=None, raw=obj)


def load(out_dir: Path) -> list[Document]:
    """Every results document in ``out_dir`` (other JSON files there are not documents and are
    left alone; a document that cannot be read is an error naming the file)."""
    if not out_dir.is_dir():
        raise DocumentError(f"{out_dir}: no such results directory")
    docs = []
    for p in sorted(out_dir.glob("*.json")):
        try:
            obj = json.loads(p.read_text())
        except ValueError as exc:
            raise DocumentError(f"{p}: not JSON ({exc})") from None
        if isinstance(obj, dict) and "spec" in obj and "variants" in obj:
            doc = Document.from_json(obj, str(p))
            docs.append(Document(**{**doc.__dict__, "path": p}))
    return docs

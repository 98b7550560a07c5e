"""Preference data straight from the store, for DPO / KTO training: a session's scores or the chat thumbs.

    records, provenance = session_pairs(s, "piloto", min_gap=1.0)   # DPO pairs (export.dpo_pairs)
    records, provenance = feedback_records(s)                        # KTO examples (chat 👍/👎)
    write_records(records, path)                                     # the JSONL the trainer reads

The records have the shape of the exported `dpo.jsonl` / `kto.jsonl`; the provenance (session name and
id, how many human scores and which answers, the gap threshold, or how many thumbs) goes into the adapter's
metadata. A source with nothing usable is a Spanish error that says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.study.export import dpo_pairs, kto_records
from esllm.study.results import find_session, session_scores_frame


def session_pairs(s: Session, session: Union[int, str], min_gap: float = 1.0) -> tuple[list[dict], dict]:
    rs = find_session(s, session)
    df = session_scores_frame(s, rs.id)
    general = df[df["criterion"] == "general"] if not df.empty else df
    if general.empty:
        raise EsllmError(f"La sesión {rs.name!r} no tiene puntuaciones todavía: no hay pares para DPO.")
    pairs = dpo_pairs(s, df, min_gap)
    if not pairs:
        raise EsllmError(
            f"La sesión {rs.name!r} no tiene pares utilizables: ninguna pareja de respuestas de un mismo ítem difiere "
            f"en al menos {min_gap:g} punto(s) de media ({len(general)} puntuaciones). Baje data.min_gap o puntúe más ítems."
        )
    prov = {"session": rs.name, "session_id": rs.id, "ratings": int(len(general)), "min_gap": min_gap,
            "pairs": len(pairs), "answer_ids": sorted({int(a) for a in general["answer_id"]}),
            "raters": int(general["rater"].nunique())}
    return pairs, prov


def feedback_records(s: Session) -> tuple[list[dict], dict]:
    recs = [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"], "contestant": r["contestant"]}
            for r in kto_records(s)]
    ups = sum(1 for r in recs if r["label"])
    if ups == 0 or ups == len(recs):
        raise EsllmError(f"KTO necesita 👍 y 👎 del chat: hay {ups} 👍 y {len(recs) - ups} 👎. Valore más respuestas en «Conversar».")
    return recs, {"feedback": True, "thumbs_up": ups, "thumbs_down": len(recs) - ups}


def write_records(records: list[dict], path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path

"""Thumbs up/down on a «Conversar» answer, stored in `chat_feedback` (the input of a KTO-style export).

One row per answer: the contestant that answered, the prompt (the last user message that the answer
replies to; earlier turns and the system prompt are not stored), the answer text, "up"/"down", and the
generation parameters the answer was produced with. Changing one's mind on the same answer updates
that row (pass its `feedback_id`) instead of adding a second one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import THUMBS, ChatFeedback


def save_feedback(db: Session, *, contestant: str, prompt: str, answer: str, thumbs: str,
                  params: Optional[Mapping[str, Any]] = None, feedback_id: Optional[int] = None) -> ChatFeedback:
    """Insert the feedback row, or set `thumbs` on row `feedback_id` (flushed, not committed)."""
    if thumbs not in THUMBS:
        raise EsllmError("Valoración no válida: use 👍 o 👎.")
    if feedback_id is not None:
        row = db.get(ChatFeedback, feedback_id)
        if row is not None and (row.contestant, row.prompt, row.answer) == (contestant, prompt, answer):
            row.thumbs = thumbs
            db.flush()
            return row
    if not all(isinstance(v, str) and v.strip() for v in (contestant, prompt, answer)):
        raise EsllmError("No hay ninguna respuesta que valorar.")
    row = ChatFeedback(contestant=contestant, prompt=prompt, answer=answer, thumbs=thumbs, params=dict(params or {}))
    db.add(row)
    db.flush()
    return row

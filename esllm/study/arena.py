"""Comparar: one prompt, three contestants shown as Modelo A/B/C in random order, one vote, then the reveal.

    book = Comparisons()
    cmp = book.start(prompt="¿Qué es el IVA?", available=names, requested=[], rng=random.Random(),
                     session_hash="abc", user_id=None, max_prompt_chars=4000)
    for label in LABELS: ...generate cmp.shown[i]...   # the caller streams the answers
    book.mark_ready(cmp.token)
    reveal = book.vote(db_session, cmp.token, "B", session_hash="abc", user_id=None)  # {"A": name, …}

The label -> contestant mapping lives only here, in this process's memory (a server-side registry
keyed by an unguessable token), and leaves it only through `vote`, after the `vote` row is committed.
A comparison is voted at most once: `vote` takes it out of the registry under a lock before writing,
so a double click or a replayed request finds nothing to vote on. One open comparison per browser
session (a new prompt replaces the previous one) and a cap on open comparisons bound the memory.
A restart forgets open comparisons: they cannot be voted any more (nothing half-written).
"""

from __future__ import annotations

import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import LABELS, VOTE_CHOICES, Vote

CHOICE_NAMES = {"A": "A es mejor", "B": "B es mejor", "C": "C es mejor", "tie": "Empate", "all_bad": "Todas malas"}
assert tuple(CHOICE_NAMES) == VOTE_CHOICES  # the table's CHECK and the buttons agree


@dataclass
class Comparison:
    token: str
    prompt: str
    shown: tuple[str, str, str]  # contestant names in the order A, B, C: never sent before the vote
    session_hash: str
    user_id: Optional[int]
    ready: bool = False  # all three answers generated: only then may it be voted

    def reveal(self) -> dict[str, str]:
        return dict(zip(LABELS, self.shown))


def choose_contestants(available: Sequence[str], requested: Optional[Sequence[str]]) -> list[str]:
    """The three contestants to compare: `requested` (three distinct available names) or, when empty,
    the first three available. Raises EsllmError saying what to fix."""
    available = list(available)
    if not requested:
        if len(available) < 3:
            raise EsllmError(f"Comparar necesita tres concursantes disponibles; hay {len(available)}. "
                             "Revise «Modelos y adaptadores» en «Conversar».")
        return available[:3]
    if isinstance(requested, str) or not all(isinstance(n, str) for n in requested):
        raise EsllmError("Elija los concursantes por su nombre.")
    names = list(requested)
    if len(names) != 3 or len(set(names)) != 3:
        raise EsllmError(f"Elija exactamente tres concursantes distintos (eligió {len(names)}).")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise EsllmError(f"Concursante no disponible: {', '.join(unknown)}. Elija entre: {', '.join(available)}.")
    return names


def check_prompt(prompt: object, max_chars: int) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise EsllmError("Escriba un mensaje antes de comparar: el mensaje está vacío.")
    if len(prompt) > max_chars:
        raise EsllmError(f"El mensaje es demasiado largo: {len(prompt)} caracteres (máximo {max_chars}). Acórtelo.")
    return prompt


def draw_order(names: Sequence[str], rng: random.Random) -> tuple[str, str, str]:
    """A uniformly random A/B/C order of the three names."""
    order = list(names)
    rng.shuffle(order)
    return tuple(order)  # type: ignore[return-value]


def check_choice(choice: object) -> str:
    if not isinstance(choice, str) or choice not in VOTE_CHOICES:
        raise EsllmError("Voto no válido: elija «A es mejor», «B es mejor», «C es mejor», «Empate» o «Todas malas».")
    return choice


def public_error(label: str, error: BaseException) -> str:
    """What the browser may see when generating answer `label` failed: never the engine's message, which
    can name the contestant, its adapter, model or path (and a token count identifies a tokenizer)."""
    if isinstance(error, EsllmError) and str(error).startswith("El mensaje es demasiado largo"):
        return f"El mensaje es demasiado largo para el Modelo {label}. Acórtelo."
    return f"El Modelo {label} no pudo responder (el detalle quedó en el registro del servidor). Vuelva a intentarlo."


class Comparisons:
    """Open comparisons of this process, keyed by token (thread-safe)."""

    def __init__(self, max_open: int = 1000):
        self.max_open = max_open
        self._open: "OrderedDict[str, Comparison]" = OrderedDict()
        self._lock = threading.Lock()

    def start(self, *, prompt: object, available: Sequence[str], requested: Optional[Sequence[str]],
              rng: random.Random, session_hash: str, user_id: Optional[int], max_prompt_chars: int) -> Comparison:
        """Check the prompt and the contestants, draw the A/B/C order, keep it; not yet votable."""
        text = check_prompt(prompt, max_prompt_chars)
        shown = draw_order(choose_contestants(available, requested), rng)
        cmp = Comparison(secrets.token_urlsafe(16), text, shown, session_hash, user_id)
        with self._lock:
            for token in [t for t, c in self._open.items() if c.session_hash == session_hash]:
                del self._open[token]  # a new prompt replaces this browser session's previous comparison
            self._open[cmp.token] = cmp
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        return cmp

    def mark_ready(self, token: str) -> None:
        with self._lock:
            if token in self._open:
                self._open[token].ready = True

    def discard(self, token: Optional[str]) -> None:
        with self._lock:
            self._open.pop(token or "", None)

    def is_open(self, token: Optional[str]) -> bool:
        with self._lock:
            return (token or "") in self._open

    def vote(self, db: Session, token: Optional[str], choice: object, *, session_hash: str,
             user_id: Optional[int]) -> dict[str, str]:
        """Store the vote (committed) and return the reveal {"A": name, "B": …, "C": …}.

        Refused (EsllmError, nothing written) for an invalid choice, an unknown or already voted
        comparison, one of another browser session, or one whose answers are not all there yet.
        """
        choice = check_choice(choice)
        with self._lock:
            cmp = self._open.get(token or "")
            if cmp is None or cmp.session_hash != session_hash:
                raise EsllmError("No hay ninguna comparación pendiente de voto en esta sesión (ya votó o no empezó "
                                 "ninguna): escriba un mensaje y pulse «Comparar».")
            if not cmp.ready:
                raise EsllmError("Espere a que estén las tres respuestas antes de votar (una comparación detenida "
                                 "o con error no se vota: envíe el mensaje de nuevo).")
            del self._open[cmp.token]  # taken out first: a concurrent second vote finds nothing
        try:
            record_vote(db, prompt=cmp.prompt, shown=cmp.shown, choice=choice, user_id=user_id,
                        session_hash=session_hash)
            db.commit()
        except BaseException:
            db.rollback()
            with self._lock:
                self._open[cmp.token] = cmp  # not stored: may be voted again
            raise
        return cmp.reveal()


def record_vote(db: Session, *, prompt: str, shown: Sequence[str], choice: str, user_id: Optional[int],
                session_hash: Optional[str]) -> Vote:
    """Add one `vote` row (flushed, not committed)."""
    row = Vote(prompt=prompt, shown=list(shown), choice=check_choice(choice), user_id=user_id,
               session_hash=session_hash)
    db.add(row)
    db.flush()
    return row

"""Asking a judge contestant for one grade: greedy first; a reply without a grade is asked again with the
reminder (the first retry greedy, later ones sampled with a seed), and `ask_grades` sends the first tries of
several requests together (`generate_many`). Replies are read by esllm/evals/judge_prompt.py's `parse_grade`
after `strip_echo`. Used by esllm/evals/judge.py, which re-exports `ask_grade` and `ask_grades`.
"""

from __future__ import annotations

from typing import Optional

from esllm import EsllmError
from esllm.evals.judge_prompt import parse_grade, strip_echo, with_reminder

MAX_NEW_TOKENS = 48  # a grade needs a few tokens; room for "Calificación: 4 (bueno)" but not an essay


def ask_grade(engine, judge: str, messages: list[dict[str, str]], *, retries: int = 2,
              seed: int = 0) -> tuple[Optional[int], list[str]]:
    """(grade or None, every raw reply): greedy first; each retry adds REMINDER, the first greedy, the
    next sampled (temperature preset, seed + attempt) so that it can differ. A reply is read by
    parse_grade after strip_echo (lines copied from the prompt are no grade)."""
    res = engine.generate(judge, messages, preset="greedy", overrides={"max_new_tokens": MAX_NEW_TOKENS})
    grade = parse_grade(strip_echo(res.text, messages))
    if grade is not None or retries == 0:
        return grade, [res.text]
    grade, more = _retry(engine, judge, messages, retries, seed)
    return grade, [res.text] + more


def ask_grades(engine, judge: str, requests: list[tuple[list[dict[str, str]], int]], *,
               retries: int = 2) -> list[tuple[Optional[int], list[str]] | EsllmError]:
    """`ask_grade` for several (messages, seed) at once: the first, greedy tries go to the engine together
    (`generate_many`: a backend that batches decodes them at once); the retries of a reply without a grade
    then follow one by one. If the batch fails, each request is asked alone, so an error belongs to its own
    request (returned in its place)."""
    if not requests:
        return []
    overrides = {"max_new_tokens": MAX_NEW_TOKENS}
    try:
        first = engine.generate_many(judge, [m for m, _ in requests], preset="greedy", overrides=overrides)
    except EsllmError:
        first = None
    out: list[tuple[Optional[int], list[str]] | EsllmError] = []
    for i, (msgs, seed) in enumerate(requests):
        try:
            if first is None:
                out.append(ask_grade(engine, judge, msgs, retries=retries, seed=seed))
                continue
            if not getattr(first[i], "complete", True):  # a server failed or cut this reply: no grade from it
                raise EsllmError(f"El juez {judge} no respondió: {first[i].error or first[i].finish_reason}")
            grade = parse_grade(strip_echo(first[i].text, msgs))
            if grade is not None or retries == 0:
                out.append((grade, [first[i].text]))
                continue
            grade, more = _retry(engine, judge, msgs, retries, seed)
            out.append((grade, [first[i].text] + more))
        except EsllmError as e:
            out.append(e)
    return out


def _retry(engine, judge: str, messages: list[dict[str, str]], retries: int, seed: int) -> tuple[Optional[int], list[str]]:
    """Tries 1..retries of `ask_grade` (the first, greedy one was made)."""
    replies: list[str] = []
    msgs = with_reminder(messages)
    for attempt in range(1, retries + 1):
        if attempt == 1:
            preset, overrides = "greedy", {"max_new_tokens": MAX_NEW_TOKENS}
        else:
            preset, overrides = "temperature", {"max_new_tokens": MAX_NEW_TOKENS, "seed": seed + attempt}
        res = engine.generate(judge, msgs, preset=preset, overrides=overrides)
        replies.append(res.text)
        grade = parse_grade(strip_echo(res.text, msgs))
        if grade is not None:
            return grade, replies
    return None, replies

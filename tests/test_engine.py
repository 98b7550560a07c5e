"""The engine on tiny random models of every family: adapter routing, presets, caps, stopping.

References are computed with plain transformers / peft on freshly loaded models, never through the
engine, so a routing mistake (wrong adapter, adapter left on for the base) changes the answer.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from esllm import EsllmError
from esllm.engine.messages import visible_text
from esllm.engine.presets import PRESETS
from esllm.engine.templates import get_template
from esllm.engine.types import GenerationResult
from tests import tiny as tm
from tests.helpers import LIMITS, PROMPT, REPO

FAMILIES = list(tm.FAMILIES)
CAP = LIMITS["max_new_tokens"]


def raw_model(engine, family):
    """The transformers model under the engine's PeftModel wrapper."""
    return engine.registry.bases[family].model.get_base_model()


# ---------------------------------------------------------------- adapter routing


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_give_different_logits_equal_to_peft(family, engine, tiny):
    """Activated the way the engine does (set_adapter / disable_adapter), each adapter's logits are
    those of peft loading that adapter alone, and the three differ from each other."""
    eng, t = engine(family), tiny(family)
    base = eng.registry.bases[family]
    tok = base.tokenizer
    prompt = get_template(t.template).render(PROMPT, bos_token=tok.bos_token, eos_token=tok.eos_token)
    got = {}
    with base.lock:
        for name in ("a1", "a2"):
            base.model.set_adapter(name)
            got[name] = tm.last_logits(base.model, tok, prompt)
        with base.model.disable_adapter():
            got[None] = tm.last_logits(base.model, tok, prompt)
    want = {None: tm.last_logits(tm.load_plain(t.model_dir)[0], tok, prompt)}
    for name in ("a1", "a2"):
        want[name] = tm.last_logits(tm.load_with_adapter(t.model_dir, t.adapters_dir / name)[0], tok, prompt)
    for name in (None, "a1", "a2"):
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-3, msg=f"adapter {name}")
    for x, y in ((None, "a1"), (None, "a2"), ("a1", "a2")):
        assert (got[x] - got[y]).abs().max() > 0.05, f"{x} and {y} give the same logits"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("which", ["base", "a1", "a2"])
def test_greedy_answer_equals_reference(family, which, engine, reference):
    """base: the base contestant, with adapters loaded on the model, answers exactly like a freshly
    loaded plain model. a1/a2: exactly like peft with that adapter alone."""
    from peft import PeftModel

    eng = engine(family)
    assert isinstance(eng.registry.bases[family].model, PeftModel)  # adapters are loaded on this base
    assert set(eng.registry.bases[family].adapters) == {"a1", "a2"}
    res = eng.generate(f"{family}-{which}", PROMPT, preset="greedy")
    ref = reference(family, None if which == "base" else which)
    assert (res.text, res.new_tokens) == (ref.text, ref.new_tokens)
    assert res.ended_on_eos == ref.ended_on_eos
    assert res.adapter == (None if which == "base" else which)


@pytest.mark.parametrize("family", FAMILIES)
def test_contestants_answer_differently(family, engine):
    """Guards the test above: if all three answered alike, equal-to-reference would prove nothing."""
    eng = engine(family)
    texts = {w: eng.generate(f"{family}-{w}", PROMPT, preset="greedy").text for w in ("base", "a1", "a2")}
    assert len(set(texts.values())) == 3, texts


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_concurrent_generations_never_cross_adapters(family, engine, reference):
    eng = engine(family)
    names = [f"{family}-{w}" for w in ("base", "a1", "a2")]
    want = {n: reference(family, None if n.endswith("base") else n.rsplit("-", 1)[1]).text for n in names}
    jobs = [n for n in names for _ in range(4)]
    start = threading.Barrier(len(jobs))

    def run(name):
        start.wait()
        return name, eng.generate(name, PROMPT, preset="greedy").text

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    wrong = [(n, text) for n, text in results if text != want[n]]
    assert not wrong, f"{len(wrong)} of {len(results)} answers came from another contestant: {wrong}"


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_runs(family, preset, engine):
    eng = engine(family)
    res = eng.generate(f"{family}-a1", PROMPT, preset=preset, overrides={"max_new_tokens": 8, "seed": 1})
    assert isinstance(res, GenerationResult)
    assert res.params["preset"] == preset
    assert res.params["strategy"] == PRESETS[preset][1]["strategy"]
    assert res.params["max_new_tokens"] == 8
    assert 1 <= res.new_tokens <= 8
    assert res.finish_reason in ("eos", "stop_string", "length")
    assert res.finish_reason != "length" or res.new_tokens == 8
    assert 0 < res.latency_s < 60
    assert res.prompt_tokens > 0 and res.contestant == f"{family}-a1" and res.adapter == "a1"
    assert res.as_dict()["params"] == res.params


@pytest.mark.parametrize("preset", ["top-k", "top-p", "temperature"])
def test_sampling_follows_the_seed(preset, engine):
    eng = engine("llama")
    gen = lambda seed: eng.generate("llama-base", PROMPT, preset=preset, overrides={"seed": seed}).text  # noqa: E731
    assert gen(5) == gen(5)
    assert gen(5) != gen(6)


def test_beam_search_differs_from_greedy_only_by_search(engine):
    eng = engine("mistral")
    beam = eng.generate("mistral-a2", PROMPT, preset="beam")
    assert beam.params["num_beams"] == PRESETS["beam"][1]["num_beams"]
    assert beam.text == eng.generate("mistral-a2", PROMPT, preset="beam").text  # deterministic
    assert beam.new_tokens >= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_contrastive_search_matches_uncached_reference(family, engine, tiny):
    """Our contrastive loop (batched candidates on a shared KV cache) picks the tokens that the
    obvious uncached implementation picks. The Gemma prompt is longer than its sliding window."""
    eng, t = engine(family), tiny(family)
    msgs = [{"role": "user", "content": "Escribe un poema corto sobre el mar y las montañas de los Andes."}]
    res = eng.generate(f"{family}-base", msgs, preset="contrastive", overrides={"max_new_tokens": 10})
    model, tok = tm.load_plain(t.model_dir)
    template = get_template(t.template)
    prompt = template.render(msgs, bos_token=tok.bos_token, eos_token=tok.eos_token)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert family != "gemma" or ids.shape[1] > model.config.sliding_window
    eos_ids = [tok.eos_token_id] + [tok.convert_tokens_to_ids(x) for x in template.end_tokens]
    _, p = PRESETS["contrastive"]
    want = tm.contrastive_reference(model, ids, p["top_k"], p["penalty_alpha"], 10, eos_ids)
    from esllm.engine.messages import visible
    from esllm.engine.tokens import HFTok

    assert res.text == visible(HFTok(tok), want, eos_ids, template, final=True)[0]
    assert res.new_tokens == len(want)


# ---------------------------------------------------------------- how answers end


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_end_token_ends_the_answer(family, engine, reference):
    """The model emits 3 tokens, then EOS (Gemma: <end_of_turn>): finish_reason eos, 4 new tokens, and
    the text is the first 3 tokens of the normal answer, without the end token."""
    eng = engine(family)
    tok = eng.registry.bases[family].tokenizer
    normal = eng.generate(f"{family}-a1", PROMPT, overrides={"max_new_tokens": 3})
    end = tok.convert_tokens_to_ids("<end_of_turn>") if family == "gemma" else tok.eos_token_id
    with tm.forced_tokens(raw_model(eng, family), [None, None, None, end]):
        res = eng.generate(f"{family}-a1", PROMPT, preset="greedy")
    assert (res.finish_reason, res.new_tokens, res.ended_on_eos) == ("eos", 4, True)
    assert res.text == normal.text and normal.finish_reason == "length"


def test_stop_string_ends_the_answer(engine):
    eng = engine("falcon")
    tok = eng.registry.bases["falcon"].tokenizer
    forced = tok("Muy bien.\nUser: y tú, ¿cómo estás hoy en Quito?", add_special_tokens=False)["input_ids"]
    until_stop = len(tok("Muy bien.\nUser:", add_special_tokens=False)["input_ids"])
    assert until_stop < CAP < len(forced)
    with tm.forced_tokens(raw_model(eng, "falcon"), forced):
        res = eng.generate("falcon-a2", PROMPT, preset="greedy")
    assert res.finish_reason == "stop_string"
    assert res.text == "Muy bien."
    assert res.new_tokens == until_stop  # it stopped as soon as "\nUser:" appeared


def test_visible_text_cuts_and_holds_back_stop_strings():
    stops = ("\nUser:", "### Respuesta:")
    assert visible_text("Hola.\nUser: otra", stops, final=True) == ("Hola.", True)
    assert visible_text("Hola.\nUs", stops, final=False) == ("Hola.", False)  # may become "\nUser:"
    assert visible_text("Hola.\nUs", stops, final=True) == ("Hola.\nUs", False)
    assert visible_text("Hola \ufffd", (), final=False) == ("Hola ", False)  # half a UTF-8 character


# ---------------------------------------------------------------- caps and bad input


def test_max_new_tokens_is_capped(engine):
    res = engine("llama").generate("llama-a1", PROMPT, overrides={"max_new_tokens": 10 * CAP})
    assert res.params["max_new_tokens"] == CAP
    assert res.new_tokens <= CAP


@pytest.mark.parametrize("messages, message", [
    ([], "No hay mensaje"),
    ([{"role": "user", "content": "   "}], "el mensaje está vacío"),
    ([{"role": "user", "content": "x" * (LIMITS["max_prompt_chars"] + 1)}],
     f"{LIMITS['max_prompt_chars'] + 1} caracteres (máximo {LIMITS['max_prompt_chars']})"),
    ([{"role": "user", "content": "hola"}, {"role": "assistant", "content": "hola"}], "el mensaje está vacío"),
    ([{"role": "robot", "content": "hola"}], "Formato de mensaje inválido"),
    ([{"role": "user", "content": 3}], "Formato de mensaje inválido"),
    ([{"role": "user", "content": "y" * 390}] * 11, "La conversación es demasiado larga"),
])
def test_bad_messages_are_refused(messages, message, engine):
    with pytest.raises(EsllmError, match=re.escape(message)):
        engine("llama").generate("llama-base", messages)


def test_single_message_over_the_token_cap_is_refused(engine):
    tok = engine("llama").registry.bases["llama"].tokenizer
    text = "жщ" * 150  # 300 characters (under the cap) of bytes the tokenizer never merged
    assert len(text) <= LIMITS["max_prompt_chars"] and len(tok(text)["input_ids"]) > LIMITS["max_prompt_tokens"]
    with pytest.raises(EsllmError, match=r"demasiado largo: \d+ tokens \(máximo 128\)"):
        engine("llama").generate("llama-base", [{"role": "user", "content": text}])


def test_long_history_drops_oldest_turns(engine):
    eng = engine("llama")
    tok = eng.registry.bases["llama"].tokenizer
    system = [{"role": "system", "content": "Responde en español."}]
    turns = []
    for i in range(8):
        turns += [{"role": "user", "content": f"Pregunta número {i} sobre impuestos"},
                  {"role": "assistant", "content": f"Respuesta número {i} sobre la renta"}]
    turns.append({"role": "user", "content": "¿Y la última?"})
    res = eng.generate("llama-a1", system + turns)
    assert res.dropped_turns > 0
    template = get_template("llama-2")

    def n_tokens(msgs):
        text = template.render(msgs, bos_token=tok.bos_token, eos_token=tok.eos_token)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    kept = system + turns[2 * res.dropped_turns:]
    assert res.prompt_tokens == n_tokens(kept) <= LIMITS["max_prompt_tokens"]
    assert n_tokens(system + turns[2 * (res.dropped_turns - 1):]) > LIMITS["max_prompt_tokens"]  # dropped no more than needed


def test_unknown_contestant_and_parameter_are_refused(engine):
    eng = engine("llama")
    with pytest.raises(EsllmError, match="No existe el concursante 'nadie'"):
        eng.generate("nadie", PROMPT)
    with pytest.raises(EsllmError, match="Parámetro desconocido 'eval'"):
        eng.generate("llama-base", PROMPT, overrides={"eval": 1})
    with pytest.raises(EsllmError, match="temperature debe estar entre"):
        eng.generate("llama-base", PROMPT, preset="temperature", overrides={"temperature": 99})


# ---------------------------------------------------------------- stopping


def test_stop_event_ends_the_stream_early(engine, reference):
    eng = engine("llama")
    assert reference("llama").new_tokens == CAP  # left alone, this answer runs to the cap
    stop = threading.Event()
    with tm.slowed(raw_model(eng, "llama"), 0.05):
        events = []
        for ev in eng.stream("llama-base", PROMPT, preset="greedy", stop_event=stop):
            events.append(ev)
            stop.set()
    res = events[-1].result
    assert res is not None and res.finish_reason == "stopped"
    assert res.new_tokens < CAP
    assert reference("llama").text.startswith(res.text)


def test_closing_the_stream_stops_the_worker(engine, reference):
    eng = engine("llama")
    base = eng.registry.bases["llama"]
    with tm.slowed(raw_model(eng, "llama"), 0.1) as calls:
        gen = eng.stream("llama-a2", PROMPT, preset="greedy")
        next(gen)
        t0 = time.perf_counter()
        gen.close()  # what Gradio does when the browser goes away
        assert base.lock.acquire(timeout=10)
        waited = time.perf_counter() - t0
        base.lock.release()
        forwards = calls["n"]
    # Left alone it would run CAP forwards (≥ 1.6 s); it stops after the one in progress.
    assert forwards < CAP // 2, forwards
    assert waited < 1.0, waited
    assert eng.generate("llama-a2", PROMPT, preset="greedy").text == reference("llama", "a2").text


# ---------------------------------------------------------------- quantisation


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_nf4_with_adapter(device, tiny, tiny_root):
    """nf4 through the engine's real loader (on CPU too: bitsandbytes ≥ 0.49), with one adapter."""
    import bitsandbytes as bnb

    from tests.helpers import make_engine

    t = tiny("llama")
    cfg = t.config(quantization="nf4", contestants=[
        {"name": "q-base", "model": "llama"}, {"name": "q-a1", "model": "llama", "adapter": "a1"}])
    cfg["models"]["llama"]["device"] = device
    eng = make_engine(cfg, tiny_root)
    assert eng.registry.base_errors == {} and eng.registry.adapter_errors == {}
    base = eng.registry.bases["llama"]
    assert (base.quantization, base.device, base.model.device.type) == ("nf4", device, device)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.model.modules())
    plain = eng.generate("q-base", PROMPT, preset="greedy")
    tuned = eng.generate("q-a1", PROMPT, preset="greedy")
    assert plain.new_tokens >= 1 and tuned.new_tokens >= 1
    assert plain.text != tuned.text
    assert eng.generate("q-a1", PROMPT, preset="greedy").text == tuned.text


def test_dtype_defaults_to_float32_on_cpu_and_is_honoured(tiny):
    """A base's `dtype` (issue 30): auto = float32 on CPU without quantisation, bfloat16 otherwise; an explicit
    one is what the weights are loaded in, and the loaded base says which."""
    from esllm.engine.config import ModelSpec
    from esllm.engine.loader import load_base, resolve_dtype

    assert resolve_dtype("auto", "cpu", "none") == "float32"
    assert resolve_dtype("auto", "cuda", "none") == resolve_dtype("auto", "cpu", "nf4") == "bfloat16"
    assert resolve_dtype("float16", "cpu", "none") == "float16"
    t = tiny("llama")
    for wanted, want in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        base = load_base("llama", ModelSpec(source=str(t.model_dir), quantization="none", device="cpu", dtype=wanted),
                         lambda m: None)
        assert base.model.dtype == want and base.dtype == str(want).removeprefix("torch.")
    with pytest.raises(ValueError, match="dtype"):
        ModelSpec(source=str(t.model_dir), dtype="float64")


# ---------------------------------------------------------------- the real default model


SPANISH_WORDS = {"de", "la", "el", "que", "en", "y", "los", "las", "es", "un", "una", "por", "con", "para",
                 "del", "se", "no", "su", "al", "lo", "como", "más"}


@pytest.mark.slow
def test_bundled_gemma_end_to_end():
    """configs/default.yaml as shipped: bundled gemma-3-270m (GGUF converted once, cached), nf4."""
    from esllm.engine.config import load_config
    from esllm.engine.core import Engine

    eng = Engine(load_config(REPO / "configs" / "default.yaml"), root=REPO, progress=lambda m: None)
    eng.start()
    assert eng.registry.base_errors == {}
    assert eng.registry.contestants["gemma-base"].available
    for name in ("gemma-instrucciones", "gemma-tributario"):
        c = eng.registry.contestants[name]
        adapter_dir = REPO / "adapters" / c.adapter
        if adapter_dir.exists():  # someone trained it: then it must load
            assert c.available, c.reason
        else:
            assert not c.available and "no existe la carpeta" in c.reason and c.adapter in c.reason
    res = eng.generate("gemma-base", [{"role": "user", "content": "¿Cuál es la capital de España?"}],
                       preset="greedy", overrides={"max_new_tokens": 20})
    words = re.findall(r"\w+", res.text.lower())
    assert res.new_tokens >= 1 and words, res
    assert len(SPANISH_WORDS & set(words)) >= 2, res.text


def test_the_dtype_is_part_of_every_answer_and_of_the_provenance(engine):
    """What a result ran on names its dtype (issue 30), in the answer and in an eval run's hashes."""
    eng = engine("llama")
    res = eng.generate("llama-a1", PROMPT, preset="greedy", overrides={"max_new_tokens": 2})
    assert res.dtype == "float32" == eng.record("llama-a1").dtype == eng.hashes("llama-a1")["dtype"]
    assert eng.hashes("llama-a1")["template_sha256"] == eng.registry.contestants["llama-a1"].template.sha256


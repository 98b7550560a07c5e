"""The llama.cpp backend against the transformers backend on the same tiny weights (fp32 on both sides):
greedy tokens and next-token log-probabilities, with and without a converted LoRA adapter; the adapter
conversion and its refusals; the KV cache never serving another adapter; contrastive and batched decoding;
and, on the real bundled gemma-3-270m, the same Belebele letter log-probabilities on both backends within a
stated tolerance. Numbers from the two backends' kernels are never compared for bit-equality: an argmax (a
greedy token, a Belebele letter) is compared only where the reference's top two are further apart than the
tolerance allows, and the near ties are reported."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from esllm import EsllmError
from esllm.engine.adapters import inspect_adapter
from esllm.engine.config import ModelSpec
from esllm.engine.presets import GenParams
from esllm.engine.templates import get_template
from esllm.engine.tokens import HFTok, StopRule
from tests import tiny_gguf
from tests.helpers import PROMPT, compare_choices, make_engine

pytest.importorskip("llama_cpp")

FAMILIES = ["llama", "mistral", "gemma"]
TOL = 2e-3  # |Δ log p| between llama.cpp (ggml fp32 kernels) and torch fp32 on the same weights
# Two tokens whose log-probabilities differ by less than this may swap places between the kernels (each side
# is within TOL of the truth, so their difference is within 2 TOL): a greedy step that close is a near tie.
GREEDY_TIE = 2 * TOL


@pytest.fixture(scope="module")
def pair(tiny, tmp_path_factory):
    """(llama.cpp backend, transformers fp32 backend, Tiny) per family, adapters a1/a2 loaded on both."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from esllm.engine.hf_backend import TransformersBackend
    from esllm.engine.llamacpp_backend import LlamaCppBackend

    made = {}

    def get(family):
        if family not in made:
            t = tiny(family)
            path = tiny_gguf.to_gguf(t.model_dir, tmp_path_factory.mktemp(f"gguf-{family}") / "model-f32.gguf")
            spec = ModelSpec(source=str(path), device="cpu", template=t.template, backend="llama.cpp")
            lb = LlamaCppBackend.load(family, spec)
            model = AutoModelForCausalLM.from_pretrained(t.model_dir, dtype=torch.float32).eval()
            tok = AutoTokenizer.from_pretrained(t.model_dir)
            hb = TransformersBackend(key=family, spec=spec, tok=HFTok(tok), device="cpu", quantization="none",
                                     path=str(t.model_dir), source_sha256=None, load_seconds=0.0, model=model)
            for name in ("a1", "a2"):
                info = inspect_adapter(t.adapters_dir / name)
                lb.load_adapter(info)
                hb.load_adapter(info)
            made[family] = (lb, hb, t)
        return made[family]

    return get


def _prompt(hb, t, text="¿Cuál es la capital de Ecuador?") -> list[int]:
    tok = hb.tok
    return tok.encode(get_template(t.template).render([{"role": "user", "content": text}],
                                                      bos_token=tok.bos_token, eos_token=tok.eos_token))


def _rule(backend, eos=()):
    return StopRule(list(eos), (), lambda: False, lambda ids: backend.tok.decode(ids, skip_special=False))


def _greedy(backend, adapter, ids, n=12, strategy="greedy", **kw):
    p = GenParams.build("contrastive" if strategy == "contrastive" else "greedy",
                        {"max_new_tokens": n, **kw}, max_new_tokens_cap=512)
    return backend.generate(adapter, [ids], p, stop=_rule(backend), on_token=lambda i, t: None)[0]


def _assert_greedy_agrees(lb, hb, adapter, ids, n=12):
    """llama.cpp's greedy tokens are the reference's (transformers fp32), or part from them at a step where
    the reference's log-probabilities of the two tokens are within GREEDY_TIE (what follows is then another
    text and is not compared); the near tie is printed."""
    got, want = _greedy(lb, adapter, ids, n), _greedy(hb, adapter, ids, n)
    i = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), None)
    if i is None:
        assert got == want
        return
    lp = hb.next_logprobs(adapter, [ids + want[:i]])[0]
    gap = float(lp[want[i]] - lp[got[i]])
    assert gap <= GREEDY_TIE, f"adapter {adapter}: token {i} differs, {gap:.4f} apart in the reference"
    print(f"near tie, adapter {adapter}: greedy token {i} differs ({gap:.5f} apart in the reference)")


def _assert_argmax_flags_agree(hb, adapter, ids, start, got, want):
    """token_logprobs' «was it the argmax» flags: where they differ, the token and the reference's argmax are
    within GREEDY_TIE of each other at that position."""
    for j, (g, w) in enumerate(zip(got, want)):
        if g != w:
            row = hb.next_logprobs(adapter, [ids[:start + j]])[0]
            gap = float(row.max() - row[ids[start + j]])
            assert gap <= GREEDY_TIE, f"adapter {adapter}: argmax flag {j} differs, {gap:.4f} from the top"


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_of_the_gguf_equals_the_hf_one(family, pair):
    lb, hb, t = pair(family)
    for text in ("Hola, ¿cómo estás?", get_template(t.template).render(PROMPT, bos_token=hb.tok.bos_token,
                                                                        eos_token=hb.tok.eos_token)):
        assert lb.tok.encode(text) == hb.tok.encode(text)
    ids = hb.tok.encode("El niño come una manzana roja.")
    assert lb.tok.decode(ids) == hb.tok.decode(ids)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("adapter", [None, "a1", "a2"])
def test_logprobs_and_greedy_tokens_match_transformers(family, adapter, pair):
    lb, hb, t = pair(family)
    ids = _prompt(hb, t)
    got, want = lb.next_logprobs(adapter, [ids])[0], hb.next_logprobs(adapter, [ids])[0]
    assert np.abs(got - want).max() < TOL
    _assert_greedy_agrees(lb, hb, adapter, ids)
    lps, greedy = lb.token_logprobs(adapter, ids, len(ids) - 5)
    ref, ref_greedy = hb.token_logprobs(adapter, ids, len(ids) - 5)
    assert np.abs(np.array(lps) - np.array(ref)).max() < TOL
    _assert_argmax_flags_agree(hb, adapter, ids, len(ids) - 5, greedy, ref_greedy)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_adapter_changes_the_output_the_same_way_under_both(family, pair):
    lb, hb, t = pair(family)
    ids = _prompt(hb, t)
    base, a1 = lb.next_logprobs(None, [ids])[0], lb.next_logprobs("a1", [ids])[0]
    assert np.abs(base - a1).max() > 0.05  # the converted adapter really acts
    hf_delta = hb.next_logprobs("a1", [ids])[0] - hb.next_logprobs(None, [ids])[0]
    assert np.abs((a1 - base) - hf_delta).max() < 2 * TOL


def test_switching_adapters_never_reuses_the_other_adapters_cache(pair):
    """The same text scored under a2, then a1, then a2 again (scoring reuses a cached prefix under the same
    adapter): a2's numbers must be a2's alone, never computed on cells written under a1 or under none."""
    lb, hb, t = pair("llama")
    ids = _prompt(hb, t) + hb.tok.encode(" Quito es la capital")
    start = len(ids) - 4
    fresh = lb.token_logprobs("a2", ids, start)[0]
    lb.token_logprobs("a1", ids, start)
    np.testing.assert_allclose(lb.token_logprobs("a2", ids, start)[0], fresh, atol=1e-5)
    lb.token_logprobs(None, ids, start)
    np.testing.assert_allclose(lb.token_logprobs("a2", ids, start)[0], fresh, atol=1e-5)
    assert np.abs(np.array(lb.token_logprobs("a1", ids, start)[0]) - fresh).max() > 1e-3  # a1 really differs


def test_a_shared_prefix_is_reused_for_scoring_and_gives_the_same_numbers(pair):
    lb, hb, t = pair("llama")
    ids = _prompt(hb, t)
    longer = ids + hb.tok.encode(" Quito es la capital")
    lb.token_logprobs("a1", ids, len(ids) - 2)
    got = lb.token_logprobs("a1", longer, len(ids))[0]  # reuses the cells of `ids`
    want = [float(hb.next_logprobs("a1", [longer[:i]])[0][longer[i]]) for i in range(len(ids), len(longer))]
    np.testing.assert_allclose(got, want, atol=TOL)


def test_a_generation_does_not_depend_on_the_request_before_it(pair):
    """Greedy under one adapter, alone and right after another prompt with the same template prefix: the
    same logits to the last bit (a generation never starts from cells left by another request)."""
    lb, hb, t = pair("llama")
    ids = _prompt(hb, t)
    other = _prompt(hb, t, "¿Qué es el RUC?")
    lb.next_logprobs("a1", [ids[:5]])
    alone = lb.next_logprobs("a1", [ids])[0]
    lb.next_logprobs("a1", [other])
    assert np.array_equal(lb.next_logprobs("a1", [ids])[0], alone)
    assert _greedy(lb, "a1", ids) == _greedy(lb, "a1", ids)


def _contrastive_scores(model, ids: list[int], k: int, alpha: float, extra: int) -> tuple[dict[int, float], float, float]:
    """The reference's contrastive score of each top-k candidate after `ids` (uncached, fp32) and of `extra`;
    also the k-th probability and `extra`'s."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        ctx = out.hidden_states[-1][0]
        probs = torch.softmax(out.logits[0, -1], -1)
        top_p, top_i = probs.topk(k)
        scores = {}
        for pv, v in zip(top_p.tolist() + [float(probs[extra])], top_i.tolist() + [extra]):
            h = model(input_ids=torch.tensor([ids + [v]]), output_hidden_states=True).hidden_states[-1][0, -1]
            sim = torch.nn.functional.cosine_similarity(h[None], ctx, dim=-1).max()
            scores[v] = (1 - alpha) * pv - alpha * float(sim)
    return scores, float(top_p[-1]), float(probs[extra])


CONTRASTIVE_TIE = 5e-3  # two candidates closer than this in score may swap between ggml and torch kernels


@pytest.mark.parametrize("family", FAMILIES)
def test_contrastive_search_gives_the_transformers_tokens(family, pair):
    """Same tokens as the transformers implementation; where they part, the reference itself scored the two
    candidates within CONTRASTIVE_TIE of each other (the kernels' rounding decides a near tie)."""
    lb, hb, t = pair(family)
    ids = _prompt(hb, t, "Escribe un poema corto sobre el mar y las montañas de los Andes.")
    for adapter in (None, "a1"):
        got, want = _greedy(lb, adapter, ids, 10, "contrastive"), _greedy(hb, adapter, ids, 10, "contrastive")
        if got != want:
            i = next(j for j, (a, b) in enumerate(zip(got, want)) if a != b)
            assert i >= 2, f"{family}/{adapter}: differ from token {i}"
            with hb.activated(adapter) as model:
                sc, kth, p_got = _contrastive_scores(model, ids + want[:i], 4, 0.6, got[i])
            # llama.cpp's pick was the reference's candidate too, or tied with its k-th for the last place
            assert p_got >= kth - 1e-4, (family, adapter, i, p_got, kth)
            assert abs(sc[want[i]] - sc[got[i]]) < CONTRASTIVE_TIE or p_got < kth, (family, adapter, i, sc)


def test_batched_generation_equals_one_at_a_time(pair):
    lb, hb, t = pair("llama")
    prompts = [_prompt(hb, t, q) for q in ("¿Qué es el IVA?", "Hola", "Resume: el niño come una manzana roja.")]
    for preset in ("greedy", "contrastive"):
        p = GenParams.build(preset, {"max_new_tokens": 8}, max_new_tokens_cap=512)
        together = lb.generate("a1", prompts, p, stop=_rule(lb), on_token=lambda i, t: None)
        alone = [lb.generate("a1", [q], p, stop=_rule(lb), on_token=lambda i, t: None)[0] for q in prompts]
        assert together == alone


def test_sampling_is_reproducible_with_a_seed_and_beam_search_runs(pair):
    lb, hb, t = pair("llama")
    ids = _prompt(hb, t)
    p = GenParams.build("top-k", {"max_new_tokens": 10, "seed": 7}, max_new_tokens_cap=512)
    a = lb.generate(None, [ids], p, stop=_rule(lb), on_token=lambda i, t: None)[0]
    assert a == lb.generate(None, [ids], p, stop=_rule(lb), on_token=lambda i, t: None)[0]
    p2 = GenParams.build("top-k", {"max_new_tokens": 10, "seed": 8}, max_new_tokens_cap=512)
    assert a != lb.generate(None, [ids], p2, stop=_rule(lb), on_token=lambda i, t: None)[0]
    beam = GenParams.build("beam", {"max_new_tokens": 6}, max_new_tokens_cap=512)
    out = lb.generate("a1", [ids], beam, stop=_rule(lb), on_token=lambda i, t: None)[0]
    assert 1 <= len(out) <= 6


def test_unmappable_adapters_are_refused_with_their_reason(pair, tiny, tmp_path):
    lb, _, t = pair("llama")
    bad = tmp_path / "dora"
    shutil.copytree(t.adapters_dir / "a1", bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(EsllmError, match="DoRA"):
        lb.load_adapter(inspect_adapter(bad))
    falcon = inspect_adapter(tiny("falcon").adapters_dir / "a1")  # query_key_value: no such layer in a llama GGUF
    with pytest.raises(EsllmError, match="no tiene equivalente|forma"):
        lb.load_adapter(falcon)


def _gguf_engine(tiny, tmp_path, family="llama", adapters_dir=None):
    t = tiny(family)
    path = tiny_gguf.to_gguf(t.model_dir, tmp_path / "m.gguf")
    cfg = t.config(adapters_dir=adapters_dir)
    cfg["models"][family].update(source=str(path), backend="llama.cpp")
    return make_engine(cfg, tmp_path), t


def test_engine_on_llama_cpp_lists_a_broken_adapter_with_its_reason_and_chats(tiny, tmp_path):
    t = tiny("llama")
    adir = t.copy_adapters(tmp_path / "adapters")
    cfg = json.loads((adir / "a2" / "adapter_config.json").read_text())
    cfg["modules_to_save"] = ["lm_head"]
    (adir / "a2" / "adapter_config.json").write_text(json.dumps(cfg))
    eng, _ = _gguf_engine(tiny, tmp_path, adapters_dir=adir)
    assert eng.registry.contestants["llama-a1"].available
    c = eng.registry.contestants["llama-a2"]
    assert not c.available and "módulos completos" in c.reason
    res = eng.generate("llama-a1", PROMPT, preset="greedy", overrides={"max_new_tokens": 8})
    assert res.backend == "llama.cpp" and res.new_tokens >= 1
    assert eng.record("llama-a1").backend == "llama.cpp"


def test_two_chat_users_on_two_adapters_each_get_their_own_answer(tiny, tmp_path):
    eng, _ = _gguf_engine(tiny, tmp_path)
    want = {n: eng.generate(n, PROMPT, preset="greedy", overrides={"max_new_tokens": 12}).text
            for n in ("llama-a1", "llama-a2", "llama-base")}
    assert len(set(want.values())) == 3
    got: dict[str, list[str]] = {n: [] for n in want}

    def chat(name):
        for _ in range(4):
            got[name].append(eng.generate(name, PROMPT, preset="greedy", overrides={"max_new_tokens": 12}).text)

    threads = [threading.Thread(target=chat, args=(n,)) for n in want]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert got == {n: [w] * 4 for n, w in want.items()}


def test_generate_many_gives_each_conversation_its_answer(tiny, tmp_path):
    eng, _ = _gguf_engine(tiny, tmp_path)
    convs = [[{"role": "user", "content": q}] for q in ("¿Qué es el IVA?", "Hola", "¿Cuál es la capital de Ecuador?",
                                                        "Escribe un poema", "Resume el texto")]
    many = eng.generate_many("llama-a1", convs, preset="contrastive", overrides={"max_new_tokens": 8})
    one = [eng.generate("llama-a1", c, preset="contrastive", overrides={"max_new_tokens": 8}) for c in convs]
    assert [r.text for r in many] == [r.text for r in one]
    assert [r.finish_reason for r in many] == [r.finish_reason for r in one]


def test_a_gguf_file_that_is_not_there_is_a_spanish_error(tmp_path):
    from esllm.engine.llamacpp_backend import LlamaCppBackend

    spec = ModelSpec(source=str(tmp_path / "no.gguf"), backend="llama.cpp")
    with pytest.raises(EsllmError, match="No existe el archivo GGUF"):
        LlamaCppBackend.load("x", spec)
    bad = tmp_path / "roto.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(EsllmError, match="llama.cpp no pudo abrir"):
        LlamaCppBackend.load("x", ModelSpec(source=str(bad), backend="llama.cpp"))


def test_the_gguf_tensor_table_is_read_as_the_gguf_package_reads_it(pair, tmp_path):
    """gguf_lora.tensor_shapes (a header reader that skips the metadata) agrees with gguf.GGUFReader."""
    import gguf

    from esllm.engine.gguf_lora import tensor_shapes

    for family in FAMILIES:
        path = Path(pair(family)[0].path)
        reader = gguf.GGUFReader(str(path))
        assert tensor_shapes(path) == {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    bad = tmp_path / "corto.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little") + (2).to_bytes(8, "little"))
    with pytest.raises(EsllmError, match="cabecera GGUF ilegible"):
        tensor_shapes(bad)
    (tmp_path / "no.gguf").write_bytes(b"PK\3\4" + b"\0" * 40)
    with pytest.raises(EsllmError, match="no es un archivo GGUF"):
        tensor_shapes(tmp_path / "no.gguf")


# |Δ log p| of a Belebele letter between the bundled Q4_K_M file on llama.cpp (Q4_K weights times Q8_K-quantised
# activations; adapters as GGUF LoRA) and the same weights dequantised (bf16 cache, see esllm/engine/bundled.py) on
# torch fp32 (adapters in peft). Measured on the 40-item sample: max 0.24 for gemma-base, 0.72 with the
# instrucciones-es adapter, 0.50 with tributario-ec (the LoRA conversion adds most of it); 1.0 leaves room for
# other CPUs' kernels, whose own differences are orders of magnitude smaller.
BUNDLED_TOL = 1.0
# A letter is compared only where the transformers run's top two letters are further apart than BUNDLED_TOL:
# closer, the backends may order them differently (a near tie: reported, not asserted).
BUNDLED_TIE = BUNDLED_TOL


@pytest.mark.slow
def test_belebele_letter_scores_agree_on_both_backends_with_the_bundled_model(tmp_path):
    """The shipped gemma-3-270m on llama.cpp (its Q4_K_M file) and on transformers (the same file
    dequantised, in float32: bf16 matmuls are emulated on CPUs without AVX512-BF16, several times slower):
    each letter's log-probability within BUNDLED_TOL for every item of the bundled sample, each contestant, and
    the same predicted letter wherever the transformers run's top two letters are more than BUNDLED_TIE apart."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from esllm.engine.config import load_config
    from esllm.engine.core import Engine
    from esllm.engine.loader import BaseModel, resolve_source
    from esllm.evals import belebele as B
    from esllm.paths import DEFAULT_CONFIG, ROOT

    def fp32(key, spec, progress=None):
        path, sha, _ = resolve_source(spec, progress or print)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return BaseModel(key=key, spec=spec, model=model, tokenizer=AutoTokenizer.from_pretrained(path), device="cpu",
                         quantization="none", path=path, source_sha256=sha, load_seconds=0.0, dtype="float32")

    cfg = load_config(DEFAULT_CONFIG)
    items = B.load_belebele(B.SAMPLE)
    scores = {}
    for backend in ("llama.cpp", "transformers"):
        spec = cfg.models["gemma-3-270m"].model_copy(update={"backend": backend, "quantization": "none"})
        c = cfg.model_copy(update={"models": {"gemma-3-270m": spec}})
        eng = Engine(c, Path(ROOT), loader=fp32)
        eng.start()
        assert eng.registry.bases["gemma-3-270m"].name == backend
        scores[backend] = {n: [d["logprobs"] for d in B.evaluate(eng, n, items, batch_size=8)["details"]]
                           for n in eng.available()}
    assert scores["llama.cpp"].keys() == scores["transformers"].keys() and len(scores["llama.cpp"]) == 3
    checks = {name: compare_choices(scores["transformers"][name], got, BUNDLED_TIE)
              for name, got in scores["llama.cpp"].items()}
    for name, check in checks.items():
        print(f"{name}: max |Δ log p| {check.max_delta:.4f}; near ties (items, not compared) {check.near_ties}; "
              f"other letters differing {check.disagree}")
    for name, check in checks.items():
        assert check.max_delta <= BUNDLED_TOL, f"{name}: max |Δ log p| {check.max_delta:.4f} > {BUNDLED_TOL}"
        assert not check.disagree, (f"{name}: items {check.disagree} pick another letter although their top two are "
                                    f"more than {BUNDLED_TIE} apart (near ties, not compared: {check.near_ties})")

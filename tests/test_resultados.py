"""«Resultados» over HTTP with logins: after three raters finish a session through gradio_client, the
downloaded CSV equals the database and the table equals one computed by hand from the CSV; raters and
anonymous callers get no results, no exports and no export file even with an admin's link.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import random
from collections import defaultdict
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from tests.helpers import EVALUAR, login, open_session, save

CONTESTANTS, SESSION = EVALUAR.contestants, EVALUAR.session


def client(url, name):
    return login(url, name, EVALUAR.password)


def finish_session(url: str, sid: int) -> None:
    for i, name in enumerate(("ana", "beto", "carla")):
        rng = random.Random(10 + i)
        c = client(url, name)
        out = open_session(c, sid)
        while out[2]:
            out = save(c, [str(rng.randint(1, 5)) for _ in range(3)], comment=f"=HYPERLINK(\"x\") de {name}")


def call_sse(url: str, api: str, data: list, cookies) -> list:
    """Call an endpoint over Gradio's plain HTTP API and return the output list (raw, with file URLs)."""
    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, cookies=cookies, timeout=60)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    text = httpx.get(f"{url}gradio_api/call/{api}/{event_id}", cookies=cookies, timeout=120).text
    event, payload = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            payload = line.split(":", 1)[1].strip()
    if event != "complete":
        raise RuntimeError(f"{api}: {event}: {payload}")
    return json.loads(payload)


@pytest.fixture(scope="module")
def finished(rated_app):
    ctx, url, Session, sid, model_dir = rated_app
    finish_session(url, sid)
    return rated_app


def read_csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


def test_download_equals_database_and_table_equals_hand_computation(finished):
    from esllm.store.models import Answer, Assignment, ContestantSnapshot, Prompt, Score

    ctx, url, Session, sid, _ = finished
    admin = client(url, "admin")
    files = call_sse(url, "resultados_descargar", ["Sesión", SESSION], admin.cookies)[0]
    by_name = {f["orig_name"].split(f"{SESSION}-", 1)[1]: f for f in files}
    assert set(by_name) >= {"puntuaciones.csv", "tabla.csv", "acuerdo.csv", "respuestas.csv", "dpo.jsonl", "kto.jsonl"}
    for f in files:
        assert f["orig_name"].startswith("esllm-export-")
    get = lambda name: httpx.get(by_name[name]["url"], cookies=admin.cookies, timeout=30)  # noqa: E731
    r = get("puntuaciones.csv")
    assert r.status_code == 200
    rows = read_csv(r.content.decode("utf-8"))
    with Session() as s:
        db = s.execute(select(Score, Assignment, Prompt, ContestantSnapshot).join(Assignment, Score.assignment_id == Assignment.id)
                       .join(Prompt, Assignment.prompt_id == Prompt.id).join(Answer, Score.answer_id == Answer.id)
                       .join(ContestantSnapshot, Answer.contestant_id == ContestantSnapshot.id)
                       .where(Assignment.session_id == sid)).all()
        db_rows = sorted((p.external_id, sc.label, c.name, sc.criterion, sc.value) for sc, a, p, c in db)
    csv_rows = sorted((r["item"], r["etiqueta"], r["concursante"], r["criterio"], int(r["puntuacion"])) for r in rows)
    assert len(db_rows) > 0 and csv_rows == db_rows
    # comments that start with "=" come out escaped
    assert all(r["comentario"].startswith("'=HYPERLINK") for r in rows)
    # the study table by hand from the CSV: item = mean of its raters, category = mean of items
    per_item = defaultdict(list)
    for r in rows:
        if r["criterio"] == "general":
            per_item[(r["categoria"], r["concursante"], r["item"])].append(int(r["puntuacion"]))
    per_cat = defaultdict(list)
    for (cat, con, _), vals in per_item.items():
        per_cat[(cat, con)].append(sum(vals) / len(vals))
    hand = {k: sum(v) / len(v) for k, v in per_cat.items()}
    table = read_csv(get("tabla.csv").content.decode("utf-8"))
    got = {(t["categoria"], t["concursante"]): float(t["media"]) for t in table if t["categoria"] != "Promedio"}
    assert got.keys() == hand.keys()
    for k, v in hand.items():
        assert got[k] == pytest.approx(v, abs=1e-4)
        row = next(t for t in table if (t["categoria"], t["concursante"]) == k)
        assert float(row["ic95_inf"]) <= got[k] <= float(row["ic95_sup"])
        assert int(row["n"]) == len(per_cat[k])
    for con in CONTESTANTS:
        cats = [v for (cat, c), v in hand.items() if c == con]
        prom = next(t for t in table if t["categoria"] == "Promedio" and t["concursante"] == con)
        assert float(prom["media"]) == pytest.approx(sum(cats) / len(cats), abs=1e-4)
    # the on-screen table shows the same means, its rows named as people read them, in the set's order
    from esllm.study.tables import category_labels

    labels = category_labels("mini")
    md, shown, _, _, alpha, _ = call_sse(url, "resultados_calcular", ["Sesión", SESSION], admin.cookies)
    cells = {(row[0], h): row[i] for row in shown["data"] for i, h in enumerate(shown["headers"])}
    for (cat, con), v in hand.items():
        assert cells[(labels[cat], con)].startswith(f"{v:.2f} [")
    assert [row[0] for row in shown["data"]] == ["Básicas", "Contextual", "Promedio"]
    assert [row[0] for row in alpha["data"]] == ["General"]
    assert "puntuaciones" in md


def test_rater_and_anonymous_get_no_results_and_no_export_file(finished):
    from gradio_client.exceptions import AppError

    ctx, url, *_ = finished
    admin = client(url, "admin")
    files = call_sse(url, "resultados_descargar", ["Sesión", SESSION], admin.cookies)[0]
    link = files[0]["url"]
    assert httpx.get(link, cookies=admin.cookies, timeout=30).status_code == 200
    rater = client(url, "ana")
    for api, args in (("/resultados_calcular", ("Sesión", SESSION)), ("/resultados_descargar", ("Sesión", SESSION)),
                      ("/resultados_bradley_terry", ())):
        with pytest.raises(AppError, match="permiso"):
            rater.predict(*args, api_name=api)
    r = httpx.get(link, cookies=rater.cookies, timeout=30)
    assert r.status_code == 403 and "concursante" not in r.text
    assert httpx.get(link, timeout=30).status_code in (401, 403)
    assert httpx.post(url + "gradio_api/call/resultados_calcular", json={"data": ["Sesión", SESSION]},
                      timeout=30).status_code in (401, 403)


def raw_get(url: str, path: str, cookies=None) -> int:
    """GET `path` sent exactly as spelled (httpx and browsers would remove its dot segments); the status code."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in dict(cookies).items())} if cookies else {}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def test_no_spelling_of_an_export_link_reaches_a_rater_or_anonymous(finished):
    """Gradio's file routes resolve the path (os.path.abspath) before serving it: `…/.`, `…/x/..` and `…/%2e` name
    the same file as the link, on `/gradio_api/file=` and on the older `/gradio_api/file/`."""
    ctx, url, *_ = finished
    admin, rater = client(url, "admin"), client(url, "ana")
    files = call_sse(url, "resultados_descargar", ["Sesión", SESSION], admin.cookies)[0]
    link = urlsplit(files[0]["url"]).path
    assert link.startswith("/gradio_api/file=/") and "esllm-export-" in link
    for route_link in (link, link.replace("/gradio_api/file=", "/gradio_api/file/", 1)):
        assert raw_get(url, route_link, admin.cookies) == 200, route_link
        for spelling in (route_link, route_link + "/.", route_link + "/x/..", route_link + "/%2e"):
            assert raw_get(url, spelling, rater.cookies) == 403, spelling
            assert raw_get(url, spelling) in (401, 403), spelling


def test_export_guard_decides_on_the_file_the_route_would_serve(tmp_path):
    """`is_export_request` on ASGI scopes, without a server: the route parameter (the ASGI path, decoded once)
    resolved as Gradio resolves it, the raw path and its further decodings, the root path, symbolic links."""
    from esllm.ui.downloads import is_export_request

    cache = tmp_path / "cache" / "abc"
    cache.mkdir(parents=True)
    export = cache / "esllm-export-s-tabla.csv"
    export.write_text("x")
    other = cache / "grafico.png"
    other.write_text("x")
    (tmp_path / "inocente.csv").symlink_to(export)  # a link elsewhere, named innocently, to an export file
    folder = tmp_path / "esllm-descargas-0123-x"
    folder.mkdir()
    (folder / "tabla.csv").write_text("x")

    def scope(path: str, raw: str | None = None, root: str = "") -> dict:
        return {"type": "http", "path": path, "raw_path": (raw if raw is not None else path).encode(), "root_path": root}

    for route in ("/gradio_api/file=", "/gradio_api/file/"):
        for path in (f"{export}", f"{export}/.", f"{export}/x/..", f"{export}//", f"{cache}/ESLLM-EXPORT-s-tabla.csv",
                     f"{tmp_path}/inocente.csv", f"{folder}/tabla.csv", f"{cache}/../abc/esllm-export-s-tabla.csv"):
            assert is_export_request(scope(route + path)), route + path
        assert is_export_request(scope(f"/app{route}{tmp_path}/inocente.csv", root="/app"))
        # what the server decoded once, and what an intermediary might decode again
        assert is_export_request(scope(route + f"{export}/.", raw=route + f"{export}/%2e"))
        assert is_export_request(scope(route + f"{export}/%2e", raw=route + f"{export}/%252e"))
        assert is_export_request(scope(route + f"{cache}/%65sllm-export-s-tabla.csv"))
        assert not is_export_request(scope(route + str(other)))
        assert not is_export_request(scope(route + f"{tmp_path}/no-existe.csv"))
    assert not is_export_request(scope("/gradio_api/queue/join"))
    assert not is_export_request(scope("/"))


def test_bradley_terry_from_votes_and_unknown_session(finished):
    from gradio_client.exceptions import AppError

    from esllm.study.arena import record_vote

    ctx, url, Session, *_ = finished
    with Session() as s:
        for _ in range(6):
            record_vote(s, prompt="¿Qué es el SRI?", shown=list(CONTESTANTS), choice="A", user_id=None, session_hash=None)
        record_vote(s, prompt="¿Qué es el SRI?", shown=list(CONTESTANTS), choice="tie", user_id=None, session_hash=None)
        s.commit()
    admin = client(url, "admin")
    table, _ = admin.predict(api_name="/resultados_bradley_terry")
    assert table["data"][0][0] == CONTESTANTS[0] and len(table["data"]) == 3
    with pytest.raises(AppError, match="No existe la sesión"):
        admin.predict("Sesión", "no-hay-tal", api_name="/resultados_calcular")

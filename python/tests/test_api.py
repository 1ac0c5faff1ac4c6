"""The Python API agrees with the `cbr` command on real photos: the same model bytes from the
same images, the same answers; numpy and PIL inputs; errors with the command's messages."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cbr
from conftest import cli_classify, cli_error, fixtures_dir, query_photos, run_cli, write_manifest


def same_answers(api: list, cli: list) -> None:
    """Equal answers; scores compared as the f32 values both print."""
    assert len(api) == len(cli)
    for a, c in zip(api, cli):
        assert (a["path"], a["label"], a["unknown"]) == (c["path"], c["label"], c["unknown"])
        assert [t["label"] for t in a["top"]] == [t["label"] for t in c["top"]]
        got = np.array([t["score"] for t in a["top"]], dtype=np.float32)
        want = np.array([t["score"] for t in c["top"]], dtype=np.float32)
        assert np.array_equal(got, want), (got, want)


def test_build_writes_the_bytes_cbr_build_writes(scenes, cli_model, tmp_path):
    from_manifest = cbr.build(scenes["manifest"], tmp_path / "manifest.onnx")
    from_pairs = cbr.build((scenes["paths"], scenes["labels"]), tmp_path / "pairs.onnx")
    want = cli_model.read_bytes()
    assert (tmp_path / "manifest.onnx").read_bytes() == want
    assert (tmp_path / "pairs.onnx").read_bytes() == want
    # A folder of the same images (copied) builds the same model too: ids are content hashes.
    folder = tmp_path / "folder"
    for p, label in zip(scenes["paths"], scenes["labels"]):
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / label / Path(p).name)
    cbr.build(folder, tmp_path / "folder.onnx")
    assert (tmp_path / "folder.onnx").read_bytes() == want

    assert from_manifest.labels == sorted(set(scenes["labels"]))
    r = from_pairs.build_report
    assert (r["classes"], r["images"], r["skipped"]) == (4, 32, [])
    info = json.loads(run_cli("info", str(cli_model), "--json").stdout)
    assert from_manifest.info == info


def test_build_options_match_the_command_line(scenes, tmp_path):
    run_cli(
        "build", str(scenes["manifest"]), "-o", str(tmp_path / "cli.onnx"), "-q",
        "--aggregate", "max", "--index-dtype", "f16", "--augment", "--threshold", "0.4",
    )
    cbr.build(
        scenes["manifest"], tmp_path / "api.onnx",
        aggregate="max", index_dtype="f16", augment=True, threshold=0.4,
    )
    assert (tmp_path / "api.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    run_cli("build", str(scenes["manifest"]), "-o", str(tmp_path / "o.onnx"), "-q", "--original")
    cbr.build(scenes["manifest"], tmp_path / "o2.onnx", original=True)
    assert (tmp_path / "o2.onnx").read_bytes() == (tmp_path / "o.onnx").read_bytes()


def test_classify_answers_what_cbr_classify_answers(cli_model):
    queries = query_photos()
    model = cbr.Classifier(cli_model)
    for k in (1, 3):
        same_answers(model.classify(queries, top_k=k), cli_classify(cli_model, queries, "-k", str(k)))
    same_answers(
        model.classify(queries, threshold=0.99),
        cli_classify(cli_model, queries, "--threshold", "0.99"),
    )
    one = model.classify(queries[0])
    assert isinstance(one, dict) and one["path"] == queries[0]
    assert any(a["unknown"] for a in model.classify(queries, threshold=0.99))


def test_numpy_and_pil_images_answer_as_their_files(cli_model):
    model = cbr.Classifier(cli_model)
    # Lossless files (PNG), so the decoded pixels are the same whoever decodes them.
    pngs = [p for p in query_photos() if p.endswith(".png")]
    assert len(pngs) >= 4, pngs
    by_path = model.classify(pngs, top_k=4)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    pils = [Image.open(p) for p in pngs]  # grey and RGBA files converted as cbr converts files
    for answers in (model.classify(arrays, top_k=4), model.classify(pils, top_k=4)):
        for a, b in zip(answers, by_path):
            assert a["path"] is None
            assert a["top"] == b["top"] and a["label"] == b["label"]
    grey = [p for p in pngs if Image.open(p).mode == "L"]
    assert grey, "expected a grey PNG among the queries (Fashion-MNIST)"
    g = np.asarray(Image.open(grey[0]))
    assert g.ndim == 2
    assert model.classify(g, top_k=4)["top"] == model.classify(grey[0], top_k=4)["top"]
    # A 4-d batch and a mixed list keep the input order.
    batch = np.stack([arrays[0], arrays[0]])
    assert [a["top"] for a in model.classify(batch, top_k=4)] == [by_path[0]["top"]] * 2
    mixed = model.classify([arrays[1], pngs[0], pils[2]], top_k=4)
    assert [m["top"] for m in mixed] == [by_path[1]["top"], by_path[0]["top"], by_path[2]["top"]]


def test_embedder_and_build_from_embeddings(scenes, cli_model, tmp_path):
    e = cbr.Embedder()
    assert (e.name, e.dim) == ("efficientnet-lite0", 1280)
    vectors = e.embed(scenes["paths"])
    assert vectors.shape == (32, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and np.abs(vectors).sum(axis=1).min() > 0
    # In memory, the same pixels give the same embedding (PNG: no decoder differences).
    png = [p for p in query_photos() if p.endswith(".png")][0]
    assert np.array_equal(e.embed(png), e.embed(np.asarray(Image.open(png).convert("RGB"))))
    # Your own embeddings, with the images' content ids: the model `cbr build` writes.
    ids = [hashlib.sha256(Path(p).read_bytes()).hexdigest()[:32] for p in scenes["paths"]]
    cbr.build_from_embeddings(vectors, scenes["labels"], tmp_path / "own.onnx", image_ids=ids)
    assert (tmp_path / "own.onnx").read_bytes() == cli_model.read_bytes()
    # Without ids the rows are ordered by position instead, so sums run in another order:
    # the same answers up to rounding.
    model = cbr.build_from_embeddings(vectors, scenes["labels"], tmp_path / "noids.onnx")
    assert model.labels == sorted(set(scenes["labels"]))
    for a, c in zip(model.classify(query_photos()), cli_classify(cli_model, query_photos())):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in c["top"]]
        got, want = ([t["score"] for t in x["top"]] for x in (a, c))
        assert np.allclose(got, want, rtol=1e-4, atol=1e-6), (got, want)


def test_edits_write_the_bytes_the_commands_write(scenes, tmp_path):
    paths, labels = scenes["paths"], scenes["labels"]
    first = [i for i, label in enumerate(labels) if label != labels[-1]]
    base = write_manifest(tmp_path / "base.csv", [paths[i] for i in first], [labels[i] for i in first])
    run_cli("build", str(base), "-o", str(tmp_path / "base.onnx"), "-q")
    for name in ("cli", "api"):
        shutil.copy(tmp_path / "base.onnx", tmp_path / f"{name}.onnx")
    run_cli("add", str(tmp_path / "cli.onnx"), str(scenes["manifest"]), "-q")
    report = cbr.add(tmp_path / "api.onnx", (paths, labels))
    assert report["added"] == 8 and report["classes"] == 4
    assert (tmp_path / "api.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()

    victim, renamed = labels[0], labels[-1]
    run_cli("remove", str(tmp_path / "cli.onnx"), "--label", victim, "-o", str(tmp_path / "r1.onnx"))
    cbr.remove(tmp_path / "api.onnx", victim, output=tmp_path / "r2.onnx")
    assert (tmp_path / "r1.onnx").read_bytes() == (tmp_path / "r2.onnx").read_bytes()
    run_cli("relabel", str(tmp_path / "r1.onnx"), renamed, "other")
    r = cbr.relabel(tmp_path / "r2.onnx", renamed, "other")
    assert r["classes"] == 3
    assert (tmp_path / "r1.onnx").read_bytes() == (tmp_path / "r2.onnx").read_bytes()
    assert "other" in cbr.Classifier(tmp_path / "r2.onnx").labels


def test_evaluate_matches_cbr_eval(scenes):
    cli = json.loads(
        run_cli("eval", str(scenes["manifest"]), "--shots", "1,3", "--seeds", "2", "--json").stdout
    )
    api = cbr.evaluate(scenes["manifest"], shots=[1, 3], seeds=2)
    for report in (cli, api):
        report.pop("embed_seconds")
        report.pop("eval_seconds")
    assert api == cli


def test_progress_and_the_gil(scenes):
    calls = []
    e = cbr.Embedder()
    e.embed(scenes["paths"], progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (32, 32) and all(t == 32 for _, t in calls)
    # While one thread embeds, another keeps running Python: the call released the GIL.
    ticks = 0
    worker = threading.Thread(target=lambda: e.embed(scenes["paths"] * 3))
    worker.start()
    while worker.is_alive():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    assert ticks > 50, f"the main thread ran {ticks} times during the embedding"


def test_a_missing_folder_is_not_found_and_bad_options_write_nothing(scenes, tmp_path):
    # Issue 26: a missing folder was cbr.Internal; power=nan wrote a model nothing could open.
    with pytest.raises(cbr.NotFound) as e:
        cbr.build(tmp_path / "no-such-folder", tmp_path / "x.onnx")
    assert isinstance(e.value, FileNotFoundError)
    out = tmp_path / "nan.onnx"
    for bad in [dict(power=float("nan")), dict(known_target=2.0), dict(target_precision=5.0)]:
        with pytest.raises(cbr.BadInput, match="invalid build option"):
            cbr.build(scenes["manifest"], out, **bad)
        assert not out.exists()


def test_an_exception_in_the_progress_callback_stops_the_build(scenes, tmp_path):
    class Enough(Exception):
        pass

    calls = []

    def progress(done, total):
        calls.append(done)
        raise Enough(f"stopped at {done} of {total}")

    out = tmp_path / "m.onnx"
    with pytest.raises(Enough, match="stopped at .* of 32"):
        cbr.build(scenes["manifest"], out, progress=progress, cache=False)
    assert len(calls) == 1, f"the build went on after the callback raised: {calls}"
    assert not out.exists()


def test_errors_are_typed_and_say_what_the_command_says(cli_model, scenes, tmp_path):
    missing = str(tmp_path / "nope.onnx")
    with pytest.raises(cbr.NotFound) as e:
        cbr.Classifier(missing)
    assert isinstance(e.value, FileNotFoundError)
    assert str(e.value) == cli_error("info", missing)

    stray = tmp_path / "stray"
    (stray / "cat").mkdir(parents=True)
    shutil.copy(scenes["paths"][0], stray / "cat" / "a.jpg")
    shutil.copy(scenes["paths"][1], stray / "loose.jpg")
    with pytest.raises(cbr.CbrError) as e:
        cbr.build(stray, tmp_path / "x.onnx")
    assert str(e.value) == cli_error("build", str(stray), "-o", str(tmp_path / "x.onnx"))

    one_class = tmp_path / "one"
    (one_class / "cat").mkdir(parents=True)
    shutil.copy(scenes["paths"][0], one_class / "cat" / "a.jpg")
    with pytest.raises(cbr.BadInput) as e:
        cbr.build(one_class, tmp_path / "x.onnx")
    assert isinstance(e.value, ValueError)
    assert str(e.value) == cli_error("build", str(one_class), "-o", str(tmp_path / "x.onnx"))

    with pytest.raises(cbr.NotFound) as e:
        cbr.remove(cli_model, "no-such-class", output=tmp_path / "y.onnx")
    assert str(e.value) == cli_error(
        "remove", str(cli_model), "--label", "no-such-class", "-o", str(tmp_path / "y.onnx")
    )
    labels = cbr.Classifier(cli_model).labels
    with pytest.raises(cbr.Conflict):
        cbr.remove(cli_model, labels, output=tmp_path / "z.onnx")

    model = cbr.Classifier(cli_model)
    with pytest.raises(cbr.BadInput, match="uint8"):
        model.classify(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(cbr.BadInput, match="shape"):
        model.classify(np.zeros((8, 8, 2), dtype=np.uint8))
    with pytest.raises(cbr.BadInput, match="2 paths but 1 labels"):
        cbr.build((scenes["paths"][:2], ["a"]), tmp_path / "w.onnx")
    with pytest.raises(cbr.BadInput, match="not found"):
        cbr.build(([str(tmp_path / "gone.jpg")], ["a"]), tmp_path / "w.onnx")
    with pytest.raises(cbr.BadInput, match="build option aggregate: unknown variant `mean`"):
        cbr.build(scenes["manifest"], tmp_path / "w.onnx", aggregate="mean")

    # An unreadable image among good ones: raised by default, answered in place on request.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    queries = [scenes["paths"][0], str(broken)]
    with pytest.raises(cbr.BadInput, match="1 of 2 images could not be classified"):
        model.classify(queries)
    answers = model.classify(queries, errors="include")
    cli = cli_classify(cli_model, queries)
    assert answers[1] == cli[1] and "error" in answers[1]
    same_answers(answers[:1], cli[:1])

"""Fast tests of app.py and fer/app (no browser): building, predicting, errors, charts."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from tests.e2e.app_fixtures import face_photo, fake_results, tiny_model, write_log

gr = pytest.importorskip("gradio")
pytest.importorskip("skimage")

import app  # noqa: E402
from fer.app import charts  # noqa: E402
from fer.app.data import PAPER_SOURCE, find_logs, load_compare_data  # noqa: E402
from fer.app.models import PredictorCache, discover_checkpoints  # noqa: E402
from fer.app.service import (NO_MODEL_MESSAGE, AppError, FERService, example_images,  # noqa: E402
                             measure_frame_latency)
from fer.app.ui import friendly_upload_errors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    ckpt = tiny_model(root)
    fake_results(root / "results", root / "runs")
    photo = face_photo(root)
    examples = example_images(root / "examples")
    demo = app.build_demo(ckpt, root / "results", root / "runs", device="cpu", examples=examples)
    return dict(root=root, ckpt=ckpt, photo=photo, demo=demo, service=demo.service,
                examples=examples)


def _fn(demo, api_name):
    return next(f.fn for f in demo.fns.values() if f.api_name == api_name)


def test_import_launches_nothing():
    code = ("import sys, app; assert callable(app.build_demo) and callable(app.main); "
            "print('gradio' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]  # not even the heavy imports


def test_build_demo(env):
    demo, svc = env["demo"], env["service"]
    assert isinstance(demo, gr.Blocks)
    assert svc.default_choice == "default: tiny.safetensors"
    assert len(svc.cache) >= 1  # preloaded: the first request does not load the model
    predictor, _ = svc.predictor(svc.default_choice, "opencv")
    assert predictor.tta == "flip-zoom"  # the app averages each face with its mirror and zoomed views by default
    assert {"predict"} <= {f.api_name for f in demo.fns.values()}
    assert len(env["examples"]) == 3 and all(Path(p).stat().st_size < 100_000 for p in env["examples"])
    kw = app.launch_kwargs(port=1234)
    assert kw["max_file_size"] == app.MAX_FILE_SIZE and kw["server_port"] == 1234


def test_tta_choices_match_the_library():
    from fer.transforms import TTA_MODES

    assert app.TTA_MODES == TTA_MODES
    assert app.build_parser().parse_args([]).tta == "flip-zoom"
    assert app.build_parser().parse_args(["--tta", "none"]).tta == "none"


def test_predict_photo(env):
    res = env["service"].predict_image(str(env["photo"]), env["service"].default_choice)
    assert len(res.faces) == 1 and not res.no_face
    face = res.faces[0]
    assert face.label in face.probabilities and abs(sum(face.probabilities.values()) - 1) < 1e-4
    assert res.annotated.size == (512, 512)
    assert not np.array_equal(np.asarray(res.annotated), np.asarray(Image.open(env["photo"])))
    assert f"Face 1: {face.label}" in res.summary()


def test_predict_callback(env):
    predict = _fn(env["demo"], "predict")
    image, top, fig, text = predict(str(env["photo"]), env["service"].default_choice, "opencv", False)
    assert isinstance(image, Image.Image) and isinstance(fig, go.Figure)
    assert set(top) == set(env["service"].predictor(env["service"].default_choice, "opencv")[0].classes)
    assert "Face 1:" in text
    assert predict(None, env["service"].default_choice, "opencv", False)[0] is None


def test_no_face(env, tmp_path):
    svc, coffee = env["service"], next(p for p in env["examples"] if "coffee" in p)
    res = svc.predict_image(coffee, svc.default_choice)
    assert res.no_face and res.faces == [] and "No face found" in res.notes[0]
    res = svc.predict_image(coffee, svc.default_choice, whole_image_if_no_face=True)
    assert len(res.faces) == 1 and res.faces[0].whole_image
    with pytest.warns(UserWarning, match="No face found"):  # gr.Warning outside a request
        _, top, _, text = _fn(env["demo"], "predict")(coffee, svc.default_choice, "opencv", False)
    assert top is None and "No face found" in text


def test_bad_and_oversized_files(env, tmp_path):
    svc, predict = env["service"], _fn(env["demo"], "predict")
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a picture")
    with pytest.raises(AppError, match="Cannot read this file as an image"):
        svc.predict_image(str(bad), svc.default_choice)
    with pytest.raises(gr.Error, match="Cannot read"):
        predict(str(bad), svc.default_choice, "opencv", False)
    huge = tmp_path / "huge.png"
    Image.new("L", (7200, 7200)).save(huge)  # 52 MP of zeros: a tiny file, a huge image
    with pytest.raises(AppError, match="megapixels"):
        svc.predict_image(str(huge), svc.default_choice)
    # gr.Image opens uploads before the callback: a non-image must still give a sentence.
    from gradio.data_classes import ImageData

    with pytest.raises(gr.Error, match="not an image"):
        friendly_upload_errors(gr.Image(type="filepath", image_mode=None)).preprocess(
            ImageData(path=str(bad), orig_name="notes.txt"))


def test_unknown_model_and_detector(env):
    svc = env["service"]
    with pytest.raises(AppError, match="Unknown model"):
        svc.predict_image(str(env["photo"]), "/etc/passwd")
    with pytest.raises(AppError, match="Unknown face detector"):
        svc.predict_image(str(env["photo"]), svc.default_choice, detector="yolo")


def test_no_bundled_model(env, tmp_path):
    svc = FERService(tmp_path / "missing.safetensors", tmp_path / "runs", tmp_path / "results")
    assert svc.default_choice is None
    with pytest.raises(AppError, match="No bundled model found"):
        svc.predict_image(str(env["photo"]), svc.default_choice)
    demo = app.build_demo(tmp_path / "missing.safetensors", tmp_path / "results", tmp_path / "runs",
                          examples=[])
    assert NO_MODEL_MESSAGE in str(demo.config)
    assert not (ROOT / "fer" / "app" / "ui.pyi").exists()  # no stub written into the source tree


def test_webcam_frame(env):
    svc = env["service"]
    frame = np.asarray(Image.open(env["photo"]).resize((640, 480)))
    out, top = svc.predict_frame(frame, svc.default_choice)
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8 and top is not None
    blank, none = svc.predict_frame(np.zeros((480, 640, 3), np.uint8), svc.default_choice)
    assert none is None and blank.shape == (480, 640, 3)
    assert svc.predict_frame(None, svc.default_choice) == (None, None)
    speed = measure_frame_latency(svc, svc.default_choice, frame, n=3)
    assert speed["median_s"] > 0 and speed["fps"] == pytest.approx(1 / speed["median_s"])


def test_concurrent_requests(env):
    svc, errors, results = env["service"], [], []

    def work():
        try:
            results.append(svc.predict_image(str(env["photo"]), svc.default_choice))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 4
    assert len({r.faces[0].label for r in results}) == 1  # same model, same answer


def test_predictor_cache():
    built = []
    cache = PredictorCache(max_size=2, factory=lambda c, d: built.append((c, d)) or object())
    a, lock = cache.get("a.pt", "opencv")
    assert cache.get("a.pt", "opencv")[0] is a and len(built) == 1 and hasattr(lock, "acquire")
    cache.get("b.pt", "opencv")
    cache.get("c.pt", "opencv")  # evicts a
    assert len(cache) == 2 and cache.get("a.pt", "opencv")[0] is not a


def test_discover_checkpoints(tmp_path):
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "notes.txt", "checkpoint_best.pt.tmp"):
        (tmp_path / "runs" / "r1" / name).write_bytes(b"x")
    (tmp_path / "m.safetensors").write_bytes(b"x")
    found = discover_checkpoints(tmp_path / "m.safetensors", tmp_path / "runs", tmp_path / "none")
    assert list(found) == ["default: m.safetensors", "runs/r1/checkpoint_best.pt",
                           "runs/r1/checkpoint_last.pt"]
    assert discover_checkpoints(None, None, None) == {}


# -- Compare tab ---------------------------------------------------------------------------
def test_compare_data(env):
    data = load_compare_data(env["root"] / "results", env["root"] / "runs")
    assert set(data.runs) == {"tiny-0__ferplus-val", "tiny-1__ferplus-val"}
    assert (data.table["source"] == PAPER_SOURCE).sum() == 20
    assert {"tiny-0", "tiny-1"} <= set(data.logs)  # one from results/, one from runs/
    assert data.logs["tiny-0"][1]["dataset"] == "ferplus"
    assert "ferplus" in data.choices("dataset") and "AffectNet" in data.choices("dataset")


def test_compare_opens_on_the_best_run(env):
    from fer.app.ui import _compare_outputs

    data = load_compare_data(env["root"] / "results", env["root"] / "runs")
    dropdown = _compare_outputs(data, "accuracy", None, True, {})[2]
    # tiny-1's logits favour the truth more, so its macro F1 is higher: it is shown first.
    assert dropdown.value == "tiny-1__ferplus-val"
    assert [c[0] if isinstance(c, tuple) else c for c in dropdown.choices][0] == "tiny-1__ferplus-val"
    assert _compare_outputs(data, "accuracy", "tiny-0__ferplus-val", True, {})[2].value == "tiny-0__ferplus-val"


def test_charts_empty(tmp_path):
    data = load_compare_data(tmp_path / "empty", None)
    assert any("no evaluation results" in n for n in data.notes)
    bars = charts.metric_bars(data.table, "f1")
    assert isinstance(bars, go.Figure) and len(bars.data) == 4  # the paper's 4 groups
    assert all("reported" in t.name for t in bars.data)
    for fig in (charts.per_class_recall(data.table), charts.confusion_heatmap(None),
                charts.feature_space(None), charts.training_curves({}),
                charts.metric_bars(data.table.iloc[0:0]), charts.probability_bars([])):
        assert isinstance(fig, go.Figure) and len(fig.data) == 0 and fig.layout.annotations


def test_charts_with_runs(env):
    data = load_compare_data(env["root"] / "results", env["root"] / "runs")
    bars = charts.metric_bars(data.table, "accuracy")
    names = [t.name for t in bars.data]
    assert any(n.startswith("ours") for n in names) and any("reported" in n for n in names)
    assert len(charts.per_class_recall(data.table).data) == 2
    run = data.runs["tiny-1__ferplus-val"]
    heat = charts.confusion_heatmap(run)
    assert heat.data[0].type == "heatmap" and np.asarray(heat.data[0].z).shape == (8, 8)
    feat = charts.feature_space(run)
    assert len(feat.data) == 9 and feat.data[-1].name == "learned centers"
    assert charts.feature_space(data.runs["tiny-0__ferplus-val"]).data[-1].name == "class means"
    curves = charts.training_curves({k: v for k, (v, _) in data.logs.items()})
    assert len(curves.data) == 2 * 4
    probs = charts.probability_bars([{"happy": 0.7, "sad": 0.3}, {"happy": 0.1, "sad": 0.9}])
    assert len(probs.data) == 2


def test_pca_projects_centers_consistently():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) * np.array([5, 3, 1, 1, 1, 1])
    xy, (c,), ratio = charts.pca_2d(x, x[:3])
    assert np.allclose(c, xy[:3]) and ratio[0] > ratio[1] > 0 and np.allclose(xy.mean(0), 0)


def test_find_logs_skips_bad_lines(tmp_path):
    log = write_log(tmp_path / "runs" / "r" / "log.jsonl")
    with open(log, "a") as fh:
        fh.write('{"epoch": 9, "train_lo')  # a log being appended to
    logs = find_logs(tmp_path / "results", tmp_path / "runs")
    assert list(logs) == ["r"] and len(logs["r"][0]) == 4


def test_evaluate_copies_training_log(tmp_path):
    """evaluate.py puts the run's log.jsonl into results/<run>/ for the training curves."""
    import evaluate
    from fer.checkpoint import save_checkpoint
    from fer.classes import FER2013
    from fer.models import create_model

    rng = np.random.default_rng(0)
    for name in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
        d = tmp_path / "fer2013" / "val" / name
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8), "L").save(d / "0.png")
    run_dir = tmp_path / "runs" / "r"
    ckpt = save_checkpoint(run_dir / "checkpoint_best.pt", create_model("fer_resnet", 7, in_chans=1),
                           classes=list(FER2013), model_name="fer_resnet", run_name="r")
    write_log(run_dir / "log.jsonl")
    status = evaluate.main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "fer2013"),
                            "--split", "val", "--out", str(tmp_path / "results"), "--device", "cpu",
                            "--workers", "0"])
    assert status == 0
    data = load_compare_data(tmp_path / "results", None)
    assert list(data.logs) == ["r"] and pd.api.types.is_numeric_dtype(data.logs["r"][0]["val_f1"])

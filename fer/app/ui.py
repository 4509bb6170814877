"""The Gradio layout and its callbacks: a Predict tab (photo + webcam) and a Compare tab.

Callbacks are thin: :class:`fer.app.service.FERService` does the inference and
:mod:`fer.app.charts` the figures; this module maps their errors to ``gr.Error`` /
``gr.Warning`` so users read a sentence, never a traceback.
"""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from fer.app import charts
from fer.app.data import (FILTER_COLUMNS, PAPER_SOURCE, CompareData, filter_table,
                          load_compare_data)
from fer.app.models import DETECTOR_CHOICES
from fer.app.service import NO_MODEL_MESSAGE, AppError, FERService, example_images

__all__ = ["friendly_upload_errors", "CompareStore", "build_ui", "gpu"]

try:  # Hugging Face Spaces: run the model on the (Zero)GPU; a no-op elsewhere.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the environment
    def gpu(fn=None, **_kwargs):
        """Stand-in for ``spaces.GPU`` (usable bare or with arguments)."""
        return fn if fn is not None else (lambda f: f)

INTRO = """# Facial expression recognition
Faces are found, boxed and labelled with one of eight expressions by a network trained with the
**weighted-cluster loss** (Ngo & Yoon, *Sensors* 2020). **Compare** shows how the loss functions
and models measured here stand next to the numbers **reported in the paper** (Tables 5 and 6)."""


def friendly_upload_errors(image: gr.Image) -> gr.Image:
    """Make a ``gr.Image``'s upload errors read as sentences; returns the same component.

    ``gr.Image`` opens every upload with PIL before the callback runs, so a file that is not
    an image would otherwise fail with PIL's bare "cannot identify image file" error. The
    instance's ``preprocess`` is wrapped rather than the class subclassed: Gradio's component
    metaclass writes a ``.pyi`` stub next to any module that defines a component subclass.
    """
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure means "not an image"
            name = getattr(payload, "orig_name", None) or "the uploaded file"
            raise gr.Error(f"{name} is not an image this app can read. Upload a JPEG, PNG, "
                           "WebP, BMP or TIFF photo.") from err

    image.preprocess = checked
    return image


class CompareStore:
    """The Compare tab's data, shared by all sessions and reloaded only when ``results/``
    changes (its ``summary.csv`` is rewritten by every evaluation) or on request."""

    def __init__(self, results_dir: str | Path, runs_dir: str | Path | None):
        self.results_dir, self.runs_dir = Path(results_dir), runs_dir
        self._data: CompareData | None = None
        self._stamp: float | None = None
        self._lock = threading.Lock()

    def _mtime(self) -> float:
        path = self.results_dir / "summary.csv"
        return path.stat().st_mtime if path.is_file() else -1.0

    def get(self, reload: bool = False) -> CompareData:
        with self._lock:
            stamp = self._mtime()
            if reload or self._data is None or stamp != self._stamp:
                self._data = load_compare_data(self.results_dir, self.runs_dir)
                self._stamp = stamp
            return self._data


def _compare_outputs(data: CompareData, metric: str, run: str | None, normalized: bool,
                     filters: dict[str, list[str]]) -> tuple:
    table = filter_table(data.table, **filters)
    ours = table[table["source"] != PAPER_SOURCE]
    if "f1" in ours:  # best macro F1 first, so the first look is at a model worth studying
        ours = ours.sort_values("f1", ascending=False, kind="stable")
    runs = [r for r in ours["run"].astype(str) if r in data.runs]
    run = run if run in runs else (runs[0] if runs else None)
    logs = {name: df for name, (df, info) in data.logs.items()
            if all(not v or info.get(k, "unknown") in v for k, v in filters.items())}
    notes = "\n".join(f"* {n}" for n in data.notes)
    shown = table[["label", "source", *FILTER_COLUMNS, *[m for m in charts.METRICS if m in table]]]
    shown = shown.assign(**{m: (shown[m] * 100).round(2) for m in charts.METRICS if m in shown})
    return (
        charts.metric_bars(table, metric),
        charts.per_class_recall(table),
        gr.Dropdown(choices=runs, value=run),
        charts.confusion_heatmap(data.runs.get(run), normalized),
        charts.feature_space(data.runs.get(run)),
        charts.training_curves(logs),
        notes or "",
        shown,
    )


def build_ui(service: FERService, compare: CompareStore, examples: list[str] | None = None,
             stream_every: float = 0.1) -> gr.Blocks:
    """Lay out the app. Nothing is launched."""
    examples = example_images() if examples is None else examples
    no_model = service.default_choice is None
    data0 = compare.get()

    @gpu
    def predict(image, choice, detector, whole):
        if image is None:
            return None, None, charts.empty_figure("Upload a photo or pick an example."), ""
        try:
            res = service.predict_image(image, choice, detector, bool(whole))
        except AppError as err:
            raise gr.Error(str(err)) from err
        if res.no_face:
            gr.Warning(res.notes[0])
        fig = charts.probability_bars([f.probabilities for f in res.faces])
        return res.annotated, res.top, fig, res.summary()

    @gpu
    def stream(frame, choice, detector):
        try:
            return service.predict_frame(frame, choice, detector)
        except AppError as err:
            raise gr.Error(str(err)) from err

    def rescan(choice):
        checkpoints = service.refresh()
        value = choice if choice in checkpoints else service.default_choice
        msg = "" if checkpoints else NO_MODEL_MESSAGE
        return gr.Dropdown(choices=list(checkpoints), value=value), gr.Markdown(msg, visible=bool(msg))

    def compare_update(metric, run, normalized, *selected, reload=False):
        filters = dict(zip(FILTER_COLUMNS, selected))
        return _compare_outputs(compare.get(reload), metric, run, normalized, filters)

    with gr.Blocks(title="FER: weighted-cluster loss") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                no_model_md = gr.Markdown(f"**{NO_MODEL_MESSAGE}**" if no_model else "",
                                          visible=no_model, elem_id="no-model")
                with gr.Row(equal_height=True):
                    model_dd = gr.Dropdown(list(service.checkpoints), value=service.default_choice,
                                           label="Model (bundled, runs/ and results/)", scale=4)
                    rescan_btn = gr.Button("Rescan", scale=0, min_width=90)
                    det_dd = gr.Dropdown([(a, b) for a, b in DETECTOR_CHOICES], value="opencv",
                                         label="Face detector", scale=3)
                with gr.Tab("Photo"):
                    with gr.Row():
                        with gr.Column():
                            img_in = friendly_upload_errors(gr.Image(
                                type="filepath", image_mode=None, label="Photo",
                                sources=["upload", "clipboard"], height=380))
                            whole = gr.Checkbox(label="Classify the whole image when no face is found")
                            run_btn = gr.Button("Predict", variant="primary")
                            if examples:
                                gr.Examples(examples, inputs=img_in, label="Example photos")
                        with gr.Column():
                            img_out = gr.Image(label="Faces found", type="pil", interactive=False,
                                               height=380, format="jpeg")
                            summary = gr.Markdown(elem_id="prediction-summary")
                            label = gr.Label(num_top_classes=3, label="First face")
                            probs = gr.Plot(label="Class probabilities")
                with gr.Tab("Webcam"):
                    gr.Markdown("Start the camera: every frame is sent, annotated and shown live "
                                "(streams stop after 2 minutes; press record again to continue).")
                    with gr.Row():
                        cam = gr.Image(sources=["webcam"], streaming=True, type="numpy",
                                       label="Camera", height=360)
                        cam_out = gr.Image(label="Live prediction", height=360, format="jpeg")
                    cam_label = gr.Label(num_top_classes=3, label="First face")
            with gr.Tab("Compare", id="compare"):
                notes_md = gr.Markdown(elem_id="compare-notes")
                with gr.Row():
                    filters = [gr.Dropdown(data0.choices(c), value=[], multiselect=True,
                                           label=c.capitalize(), info="empty = all")
                               for c in FILTER_COLUMNS]
                with gr.Row():
                    metric_dd = gr.Dropdown([(v, k) for k, v in charts.METRICS.items()],
                                            value="accuracy", label="Metric", scale=3)
                    reload_btn = gr.Button("Reload results/", scale=0, min_width=140)
                bars = gr.Plot(label="Metrics by loss function", elem_id="metric-bars")
                recall = gr.Plot(label="Per-class recall")
                with gr.Row():
                    run_dd = gr.Dropdown([], label="Evaluation run", scale=3)
                    normalized = gr.Checkbox(True, label="Row-normalised", scale=1)
                with gr.Row():
                    confusion = gr.Plot(label="Confusion matrix")
                    feature = gr.Plot(label="Feature space")
                curves = gr.Plot(label="Training curves")
                table = gr.Dataframe(label="Rows shown (metrics in %)", interactive=False,
                                     max_height=320)

        # -- wiring ---------------------------------------------------------------------
        pred_io = dict(inputs=[img_in, model_dd, det_dd, whole],
                       outputs=[img_out, label, probs, summary])
        gr.on([run_btn.click, img_in.change, whole.change, det_dd.change, model_dd.change], predict,
              concurrency_id="model", api_name="predict", **pred_io)
        cam.stream(stream, [cam, model_dd, det_dd], [cam_out, cam_label], stream_every=stream_every,
                   time_limit=120, concurrency_limit=4, concurrency_id="webcam",
                   show_progress="hidden", api_visibility="private")
        rescan_btn.click(rescan, model_dd, [model_dd, no_model_md], api_visibility="private")

        cmp_in = [metric_dd, run_dd, normalized, *filters]
        cmp_out = [bars, recall, run_dd, confusion, feature, curves, notes_md, table]
        kw = dict(inputs=cmp_in, outputs=cmp_out, api_visibility="private", show_progress="minimal")
        gr.on([demo.load, metric_dd.change, *[f.change for f in filters]], compare_update, **kw)
        reload_btn.click(lambda *a: compare_update(*a, reload=True), **kw)

        def one_run(run, norm):
            data = compare.get()
            return charts.confusion_heatmap(data.runs.get(run), norm), \
                charts.feature_space(data.runs.get(run))

        gr.on([run_dd.input, normalized.change], one_run, [run_dd, normalized],
              [confusion, feature], api_visibility="private")
    return demo


"""Turn an executed notebook's live outputs into static HTML a site can show with no kernel and no network.

Why: a site page has no kernel behind it, so a widget would need the ipywidgets HTML manager (fetched
from a CDN) and every plotly output would inline its own 4.6 MB copy of plotly.js. Instead each plotly
figure becomes a placeholder (a div and its JSON spec) that one site-wide script draws with the one
site-wide plotly.js, and each widget is drawn from the state nbclient saved in the notebook's metadata
as it was when the last cell finished: boxes as boxes, HTML as HTML, controls as their current value,
FigureWidgets as the figure they last showed (tools/execute.py makes their saved state current).
"""

from __future__ import annotations

import base64
import copy
import html
import json

import numpy as np

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
FIGURE_CLASS = "finescope-figure"  # the placeholder class tools/site_assets/figures.js looks for


def figure_html(spec: dict) -> str:
    """A placeholder for one plotly figure: figures.js draws `spec` ({data, layout}) into the div."""
    layout = spec.get("layout", {})
    payload = json.dumps({"data": spec.get("data", []), "layout": layout})
    payload = payload.replace("</", "<\\/")  # a "</script>" inside a label must not end the script element
    height = layout.get("height") or 450  # plotly's default height when the layout sets none
    return (f'<div class="{FIGURE_CLASS}" style="height:{height}px"></div>'
            f'<script type="application/json" class="{FIGURE_CLASS}-spec">{payload}</script>')


def _numpy_payloads(value):
    """Plotly widgets send numpy arrays as {dtype, shape, buffer: bytes}: turn those back into lists."""
    if isinstance(value, dict):
        if set(value) >= {"dtype", "shape", "buffer"} and isinstance(value["buffer"], (bytes, bytearray)):
            return np.frombuffer(value["buffer"], dtype=value["dtype"]).reshape(value["shape"]).tolist()
        return {k: _numpy_payloads(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numpy_payloads(v) for v in value]
    return value


def _with_buffers(entry: dict) -> dict:
    """A widget model's state with its binary buffers put back at their paths. A buffer whose path no longer
    exists belonged to a one-off message the state has since dropped (plotly's _py2js_* traits): skipped."""
    state = copy.deepcopy(entry.get("state", {}))
    for buffer in entry.get("buffers", []):
        *parents, last = buffer["path"]
        target = state
        for key in parents:
            target = target[key] if isinstance(target, (dict, list)) and _has(target, key) else None
        if isinstance(target, dict) or (isinstance(target, list) and _has(target, last)):
            data = buffer["data"]
            target[last] = base64.b64decode(data) if buffer.get("encoding", "base64") == "base64" else data
    return _numpy_payloads(state)


def _has(container, key) -> bool:
    return key in container if isinstance(container, dict) else isinstance(key, int) and 0 <= key < len(container)


class WidgetRenderer:
    """Static HTML for widget views, read from one notebook's saved widget state."""

    def __init__(self, widget_state: dict):
        self.models = widget_state.get("state", {})

    def _state(self, ref: str | None) -> tuple[str, dict] | None:
        model_id = ref[len("IPY_MODEL_"):] if isinstance(ref, str) and ref.startswith("IPY_MODEL_") else ref
        entry = self.models.get(model_id)
        return (entry.get("model_name", ""), _with_buffers(entry)) if entry else None

    def render(self, model_id: str) -> str | None:
        """The view of `model_id`, or None when the notebook did not save that model's state."""
        found = self._state(model_id)
        return None if found is None else self._render(*found)

    def _style(self, state: dict) -> str:
        layout = self._state(state.get("layout"))
        layout = layout[1] if layout else {}
        if layout.get("display") == "none" or layout.get("visibility") == "hidden":
            return "display:none"
        return ";".join(f"{css}:{layout[key]}" for key, css in (("width", "width"), ("max_width", "max-width"),
                                                                 ("height", "height"), ("flex", "flex"))
                        if layout.get(key))

    def _render(self, name: str, state: dict) -> str:
        classes = " ".join(["finescope-static-widget", *state.get("_dom_classes", [])])
        inner = self._inner(name, state)
        label = state.get("description")
        if label and name not in ("ButtonModel", "CheckboxModel", "ToggleButtonModel"):
            inner = f"<span class='finescope-static-label'>{html.escape(str(label))}</span> {inner}"
        style = self._style(state)
        kind = "finescope-static-box" if name.endswith("BoxModel") else ""
        direction = " finescope-static-row" if name == "HBoxModel" else ""
        return f"<div class='{classes} {kind}{direction}' style='{style}'>{inner}</div>"

    def _inner(self, name: str, state: dict) -> str:
        if "_widget_data" in state and "_widget_layout" in state:  # a plotly FigureWidget (see tools/execute.py)
            return figure_html({"data": state["_widget_data"], "layout": state["_widget_layout"]})
        if name.endswith("BoxModel") or name in ("AccordionModel", "TabModel", "StackModel"):
            return "".join(self.render(child) or "" for child in state.get("children", []))
        if name in ("HTMLModel", "HTMLMathModel"):
            return state.get("value", "")
        if name == "OutputModel":
            return "".join(output_html(o, self) for o in state.get("outputs", []))
        if name in ("LabelModel", "TextModel", "TextareaModel", "PasswordModel"):
            text = state.get("value") or state.get("placeholder", "")
            return f"<span class='finescope-static-value'>{html.escape(str(text))}</span>"
        if name == "ButtonModel":
            return f"<button disabled>{html.escape(state.get('description', ''))}</button>"
        if name in ("CheckboxModel", "ToggleButtonModel"):
            mark = "☑" if state.get("value") else "☐"
            return f"{mark} {html.escape(str(state.get('description', '')))}"
        if name in ("FloatProgressModel", "IntProgressModel"):
            return f"<progress value='{state.get('value', 0)}' max='{state.get('max', 100)}'></progress>"
        labels = state.get("_options_labels")
        if labels is not None:
            chosen = state.get("index")
            chosen = set(chosen) if isinstance(chosen, (list, tuple)) else {chosen}
            if name in ("SelectModel", "SelectMultipleModel"):
                rows = state.get("rows") or 5
                items = "".join(f"<li class='{'finescope-static-chosen' if i in chosen else ''}'>{html.escape(str(t))}</li>"
                                for i, t in enumerate(labels[:rows]))
                return f"<ul class='finescope-static-select'>{items}</ul>"
            return "<span class='finescope-static-value'>" + html.escape(
                ", ".join(str(labels[i]) for i in sorted(c for c in chosen if c is not None))) + "</span>"
        if "value" in state:
            value = state["value"]
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, list):
                value = " – ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
            return f"<span class='finescope-static-value'>{html.escape(str(value))}</span>"
        return ""


def output_html(output: dict, widgets: WidgetRenderer) -> str:
    """One output (as stored in a notebook or an Output widget) as HTML; text streams as preformatted text."""
    if output.get("output_type") == "stream":
        return f"<pre>{html.escape(output.get('text', ''))}</pre>"
    data = output.get("data", {})
    if PLOTLY_MIME in data:
        return figure_html(data[PLOTLY_MIME])
    if WIDGET_VIEW_MIME in data:
        return widgets.render(data[WIDGET_VIEW_MIME]["model_id"]) or ""
    if "text/html" in data:
        return "".join(data["text/html"])
    if "image/png" in data:
        return f"<img src='data:image/png;base64,{data['image/png']}'>"
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def make_static(nb):
    """A copy of `nb` (an nbformat notebook) whose plotly and widget outputs are static HTML, and with no
    widget state left in its metadata (so no converter loads a widget manager for it)."""
    nb = copy.deepcopy(nb)
    widgets = WidgetRenderer(nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}))
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data or WIDGET_VIEW_MIME in data:
                rendered = output_html(output, widgets)
                data.clear()
                if rendered:
                    data["text/html"] = rendered
                else:  # a widget whose state was not saved: say so rather than show nothing
                    data["text/plain"] = "(an interactive widget: run the notebook to use it)"
    nb.metadata.pop("widgets", None)
    return nb

"""The Gradio app's pieces: model discovery and caching (:mod:`fer.app.models`), inference
(:mod:`fer.app.service`), Compare-tab data (:mod:`fer.app.data`) and figures
(:mod:`fer.app.charts`), and the layout (:mod:`fer.app.ui`). ``app.py`` assembles them.

Importing this package does not import Gradio; :mod:`fer.app.ui` does.
"""

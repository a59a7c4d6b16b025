"""The merchandiser's dashboard: server-rendered pages under ``/dashboard`` (Jinja2
templates, a little JavaScript, plotly.js from the plotly package), in English and Chinese,
for admins only. See ``docs/design-notes.md`` for why this stack."""

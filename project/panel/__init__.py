"""The control panel: server-rendered pages, Plotly charts and live updates over a WebSocket."""

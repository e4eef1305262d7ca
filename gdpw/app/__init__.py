"""The web UI (Gradio)."""

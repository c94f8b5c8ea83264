"""`advrec stream`: incremental training on a log's windows, with prequential evaluation and
published models (`runner`); windows (`windows`) and each window's dataset (`log`)."""

from advrec.stream.runner import run_stream

__all__ = ["run_stream"]

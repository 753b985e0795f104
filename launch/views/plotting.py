"""matplotlib, imported only when a plot is drawn (it is the optional ``plot`` extra)."""

from __future__ import annotations

from ..errors import UserError


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a one-line UserError."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib, which is not installed: "
                        "pip install 'evo[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

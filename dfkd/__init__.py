"""dfkd: data-free knowledge distillation with arbitrary, class-balanced transfer sets."""

__version__ = "0.1.0"

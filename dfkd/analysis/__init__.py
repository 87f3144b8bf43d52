"""Numbers over seeds and the claims they decide: statistics (the one module every verdict
comes from), a target's replicated results, the summary, `dfkd claim`, the rank correlations
of transfer-set scores, the study's tables and figures, and LaTeX export."""

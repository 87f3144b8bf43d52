"""The study's tables and figures, re-measured: `main`, `table1` to `table5`, `class_frequencies`
(the study's Tables 6 to 8 and Figures 1 to 3) and `table9`.

config.yaml's `study.tables` maps each table's rows (named as the study names them) to transfer
sets, and picks the student variants; `tables.build_table` reads only the run's own files
(class counts, distances, student and teacher metrics), puts the study's published numbers
(`published.yaml`) beside ours where the study reports the same setting, and states per claim
whether it holds in our measurement.
"""

# Names only (no heavy imports): the workflow reads these when it plans.
TABLE_NAMES = ("main", "table1", "table2", "table3", "table4", "table5", "class_frequencies", "table9", "synthesis")
TABLES_WITH_STUDENTS = ("main", "table1", "table2", "table3", "table4", "table5", "synthesis")
TABLES_WITH_DISTANCES = TABLES_WITH_STUDENTS
FIGURE_TABLES = ("main", "table1", "table2", "table5")  # error-bar figures (dfkd.analysis.study.figures)
# The metrics of dfkd.stages.quality, each with a scatter figure of the `quality` table
QUALITY_METRICS = (
    "effective_classes", "fill", "mean_confidence", "mean_margin", "soft_effective_classes",
    "within_class_spread", "feature_spread",
    "hausdorff", "average_hausdorff", "partial_hausdorff", "frechet", "coverage",
)

"""`freebits report`: read the files runs wrote; write tables, figures and one index.html.

Reads only files (never torch, never retrains), so it works on a sweep that is still running or
has failed runs. Modules: `build` (the whole report, start to end), `load` (reading run folders),
`stats` (statistics across seeds), `recommend` (strategies, Pareto front, recommendation),
`figures`/`run_figures`/`draw` (figures), `html`/`labels` (the page, words and numbers).
"""

from freebits_cli.report.build import FORMATS, ReportResult, build_report, parse_formats
from freebits_cli.report.html import by_setting_rows
from freebits_cli.report.recommend import STRATEGIES, pareto_mask, recommend, strategies_table
from freebits_cli.report.stats import METRICS, by_setting_table, seed_stats, t975
from freebits_cli.results.reader import find_run_dirs

__all__ = ["FORMATS", "METRICS", "STRATEGIES", "ReportResult", "build_report", "by_setting_rows"]
__all__ += ["by_setting_table", "find_run_dirs", "pareto_mask", "parse_formats", "recommend"]
__all__ += ["seed_stats", "strategies_table", "t975"]

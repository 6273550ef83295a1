"""Insights for the knowledge maintainer: what visitors asked that the bot could not answer.

Read the period's events (``query``, DuckDB), group unanswered questions by meaning
(``grouping``), match them with the LATEST snapshot (``snapshot``), assemble the report
(``report``, whose contract is ``model``) and draw it as HTML (``html``).
"""

from chatbot.insights.html import render_html
from chatbot.insights.model import InsightsReport
from chatbot.insights.query import PeriodTooLarge
from chatbot.insights.report import WEAK_SCORE, Limits, build_report, eval_cases, write_eval_cases
from chatbot.insights.snapshot import latest_index

__all__ = [
    "WEAK_SCORE",
    "InsightsReport",
    "Limits",
    "PeriodTooLarge",
    "build_report",
    "eval_cases",
    "latest_index",
    "render_html",
    "write_eval_cases",
]

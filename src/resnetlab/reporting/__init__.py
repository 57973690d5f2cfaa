"""Reporting the reproductions: ``figures`` draws the paper's figures from plain numbers, ``report``
assembles tables, verdicts and figures into ``report.md`` and ``report.html``."""

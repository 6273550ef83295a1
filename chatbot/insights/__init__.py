"""Insights for the knowledge maintainer: what visitors asked that the bot could not answer.

``query`` reads the period's events with DuckDB, ``grouping`` groups unanswered questions by
meaning, ``snapshot`` opens LATEST to match them with documents, ``report`` assembles the
report whose contract is ``model``, and ``html`` draws it. Import the modules themselves: this
package imports nothing, so ``chatbot.web.models`` can use ``model`` in the chat function,
which does not install DuckDB (requirements-admin.txt).
"""

__all__: list[str] = []

"""Writing an engine ``Selection`` in the project's one selection-file format (``less_wire``).

``less-index select`` and ``less-select`` write the same file: one ``SelectionRecord`` per line
in rank order, or the selected pool rows with ``rank``/``score``/``subtask`` added.
"""

from __future__ import annotations

from pathlib import Path

from indexer.query import Selection
from less_wire import SelectedExample, write_selected_ids, write_selected_rows


def selected_examples(selection: Selection, return_scores: bool = True) -> list[SelectedExample]:
    """The wire view of a selection, best first (scores left out unless asked for)."""
    return [
        SelectedExample(id=i, score=s if return_scores else None, subtask=t)
        for i, s, t in zip(selection.ids, selection.scores, selection.subtasks)
    ]


def write_selection(selection: Selection, out: Path, pool_path: Path | None = None) -> int:
    """Writes the selection's records, or its pool rows when ``pool_path`` is given.

    Returns:
        The number of lines written.

    Raises:
        InputFileError: a selected id is missing from (or twice in) the pool; nothing is written.
    """
    selected = selected_examples(selection)
    if pool_path is not None:
        return write_selected_rows(selected, pool_path, out)
    return write_selected_ids(selected, out)

"""Writing an engine ``Selection`` in the project's one selection-file format (``less_wire``).

``less-index select`` and ``less-select`` write the same file: one ``SelectionRecord`` per line
in rank order, or the selected pool rows with ``rank``/``score``/``subtask`` added.
"""

from __future__ import annotations

from pathlib import Path

from indexer.query import Selection
from indexer.steered import RowExplanation
from less_wire import (
    CheckpointContribution,
    ClosestTarget,
    Explanation,
    SelectedExample,
    SubtaskScore,
    write_selected_ids,
    write_selected_rows,
)


def explanation(row: RowExplanation) -> Explanation:
    """The wire form of one row's explanation."""
    return Explanation(
        checkpoints=[
            CheckpointContribution(checkpoint=name, weight=weight, score=score)
            for name, weight, score in row.checkpoints
        ],
        subtasks=[SubtaskScore(subtask=name, score=score) for name, score in row.subtasks],
        closest_target=ClosestTarget(
            index=row.closest_target,
            id=row.closest_target_id,
            subtask=row.closest_subtask,
            similarity=row.closest_similarity,
        ),
        avoid_similarity=row.avoid_similarity,
        n_tokens=row.n_tokens,
        metadata=row.metadata,
        preview=row.preview,
    )


def selected_examples(selection: Selection, return_scores: bool = True) -> list[SelectedExample]:
    """The wire view of a selection, best first (scores left out unless asked for), with each
    row's explanation when the selection has them."""
    explained: list[RowExplanation | None] = [None] * len(selection.ids)
    if selection.explanations is not None:
        explained = list(selection.explanations)
    return [
        SelectedExample(
            id=i,
            score=s if return_scores else None,
            subtask=t,
            explanation=None if e is None else explanation(e),
        )
        for i, s, t, e in zip(selection.ids, selection.scores, selection.subtasks, explained)
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

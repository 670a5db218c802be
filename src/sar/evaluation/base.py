"""What every dataset evaluator does with a list of predictions (COCO AP, CrowdPose, COCO-WholeBody, MPII PCKh):
turn the records into its results list, write it to ``<out_dir>/<prefix>_keypoints.json``, and score it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from sar.evaluation.results import write_results

__all__ = ["ResultsEvaluator"]


class ResultsEvaluator:
    """Base of the evaluators: :meth:`evaluate` runs :meth:`format_results` then :meth:`score`.

    A subclass sets ``ann_source`` (how messages name its ground truth) and ``results_only`` (True: only the
    results json is written, no metrics), and implements :meth:`format_results`, which sets
    ``last_nonfinite`` (how many records it dropped for non-finite values), and :meth:`score`.

    Attributes:
        last_results: the results list of the last :meth:`evaluate`.
        last_nonfinite: the records the last :meth:`format_results` dropped as non-finite.
    """

    ann_source: Any = "<ground truth>"
    results_only: bool = False
    last_nonfinite: int = 0

    def format_results(self, preds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The evaluator's results list for prediction records (what is written and scored)."""
        raise NotImplementedError

    def score(self, results: list[dict[str, Any]]) -> dict[str, float]:
        """The metrics of a results list."""
        raise NotImplementedError

    def evaluate(
        self,
        preds: Sequence[Mapping[str, Any]],
        out_dir: str | os.PathLike[str] | None = None,
        prefix: str = "results",
    ) -> dict[str, float]:
        """Evaluate prediction records; write ``<out_dir>/<prefix>_keypoints.json`` (atomically) if ``out_dir``.

        Returns :meth:`score`'s metrics plus ``nonfinite_predictions``: the number of records dropped for
        non-finite values (a float, 0.0 when none); ``{}`` in results-only mode.
        """
        results = self.format_results(preds)
        self.last_results = results
        write_results(results, out_dir, prefix)
        if self.results_only:
            logging.getLogger(type(self).__module__).info(
                "results-only mode (%s has no annotations): wrote %d results, no metrics", self.ann_source,
                len(results))
            return {}
        metrics = self.score(results)
        metrics["nonfinite_predictions"] = float(self.last_nonfinite)
        return metrics
